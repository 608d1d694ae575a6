"""The GRPO recipe and the RL pool exported to verl, checked against verl 0.9.1 itself.

verl's configuration code is installed from PyPI without its dependencies into the venv's ``verl-config`` folder
(``scripts/verl_config_env.sh``, run by ``make env``): verl 0.9.1 pins transformers<5.11 and needs Ray and
tensordict at import, none of which the project's venv can take, but its config dataclasses and its generated
``ppo_trainer.yaml`` need only omegaconf. The checks run in a subprocess, so the stand-in ``verl`` package never
meets this test session's modules. Nothing of verl is vendored and nothing is fetched at test time.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from falcon_h1r.grpo import RLRecipe
from falcon_h1r.scaleout import verl_export as ve

ROOT = Path(__file__).resolve().parent.parent
VERL_ROOT = Path(sys.prefix) / "verl-config"
TABLE2 = yaml.safe_load((ROOT / "papers" / "table2_rl_hparams.yaml").read_text())


def _verl_root() -> Path:
    if not (VERL_ROOT / "verl" / "trainer" / "config" / "_generated_ppo_trainer.yaml").exists():
        pytest.fail(f"verl's config code is not installed in {VERL_ROOT}: run `bash scripts/verl_config_env.sh` "
                    "(make env does)")
    return VERL_ROOT


def _exported(**kw) -> dict:
    return ve.export_config(RLRecipe(**kw), model_path="/ckpt/Falcon-H1R-7B-SFT", train_files="/data/rl_train.parquet",
                            val_files="/data/rl_val.parquet", max_prompt_length=2048, n_gpus_per_node=8, nnodes=32,
                            rollout_tp=2)


def _validate(cfg: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    code = ("import json, sys; from falcon_h1r.scaleout.verl_export import validate_with_verl; "
            f"print(json.dumps(validate_with_verl(json.load(open({str(path)!r})), {str(_verl_root())!r}), "
            "default=str))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_exported_paper_recipe_validates_against_verls_own_config_classes(tmp_path):
    proc = _validate(_exported(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # Table 2, as verl's dataclasses hold it
    assert got["n"] == TABLE2["group_size"] == 16
    assert got["temperature"] == TABLE2["temperature"] == 0.85
    assert (got["clip_ratio_low"], got["clip_ratio_high"]) == (TABLE2["clip_ratio_low"], TABLE2["clip_ratio_high"])
    assert got["use_kl_loss"] is False and got["use_kl_in_reward"] is False and TABLE2["kl_coef"] == 0
    assert got["entropy_coeff"] == TABLE2["entropy_coef"] == 0
    assert got["rollout_is"] == "token" and got["rollout_is_threshold"] == TABLE2["tis_cap"] == 2.0
    assert got["lr"] == TABLE2["learning_rate"] and got["lr_warmup_steps"] == TABLE2["lr_warmup_steps"]
    assert got["train_batch_size"] == TABLE2["train_batch_size"] and got["ppo_mini_batch_size"] == TABLE2[
        "ppo_mini_batch_size"]
    assert got["loss_agg_mode"] == "seq-mean-token-mean" and got["adv_estimator"] == "grpo"
    assert got["response_length"] == 49152 and got["calculate_log_probs"] is True and got["filter_groups"] is True


@pytest.mark.parametrize("bad,match", [
    ({"actor_rollout_ref": {"actor": {"clip_ratio_hgh": 0.28}}}, "clip_ratio_hgh"),  # not a verl key
    ({"actor_rollout_ref": {"actor": {"loss_agg_mode": "seq-mean-group-mean"}}}, "loss_agg_mode"),  # verl's check
    ({"actor_rollout_ref": {"rollout": {"temperature": "hot"}}}, "temperature"),  # verl's type
])
def test_verl_rejects_what_it_does_not_accept(tmp_path, bad, match):
    cfg = _exported()

    def merge(a: dict, b: dict) -> None:
        for k, v in b.items():
            if isinstance(v, dict):
                merge(a.setdefault(k, {}), v)
            else:
                a[k] = v

    merge(cfg, bad)
    proc = _validate(cfg, tmp_path)
    assert proc.returncode != 0 and match in proc.stderr


def test_every_recipe_field_is_mapped_and_every_key_is_verls():
    fields = [f.name for f in dataclasses.fields(RLRecipe)]
    assert list(ve.FIELD_MAP) == fields  # the recipe's order, none missing, none extra
    full = yaml.safe_load((_verl_root() / "verl" / "trainer" / "config" / "_generated_ppo_trainer.yaml").read_text())

    def has(key: str) -> bool:
        node = full
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    assert all(has(m.verl_key) for m in ve.FIELD_MAP.values() if m.verl_key), \
        [m.verl_key for m in ve.FIELD_MAP.values() if m.verl_key and not has(m.verl_key)]
    assert all(has(k) for k in ve.flatten(_exported())), [k for k in ve.flatten(_exported()) if not has(k)]
    assert {"ce_weight", "cache_size", "cache_max_age"} <= set(ve.LACKING)
    with pytest.raises(ValueError, match="not a multiple"):
        _exported(batch_prompts=128, mini_batches=3)


def test_config_file_and_command_line(tmp_path):
    path = ve.write_config(_exported(), tmp_path / "grpo_falcon_h1r.yaml")
    doc = yaml.safe_load(path.read_text())
    assert doc["defaults"] == ["ppo_trainer", "_self_"] and doc["algorithm"]["adv_estimator"] == "grpo"
    sh = path.with_suffix(".sh").read_text()
    assert "actor_rollout_ref.rollout.n=16" in sh and "actor_rollout_ref.actor.optim.betas=[0.9,0.999]" in sh
    assert "algorithm.filter_groups.enable=true" in sh


def test_rl_pool_parquet_has_verls_columns_and_grades_with_the_package_rewards(tmp_path):
    import pyarrow.parquet as pq

    from falcon_h1r.scaleout.verl_reward import compute_score
    from falcon_h1r.tasks import generate_split, teacher_records

    problems = generate_split(["math", "code", "science"], [1, 2], 2, "train", 0)
    path = ve.export_pool(problems, tmp_path / "rl_train.parquet", system_prompt="Think first.")
    table = pq.read_table(path)
    assert table.schema.equals(ve.pool_schema())
    assert set(table.column_names) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    rows = table.to_pylist()
    assert len(rows) == len(problems)
    assert rows[0]["prompt"] == [{"role": "system", "content": "Think first."},
                                 {"role": "user", "content": problems[0]["question"]}]
    assert all(r["reward_model"]["style"] == "rule" and r["extra_info"]["split"] == "train" for r in rows)
    assert all(r["data_source"] == f"falcon_h1r/{p['domain']}" for r, p in zip(rows, problems))
    # the teacher's own responses earn reward 1; a wrong final answer earns 0 (the prompt opened <think>)
    teacher = {t["id"]: t for t in teacher_records(problems, "terse", 0)}
    for row, p in zip(rows, problems):
        t = teacher[p["id"]]
        response = f"{t['reasoning']}\n</think>\n{t['final']}"
        got = compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], row["extra_info"])
        assert got == {"score": 1.0, "acc": 1.0}, (p["id"], got)
        if p["domain"] != "code":
            wrong = compute_score(row["data_source"], "x\n</think>\nThe answer is \\boxed{-987654}.",
                                  row["reward_model"]["ground_truth"], row["extra_info"])
            assert wrong["acc"] == 0.0
    with pytest.raises(ValueError, match="lacks"):
        ve.pool_rows([{"id": "x", "question": "q"}], "train")
