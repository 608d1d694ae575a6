"""Reading the throughput study's records: the tables and headline figures notebook 04 and
``bench/throughput.py`` share (one computation for ``results/small/04_throughput/summary.json``).

A record is one dict per measurement, as :class:`falcon_h1r.sections.throughput.Study` writes them: ``kind``
``device`` / ``bandwidth`` / ``model`` / ``capacity`` / ``prefill`` / ``step`` / ``hf_generate``, with its
``status``. Tokens/s come from :func:`falcon_h1r.throughput.integrate_steps` and
:func:`falcon_h1r.throughput.tokens_per_s`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from falcon_h1r.throughput import integrate_steps, tokens_per_s

RECORDS_FILE = "throughput_records.json"
ENGINE_CHECK_FILE = "engine_check.json"
DECODE_PROFILE_FILE = "decode_profile.json"
# The headline figures: always written (None when not measured) so a rerun never leaves stale values. A figure
# "at the max batch" is taken at the largest batch that fits one GPU (capped by the recipe's largest batch; the
# batch used is written beside it as ``..._batch``); a figure "at bsN" only when batch N itself was measured.
HEADLINE = ("gpu_name", "engine_over_hf_generate_bs128", "step_time_over_roofline_bs32",
            "step_time_over_roofline_worst_batch_ge32", "hybrid_max_batch_8k_16k",
            "hybrid_tok_s_per_gpu_max_batch_8k_16k", "hybrid_bf16_state_max_batch_8k_16k",
            "hybrid_bf16_state_tok_s_per_gpu_max_batch_8k_16k", "transformer_max_batch_8k_16k",
            "transformer_tok_s_per_gpu_max_batch_8k_16k", "hybrid_over_transformer_max_batch_8k_16k",
            "hybrid_over_transformer_max_batch_512_32k", "hybrid_over_transformer_bs2_8k_16k",
            "hybrid_over_transformer_bs2_512_32k", "hybrid_over_transformer_bs8_8k_16k",
            "hybrid_over_transformer_bs16_8k_16k")
SETTING_TAGS = (("8K->16K", "8k_16k"), ("512->32K", "512_32k"))
# step variants that are whole configurations (every position, integrated into tokens/s): the recipe's sampled
# step, and the same step with the other SSM state dtype
STATE_VARIANTS = {"sample": None, "ssm_bf16": "bfloat16", "ssm_fp32": "float32"}


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a study: one ``throughput_records*.json`` file, or a folder holding one or more (runs
    split over several GPU calls, e.g. ``--models``; read in name order and concatenated)."""
    import json

    path = Path(path)
    files = sorted(path.glob("throughput_records*.json")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no throughput records at {path}; bench/throughput.py measures them on a GPU "
                                "(the README's GPU section says how)")
    records: list[dict[str, Any]] = []
    for f in files:
        data = json.loads(f.read_text())
        records += data["records"] if isinstance(data, dict) else data
    return records


def records_dir(preset: str = "small") -> Path:
    """Where a preset's study records live: the results root in use, else the repository's committed copy."""
    from falcon_h1r.env import REPO_ROOT
    from falcon_h1r.results import RESULTS_ROOT

    for root in (RESULTS_ROOT, REPO_ROOT / "results"):
        d = Path(root) / preset / "04_throughput"
        if any(d.glob("throughput_records*.json")):
            return d
    return Path(RESULTS_ROOT) / preset / "04_throughput"


def _role(records: list[dict[str, Any]]) -> dict[str, str]:
    """model name -> 'hybrid' | 'transformer' (from each model's family)."""
    out = {}
    for r in records:
        if r.get("kind") == "model" and r.get("family"):
            out[r["model"]] = "hybrid" if r["family"] == "falcon_h1" else "transformer"
    return out


def step_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per timed position (status ok); a position timed twice keeps its last record."""
    rows = [r for r in records if r.get("kind") == "step" and r.get("status") == "ok"]
    cols = ["model", "setting", "batch", "variant", "position", "kv_len", "step_s", "step_s_min", "roofline_s",
            "bytes", "bytes_weights", "bytes_kv", "bytes_states", "input_len", "output_len"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    if len(df):  # a position measured by two calls (records files read together): the later file's
        df = df.drop_duplicates(["model", "setting", "batch", "variant", "position"], keep="last")
        df = df.reset_index(drop=True)
        df["step_over_roofline"] = df["step_s"] / df["roofline_s"]
    return df


def prefill_seconds(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(r["model"], r["setting"]): r["s_per_sequence"] for r in records
            if r.get("kind") == "prefill" and r.get("status") == "ok"}


def capacities(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per capacity record; ``ssm_state_dtype`` is the SSM state the count assumed (older records without
    it used the recipe's float32)."""
    cols = ["model", "setting", "ssm_state_dtype", "context", "per_sequence_bytes", "free_bytes", "max_batch",
            "alloc_limit", "tried_batch", "verified"]
    rows = [{c: r.get(c) for c in cols} for r in records if r.get("kind") == "capacity"]
    df = pd.DataFrame(rows, columns=cols)
    df["ssm_state_dtype"] = df["ssm_state_dtype"].fillna("float32")
    return df


