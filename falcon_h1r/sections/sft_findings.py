"""Section 02's statistics of the §2 ablations and the report beside the paper: per-arm accuracy over seeds,
each grid's headline difference (paired by seed and held-out problem, :func:`falcon_h1r.sections.paired.paired_rows`),
its status against the paper's direction (computed by rule, :func:`finding_status`), and the normalization
curves. Every number is computed from the ablation rows of :mod:`falcon_h1r.sections.sft_ablations`.
"""

from __future__ import annotations

from typing import Any, Sequence

from falcon_h1r import papers
from falcon_h1r.sections.paired import paired_rows
from falcon_h1r.sections.sft_ablations import Grid


def arm_summary(rows: Sequence[dict[str, Any]], metric: str = "acc") -> dict[str, Any]:
    """Mean of ``metric`` over seeds and a 95 % interval over (seed, problem) outcomes (normal approx.)."""
    vals = [r[metric] for r in rows]
    out = {"mean": sum(vals) / len(vals), "seeds": len(vals),
           "seed_sd": (sum((v - sum(vals) / len(vals)) ** 2 for v in vals) / max(1, len(vals) - 1)) ** 0.5}
    if metric == "acc" and all("outcomes" in r for r in rows):
        o = [x for r in rows for x in r["outcomes"]]
        m = sum(o) / len(o)
        out["ci95"] = 1.96 * (m * (1 - m) / len(o)) ** 0.5
    return out


def finding_status(diff: float, ci95: float, expected_sign: int) -> tuple[str, str]:
    """Status of our result against the paper's direction: ``reproduced`` when the difference has the
    paper's sign and its 95 % interval excludes 0, ``partly`` when the sign agrees but the interval
    includes 0, ``not`` when there is no difference or the sign is opposite."""
    if abs(diff) < 1e-12:
        if ci95 > 0:
            return "not", "zero mean difference: the arms differ problem by problem, but gains and losses cancel"
        return "not", "no difference at all between the arms"
    if diff * expected_sign > 0:
        if abs(diff) > ci95:
            return "reproduced", "same direction, 95 % interval excludes 0"
        return "partly", "same direction, but the 95 % interval includes 0"
    if abs(diff) <= ci95:
        return "not", "opposite sign, within noise (95 % interval includes 0)"
    return "not", "opposite direction, 95 % interval excludes 0"


# ---------------------------------------------------------------------------- the report beside the paper
# How each grid is read against the paper: (paper finding row or source, metric, expected sign of A - B,
# restrict to difficulty level). The paper's directions are in papers/sft_ablation_findings.csv.
_READING = {
    "learning_rate": ("learning_rate", "acc", +1, None),
    "rollouts": ("rollouts_per_prompt", "acc", +1, None),
    "incorrect": ("incorrect_rollouts", "acc", +1, 3),  # the paper's gain is on the hardest problems only
    "teachers": ("teacher_mixing", "acc", +1, None),
    "weighting": ("difficulty_weighting", "acc", +1, None),
    "mixture": ("domain_mixture", "acc", +1, None),
    "normalization": ("fig4_dp_balance", "acc", +1, None),
}


