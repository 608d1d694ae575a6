"""Section 04 (paper Appendix B, Fig. 8): what notebook 04 calls, and where each of its numbers is computed.

* :func:`architecture_params`: the two architectures' parameter counts (:func:`falcon_h1r.throughput.param_count`);
* :func:`engine_check`: the engine against transformers on the preset's base model
  (:func:`falcon_h1r.inference.engine_check.compare_with_hf`), and :func:`state_dtype_check` its bfloat16 SSM state
  against the float32 one (:func:`falcon_h1r.inference.engine_check.compare_state_dtypes`); :func:`gpu_engine_checks` reads the GPU's
  (``bench/engine_check.py``);
* :func:`measure_or_load`: the one-GPU study's records (:class:`~falcon_h1r.sections.throughput_study.Study`,
  which ``bench/throughput.py`` runs): measured here on a GPU, else the committed ones;
* the tables and headline figures of :mod:`falcon_h1r.sections.throughput_records`
  (:func:`~falcon_h1r.sections.throughput_records.config_table`,
  :func:`~falcon_h1r.sections.throughput_records.summarize`, tokens/s from
  :func:`falcon_h1r.throughput.integrate_steps`), with :func:`capacity_view`, :func:`step_times`,
  :func:`hf_generate_table`, :func:`paper_and_ours`, :func:`paper_fig8_points` and :func:`decode_profile`
  (``bench/decode_profile.py``'s record) shaping them for display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from falcon_h1r.config import Preset
from falcon_h1r.sections.throughput_records import (
    DECODE_PROFILE_FILE,
    ENGINE_CHECK_FILE,
    HEADLINE,
    RECORDS_FILE,
    capacities,
    comparison_run,
    config_table,
    load_records,
    paper_comparison,
    records_dir,
    split_runs,
    step_table,
    summarize,
    summarize_runs,
)
from falcon_h1r.sections.throughput_study import Study, ThroughputRecipe
from falcon_h1r.throughput import HYBRID, TRANSFORMER, param_count

SECTION = "04_throughput"


def throughput_recipe(preset: Preset) -> ThroughputRecipe:
    """The preset's ``throughput`` block."""
    return preset.section("throughput", ThroughputRecipe)


# ============================================================================ what notebook 04 shows
def architecture_params() -> dict[str, float]:
    """Parameters (billions) of the two full architectures, counted on the meta device
    (:func:`falcon_h1r.throughput.param_count`). Paper Table 8: 7.59 B for Falcon-H1R-7B."""
    from falcon_h1r.models import falcon_h1r_7b_config, qwen3_8b_config

    return {"falcon_h1r_7b_params_b": param_count(falcon_h1r_7b_config()) / 1e9,
            "qwen3_8b_params_b": param_count(qwen3_8b_config()) / 1e9}


def engine_check(preset: Preset, recipe: ThroughputRecipe, base: Any = None) -> dict[str, Any]:
    """Greedy decoding of the first ``check_prompts`` held-out prompts with the preset's base model, through
    the engine and through transformers' cached loop
    (:func:`falcon_h1r.inference.engine_check.compare_with_hf`); one torch thread on CPU (a tiny model decodes
    faster on one thread than on two shared cores)."""
    from falcon_h1r.inference.engine_check import compare_with_hf
    from falcon_h1r.sections.common import get_base_model, held_out, model_device, torch_threads

    base = base if base is not None else get_base_model(preset, progress=False)
    tok = base.tokenizer
    problems = held_out(base.sets, preset)[: recipe.check_prompts]
    prompt_ids = [tok.encode(tok.prompt(p["question"])) for p in problems]
    with torch_threads(1, model_device(base.model)):
        return compare_with_hf(base.model, prompt_ids, max_new_tokens=recipe.check_new_tokens, eos_id=tok.eos_id,
                               pad_id=tok.pad_id)


def state_dtype_check(preset: Preset, recipe: ThroughputRecipe, base: Any = None) -> dict[str, Any]:
    """The engine with a bfloat16 SSM state against the float32 state, greedy, on the same held-out prompts and
    base model as :func:`engine_check` (:func:`falcon_h1r.inference.engine_check.compare_state_dtypes`): token
    agreement and top-k log-prob gaps, and each path against transformers' full forward over its own tokens."""
    from falcon_h1r.inference.engine_check import compare_state_dtypes
    from falcon_h1r.sections.common import get_base_model, held_out, model_device, torch_threads

    base = base if base is not None else get_base_model(preset, progress=False)
    tok = base.tokenizer
    problems = held_out(base.sets, preset)[: recipe.check_prompts]
    prompt_ids = [tok.encode(tok.prompt(p["question"])) for p in problems]
    with torch_threads(1, model_device(base.model)):
        return compare_state_dtypes(base.model, prompt_ids, max_new_tokens=recipe.check_new_tokens,
                                    eos_id=tok.eos_id, pad_id=tok.pad_id)


