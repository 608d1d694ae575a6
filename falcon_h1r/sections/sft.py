"""Section 02, supervised fine-tuning (paper §2): what notebook 02 computes or, off the machine a preset needs,
renders from the committed records.

- :func:`base_training`: the preset's independently trained SFT bases (``eval.base_seeds``;
  ``falcon_h1r.sections.common.get_base_model``: trained by ``falcon_h1r.sft.train_sft``, evaluated by
  ``falcon_h1r.evaluation.evaluate``), :func:`base_summary` their sampled pass@1 per domain at the paper's
  settings with an interval over bases (``falcon_h1r.stats.arm_mean``) and the teacher traces' token lengths,
  :func:`base_accuracy` the first base's held-out greedy accuracy with Wilson intervals
  (``falcon_h1r.evaluation.wilson_interval``);
- :func:`trainer_checks`: the trainer's two guarantees measured on the base model (packing without
  cross-contamination: ``falcon_h1r.sft.per_sample_losses``; balanced DP normalization:
  ``falcon_h1r.distributed.shard_indices``);
- :func:`ablations`, :func:`ablation_tables`, :func:`axis_findings` and :func:`curves`: the §2 grids from their common
  start (:mod:`~falcon_h1r.sections.sft_ablations`, :mod:`~falcon_h1r.sections.sft_ablation_data`), their statistics
  (:mod:`~falcon_h1r.sections.sft_findings`, through :mod:`falcon_h1r.stats`) and the claims scoreboard's
  statuses beside the paper's findings;
- :func:`gpu_record`: the committed GPU records of ``bench/train_throughput.py`` and ``scripts/sft_ddp.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from falcon_h1r.config import Preset
from falcon_h1r.distributed import shard_indices
from falcon_h1r.evaluation import wilson_interval
from falcon_h1r.results import RESULTS_ROOT, SectionWriter, read_json
from falcon_h1r.sections.common import BaseModel, get_base_models, model_device
from falcon_h1r.sections.common import open_section as common_open_section
from falcon_h1r.sections.sft_ablation_data import describe_start
from falcon_h1r.sections.sft_ablation_export import write_grid_records
from falcon_h1r.sections.sft_ablations import (Grid, SFTAblations, ablation_setup, load_ablations, prepare,
                                               resolve_grids, run_all, start_record)
from falcon_h1r.sections.sft_ablation_workers import start_workers, wait_for_workers, workers_alive
from falcon_h1r.sections.sft_findings import ablation_summary, arm_table, findings_table
from falcon_h1r.sections.sft_findings import curves as normalization_curves
from falcon_h1r.sft import SFTRecipe, collate_packed, examples_from_traces, per_sample_losses
from falcon_h1r.stats import Estimate, arm_mean
from falcon_h1r.tasks import teacher_records

SECTION = "02_sft"


def load_recipe(preset: Preset) -> SFTRecipe:
    """The preset's ``sft:`` block (how the trainer runs)."""
    return preset.section("sft", SFTRecipe)


@dataclass
class Section:
    """One run of notebook 02: the preset, its trainer and ablation recipes, whether this machine computes or
    renders the preset (:func:`falcon_h1r.sections.common.run_mode`), and the section's results writer."""

    cfg: Preset
    recipe: SFTRecipe
    ablations: SFTAblations
    mode: str  # "compute" | "render"
    writer: SectionWriter
    overrides: dict[str, Any] = field(default_factory=dict)  # the notebook's (grid workers get the same preset)


def open_section(preset: str, overrides: dict[str, Any] | None = None) -> Section:
    """Check the notebook's parameters and every block of the preset (``sections.common.open_section``), then
    read this section's two blocks."""
    run = common_open_section(preset, SECTION, overrides)
    return Section(run.cfg, load_recipe(run.cfg), load_ablations(run.cfg), run.mode, run.writer, dict(overrides or {}))


# ============================================================================== the base model
def committed_record(sec: Section, name: str) -> dict[str, Any]:
    """``<name>.json`` of this preset's committed results (not the staging copy a computing run writes to), for
    ``sft_ablations.bases: committed``; a clear error naming the file and the way out when it is absent."""
    path = RESULTS_ROOT / sec.cfg.name / SECTION / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"sft_ablations.bases: committed reads {path}, which does not exist; train the bases "
                                "here instead (sft_ablations.bases: train)")
    return read_json(path)


