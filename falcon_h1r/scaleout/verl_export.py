"""The paper's GRPO recipe (Table 2) and the curated RL pool in verl's configuration and data format.

The paper trained RL on 256 H100s with "a custom GRPO framework on verl". :func:`export_config` maps every field of
:class:`falcon_h1r.grpo.RLRecipe` to verl's ``ppo_trainer.yaml`` keys (:data:`FIELD_MAP` says where each one goes,
or what verl lacks and how to add it); :func:`export_pool` writes the RL pool as the Parquet file verl's
``RLHFDataset`` reads (``data_source``, ``prompt`` as chat messages, ``ability``, ``reward_model`` with the grading
record as ``ground_truth``, ``extra_info``); :mod:`falcon_h1r.scaleout.verl_reward` is the ``compute_score`` verl
calls, the package's own rewards. :func:`validate_with_verl` checks an exported configuration against verl's own
config dataclasses and its full generated ``ppo_trainer.yaml`` (unknown keys and wrong types fail there), importing
only verl's config code (:func:`import_verl_config`), so it runs without Ray, vLLM or a GPU.

Targeted verl: 0.9.1 (its config schema; ``scripts/verl_config_env.sh`` installs just that code for the test).
What was run with verl's trainer: nothing (no multi-GPU machine with verl's stack here).

What verl lacks (``FIELD_MAP`` entries with ``verl_key`` None), and how to add it:

- the **bounded generation cache** of the backfill strategy (paper §3: leftover informative groups kept for later
  batches, with a size and an age limit; ``cache_size``, ``cache_max_age``): verl's DAPO group filter
  (``algorithm.filter_groups``) drops zero-variance groups and generates more until the batch is full, i.e. backfill
  without the cache: surplus groups are thrown away. Add it where the filter refills the batch (verl 0.9's
  ``trainer/ppo/v1/replay_buffer.py``, its ``refill_fn``): keep surplus finished groups in a FIFO of ``cache_size``
  groups stamped with the step they were generated at, serve them before new generations, drop those older than
  ``cache_max_age`` steps (the package's :class:`falcon_h1r.rollout_buffer.BatchFiller` is the reference);
- the **cross-entropy term on positive samples** (``ce_weight``; Table 2: used, weight not given): register a policy
  loss with verl's ``@register_policy_loss("grpo_pos_ce")`` (``verl.trainer.ppo.core_algos``) that returns the
  vanilla clipped loss plus ``ce_weight`` times the per-sequence token mean of ``-log_prob`` over sequences with
  positive advantage (with binary rewards and group normalization, exactly the correct samples of mixed groups),
  and set ``actor_rollout_ref.actor.policy_loss.loss_mode: grpo_pos_ce``;
- the **reject** and **duplicate** strategies (compared in the paper, not chosen): no verl counterpart;
- ``advantage_eps`` is fixed at 1e-6 inside verl's GRPO advantage (equal to ours) and ``adam_eps`` is torch's
  default 1e-8 (equal to ours): neither is a configuration key.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

VERL_VERSION = "0.9.1"
REWARD_FUNCTION = "compute_score"


@dataclass(frozen=True)
class Mapping:
    verl_key: str | None  # dotted key in verl's ppo_trainer.yaml; None: verl has no such setting
    note: str


# Every RLRecipe field, in the recipe's order. tests/test_verl_export.py checks that none is missing.
FIELD_MAP: dict[str, Mapping] = {
    "group_size": Mapping("actor_rollout_ref.rollout.n", "G rollouts per prompt"),
    "temperature": Mapping("actor_rollout_ref.rollout.temperature", "rollout sampling temperature"),
    "top_p": Mapping("actor_rollout_ref.rollout.top_p", "rollout nucleus"),
    "max_new_tokens": Mapping("data.max_response_length", "also actor_rollout_ref.rollout.response_length (verl "
                              "reads it from data.max_response_length)"),
    "batch_prompts": Mapping("data.train_batch_size", "verl counts prompts; each gets rollout.n responses"),
    "mini_batches": Mapping("actor_rollout_ref.actor.ppo_mini_batch_size", "train_batch_size / mini_batches prompts "
                            "per update (1 update per batch: mini-batch = batch)"),
    "micro_batch_seqs": Mapping("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "sequences per forward/"
                                "backward per GPU (memory only)"),
    "lr": Mapping("actor_rollout_ref.actor.optim.lr", "AdamW learning rate"),
    "warmup_steps": Mapping("actor_rollout_ref.actor.optim.lr_warmup_steps", "linear warm-up steps"),
    "lr_after_warmup": Mapping("actor_rollout_ref.actor.optim.lr_scheduler_type", "'constant' after the warm-up"),
    "weight_decay": Mapping("actor_rollout_ref.actor.optim.weight_decay", "AdamW weight decay"),
    "adam_beta1": Mapping("actor_rollout_ref.actor.optim.betas", "betas[0]"),
    "adam_beta2": Mapping("actor_rollout_ref.actor.optim.betas", "betas[1]"),
    "adam_eps": Mapping(None, "not a verl key: torch AdamW's default 1e-8, equal to ours"),
    "grad_clip": Mapping("actor_rollout_ref.actor.optim.clip_grad", "max gradient norm"),
    "clip_eps_low": Mapping("actor_rollout_ref.actor.clip_ratio_low", "ratio clipped below at 1 - eps_low"),
    "clip_eps_high": Mapping("actor_rollout_ref.actor.clip_ratio_high", "clip-higher (DAPO)"),
    "kl_coef": Mapping("actor_rollout_ref.actor.use_kl_loss", "0: no KL loss (use_kl_loss false, "
                       "algorithm.use_kl_in_reward false), so no reference model"),
    "entropy_coef": Mapping("actor_rollout_ref.actor.entropy_coeff", "entropy bonus"),
    "tis_cap": Mapping("algorithm.rollout_correction.rollout_is_threshold", "token-level truncated IS "
                       "(rollout_is: token) on pi_old / pi_rollout; needs rollout.calculate_log_probs"),
    "ce_weight": Mapping(None, "verl has no CE term on positive samples: register a policy loss (module docstring)"),
    "advantage_eps": Mapping(None, "fixed at 1e-6 in verl's compute_grpo_outcome_advantage, equal to ours"),
    "advantage_std": Mapping("algorithm.norm_adv_by_std_in_grpo", "(R - mean) / std, torch.std (unbiased) in both"),
    "loss_aggregation": Mapping("actor_rollout_ref.actor.loss_agg_mode", "seq-mean-token-mean: 1/|o_i|, then mean"),
    "strategy": Mapping("algorithm.filter_groups.enable", "backfill: DAPO group filter (drop zero-variance groups, "
                        "generate more); reject/duplicate have no verl counterpart"),
    "gen_prompts_per_call": Mapping("data.gen_batch_size", "prompts per generation call"),
    "cache_size": Mapping(None, "verl's group filter keeps no cache of surplus groups (module docstring)"),
    "cache_max_age": Mapping(None, "no cache, so no age limit (module docstring)"),
    "max_gen_calls_per_step": Mapping("algorithm.filter_groups.max_num_gen_batches", "generation calls per step cap"),
    "rewards": Mapping("reward.custom_reward_function", "falcon_h1r.scaleout.verl_reward.compute_score: the package's "
                       "rewards (math tiers, sandboxed code tests, science judge, format penalty)"),
    "eval_every": Mapping("trainer.test_freq", "validation every n steps"),
    "save_every": Mapping("trainer.save_freq", "checkpoint every n steps"),
    "trainer_dtype": Mapping("actor_rollout_ref.actor.fsdp_config.model_dtype", "fp32 master weights"),
    "sampler_dtype": Mapping("actor_rollout_ref.rollout.dtype", "the rollout engine's weights"),
    "kernels": Mapping("actor_rollout_ref.model.use_liger", "auto: Liger's kernels in the actor (verl applies "
                       "them itself); plain and no_liger: off"),
}
LACKING = {k: m.note for k, m in FIELD_MAP.items() if m.verl_key is None}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def export_config(recipe: Any, *, model_path: str, train_files: str, val_files: str, max_prompt_length: int,
                  n_gpus_per_node: int = 8, nnodes: int = 1, rollout_tp: int = 1, total_steps: int | None = None,
                  project: str = "falcon-h1r", experiment: str = "grpo") -> dict[str, Any]:
    """verl's configuration (a nested dict of ``ppo_trainer.yaml`` overrides) for ``recipe`` (an ``RLRecipe``)."""
    r = recipe
    if r.batch_prompts % r.mini_batches:
        raise ValueError(f"rl.batch_prompts {r.batch_prompts} is not a multiple of rl.mini_batches {r.mini_batches}")
    reward_file = str(Path(__file__).with_name("verl_reward.py"))
    cfg: dict[str, Any] = {}
    values = {
        "data.train_files": train_files, "data.val_files": val_files, "data.prompt_key": "prompt",
        "data.max_prompt_length": int(max_prompt_length), "data.max_response_length": int(r.max_new_tokens),
        "data.train_batch_size": int(r.batch_prompts), "data.gen_batch_size": int(r.gen_prompts_per_call),
        "data.filter_overlong_prompts": True, "data.truncation": "error",
        "actor_rollout_ref.model.path": model_path,
        "actor_rollout_ref.actor.strategy": "fsdp",
        "actor_rollout_ref.actor.ppo_mini_batch_size": int(r.batch_prompts // r.mini_batches),
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": int(r.micro_batch_seqs),
        "actor_rollout_ref.actor.ppo_epochs": 1,
        "actor_rollout_ref.actor.clip_ratio_low": float(r.clip_eps_low),
        "actor_rollout_ref.actor.clip_ratio_high": float(r.clip_eps_high),
        "actor_rollout_ref.actor.loss_agg_mode": {"seq_mean_group_mean": "seq-mean-token-mean"}[r.loss_aggregation],
        "actor_rollout_ref.actor.entropy_coeff": float(r.entropy_coef),
        "actor_rollout_ref.actor.use_kl_loss": r.kl_coef > 0, "actor_rollout_ref.actor.kl_loss_coef": float(r.kl_coef),
        "actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla",
        "actor_rollout_ref.actor.optim.lr": float(r.lr),
        "actor_rollout_ref.actor.optim.lr_warmup_steps": int(r.warmup_steps),
        "actor_rollout_ref.actor.optim.lr_scheduler_type": {"constant": "constant"}[r.lr_after_warmup],
        "actor_rollout_ref.actor.optim.weight_decay": float(r.weight_decay),
        "actor_rollout_ref.actor.optim.betas": [float(r.adam_beta1), float(r.adam_beta2)],
        "actor_rollout_ref.actor.optim.clip_grad": float(r.grad_clip),
        "actor_rollout_ref.actor.fsdp_config.model_dtype": {"float32": "fp32", "bfloat16": "bf16"}[r.trainer_dtype],
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.n": int(r.group_size),
        "actor_rollout_ref.rollout.temperature": float(r.temperature),
        "actor_rollout_ref.rollout.top_p": float(r.top_p),
        "actor_rollout_ref.rollout.response_length": int(r.max_new_tokens),
        "actor_rollout_ref.rollout.calculate_log_probs": True,  # the sampler's log-probs, for the TIS weights
        "actor_rollout_ref.rollout.logprobs_mode": "processed_logprobs",  # sampled at the RL temperature
        "actor_rollout_ref.rollout.tensor_model_parallel_size": int(rollout_tp),
        "actor_rollout_ref.rollout.dtype": {"float32": "float32", "bfloat16": "bfloat16"}[r.sampler_dtype],
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": True,
        "algorithm.use_kl_in_reward": False,
        "algorithm.rollout_correction.rollout_is": "token",
        "algorithm.rollout_correction.rollout_is_threshold": float(r.tis_cap),
        "algorithm.filter_groups.enable": r.strategy == "backfill",
        "algorithm.filter_groups.metric": "acc",
        "algorithm.filter_groups.max_num_gen_batches": int(r.max_gen_calls_per_step),
        "reward.custom_reward_function.path": reward_file,
        "reward.custom_reward_function.name": REWARD_FUNCTION,
        "trainer.n_gpus_per_node": int(n_gpus_per_node), "trainer.nnodes": int(nnodes),
        "trainer.test_freq": int(r.eval_every) if r.eval_every else -1, "trainer.save_freq": int(r.save_every),
        "trainer.project_name": project, "trainer.experiment_name": experiment, "trainer.logger": ["console"],
        "trainer.critic_warmup": 0,
        "actor_rollout_ref.model.use_liger": getattr(r, "kernels", "plain") == "auto",
    }
    if total_steps is not None:
        values["trainer.total_training_steps"] = int(total_steps)
    for key, value in values.items():
        _set(cfg, key, value)
    return cfg


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def hydra_overrides(cfg: dict[str, Any]) -> list[str]:
    """The command-line form: ``python3 -m verl.trainer.main_ppo <overrides>``."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        return str(v)

    return [f"{k}={fmt(v)}" for k, v in flatten(cfg).items()]


def write_config(cfg: dict[str, Any], path: str | Path) -> Path:
    """The overrides as YAML (for ``--config-path``/``--config-name`` with ``defaults: [ppo_trainer, _self_]``),
    and beside it the same as a shell command line (``.sh``)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"hydra": {"searchpath": ["pkg://verl.trainer.config"]}, "defaults": ["ppo_trainer", "_self_"], **cfg}
    path.write_text("# verl (%s) configuration exported by falcon_h1r.scaleout.verl_export from the paper's GRPO "
                    "recipe (Table 2)\n" % VERL_VERSION + yaml.safe_dump(doc, sort_keys=False))
    cmd = "python3 -m verl.trainer.main_ppo \\\n  " + " \\\n  ".join(hydra_overrides(cfg)) + "\n"
    path.with_suffix(".sh").write_text("#!/usr/bin/env bash\n# the same configuration as command-line overrides\n"
                                       + cmd)
    return path


