"""Section 02's statistics of the §2 ablations, with the one protocol (:mod:`falcon_h1r.stats`): each arm's mean
over seeds and held-out problems, each axis' paired difference (paired by seed and by problem; Student-t over
seeds with the crossed seeds x problems variance), the Fig. 4 analog curves, and the summary keys the claims in
``papers/claims.yaml`` read. Statuses are never set here: the claims scoreboard computes them from the summary
(:func:`falcon_h1r.sections.scoreboard.section_rows`), and :func:`findings_table` only places its rows beside
the paper's findings.

Every number is computed from the ablation rows of :mod:`falcon_h1r.sections.sft_ablations` (one row per arm and
seed, with each held-out problem's outcome).
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from falcon_h1r import papers
from falcon_h1r.sections.sft_ablation_recipes import Grid, SFTAblations
from falcon_h1r.stats import Estimate, arm_mean, paired_difference, summary_keys

Row = Mapping[str, Any]
# Which claims of papers/claims.yaml each grid answers (the notebook's table beside the paper, per axis).
AXIS_CLAIMS: dict[str, list[str]] = {
    "learning_rate": ["sft_larger_lr_better"],
    "rollouts": ["sft_more_rollouts_better", "sft_rollout_gain_grows_with_difficulty"],
    "incorrect": ["sft_incorrect_rollouts_help_hard", "sft_incorrect_rollouts_negligible_elsewhere"],
    "teachers": ["sft_single_teacher_better", "sft_mixed_teachers_raise_entropy"],
    "weighting": ["sft_difficulty_weighting_helps"],
    "mixture": ["sft_math_led_mix_beats_balanced", "sft_math_led_mix_beats_code_led", "sft_math_transfers_outward"],
    "normalization": ["sft_balanced_dp_normalization"],
}
# grid -> the row of papers/sft_ablation_findings.csv it reproduces (normalization: papers/fig4_dp_balance.yaml)
PAPER_ROWS = {"learning_rate": "learning_rate", "rollouts": "rollouts_per_prompt", "incorrect": "incorrect_rollouts",
              "teachers": "teacher_mixing", "weighting": "difficulty_weighting", "mixture": "domain_mixture",
              "normalization": "fig4_dp_balance"}


# ============================================================================== rows -> arrays
def grid_rows(rows: Sequence[Row], grid: str, arm: str) -> dict[int, Row]:
    """One arm's rows by seed."""
    return {int(r["seed"]): r for r in rows if r.get("grid") == grid and r["arm"] == arm}


def _columns(row: Row, keep: Callable[[int, str], bool] | None) -> list[int]:
    return [i for i, (lv, d) in enumerate(zip(row["outcome_levels"], row["outcome_domains"]))
            if keep is None or keep(int(lv), d)]


def outcome_matrix(arms: Sequence[Mapping[int, Row]], seeds: Sequence[int],
                   keep: Callable[[int, str], bool] | None = None) -> list[np.ndarray]:
    """``[seeds, problems]`` outcome arrays, one per arm, over the same seeds and the held-out problems ``keep``
    accepts (by level and domain). The arms must have been evaluated on the same problems in the same order."""
    ids = arms[0][seeds[0]]["outcome_ids"]
    cols = _columns(arms[0][seeds[0]], keep)
    out = []
    for arm in arms:
        for s in seeds:
            if arm[s]["outcome_ids"] != ids:
                raise ValueError(f"arm {arm[s]['arm']!r} seed {s} was evaluated on other held-out problems than "
                                 f"{arms[0][seeds[0]]['arm']!r}; rerun both with the same sft_ablations block")
        out.append(np.array([[arm[s]["outcomes"][c] for c in cols] for s in seeds], dtype=float))
    return out


def shared_seeds(*arms: Mapping[int, Row]) -> list[int]:
    return sorted(set.intersection(*(set(a) for a in arms))) if arms and all(arms) else []


def _difference(a: Mapping[int, Row], b: Mapping[int, Row], keep=None) -> Estimate | None:
    seeds = shared_seeds(a, b)
    if not seeds:
        return None
    x, y = outcome_matrix([a, b], seeds, keep)
    return paired_difference(x, y)