def _variant_state(variant: str, recipe_state: str) -> str | None:
    """The SSM state dtype of a whole-configuration variant (None for the single-position probes)."""
    if variant not in STATE_VARIANTS:
        return None
    return STATE_VARIANTS[variant] or recipe_state


def config_table(records: list[dict[str, Any]], positions_needed: int | None = None) -> pd.DataFrame:
    """One row per (model, setting, batch, variant): status, integrated decode time, tokens/s per GPU (the
    sampled step with the recipe's SSM state, ``sample``, and with the other state dtype, ``ssm_bf16`` /
    ``ssm_fp32``), step time over the roofline (mean over positions), the largest batch that fits with that
    state and whether this row was measured there (``is_max_batch``)."""
    steps = step_table(records)
    pre = prefill_seconds(records)
    caps = capacities(records)
    recipe_state = next((r.get("ssm_state_dtype") for r in records if r.get("kind") == "model"
                         and r.get("ssm_state_dtype")), "float32")
    statuses: dict[tuple, list[str]] = {}
    at_max: dict[tuple, bool] = {}
    for r in records:
        if r.get("kind") == "step":
            k = (r["model"], r["setting"], r["batch"], r.get("variant", "sample"))
            statuses.setdefault(k, []).append(r.get("status"))
            at_max[k] = at_max.get(k, False) or bool(r.get("is_max_batch"))
    rows = []
    for (model, setting, batch, variant), seen in statuses.items():
        bad = [s for s in seen if s != "ok"]
        status = "ok" if not bad else (bad[0] if len(bad) == len(seen) else f"partial ({bad[0]})")
        sub = steps[(steps["model"] == model) & (steps["setting"] == setting) & (steps["batch"] == batch)
                    & (steps["variant"] == variant)] if len(steps) else steps
        state = _variant_state(variant, recipe_state)
        row: dict[str, Any] = {"model": model, "setting": setting, "batch": batch, "variant": variant,
                               "ssm_state_dtype": state, "status": status, "positions": len(sub),
                               "is_max_batch": at_max[(model, setting, batch, variant)]}
        cap = caps[(caps["model"] == model) & (caps["setting"] == setting)
                   & (caps["ssm_state_dtype"] == (state or recipe_state))] if len(caps) else caps
        row["max_batch"] = int(cap["max_batch"].iloc[-1]) if len(cap) else None
        if len(sub):
            inp, out = int(sub["input_len"].iloc[0]), int(sub["output_len"].iloc[0])
            row["step_ms_first"] = 1e3 * float(sub.sort_values("position")["step_s"].iloc[0])
            row["step_ms_last"] = 1e3 * float(sub.sort_values("position")["step_s"].iloc[-1])
            row["step_over_roofline"] = float(sub["step_over_roofline"].mean()) if sub["roofline_s"].notna().all() else None
            complete = positions_needed is None or len(sub) >= positions_needed
            if state is not None and complete and len(sub) >= 2:
                decode = integrate_steps(sub["position"].tolist(), sub["step_s"].tolist(), inp, inp + out)
                p = pre.get((model, setting))
                row.update(decode_s=decode, prefill_s_per_seq=p, prefill_included=p is not None,
                           tok_s_per_gpu=tokens_per_s(batch, out, decode, p))
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["model", "setting", "variant", "batch"]).reset_index(drop=True)
    return df


def _measured(table: pd.DataFrame, model: str | None, setting: str, variant: str = "sample") -> pd.DataFrame:
    """Rows of ``table`` with a tokens/s figure for this model, setting and variant."""
    if model is None or not len(table) or "tok_s_per_gpu" not in table:
        return table.iloc[:0]
    return table[(table["model"] == model) & (table["setting"] == setting) & (table["variant"] == variant)
                 & table["tok_s_per_gpu"].notna()]


def _at_batch(table: pd.DataFrame, model: str | None, setting: str, batch: int) -> float | None:
    """tokens/s measured at exactly ``batch`` (None when that batch was not measured or does not fit)."""
    sub = _measured(table, model, setting)
    sub = sub[sub["batch"] == batch] if len(sub) else sub
    return float(sub["tok_s_per_gpu"].iloc[0]) if len(sub) else None