# ============================================================================== the data
def _prompt_messages(problem: dict[str, Any], system_prompt: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": str(problem["question"])}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


GRADING_DROP = ("question", "reasoning", "final", "trace", "text")  # not needed to grade a response


def pool_rows(problems: Sequence[dict[str, Any]], split: str, *, system_prompt: str | None = None,
              response_prefix: str = "<think>\n") -> list[dict[str, Any]]:
    """verl's dataset rows for the RL pool: the grading record (answer, tests, tolerance, ...) as the JSON
    ``ground_truth``; ``response_prefix`` is what the chat template's generation prompt already opened, put back
    in front of the response before grading."""
    rows = []
    for i, p in enumerate(problems):
        missing = [k for k in ("id", "domain", "question") if k not in p]
        if missing:
            raise ValueError(f"RL pool problem {i} lacks {missing}; a pool record has id, domain, question and its "
                             "answer or tests")
        grading = {k: v for k, v in p.items() if k not in GRADING_DROP}
        rows.append({
            "data_source": f"falcon_h1r/{p['domain']}",
            "prompt": _prompt_messages(p, system_prompt),
            "ability": str(p["domain"]),
            "reward_model": {"style": "rule", "ground_truth": json.dumps(grading, sort_keys=True, default=str)},
            "extra_info": {"split": split, "index": i, "problem_id": str(p["id"]),
                           "difficulty": int(p.get("difficulty", p.get("level", -1)) or -1),
                           "response_prefix": response_prefix},
        })
    return rows


def pool_schema():
    import pyarrow as pa

    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("problem_id", pa.string()),
                                  ("difficulty", pa.int64()), ("response_prefix", pa.string())])),
    ])