# ============================================================================== per-arm table
def arm_table(rows: Sequence[Row], grids: Sequence[Grid]) -> pd.DataFrame:
    """One row per (grid, arm): held-out accuracy over seeds and problems with its 95 % interval
    (``stats.arm_mean``), output entropy, accuracy by domain, the learning rate, and what it trained on."""
    out = []
    for g in grids:
        for a in g.arms:
            rs = grid_rows(rows, g.name, a.name)
            if not rs:
                continue
            seeds = sorted(rs)
            (m,) = outcome_matrix([rs], seeds)
            est = arm_mean(m)
            domains = sorted(set(rs[seeds[0]]["outcome_domains"]))
            out.append({"grid": g.name, "arm": a.name, "acc": est.mean, "acc_ci95": est.ci95, "acc_low": est.low,
                        "acc_high": est.high, "seeds": len(seeds), "informative": est.informative,
                        "entropy": statistics.fmean(rs[s]["entropy"] for s in seeds),
                        **{f"acc_{d}": statistics.fmean(rs[s][f"acc_{d}"] for s in seeds) for d in domains},
                        "lr_paper": a.lr_paper, "lr": rs[seeds[0]]["lr"],
                        "train_records": statistics.fmean(rs[s]["data_kept"] for s in seeds),
                        "epochs": statistics.fmean(rs[s]["data_epochs"] for s in seeds),
                        "train_tokens": statistics.fmean(rs[s]["train_tokens"] for s in seeds)})
    return pd.DataFrame(out)


def group_table(rows: Sequence[Row], grid: Grid, groups: Mapping[str, Callable[[int, str], bool]]) -> pd.DataFrame:
    """Each arm's accuracy on groups of held-out problems (e.g. easy, middle, hard levels; or domains), mean over
    seeds and the group's problems with its 95 % interval."""
    out = []
    for a in grid.arms:
        rs = grid_rows(rows, grid.name, a.name)
        if not rs:
            continue
        for name, keep in groups.items():
            (m,) = outcome_matrix([rs], sorted(rs), keep)
            if m.size == 0:
                continue
            e = arm_mean(m)
            out.append({"arm": a.name, "group": name, "acc": e.mean, "acc_low": e.low, "acc_high": e.high,
                        "problems": m.shape[1], "seeds": m.shape[0]})
    return pd.DataFrame(out)


def level_groups(block: SFTAblations) -> dict[str, Callable[[int, str], bool]]:
    """Easy / middle / hard held-out levels as ``sft_ablations`` names them."""
    easy, hard = set(block.easy_levels), set(block.hard_levels)
    return {f"easy (levels {min(easy)}-{max(easy)})": lambda lv, d: lv in easy,
            "middle": lambda lv, d: lv not in easy and lv not in hard,
            f"hard (levels {min(hard)}-{max(hard)})": lambda lv, d: lv in hard}


