"""Notebooks: in step with their percent-format sources, and each one runs under papermill."""

import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from py2nb import convert  # noqa: E402

from falcon_h1r.cli import NOTEBOOKS  # noqa: E402


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.values()))
def test_notebook_matches_source_and_has_parameters_cell_and_no_outputs(notebook):
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    src = convert((ROOT / "notebooks" / "src" / notebook.replace(".ipynb", ".py")).read_text())
    assert [c.source for c in nb.cells] == [c.source for c in src.cells], \
        f"notebooks/{notebook} differs from notebooks/src: rebuild it with scripts/py2nb.py"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "preset" in params[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


# Overrides that shrink each tiny-preset notebook to seconds (the real tiny run is `make reproduce`).
FAST = {"tasks.train_per_domain": 60, "tasks.test_per_domain": 10, "train.steps": 4, "train.cpu_ranks": 1, "train.batch_size": 8,
        "eval.problems_per_domain": 3, "generation.max_new_tokens": 8, "tokenizer.vocab_size": 300}
# Each section's own shrink overrides (its owner keeps its line; keys are dotted preset paths).
FAST_SECTION = {
    "01_data_curation": {"curation.rl_pool_per_domain": 3, "curation.pass_rate_max_new_tokens": 8},
    "02_sft": {"sft_ablations.steps": 2, "sft_ablations.batch_size": 4, "sft_ablations.seeds": [0],
               "sft_ablations.problems_per_domain": 3, "sft_ablations.eval_per_domain": 3, "sft_ablations.eval_every": 1,
               "sft_ablations.start_steps": 2, "sft_ablations.start_batch_size": 4},
    "03_rl": {"rl_experiments.steps": 1, "rl_experiments.strategy_steps": 1, "rl_experiments.strategy_seeds": 2, "rl_experiments.trajectory_eval_every": 0, "rl.group_size": 2, "rl.batch_prompts": 2, "rl.gen_prompts_per_call": 2, "rl.max_gen_calls_per_step": 2, "rl.max_new_tokens": 8, "rl_experiments.eval_problems_per_domain": 3, "rl_experiments.eval_samples": 1, "rl_experiments.pool_per_domain": 4, "rl_experiments.attack_suite": False, "curation.pass_rate_k": 2, "curation.majority_drop_at_least": 2},
    "04_throughput": {"throughput.check_prompts": 4, "throughput.check_new_tokens": 8},
    "05_deepconf": {"deepconf.n_init": 8, "deepconf.budget": 16, "deepconf.window": 4, "deepconf.tail_tokens": 4,
                    "deepconf.online_batch_size": 8, "deepconf_experiments.candidates": 2,
                    "deepconf_experiments.max_problems": 2,
                    "deepconf_experiments.budgets": [16], "deepconf_experiments.pool_size": 16,
                    "deepconf_experiments.n_resamples": 4, "deepconf_experiments.live_problems": 1,
                    "deepconf_experiments.allow_unqualified": True},
    "06_safety": {"safety.max_new_tokens": 16},
}


@pytest.mark.slow
@pytest.mark.parametrize("section", sorted(NOTEBOOKS))
def test_notebook_runs_at_a_shrunken_tiny_preset(section, tmp_path):
    import papermill as pm

    env_root = tmp_path / "results"
    os.environ["FALCON_H1R_RESULTS"] = str(env_root)
    try:
        out = tmp_path / "out.ipynb"
        pm.execute_notebook(str(ROOT / "notebooks" / NOTEBOOKS[section]), str(out), kernel_name="python3",
                            parameters={"preset": "tiny", "overrides": {**FAST, **FAST_SECTION[section]}}, cwd=str(ROOT / "notebooks"),
                            progress_bar=False)
    finally:
        del os.environ["FALCON_H1R_RESULTS"]
    written = env_root / "tiny" / section
    assert (written / "provenance.json").exists()
    assert not (ROOT / "results" / "tiny" / section / "out.ipynb").exists()