def _at_max_batch(table: pd.DataFrame, model: str | None, setting: str,
                  variant: str = "sample") -> tuple[float | None, int | None, float | None]:
    """(tokens/s, batch, step over roofline) at the largest batch measured for this variant: the study's
    max-batch configuration (the largest that fits, capped by the recipe's largest batch)."""
    sub = _measured(table, model, setting, variant)
    if not len(sub):
        return None, None, None
    flagged = sub[sub["is_max_batch"]]
    row = (flagged if len(flagged) else sub).sort_values("batch").iloc[-1]
    ratio = row.get("step_over_roofline")
    return float(row["tok_s_per_gpu"]), int(row["batch"]), None if pd.isna(ratio) else float(ratio)


def summarize(records: list[dict[str, Any]], positions_needed: int | None = None) -> dict[str, Any]:
    """The headline figures (flat name -> number/string) for ``summary.json``.

    ``hybrid``/``transformer`` are the Falcon-H1 and Qwen3 architectures; ``hybrid_bf16_state`` the hybrid with
    a bfloat16 SSM state (vLLM's default for Mamba caches). ``..._max_batch_<setting>`` is the largest batch that
    fits one GPU, and ``..._tok_s_per_gpu_max_batch_<setting>`` the tokens/s measured there (the batch used is
    ``..._tok_s_per_gpu_max_batch_<setting>_batch``, the same unless the recipe's largest batch is smaller);
    ``..._bs<N>_...`` figures exist only where batch N itself was measured.
    """
    role = _role(records)
    hybrid = next((m for m, r in role.items() if r == "hybrid"), None)
    transformer = next((m for m, r in role.items() if r == "transformer"), None)
    table = config_table(records, positions_needed)
    caps = capacities(records)
    out: dict[str, Any] = dict.fromkeys(HEADLINE)
    dev = next((r for r in records if r.get("kind") == "device"), {})
    out["gpu_name"] = dev.get("gpu_name") or "cpu"
    bw = next((r for r in records if r.get("kind") == "bandwidth" and r.get("bytes_per_s")), None)
    if bw:
        out["hbm_copy_bandwidth_gb_s"] = bw["bytes_per_s"] / 1e9
    hf = next((r for r in records if r.get("kind") == "hf_generate" and r.get("status") == "ok"), None)
    if hf:
        out["engine_over_hf_generate_bs128"] = hf["end_to_end_ratio"]
        if hf.get("step_ratio"):
            out["engine_over_hf_decode_step_bs128"] = hf["step_ratio"]
        out["engine_over_hf_generate_batch"] = hf.get("batch")
        if hf.get("end_to_end_ratio_bf16_state"):
            out["engine_bf16_state_over_hf_generate_bs128"] = hf["end_to_end_ratio_bf16_state"]
    recipe_state = next((r.get("ssm_state_dtype") for r in records if r.get("kind") == "model"
                         and r.get("ssm_state_dtype")), "float32")
    other = "ssm_bf16" if recipe_state == "float32" else "ssm_fp32"
    arms = [("hybrid", hybrid, "sample", recipe_state), ("transformer", transformer, "sample", "float32"),
            (f"hybrid_{'bf16' if other == 'ssm_bf16' else 'fp32'}_state", hybrid, other,
             "bfloat16" if other == "ssm_bf16" else "float32")]
    batches = sorted({int(b) for b in table["batch"]}) if len(table) else []
    for setting, tag in SETTING_TAGS:
        best: dict[str, float | None] = {}
        for who, model, variant, state in arms:
            cap = caps[(caps["model"] == model) & (caps["setting"] == setting)
                       & (caps["ssm_state_dtype"] == state)] if len(caps) else caps
            if len(cap):
                out[f"{who}_max_batch_{tag}"] = int(cap["max_batch"].iloc[-1])
            v, used, ratio = _at_max_batch(table, model, setting, variant)
            best[who] = v
            if v is not None:
                out[f"{who}_tok_s_per_gpu_max_batch_{tag}"] = v
                out[f"{who}_tok_s_per_gpu_max_batch_{tag}_batch"] = used
                out[f"{who}_step_time_over_roofline_max_batch_{tag}"] = ratio
        if best.get("hybrid") is not None and best.get("transformer") is not None:
            out[f"hybrid_over_transformer_max_batch_{tag}"] = best["hybrid"] / best["transformer"]
        for b in batches:
            h, t = _at_batch(table, hybrid, setting, b), _at_batch(table, transformer, setting, b)
            if h is not None:
                out[f"hybrid_tok_s_per_gpu_bs{b}_{tag}"] = h
            if t is not None:
                out[f"transformer_tok_s_per_gpu_bs{b}_{tag}"] = t
            if h is not None and t is not None:
                out[f"hybrid_over_transformer_bs{b}_{tag}"] = h / t
    steps = step_table(records)
    if len(steps) and hybrid is not None:
        for setting, _ in SETTING_TAGS:
            sub = steps[(steps["model"] == hybrid) & (steps["variant"] == "sample") & (steps["setting"] == setting)
                        & steps["roofline_s"].notna() & (steps["batch"] >= 32)]
            if not len(sub):
                continue
            per_batch = sub.groupby("batch")["step_over_roofline"].mean()
            if 32 in per_batch.index:
                out["step_time_over_roofline_bs32"] = float(per_batch[32])
            out["step_time_over_roofline_worst_batch_ge32"] = float(per_batch.max())
            out["step_time_over_roofline_worst_batch_ge32_batch"] = int(per_batch.idxmax())
            out["step_time_over_roofline_setting"] = setting
            break
    return out


