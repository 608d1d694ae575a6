"""Notebook 02's figures of the §2 ablations: one per axis, every point with its 95 % interval from the statistical
protocol (:mod:`falcon_h1r.sections.sft_findings`, :mod:`falcon_h1r.stats`), the common start as a dotted line (per group of problems in the grouped panels).
Titles say whose numbers they are (ours, synthetic tasks, the preset)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from falcon_h1r.sections.sft_ablation_recipes import Grid, SFTAblations
from falcon_h1r.sections.sft_findings import curves, group_table, level_groups, outcome_matrix
from falcon_h1r.stats import arm_mean

Row = dict[str, Any]


def _err(df: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars (a non-finite end, e.g. one seed, draws no bar)."""
    lo = (df["acc"] - df["acc_low"]).to_numpy(dtype=float)
    hi = (df["acc_high"] - df["acc"]).to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([lo, hi]), nan=0.0, posinf=0.0, neginf=0.0)


def _arms(ax: Any, df: pd.DataFrame, start_acc: float, x: Sequence[Any] | None = None, label: str = "") -> None:
    xs = list(range(len(df))) if x is None else list(x)
    ax.errorbar(xs, df["acc"], yerr=_err(df), fmt="o", capsize=3, label=label or None)
    ax.axhline(start_acc, color="grey", ls=":", lw=1)
    if x is None:
        ax.set_xticks(xs, df["arm"], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("held-out pass@1 (T 0.6)")


def start_by_group(start_eval: Row, groups: dict[str, Any]) -> dict[str, float]:
    """The common start's held-out accuracy on each group of problems, selected as the arms' are
    (:func:`~falcon_h1r.sections.sft_findings.outcome_matrix`)."""
    out = {}
    for name, keep in groups.items():
        (m,) = outcome_matrix([{0: start_eval}], [0], keep)
        if m.size:
            out[name] = float(m.mean())
    return out


def _grouped(ax: Any, table: pd.DataFrame, start_by: dict[str, float] | None = None) -> None:
    """Bars per group and arm; the common start's accuracy in each group as a dotted segment over that group."""
    groups = list(dict.fromkeys(table["group"]))
    arms = list(dict.fromkeys(table["arm"]))
    width = 0.8 / max(1, len(arms))
    for i, a in enumerate(arms):
        sub = table[table.arm == a].set_index("group").reindex(groups).reset_index()
        ax.bar(np.arange(len(groups)) + i * width, sub["acc"], width, yerr=_err(sub), capsize=2, label=a)
    ax.set_xticks(np.arange(len(groups)) + width * (len(arms) - 1) / 2, groups, fontsize=8)
    at = [(j, start_by[g]) for j, g in enumerate(groups) if start_by and g in start_by]
    if at:
        ax.hlines([y for _, y in at], [j - width / 2 for j, _ in at], [j + width * (len(arms) - 0.5) for j, _ in at],
                  color="black", ls=":", lw=1.2, zorder=3, label="common start")
    ax.legend(fontsize=7)


def axis_figure(grid: Grid, arms: pd.DataFrame, rows: Sequence[Row], block: SFTAblations, start_eval: Row,
                title: str) -> Any:
    """The figure of one grid (``arms``: :func:`~falcon_h1r.sections.sft_findings.arm_table`)."""
    import matplotlib.pyplot as plt

    sub = arms[arms.grid == grid.name].reset_index(drop=True)
    start = start_eval["acc"]
    name = grid.name
    if name == "normalization":
        return normalization_figure(rows, title)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    if name == "learning_rate":
        _arms(axes[0], sub, start, x=sub["lr_paper"] * 1e6)
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("paper-convention rate (x1e-6), µP-scaled to our width")
        levels = level_groups(block)
        _grouped(axes[1], group_table(rows, grid, levels), start_by_group(start_eval, levels))
    elif name == "teachers":
        _arms(axes[0], sub, start)
        ent = []
        for a in sub["arm"]:
            vals = np.array([r["entropy"] for r in rows if r.get("grid") == name and r["arm"] == a])
            e = arm_mean(vals)
            ent.append({"arm": a, "acc": e.mean, "acc_low": e.low, "acc_high": e.high})
        ent = pd.DataFrame(ent)
        axes[1].errorbar(range(len(ent)), ent["acc"], yerr=_err(ent), fmt="s", capsize=3, color="C1")
        axes[1].set_xticks(range(len(ent)), ent["arm"], rotation=30, ha="right", fontsize=8)
        axes[1].set_ylabel("output entropy (nats / token)")
    elif name == "mixture":
        _arms(axes[0], sub, start)
        domains = sorted(set(rows[0]["outcome_domains"]))
        by_domain = {d: (lambda lv, dd, d=d: dd == d) for d in domains}
        _grouped(axes[1], group_table(rows, grid, by_domain), start_by_group(start_eval, by_domain))
        axes[1].set_ylabel("pass@1 by domain")
    else:  # rollouts, incorrect, weighting: the arms, then by difficulty
        _arms(axes[0], sub, start)
        levels = level_groups(block)
        _grouped(axes[1], group_table(rows, grid, levels), start_by_group(start_eval, levels))
        axes[1].set_ylabel("pass@1 by difficulty")
    fig.suptitle(f"{title}\n{grid.question}", fontsize=9)
    fig.tight_layout()
    return fig


def normalization_figure(rows: Sequence[Row], title: str) -> Any:
    """The Fig. 4 analog: both arms over training steps with 95 % bands (left), their difference (right)."""
    import matplotlib.pyplot as plt

    c = curves(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for arm, color in (("balanced", "C0"), ("per-rank", "C3")):
        d = c[c.arm == arm]
        axes[0].plot(d["step"], d["acc"], marker="o", color=color, label=arm)
        axes[0].fill_between(d["step"], d["acc_low"], d["acc_high"], color=color, alpha=0.2)
    axes[0].set(xlabel="SFT step (0 = the common start)", ylabel="held-out pass@1 (curve set)")
    axes[0].legend(fontsize=8)
    d = c[c.arm == "balanced minus per-rank"]
    axes[1].errorbar(d["step"], d["acc"], yerr=_err(d), fmt="o-", capsize=3, color="C2")
    axes[1].axhline(0, color="grey", lw=1)
    axes[1].set(xlabel="SFT step", ylabel="balanced minus per-rank")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["axis_figure", "normalization_figure", "start_by_group"]