def export_pool(problems: Sequence[dict[str, Any]], path: str | Path, split: str = "train", **kw: Any) -> Path:
    """Write the pool as verl's Parquet (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(pool_rows(problems, split, **kw), schema=pool_schema())
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


# ============================================================================== validating against verl itself
def import_verl_config(root: str | Path) -> dict[str, Any]:
    """verl's config dataclasses from an install at ``root`` (``pip install --no-deps --target root verl``),
    without running ``verl/__init__.py`` (which imports Ray and tensordict): ``verl`` and the profiler package
    become bare packages, and the two runtime helpers that ``verl.workers.config.model`` imports from
    ``verl.utils.model`` (tensordict) become stand-ins that refuse to run. Only the dataclass modules execute."""
    root = Path(root)
    if not (root / "verl" / "trainer" / "config" / "_generated_ppo_trainer.yaml").exists():
        raise FileNotFoundError(f"no verl install under {root}; run scripts/verl_config_env.sh (installs verl=="
                                f"{VERL_VERSION}'s code, no dependencies)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

    def bare(name: str, path: bool = True) -> types.ModuleType:
        mod = types.ModuleType(name)
        if path:
            mod.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules[name] = mod
        return mod

    def refuse(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("verl runtime helper: not available where only verl's config code is imported")

    bare("verl")
    importlib.import_module("verl.utils")
    profiler = bare("verl.utils.profiler")
    pconf = importlib.import_module("verl.utils.profiler.config")
    for name in dir(pconf):
        if not name.startswith("_"):
            setattr(profiler, name, getattr(pconf, name))
    model_helpers = bare("verl.utils.model", path=False)
    model_helpers.get_generation_config = model_helpers.update_model_config = refuse
    workers = importlib.import_module("verl.workers.config")
    trainer = importlib.import_module("verl.trainer.config")
    utils = importlib.import_module("verl.utils.config")
    return {"workers": workers, "trainer": trainer, "omega_conf_to_dataclass": utils.omega_conf_to_dataclass,
            "generated": root / "verl" / "trainer" / "config" / "_generated_ppo_trainer.yaml"}


def _build(node: Any) -> Any:
    """What hydra's ``instantiate(..., _convert_="partial")`` does with verl's config nodes: a dict with a
    ``_target_`` becomes that class called with its (built) children, so an unknown key is a ``TypeError`` and the
    class's ``__post_init__`` checks run; other dicts and lists stay plain."""
    if isinstance(node, list):
        return [_build(x) for x in node]
    if not isinstance(node, dict):
        return node
    kids = {k: _build(v) for k, v in node.items() if k != "_target_"}
    target = node.get("_target_")
    if not target:
        return kids
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kids)