def run_label(device: dict[str, Any]) -> str:
    """A study run's name in tables: its GPU, the commit it measured and its date (from the run's device record)."""
    commit = str((device.get("git") or {}).get("commit") or "unknown")[:7]
    return f"{device.get('gpu_name') or 'cpu'}, commit {commit}, {str(device.get('utc') or '')[:10] or 'undated'}"


def split_runs(records: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The records of each study run (a run starts at its ``device`` record; :func:`load_records` reads run files
    whole), newest first. Figures are only ever compared within one run: two GPUs, or two versions of the
    engine, do not make one table."""
    runs: list[list[dict[str, Any]]] = []
    for r in records:
        if r.get("kind") == "device" or not runs:
            runs.append([])
        runs[-1].append(r)

    def device(run: list[dict[str, Any]]) -> dict[str, Any]:  # empty for records read without a device record
        return run[0] if run[0].get("kind") == "device" else {}

    runs.sort(key=lambda run: str(device(run).get("utc") or ""), reverse=True)
    return [(run_label(device(run)), run) for run in runs]


def comparison_run(records: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]] | None:
    """The newest run that measured both architectures (the Fig. 8 comparison needs them on one GPU)."""
    for label, run in split_runs(records):
        if set(_role(run).values()) >= {"hybrid", "transformer"}:
            return label, run
    return None


def summarize_runs(records: list[dict[str, Any]],
                   positions_needed: int | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """The headline figures over several runs: each figure from the newest run that measured it, every figure
    computed within its own run (:func:`summarize`), so a ratio never divides one GPU's tokens/s by another's.
    Returns the flat summary (``gpu_name`` the newest run's GPU; ``throughput_runs`` every run, newest first)
    and the table of which run each figure came from."""
    runs = split_runs(records)
    summaries = [summarize(run, positions_needed) for _, run in runs]
    merged: dict[str, Any] = dict.fromkeys(HEADLINE)
    rows = []
    for (label, _), summary in zip(runs, summaries):
        for key, value in summary.items():
            if key == "gpu_name" or value is None or merged.get(key) is not None:
                continue
            merged[key] = value
            rows.append({"figure": key, "value": value, "run": label})
    merged["gpu_name"] = next((s["gpu_name"] for s in summaries if s["gpu_name"] != "cpu"), "cpu")
    merged["throughput_runs"] = " | ".join(label for label, _ in runs)
    return merged, pd.DataFrame(rows, columns=["figure", "value", "run"])


def paper_comparison(records: list[dict[str, Any]], fig8: pd.DataFrame,
                     positions_needed: int | None = None) -> pd.DataFrame:
    """The paper's vLLM tokens/s/GPU beside ours (one GPU, our engine) per setting, batch and model."""
    table = config_table(records, positions_needed)
    rows = []
    for _, p in fig8.iterrows():
        mine = table[(table["model"] == p["model"]) & (table["setting"] == p["setting"])
                     & (table["batch"] == p["batch_size"]) & (table["variant"] == "sample")] if len(table) else table
        ours = float(mine["tok_s_per_gpu"].iloc[0]) if len(mine) and "tok_s_per_gpu" in mine and \
            pd.notna(mine["tok_s_per_gpu"].iloc[0]) else None
        status = str(mine["status"].iloc[0]) if len(mine) else "not measured"
        rows.append({"setting": p["setting"], "batch_size": int(p["batch_size"]), "model": p["model"],
                     "paper_tok_s_per_gpu": float(p["tok_s_per_gpu"]), "paper_parallelism": p["parallelism"],
                     "ours_tok_s_per_gpu_1xGPU": ours, "ours_status": status})
    return pd.DataFrame(rows)


__all__ = ["RECORDS_FILE", "ENGINE_CHECK_FILE", "DECODE_PROFILE_FILE", "HEADLINE", "SETTING_TAGS", "load_records",
           "records_dir", "run_label", "split_runs", "comparison_run", "summarize_runs",
           "step_table", "prefill_seconds", "capacities", "config_table", "summarize", "paper_comparison"]