def base_training(sec: Section) -> tuple[list[BaseModel], list[dict[str, Any]]]:
    """The preset's SFT bases (one per ``eval.base_seeds``) and their training records (written to
    ``base_training.json``); in render mode, or when computing with ``sft_ablations.bases: committed``, no models
    and the committed records."""
    if sec.mode == "compute" and sec.ablations.bases == "train":
        bases = get_base_models(sec.cfg)
        infos = [b.info for b in bases]
        sec.writer.json("base_training", {"bases": infos})
        return bases, infos
    if sec.mode == "compute":  # the grid computes; the bases' part is the committed record, copied as it is
        record = committed_record(sec, "base_training")
        sec.writer.json("base_training", record)
    else:
        record = read_json(sec.writer.dir / "base_training.json")
    return [], record["bases"] if "bases" in record else [record]


def is_checkpoint(info: dict[str, Any]) -> bool:
    """A loaded checkpoint (paper preset): it has no training record of ours, only its benchmark results."""
    return bool(info.get("checkpoint"))


# the paper's tables that hold each benchmark's column (papers/), for the checkpoint view
PAPER_BENCHMARK_TABLES = ("table4_math", "table5_code", "table6_general")


def checkpoint_benchmarks(sec: Section, base: BaseModel | None) -> pd.DataFrame:
    """A loaded checkpoint's pass@1 on each of ``eval.benchmarks`` with the paper's protocol
    (``sections.common.benchmark_results``; computed, or read back in render mode), beside the paper's own
    Falcon-H1R-7B row of Tables 4-6. Written to ``checkpoint_benchmarks`` and into summary.json
    (``benchmark_pass1_<name>``)."""
    from falcon_h1r import papers
    from falcon_h1r.sections.common import benchmark_results

    if sec.mode == "compute":
        records = benchmark_results(sec.cfg, base)
        sec.writer.json("checkpoint_benchmarks", records)
    else:
        records = read_json(sec.writer.dir / "checkpoint_benchmarks.json")
    paper: dict[str, float] = {}
    for name in PAPER_BENCHMARK_TABLES:
        table = papers.load(name)
        row = table[table["model"].str.startswith("Falcon-H1R")]
        if len(row):
            paper.update({c: row.iloc[0][c] for c in table.columns if c != "model"})
    rows = [{"benchmark": b, "pass1_pct": 100 * r["pass1"], "n_problems": r["n_problems"], "n_samples": r["n_samples"],
             "protocol_n_samples": r["protocol_n_samples"], "max_new_tokens": r["max_new_tokens"],
             "capped": r["capped"], "paper_falcon_h1r_7b_pct": paper.get(b)} for b, r in records.items()]
    table = pd.DataFrame(rows)
    sec.writer.table("checkpoint_benchmarks", table, caption=f"Ours ({sec.cfg.name} preset: the checkpoint "
                     f"{sec.cfg.model.checkpoint}), pass@1 % per benchmark, beside the paper's Falcon-H1R-7B")
    sec.writer.summary({f"benchmark_pass1_{b}": r["pass1"] for b, r in records.items()})
    return table