def engine_check_summary(check: dict[str, Any], states: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` figures of :func:`engine_check` and (``states``) :func:`state_dtype_check`."""
    out = {"engine_greedy_identical": int(check["tokens_identical"]),
           "engine_max_abs_logprob_diff": check["max_abs_logprob_diff_prefix"],
           "engine_max_abs_top_logprob_diff_teacher_forced": check["max_abs_top_logprob_diff_teacher_forced"]}
    if states is not None:
        out.update({"bf16_state_greedy_rows_identical_frac": states["rows_identical_frac"],
                    "bf16_state_greedy_prefix_agreement_frac": states["greedy_prefix_agreement_frac"],
                    "bf16_state_max_abs_top_logprob_diff": states["max_abs_top_logprob_diff_prefix"],
                    "bf16_state_mean_abs_top_logprob_diff": states["mean_abs_top_logprob_diff_prefix"],
                    "bf16_state_mean_abs_top_logprob_err_vs_full_forward":
                        states["bfloat16_state_mean_abs_top_logprob_err_vs_full_forward"],
                    "fp32_state_mean_abs_top_logprob_err_vs_full_forward":
                        states["float32_state_mean_abs_top_logprob_err_vs_full_forward"]})
    return out


GPU_CHECK_COLUMNS = ["name", "status", "tokens_identical", "rows_identical_frac", "max_abs_logprob_diff_prefix",
                     "max_abs_top_logprob_diff_teacher_forced", "hf_max_abs_top_logprob_diff_teacher_forced",
                     "engine_tokens_are_hf_argmax_frac", "hf_tokens_are_full_forward_argmax_frac", "wall_s"]


def gpu_engine_checks(directory: str | Path) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The committed ``engine_check.json`` of ``bench/engine_check.py`` (None when there is none) and its
    checks as a table."""
    from falcon_h1r.results import read_json

    path = Path(directory) / ENGINE_CHECK_FILE
    if not path.exists():
        return None
    record = read_json(path)
    checks = pd.DataFrame(record["checks"])
    return record, checks[[c for c in GPU_CHECK_COLUMNS if c in checks]]


def measure_or_load(preset: Preset, recipe: ThroughputRecipe, out_dir: str | Path,
                    mode: str) -> tuple[list[dict[str, Any]], Path]:
    """The study's records and where they are: measured into ``out_dir`` when this machine computes a GPU
    preset (``mode`` "compute", not tiny, a CUDA device), else the small preset's committed records
    (:func:`~falcon_h1r.sections.throughput_records.records_dir`). Raises FileNotFoundError when there are none."""
    import torch

    if mode == "compute" and preset.name != "tiny" and torch.cuda.is_available():
        return Study(recipe, out_dir, device="cuda").run(), Path(out_dir)
    directory = records_dir("small")
    return load_records(directory), directory


def capacity_view(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Largest batch per model, setting and SSM state dtype, with GiB per sequence and GiB free after the weights."""
    caps = capacities(records)
    caps["GiB_per_sequence"] = caps["per_sequence_bytes"] / 2**30
    caps["free_GiB_after_weights"] = caps["free_bytes"] / 2**30
    return caps[["model", "setting", "ssm_state_dtype", "context", "GiB_per_sequence", "free_GiB_after_weights",
                 "max_batch", "tried_batch", "verified"]]


def step_times(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The timed decode steps of whole configurations (the sampled step with the recipe's SSM state, and with the
    other state dtype) with their time and roofline in milliseconds; ``line`` names the model and, for the other
    state, its dtype (what a figure's legend shows)."""
    from falcon_h1r.sections.throughput_records import STATE_VARIANTS

    steps = step_table(records)
    sub = steps[steps["variant"].isin(list(STATE_VARIANTS))].copy()
    sub["step_ms"] = 1e3 * sub["step_s"]
    sub["roofline_ms"] = 1e3 * sub["roofline_s"]
    sub["line"] = [m if v == "sample" else f"{m}, {STATE_VARIANTS[v]} SSM state"
                   for m, v in zip(sub["model"], sub["variant"])]
    return sub


def hf_generate_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """transformers' ``generate`` against the engine, one column per record (its timing breakdown left out)."""
    hf = [r for r in records if r.get("kind") == "hf_generate"]
    return pd.DataFrame(hf).drop(columns=["engine_timing"], errors="ignore").T


def paper_and_ours(fig8: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The paper's tokens/s/GPU and ours (``config_table``'s sampled rows) in one long frame for one plot."""
    ours = table[(table["variant"] == "sample")] if "tok_s_per_gpu" in table else table.iloc[:0]
    return pd.concat([fig8.assign(source="paper (vLLM, multi-GPU)", tok_s=fig8["tok_s_per_gpu"]),
                      ours.rename(columns={"batch": "batch_size"}).assign(source="ours (1 GPU, engine)",
                                                                         tok_s=ours.get("tok_s_per_gpu"))])


def paper_fig8_points(fig8: pd.DataFrame) -> dict[str, float]:
    """The paper's figures our headline stands beside (named ``paper_...``, at the paper's exact batches):
    Falcon-H1R-7B 8K->16K tokens/s/GPU at batch 64 and 128, and Falcon/Qwen3 at batch 128 in both settings."""
    p = fig8.set_index(["model", "setting", "batch_size"])["tok_s_per_gpu"]
    return {"paper_hybrid_tok_s_per_gpu_bs64_8k_16k": float(p[(HYBRID, "8K->16K", 64)]),
            "paper_hybrid_tok_s_per_gpu_bs128_8k_16k": float(p[(HYBRID, "8K->16K", 128)]),
            "paper_hybrid_over_transformer_bs128_8k_16k": float(p[(HYBRID, "8K->16K", 128)]
                                                                / p[(TRANSFORMER, "8K->16K", 128)]),
            "paper_hybrid_over_transformer_bs128_512_32k": float(p[(HYBRID, "512->32K", 128)]
                                                                 / p[(TRANSFORMER, "512->32K", 128)])}


def decode_profile(directory: str | Path) -> dict[str, Any] | None:
    """``bench/decode_profile.py``'s record (None when there is none): the eager step's kernel time per category
    (``categories``; None when the profile failed, ``kernels["error"]`` says why), the captured step (ms) and its
    ratio to the roofline per engine path (attention kernel, plain or compiled glue, SSM state update and state
    dtype), and the SSM state update alone per kernel (``ssm_update``: microseconds per layer and GB/s)."""
    from falcon_h1r.results import read_json

    path = Path(directory) / DECODE_PROFILE_FILE
    if not path.exists():
        return None
    prof = read_json(path)
    k = prof.get("kernels") or {}
    cats = None
    if "per_category_s" in k:
        cats = pd.DataFrame({"ms": {c: 1e3 * v for c, v in k["per_category_s"].items()},
                             "kernels": k["per_category_count"]}).sort_values("ms", ascending=False)
    steps = pd.DataFrame([r for r in prof["steps"] if "step_s" in r])
    if len(steps) and "path" not in steps:  # records before paths were named: mamba-ssm's state update
        state = steps.get("ssm_state_dtype", pd.Series(index=steps.index, dtype=object)).fillna("float32")
        steps["path"] = [f"{a}:{'compiled' if c else 'plain'}:mamba_ssm:{st}"
                         for a, c, st in zip(steps["attention"], steps["compiled"], state)]
    if len(steps):
        steps["step_ms"] = 1e3 * steps["step_s"]
    pivot = (lambda v: steps.pivot_table(index=["batch", "context"], columns="path", values=v)) if len(steps) else \
        (lambda v: pd.DataFrame())
    ssm = None
    if prof.get("ssm_update") and "roofline_s" in prof["ssm_update"][0]:
        rows = []
        for r in prof["ssm_update"]:
            row = {"batch": r["batch"], "state": r["state_dtype"], "roofline_us": 1e6 * r["roofline_s"]}
            for kernel in ("triton", "mamba_ssm"):
                if "s_per_layer" in r.get(kernel, {}):
                    row[f"{kernel}_us"] = 1e6 * r[kernel]["s_per_layer"]
                    row[f"{kernel}_GB_s"] = r[kernel]["bytes_per_s"] / 1e9
            rows.append(row)
        ssm = pd.DataFrame(rows).set_index(["batch", "state"]).round(1)
    return {"gpu": prof["gpu"], "kernels": k, "categories": cats, "step_ms": pivot("step_ms"),
            "over_roofline": pivot("step_over_roofline"), "ssm_update": ssm, "path": path}


__all__ = [
    "SECTION", "ThroughputRecipe", "Study", "throughput_recipe", "architecture_params", "engine_check",
    "state_dtype_check", "engine_check_summary", "gpu_engine_checks", "measure_or_load", "capacity_view", "step_times",
    "hf_generate_table", "paper_and_ours", "paper_fig8_points", "decode_profile", "HYBRID", "TRANSFORMER",
    "HEADLINE", "RECORDS_FILE", "ENGINE_CHECK_FILE", "DECODE_PROFILE_FILE", "load_records", "records_dir",
    "step_table", "capacities", "config_table", "summarize", "paper_comparison", "split_runs", "comparison_run",
    "summarize_runs",
]