def validate_with_verl(cfg: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """Check ``cfg`` as verl 0.9.1 would: every key must exist in verl's full generated ``ppo_trainer.yaml``
    (merged in struct mode, so a misspelt key fails); the actor, rollout and algorithm sections are built into
    verl's dataclasses the way its workers build them (``_target_`` instantiation: their ``__post_init__`` checks
    run), and the rollout, optimizer and algorithm sections also through ``omega_conf_to_dataclass`` (OmegaConf's
    type checks). Returns the built objects' key values; raises verl's own error when something does not fit."""
    verl = import_verl_config(root)
    from omegaconf import OmegaConf

    full = OmegaConf.load(verl["generated"])
    OmegaConf.set_struct(full, True)
    merged = OmegaConf.merge(full, OmegaConf.create(cfg))
    plain = {k: OmegaConf.to_container(merged[k], resolve=True)
             for k in ("actor_rollout_ref", "algorithm", "data")}
    to_dc = verl["omega_conf_to_dataclass"]
    w, t = verl["workers"], verl["trainer"]
    arr = plain["actor_rollout_ref"]
    actor = _build(arr["actor"])
    _build(arr["rollout"]), _build(plain["algorithm"])
    rollout = to_dc(arr["rollout"], w.RolloutConfig)
    to_dc(arr["actor"]["optim"], w.FSDPOptimizerConfig)
    algo = to_dc(plain["algorithm"], t.AlgoConfig)
    optim = actor.optim
    return {"clip_ratio_low": actor.clip_ratio_low, "clip_ratio_high": actor.clip_ratio_high,
            "loss_agg_mode": actor.loss_agg_mode, "entropy_coeff": actor.entropy_coeff,
            "use_kl_loss": actor.use_kl_loss,
            "ppo_mini_batch_size": actor.ppo_mini_batch_size, "lr": optim.lr, "lr_warmup_steps": optim.lr_warmup_steps,
            "weight_decay": optim.weight_decay, "clip_grad": optim.clip_grad, "n": rollout.n,
            "temperature": rollout.temperature, "top_p": rollout.top_p, "response_length": rollout.response_length,
            "calculate_log_probs": rollout.calculate_log_probs, "adv_estimator": algo.adv_estimator,
            "rollout_is": algo.rollout_correction.rollout_is,
            "rollout_is_threshold": float(algo.rollout_correction.rollout_is_threshold),
            "filter_groups": bool(algo.filter_groups.enable), "use_kl_in_reward": algo.use_kl_in_reward,
            "train_batch_size": int(plain["data"]["train_batch_size"])}


__all__ = ["FIELD_MAP", "LACKING", "Mapping", "VERL_VERSION", "export_config", "export_pool", "flatten",
           "hydra_overrides", "import_verl_config", "pool_rows", "pool_schema", "validate_with_verl", "write_config"]