# ============================================================================== each axis' comparisons
def axis_estimates(rows: Sequence[Row], grids: Sequence[Grid], block: SFTAblations,
                   start_eval: Row) -> dict[str, Estimate]:
    """The summary keys of papers/claims.yaml's 02_sft claims, each an :class:`~falcon_h1r.stats.Estimate`
    (keys whose arms did not run at this preset are left out)."""
    hard, easy = set(block.hard_levels), set(block.easy_levels)
    est: dict[str, Estimate | None] = {}
    by = {g.name: {a.name: grid_rows(rows, g.name, a.name) for a in g.arms} for g in grids}

    if "learning_rate" in by:
        g = next(g for g in grids if g.name == "learning_rate")
        lo, hi = min(g.arms, key=lambda a: a.lr_paper), max(g.arms, key=lambda a: a.lr_paper)
        est["larger_minus_smaller_lr_acc"] = _difference(by["learning_rate"][hi.name], by["learning_rate"][lo.name])
    if "rollouts" in by:
        r = by["rollouts"]
        est["n12_minus_n4_acc"] = _difference(r.get("n=12", {}), r.get("n=4", {}))
        est["n8_minus_n4_acc"] = _difference(r.get("n=8", {}), r.get("n=4", {}))
        seeds = shared_seeds(r.get("n=12", {}), r.get("n=4", {}))
        if seeds:
            h12, h4 = outcome_matrix([r["n=12"], r["n=4"]], seeds, lambda lv, d: lv in hard)
            e12, e4 = outcome_matrix([r["n=12"], r["n=4"]], seeds, lambda lv, d: lv in easy)
            # per seed: the gain on the hardest levels minus the gain on the easiest (an interval over seeds)
            est["n12_minus_n4_gain_hard_minus_easy"] = paired_difference((h12 - h4).mean(1), (e12 - e4).mean(1))
        for n in (4, 8, 12):
            if r.get(f"n={n}"):
                est[f"acc_n{n}"] = arm_mean(outcome_matrix([r[f"n={n}"]], sorted(r[f"n={n}"]))[0])
    if "incorrect" in by:
        with_, without = by["incorrect"]["with incorrect (hard)"], by["incorrect"]["correct only"]
        est["with_minus_without_incorrect_acc_hard"] = _difference(with_, without, lambda lv, d: lv in hard)
        est["with_minus_without_incorrect_acc_easy"] = _difference(with_, without, lambda lv, d: lv not in hard)
    if "teachers" in by:
        t = by["teachers"]
        singles = [t[n] for n in t if n.startswith("single") and t[n]]
        seeds = shared_seeds(*singles, t.get("mixed", {}))
        if singles and seeds:
            *single_m, mixed_m = outcome_matrix([*singles, t["mixed"]], seeds)
            est["single_minus_multi_teacher_acc"] = paired_difference(np.mean(single_m, axis=0), mixed_m)
            ent = lambda arm: np.array([arm[s]["entropy"] for s in seeds])  # noqa: E731
            est["multi_minus_single_teacher_entropy"] = paired_difference(
                ent(t["mixed"]), np.mean([ent(a) for a in singles], axis=0))
    if "weighting" in by:
        w = by["weighting"]
        est["weighting_on_minus_off_acc"] = _difference(w["weighting on"], w["weighting off"])
    if "mixture" in by:
        m = by["mixture"]
        est["math_heavy_minus_balanced_acc"] = _difference(m["math-heavy"], m["balanced"])
        est["math_heavy_minus_code_heavy_acc"] = _difference(m["math-heavy"], m["code-heavy"])
        seeds = shared_seeds(m.get("math only", {}), m.get("code only", {}))
        if seeds:
            # per seed: code accuracy gained by training on math alone minus math accuracy gained by code alone
            to_code = np.array([m["math only"][s]["acc_code"] for s in seeds]) - start_eval["acc_code"]
            to_math = np.array([m["code only"][s]["acc_math"] for s in seeds]) - start_eval["acc_math"]
            est["math_to_code_minus_code_to_math_transfer"] = paired_difference(to_code, to_math)
    if "normalization" in by:
        n = by["normalization"]
        est["balanced_minus_per_rank_heldout_acc"] = _difference(n["balanced"], n["per-rank"])
        est["balanced_minus_per_rank_curve_acc"] = curve_difference(n["balanced"], n["per-rank"])
    ref = reference_rows(rows, grids)
    if ref:
        (m,) = outcome_matrix([ref], sorted(ref))
        est["ablation_reference_acc"] = arm_mean(m)
        # the reference arm against the start it was fine-tuned from, paired by problem: far below it, the arms
        # measure how much fine-tuning undoes the start (the 'regress' verdict of the probe), not the §2 effects
        if "outcome_ids" in start_eval:
            start_arm = {s: {**start_eval, "arm": "common start"} for s in ref}
            est["ablation_reference_minus_start_acc"] = _difference(ref, start_arm)
        for name, keep in (("code", lambda lv, d: d == "code"), ("hard", lambda lv, d: lv in hard)):
            est[f"ablation_reference_acc_{name}"] = arm_mean(outcome_matrix([ref], sorted(ref), keep)[0])
    return {k: v for k, v in est.items() if v is not None}


def reference_rows(rows: Sequence[Row], grids: Sequence[Grid]) -> dict[int, Row]:
    """The reference arm's rows by seed (whichever grid ran it; its rate as the grids resolved it)."""
    keys = {g.reference_key for g in grids if g.name != "learning_rate"}
    return {int(r["seed"]): r for r in rows if r["arm_key"] in keys}