def base_pass1_estimates(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Sampled pass@1 (the paper's T 0.6, top-p 0.95) per domain: the mean over bases, with a 95 % interval
    over bases and problems (``falcon_h1r.stats.arm_mean``, ``unit="bases"``). Empty for records made before
    bases were sampled."""
    import numpy as np

    if not infos or any("sampled" not in i for i in infos):
        return {}
    out = {}
    domains = sorted(infos[0]["sampled"]["pass1_by_domain"])
    for d in domains:
        ids = sorted(pid for pid in infos[0]["sampled"]["per_problem"] if pid.startswith(f"{d}-"))
        rates = np.array([[i["sampled"]["per_problem"][pid] for pid in ids] for i in infos], dtype=float)
        out[d] = arm_mean(rates, unit="bases")
    return out


def base_summary(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The bases' headline figures for summary.json: the first base's training and greedy accuracy, the sampled
    pass@1 per domain over all bases (``base_pass1_<domain>`` with its interval keys), ``base_seeds``, and the
    SFT traces' token lengths (``sft_trace_tokens_p10/median/p90``)."""
    info = infos[0]
    out = {
        "base_params": info["params"], "base_train_steps": info["steps"],
        "base_greedy_acc_before": info["greedy_acc_before"], "base_greedy_acc_after": info["greedy_acc_after"],
        "base_majority_answer_baseline": info["majority_answer_baseline"],
        "base_train_wall_s": info["train_wall_s"], "base_seeds": len(infos),
        **{f"base_greedy_acc_after_{d}": v for d, v in info["greedy_acc_after_by_domain"].items()},
    }
    for d, est in base_pass1_estimates(infos).items():
        out.update(est.summary(f"base_pass1_{d}"))
    if "trace_tokens" in info:
        out.update({f"sft_trace_tokens_{q}": info["trace_tokens"][q] for q in ("p10", "median", "p90", "max")})
    return out


def base_pass1_by_level(infos: list[dict[str, Any]], preset: Preset) -> pd.DataFrame:
    """Sampled pass@1 per domain (rows) and difficulty level (columns), averaged over the bases: the testbed's
    calibration view (which levels sit at the ceiling or the floor). The held-out problems' levels are
    regenerated from the preset (deterministic), so records made before the per-level field exist read too."""
    from falcon_h1r.sections.common import first_per_domain
    from falcon_h1r.tasks import generate_split

    t = preset.tasks
    held = first_per_domain(generate_split(t.domains, t.difficulties, t.test_per_domain, "test", preset.seed),
                            preset.eval.problems_per_domain)
    cells: dict[tuple[str, int], list[float]] = {}
    for info in infos:
        rates = info.get("sampled", {}).get("per_problem", {})
        for p in held:
            if p["id"] in rates:
                cells.setdefault((p["domain"], int(p["difficulty"])), []).append(rates[p["id"]])
    if not cells:
        return pd.DataFrame()
    table = pd.Series({k: sum(v) / len(v) for k, v in cells.items()}).unstack()
    table.index.name, table.columns.name = "domain", "level"
    return table


def base_pass1_table(infos: list[dict[str, Any]]) -> pd.DataFrame:
    """Sampled pass@1 per base and domain, and per difficulty level (the calibration view)."""
    rows = []
    for i in infos:
        if "sampled" not in i:
            continue
        smp = i["sampled"]
        rows.append({"base_seed": i.get("seed", 0), **{f"pass1_{d}": v for d, v in smp["pass1_by_domain"].items()},
                     **{f"pass1_level{k}": v for k, v in sorted(smp["pass1_by_difficulty"].items(),
                                                                key=lambda kv: int(kv[0]))},
                     "mean_response_tokens": smp["mean_response_tokens"], "train_wall_s": i["train_wall_s"]})
    return pd.DataFrame(rows)


@dataclass
class BaseAccuracy:
    table: pd.DataFrame  # per domain and overall: n, before, after, after's 95 % Wilson interval
    math_row: dict[str, Any] | None  # the math row, when math is held out
    above_baseline: bool | None  # math's Wilson interval lies above the majority-answer baseline
    summary: dict[str, Any]  # the math figures for summary.json


def base_accuracy(info: dict[str, Any]) -> BaseAccuracy:
    """Held-out greedy accuracy before and after base training, per domain, with the after-training 95 %
    Wilson interval (``falcon_h1r.evaluation.wilson_interval``)."""
    n_dom = info["eval_problems"] // len(info["greedy_acc_after_by_domain"])  # held_out: the same count per domain
    rows = [{"domain": d, "n": n_dom, "before": info["greedy_acc_before_by_domain"][d], "after": v}
            for d, v in info["greedy_acc_after_by_domain"].items()]
    rows.append({"domain": "all", "n": info["eval_problems"], "before": info["greedy_acc_before"],
                 "after": info["greedy_acc_after"]})
    for r in rows:
        r["after_correct"] = round(r["after"] * r["n"])
        r["after_ci95_low"], r["after_ci95_high"] = wilson_interval(r["after_correct"], r["n"])
    math_row = next((r for r in rows if r["domain"] == "math"), None)
    above, summary = None, {}
    if math_row is not None:
        above = math_row["after_ci95_low"] > info["majority_answer_baseline"]
        summary = {"base_math_correct": math_row["after_correct"], "base_math_n": math_row["n"],
                   "base_math_ci95_low": math_row["after_ci95_low"]}
    return BaseAccuracy(pd.DataFrame(rows), math_row, above, summary)


# ============================================================================== the trainer's guarantees
def trainer_checks(sec: Section, base: BaseModel | None) -> dict[str, Any] | None:
    """Packing without cross-contamination and the per-token weights of the DP normalizations, measured on
    the base model (compute; written to ``trainer_checks.json``) or read back (render; None when no record)."""
    if base is not None and is_checkpoint(base.info):
        return None  # the checks are about our trainer on our base; a loaded checkpoint was not trained here
    if sec.mode != "compute":
        path = sec.writer.dir / "trainer_checks.json"
        return read_json(path) if path.exists() else None
    if base is None:  # computing with sft_ablations.bases: committed (no base model here): the committed record
        record = committed_record(sec, "trainer_checks")
        sec.writer.json("trainer_checks", record)
        return record
    import torch

    cfg, tok = sec.cfg, base.tokenizer
    probe = examples_from_traces(teacher_records(base.sets["test"][:12], cfg.tasks.teacher_style, cfg.seed),
                                 tok, cfg.train.max_seq_len)
    alone = per_sample_losses(base.model, probe, tok.pad_id, packing=False)
    packed = per_sample_losses(base.model, probe, tok.pad_id, packing=True, pack_len=3 * cfg.train.max_seq_len)
    # what position ids alone give: attention separated, the Mamba-2 state leaking across samples
    b = collate_packed(probe, tok.pad_id, 3 * cfg.train.max_seq_len)
    dev = model_device(base.model)
    with torch.no_grad():
        out = base.model(input_ids=b["input_ids"].to(dev), position_ids=b["position_ids"].to(dev), use_cache=False)
        lp = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, b["input_ids"][:, 1:, None].to(dev))[..., 0]
    seq, on = b["seq_ids"][:, 1:].to(dev), (b["labels"][:, 1:] != -100).to(dev)
    leaky = [float(-lp[(seq == i) & on].mean()) for i in range(len(probe))]
    packing = {"samples": len(probe), "rows": int(b["input_ids"].shape[0]),
               "max_abs_diff_packed_vs_alone": max(abs(x - y) for x, y in zip(packed, alone)),
               "max_abs_diff_position_ids_only_vs_alone": max(abs(x - y) for x, y in zip(leaky, alone))}
    lengths = [sum(e.loss_mask) for e in probe[:8]]
    shards = shard_indices([len(e.input_ids) for e in probe[:8]], 2, "by_length")
    tokens = [sum(lengths[i] for i in s) for s in shards]
    ranks = [{"rank": r, "samples": len(s), "supervised_tokens": tokens[r], "per_rank_token_mean": 1 / (2 * tokens[r]),
              "balanced": 1 / sum(tokens), "global_token_mean": 1 / sum(tokens)} for r, s in enumerate(shards)]
    checks = {"packing": packing, "normalization": {
        "ranks": ranks, "per_rank_weight_ratio_rank0_over_rank1": (1 / tokens[0]) / (1 / tokens[1])}}
    sec.writer.json("trainer_checks", checks)
    return checks


# ============================================================================== the §2 ablations
@dataclass
class Ablations:
    grids: list[Grid]  # the grids shown (empty when none ran at this preset)
    rows: list[dict[str, Any]]  # one per (grid, arm, seed)
    start: dict[str, Any] | None  # the common start: how it was trained, and its held-out evaluation ("eval")
    note: str | None = None  # why nothing is shown, when nothing is
    history: str | None = None  # the starts tried before this one and why each was left (TESTBED_RECORDS)


def ablations(sec: Section) -> Ablations:
    """Run every grid of ``sft_ablations.grids`` from the common start (compute: the learning_rate grid first when
    its best arm sets the reference rate; rows kept in ``_work/`` so a run resumes) or read the committed
    ``ablation_rows.jsonl`` and ``ablation_start.json`` (render)."""
    preset, writer = sec.cfg.name, sec.writer
    if not sec.ablations.grids:
        return Ablations([], [], None, f"No ablation grid runs at the {preset} preset (`sft_ablations.grids` is "
                                       "empty).")
    if sec.mode == "compute":
        ctx = ablation_setup(sec.cfg, writer.dir / "_work")
        prepare(ctx)
        n = sec.ablations.workers
        if n > 1:  # shares 1..n-1 in worker processes beside this one's share 0 (the same rows as one process)
            workers = start_workers(preset, sec.overrides, range(1, n), n, root=writer.dir.parent.parent)
            try:
                run_all(ctx, shard=(0, n), others_alive=lambda: workers_alive(workers))
            finally:
                wait_for_workers(workers)
        grids, rows = run_all(ctx)
        start = start_record(ctx)
        write_grid_records(writer, rows, start)
        return Ablations(grids, rows, start, history=testbed_history(sec))
    if (writer.dir / "ablation_rows.jsonl").exists() and (writer.dir / "ablation_start.json").exists():
        rows = [json.loads(line) for line in (writer.dir / "ablation_rows.jsonl").read_text().splitlines()]
        grids, _ = resolve_grids(sec.cfg, {(r["arm_key"], int(r["seed"])): r for r in rows})
        return Ablations(grids, rows, read_json(writer.dir / "ablation_start.json"), history=testbed_history(sec))
    note = (f"The ablation grid has not been run at the {preset} preset yet (no committed `ablation_rows.jsonl` from "
            f"the common start): `bash scripts/gpu_sft_grid.sh {preset}` on a GPU probes the start (its verdict must be "
            f"ok) and then computes it.")
    return Ablations([], [], None, note, testbed_history(sec))


# The records of the starts the small grid tried before its current one, in the order they were tried (each is
# ``python -m falcon_h1r.sections.sft_ablations --report`` or ``--probe`` output with provenance); notebook 02 says,
# from their numbers, why the testbed changed.
TESTBED_RECORDS = ("ablation_floor_probe.json", "ablation_traces_probe.json", "ablation_chat_annealed_probe.json")


def probe_note(start: dict[str, Any] | None) -> str | None:
    """The probe that gated this start's grid (``ablation_start.json``'s ``probe``), in one sentence from its
    numbers; None when the grid ran without one (the notebook's own compute path, tiny)."""
    pr = (start or {}).get("probe")
    if not pr:
        return None
    return (f"Before the grid, the probe trained the reference arm at the gentlest rate (ours {pr['lr']:g}, "
            f"{pr['lr_paper'] * 1e6:.0f}e-6 in the paper's convention) from this start: pass@1 {pr['start_acc']:.3f} "
            f"-> {pr['acc']:.3f}, its training loss x{pr['loss_shock']:.1f} in its first steps (`loss_shock`); "
            f"verdict: {pr['verdict']}.")


def unfinished_grid_note(start: dict[str, Any] | None, preset: str) -> str | None:
    """What an unfinished grid (``sft_ablation_export --partial``) lacks, from ``ablation_start.json``'s
    ``grid_runs``; None when every run is in."""
    runs = (start or {}).get("grid_runs")
    if not runs:
        return None
    by_arm: dict[str, list[int]] = {}
    for m in runs["missing"]:
        by_arm.setdefault(f"{'/'.join(m['grids'])}: {m['arm']}", []).append(m["seed"])
    arms = "; ".join(f"{a} (seeds {', '.join(map(str, sorted(s)))})" for a, s in sorted(by_arm.items()))
    return (f"**This grid is unfinished**: {runs['done']} of its {runs['needed']} runs have a row (the GPU time ran "
            f"out). Not yet run: {arms}. Every comparison below that needs those arms has no estimate, and its "
            f"claims stay *not run*, until `bash scripts/gpu_sft_grid.sh {preset}` finishes them from the same "
            f"start.")


def testbed_history(sec: Section) -> str | None:
    """The starts this preset's grid tried before its current one, each in a sentence from its record, and the
    start it uses now; None when there are no such records (tiny)."""
    writer, b = sec.writer, sec.ablations
    names = [n for n in TESTBED_RECORDS if (writer.dir / n).exists()]
    if not names:
        return None
    decay = ("held constant after its warm-up: a mid-run checkpoint" if b.start_lr_decay == "constant"
             else "annealed to 0")
    now = (f"The grid's start is now the `{b.start_corpus}` start ({b.start_steps} steps x {b.start_batch_size}, "
           f"rate {decay}); the records are {', '.join(f'`{n}`' for n in names)} (ours, synthetic).")
    return " ".join([*(floor_probe_note(read_json(writer.dir / n)) for n in names), now])


def floor_probe_note(rec: dict[str, Any]) -> str:
    """What one earlier start's record says (a grid's ``sft_ablations.sweep_report``, or a single probe), in one
    paragraph from its numbers."""
    commit = rec.get("provenance", {}).get("git", {}).get("commit", "?")[:7]
    st = rec["start"]
    start = (f"the `{rec['start_corpus']}` start ({st['steps']} steps"
             f"{', rate annealed to 0' if st.get('lr_decay') == 'linear' else ''}, held-out pass@1 {rec['start_acc']:.3f})")
    if "runs" not in rec:  # a single probe arm
        return (f"At commit {commit}, {start}: the probe's reference arm (our rate {rec['reference_arm_lr']:g}) scored "
                f"{rec['reference_arm_acc']:.3f} after its steps. Verdict: {rec['verdict']}.")
    shocks = [a["loss_shock_mean"] for a in rec["arms"] if a.get("loss_shock_mean") is not None]
    kick = (f" An arm's first steps multiplied its training loss by {min(shocks):.1f} to {max(shocks):.1f} "
            f"(`loss_shock_mean`)." if shocks else "")
    return (f"At commit {commit}, {start}: {rec['runs']} of {rec['runs_needed']} runs finished; the best arm's "
            f"mean pass@1 was {rec['acc_mean_max']:.3f} ({rec['acc_mean_max_arm']}) and {rec['diverged_runs']} runs "
            f"diverged.{kick} Verdict: {rec['verdict']}.")


@dataclass
class AblationTables:
    arms: pd.DataFrame  # one row per (grid, arm): accuracy over seeds and problems with its interval, entropy, lr
    summary: dict[str, Any]  # the summary.json keys (every axis' estimate, seeds, start, DP token skew)
    estimates: dict[str, Estimate]  # the axis estimates behind the summary
    n_heldout: int  # held-out problems each arm is evaluated on


def ablation_tables(sec: Section, abl: Ablations) -> AblationTables:
    """Per-arm table and every axis' estimate (``sft_findings``), with the summary keys the 02_sft claims read."""
    summary, est = ablation_summary(abl.rows, abl.grids, sec.ablations, abl.start["eval"],
                                    describe_start(abl.start))
    missing = abl.start.get("grid_runs", {}).get("missing", [])
    # an unfinished grid (sft_ablation_export --partial); both keys always written, so that a summary merged
    # into the committed one (falcon-h1r reproduce's staging copy) never keeps a finished grid's stale list
    summary["ablation_runs_missing"] = len(missing)
    summary["ablation_arms_not_run"] = "; ".join(sorted({f"{g}/{m['arm']}" for m in missing
                                                         for g in m["grids"]})) or "none"
    return AblationTables(arm_table(abl.rows, abl.grids), summary, est, len(abl.start["eval"]["outcomes"]))


def claim_rows(sec: Section) -> pd.DataFrame:
    """This section's claims with the statuses ``falcon_h1r.claims`` computes from the summary this run has just
    written (read from the section's own folder, which is a staging copy under ``falcon-h1r reproduce``), the
    other sections' summaries as the scoreboard reads them."""
    from falcon_h1r import claims as claims_lib
    from falcon_h1r.sections.scoreboard import SECTION_COLUMNS, load_summaries

    summaries = load_summaries(sec.cfg.name)
    path = sec.writer.dir / "summary.json"
    summaries[SECTION] = read_json(path) if path.exists() else {}
    rows = [r for r in claims_lib.evaluate(claims_lib.load_claims(), summaries) if r["section"] == SECTION]
    return pd.DataFrame([{c: r[c] for c in SECTION_COLUMNS} for r in rows], columns=list(SECTION_COLUMNS))


def axis_findings(sec: Section, abl: Ablations) -> pd.DataFrame:
    """Per axis, the paper's finding beside each of its claims with our value, interval and the status the claims
    scoreboard's rules compute from the summary just written (:func:`claim_rows`)."""
    return findings_table(claim_rows(sec), abl.grids)


def curves(abl: Ablations) -> pd.DataFrame:
    """The Fig. 4 analog (``sft_findings.curves``): both normalization arms over steps, and their difference."""
    return normalization_curves(abl.rows)


# ============================================================================== committed GPU records
GPU_RECORDS_DIR = RESULTS_ROOT / "small" / SECTION  # where the GPU scripts' records are committed


def gpu_record(name: str) -> dict[str, Any] | None:
    """A committed GPU record (``train_throughput``, ``gpu_checks``, ``multi_gpu_check``), or None."""
    path = GPU_RECORDS_DIR / f"{name}.json"
    return read_json(path) if path.exists() else None


__all__ = ["AblationTables", "Ablations", "BaseAccuracy", "GPU_RECORDS_DIR", "SECTION", "Section", "ablation_tables",
           "ablations", "axis_findings", "checkpoint_benchmarks", "claim_rows", "TESTBED_RECORDS", "floor_probe_note", "testbed_history", "probe_note", "unfinished_grid_note", "is_checkpoint", "base_accuracy", "base_pass1_by_level", "base_pass1_estimates", "base_pass1_table", "base_summary",
           "base_training", "curves", "gpu_record", "load_recipe", "open_section", "trainer_checks"]