def ablation_report(rows: Sequence[dict[str, Any]], grids: Sequence[Grid], *, ablation_lr: float,
                    context: str) -> dict[str, Any]:
    """Per-arm results, each grid's headline comparison beside the paper's finding with a status (``why``
    ends with ``context``: the scale the result was measured at), and the flat headline figures for
    summary.json. Every number is computed from ``rows``."""
    findings = {r["axis"]: r for r in papers.load("sft_ablation_findings").to_dict("records")}
    fig4 = papers.load("fig4_dp_balance")
    findings["fig4_dp_balance"] = {
        "axis": "dp_normalization", "values_tried": "balanced vs plain DP token normalization",
        "finding": f"balanced DP normalization scored {fig4['gain_points_min']}-{fig4['gain_points_max']} points "
                   f"higher on {fig4['metric']} throughout the first {fig4['steps_compared']} steps"}
    arms, out, summary = [], [], {}
    for g in grids:
        by_arm = {a.name: [r for r in rows if r.get("grid") == g.name and r["arm"] == a.name] for a in g.arms}
        for a in g.arms:
            rs = by_arm[a.name]
            if not rs:
                continue
            st = arm_summary(rs)
            ent = arm_summary(rs, "entropy")
            arms.append({"grid": g.name, "arm": a.name, "acc": st["mean"], "acc_ci95": st.get("ci95"),
                         "seeds": st["seeds"], "acc_seed_sd": st["seed_sd"], "entropy": ent["mean"],
                         **{k: sum(r[k] for r in rs) / len(rs) for k in rs[0]
                            if k.startswith("acc_") and isinstance(rs[0][k], (int, float))},
                         "train_records": sum(r["n_records"] for r in rs) / len(rs),
                         "lr": ablation_lr * a.lr_scale})
        if len(g.compare) != 2 or not all(by_arm.get(c) for c in g.compare):
            continue
        src, metric, sign, level = _READING[g.name]
        a_rows, b_rows = by_arm[g.compare[0]], by_arm[g.compare[1]]
        where = f" on difficulty-{level} problems" if level else ""
        if level and level not in set(a_rows[0]["outcome_levels"]):
            level, where = None, f" (no difficulty-{level} problem held out: all problems)"
        d = paired_rows(a_rows, b_rows, metric, level=level)
        status, why = finding_status(d.diff, d.ci95, sign)
        paper = findings.get(src, {})
        out.append({"grid": g.name, "paper_axis": paper.get("axis", src), "paper_finding": paper.get("finding", ""),
                    "ours": f"{g.compare[0]} minus {g.compare[1]}{where}: {d.diff:+.3f} ± {d.ci95:.3f} "
                            f"(95 %, {d.n} paired outcomes)",
                    "diff": d.diff, "ci95": d.ci95, "status": status, "why": f"{why}; {context}"})
        if g.name == "teachers":  # the paper's second claim: mixing raises output entropy
            e = paired_rows(b_rows, a_rows, "entropy")
            status, why = finding_status(e.diff, e.ci95, +1)
            out.append({"grid": "teachers (entropy)", "paper_axis": paper.get("axis", src),
                        "paper_finding": "mixing teachers raised output entropy",
                        "ours": f"{g.compare[1]} minus {g.compare[0]}, output entropy: {e.diff:+.3f} ± "
                                f"{e.ci95:.3f} nats (95 %, {e.n} seeds)",
                        "diff": e.diff, "ci95": e.ci95, "status": status, "why": f"{why}; {context}"})
    # headline figures
    arm_acc = {(a["grid"], a["arm"]): a for a in arms}
    lr_arms = [a for a in arms if a["grid"] == "learning_rate"]
    if lr_arms:
        summary["best_lr"] = max(lr_arms, key=lambda a: a["acc"])["lr"]
    for n in (4, 8, 12):
        if ("rollouts", f"n={n}") in arm_acc:
            summary[f"acc_n{n}"] = arm_acc[("rollouts", f"n={n}")]["acc"]
    names = {"teachers": "single_minus_multi_teacher_acc", "weighting": "weighting_on_minus_off_acc",
             "normalization": "balanced_minus_per_rank_heldout_acc", "mixture": "math_heavy_minus_balanced_acc",
             "incorrect": "with_minus_without_incorrect_acc_hard", "learning_rate": "larger_minus_smaller_lr_acc",
             "rollouts": "n12_minus_n4_acc"}
    for f in out:
        if f["grid"] in names:
            summary[names[f["grid"]]] = f["diff"]
    if ("teachers", "mixed teachers") in arm_acc and ("teachers", "single teacher") in arm_acc:
        summary["multi_minus_single_teacher_entropy"] = (arm_acc[("teachers", "mixed teachers")]["entropy"]
                                                         - arm_acc[("teachers", "single teacher")]["entropy"])
    return {"arms": arms, "findings": out, "summary": summary}


def normalization_curves(rows: Sequence[dict[str, Any]], base_acc: float | None = None) -> list[dict[str, Any]]:
    """Held-out accuracy over steps for each normalization arm and seed (step 0 = the base model)."""
    out = []
    for r in rows:
        if r.get("grid") != "normalization":
            continue
        pts = ([{"step": 0, "acc": base_acc}] if base_acc is not None else []) + list(r["curve"])
        out += [{"arm": r["arm"], "seed": r["seed"], "step": p["step"], "acc": p["acc"]} for p in pts]
    return out


__all__ = ["ablation_report", "arm_summary", "finding_status", "normalization_curves"]