def curve_difference(a: Mapping[int, Row], b: Mapping[int, Row]) -> Estimate | None:
    """Balanced minus per-rank over the whole training curve: each seed's outcomes at every evaluated step after
    the start, laid side by side (``[seeds, steps x problems]``), paired by seed, step and problem: how far apart
    the curves run on average (paper Fig. 4: "throughout the first 3,750 steps")."""
    seeds = shared_seeds(a, b)
    if not seeds:
        return None

    def flat(rows: Mapping[int, Row]) -> np.ndarray:
        return np.array([[o for p in rows[s]["curve"] if p["step"] > 0 for o in p["outcomes"]] for s in seeds])

    return paired_difference(flat(a), flat(b))


def curves(rows: Sequence[Row]) -> pd.DataFrame:
    """The Fig. 4 analog: held-out accuracy of each normalization arm at each evaluated step (step 0 = the common
    start), mean over seeds and problems with its 95 % interval, and balanced minus per-rank at each step."""
    out = []
    arms = {a: grid_rows(rows, "normalization", a) for a in ("balanced", "per-rank")}
    if not all(arms.values()):
        return pd.DataFrame(out)
    seeds = shared_seeds(*arms.values())
    steps = [p["step"] for p in arms["balanced"][seeds[0]]["curve"]]
    for i, step in enumerate(steps):
        mats = {a: np.array([rs[s]["curve"][i]["outcomes"] for s in seeds], dtype=float) for a, rs in arms.items()}
        for a, m in mats.items():
            e = arm_mean(m)
            out.append({"step": step, "arm": a, "acc": e.mean, "acc_low": e.low, "acc_high": e.high,
                        "seeds": len(seeds)})
        if step > 0:
            d = paired_difference(mats["balanced"], mats["per-rank"])
            out.append({"step": step, "arm": "balanced minus per-rank", "acc": d.mean, "acc_low": d.low,
                        "acc_high": d.high, "seeds": len(seeds)})
    return pd.DataFrame(out)


def rank_skew(rows: Sequence[Row]) -> dict[str, float] | None:
    """Max over min supervised tokens per rank, per step, over every normalization run's steps: the median (the
    summary's ``dp_tokens_per_rank_max_over_min``: a typical step, not pulled up by a few steps whose shortest
    rank held almost nothing), the 10th percentile and the mean."""
    vals = [x for r in rows if r.get("grid") == "normalization" for x in r.get("rank_tokens_max_over_min", [])]
    if not vals:
        return None
    q = np.percentile(vals, [10, 50])
    return {"mean": float(np.mean(vals)), "p10": float(q[0]), "median": float(q[1]), "steps": len(vals)}


# ============================================================================== summary.json
def ablation_summary(rows: Sequence[Row], grids: Sequence[Grid], block: SFTAblations, start_eval: Row,
                     start_text: str) -> tuple[dict[str, Any], dict[str, Estimate]]:
    """The section's ablation keys for summary.json (every axis' estimate with its ``_ci95`` and companions,
    ``ablation_seeds``, ``ablation_start``, ``dp_tokens_per_rank_max_over_min``, the sizes) and the estimates."""
    est = axis_estimates(rows, grids, block, start_eval)
    out: dict[str, Any] = summary_keys(est)
    compared = [len(g.seeds[a.name]) for g in grids for a in g.arms if grid_rows(rows, g.name, a.name)]
    run_seeds = [len(grid_rows(rows, g.name, a.name)) for g in grids for a in g.arms]
    ref = reference_rows(rows, grids)
    if ref:
        one = next(iter(ref.values()))
        out.update(ablation_reference_lr_paper=one["lr_paper"], ablation_reference_lr=one["lr"])
    out.update({"ablation_seeds": min(run_seeds) if run_seeds and min(run_seeds) else 0,
                "ablation_seeds_planned": min(compared) if compared else 0,
                "ablation_start": start_text, "ablation_start_acc": start_eval["acc"],
                "ablation_steps": block.steps, "ablation_batch_size": block.batch_size,
                "ablation_eval_problems": len(start_eval["outcomes"]), "ablation_eval_samples": block.eval_samples,
                "ablation_runs": len({(r["arm_key"], r["seed"]) for r in rows})})
    out.update(mechanism_keys(rows, start_eval))
    skew = rank_skew(rows)
    if skew:
        out.update({"dp_tokens_per_rank_max_over_min": skew["median"],
                    "dp_tokens_per_rank_max_over_min_p10": skew["p10"],
                    "dp_tokens_per_rank_max_over_min_mean": skew["mean"]})
    lr = [a for a in arm_table(rows, grids).to_dict("records") if a["grid"] == "learning_rate"]
    if lr:
        best = max(lr, key=lambda a: a["acc"])
        out.update(best_lr=best["lr"], best_lr_paper=best["lr_paper"])  # ours (µP-scaled) and the paper's convention
    return out, est


def mechanism_keys(rows: Sequence[Row], start_eval: Row | None = None) -> dict[str, float]:
    """What the testbed gives each mechanism to act on (the claims' preconditions): distinct correct training
    traces with n = 12 over n = 4 rollouts, wrong traces the with-incorrect arm keeps (means over seeds), and how
    much of the start's accuracy on the other domain a single-domain arm keeps (math only on code, code only on
    math; the smaller of the two, 1 when the start scores 0 on both): near 0, single-domain SFT erases the other
    domain and the transfer comparison measures what each arm forgets (bounded by the start's level there), not
    what it transfers."""
    def mean_of(grid: str, arm: str, key: str) -> float | None:
        rs = grid_rows(rows, grid, arm)
        return statistics.fmean(r[key] for r in rs.values()) if rs else None

    out = {}
    n12, n4 = (mean_of("rollouts", f"n={n}", "data_distinct_correct_traces") for n in (12, 4))
    if n12 is not None and n4:
        out["rollouts_distinct_correct_traces_n12_over_n4"] = n12 / n4
    kept = mean_of("incorrect", "with incorrect (hard)", "data_kept_incorrect")
    if kept is not None:
        out["ablation_incorrect_traces_kept"] = kept
    on_code, on_math = mean_of("mixture", "math only", "acc_code"), mean_of("mixture", "code only", "acc_math")
    if start_eval is not None and on_code is not None and on_math is not None:
        # a domain the start scores 0 on has nothing to forget: that direction does not bound the retention
        kept_shares = [arm / start_eval[k] for arm, k in ((on_code, "acc_code"), (on_math, "acc_math"))
                       if start_eval.get(k)]
        out["single_domain_offtarget_retention_min"] = min(kept_shares, default=1.0)
    return out


# ============================================================================== beside the paper
def paper_findings() -> dict[str, dict[str, str]]:
    """The paper's §2 findings by grid (papers/sft_ablation_findings.csv, papers/fig4_dp_balance.yaml)."""
    rows = {r["axis"]: r for r in papers.load("sft_ablation_findings").to_dict("records")}
    fig4 = papers.load("fig4_dp_balance")
    rows["fig4_dp_balance"] = {
        "axis": "dp_normalization", "values_tried": "balanced vs plain DP token normalization",
        "finding": f"balanced DP normalization scored {fig4['gain_points_min']}-{fig4['gain_points_max']} points "
                   f"higher on {fig4['metric']} throughout the first {fig4['steps_compared']} steps"}
    return {g: rows[src] for g, src in PAPER_ROWS.items()}


def findings_table(claim_rows: pd.DataFrame, grids: Sequence[Grid]) -> pd.DataFrame:
    """Per axis: the paper's finding, each of its claims with our value and interval and the status the claims
    scoreboard computed (``claim_rows``: ``scoreboard.section_rows(preset, "02_sft")``)."""
    paper = paper_findings()
    by_id = {r["id"]: r for r in claim_rows.to_dict("records")}
    out = []
    for g in grids:
        for cid in AXIS_CLAIMS.get(g.name, []):
            r = by_id.get(cid)
            if r is None:
                continue
            out.append({"axis": g.name, "paper_finding": paper[g.name]["finding"], "claim": cid,
                        "statement": r["statement"], "paper_value": r["paper_value"], "ours": r["ours"],
                        "status": r["status"], "reason": r["reason"]})
    return pd.DataFrame(out)


__all__ = ["AXIS_CLAIMS", "PAPER_ROWS", "ablation_summary", "arm_table", "axis_estimates", "curve_difference",
           "curves", "findings_table", "grid_rows", "group_table", "level_groups", "mechanism_keys", "outcome_matrix", "paper_findings", "rank_skew",
           "reference_rows", "shared_seeds"]
