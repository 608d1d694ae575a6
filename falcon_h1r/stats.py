"""One statistical protocol for every number the package compares: means of one arm, paired differences
between two arms, and savings or ratios between arms, with 95 % intervals from the spread over seeds
(or over independently trained bases) and over problems.

Data layout. Outcomes are arrays shaped ``[seeds, problems]`` (0/1 correctness or any real score):
row ``s`` of arm A and row ``s`` of arm B come from the same seed (or base), column ``p`` from the same
problem, so differences are paired by seed and by problem. A 1-D array ``[seeds]`` holds one number per
seed (an entropy, generation calls per filled batch): there is no problem axis and the problem rule
below does not apply. A 3-D array ``[bases, repeats, problems]`` holds several repeats (resamplings of
a trace pool, sampling seeds) per independently trained base; the repeats are averaged first, because
they are not independent replicates, and the interval is taken over the bases (``unit="bases"``: the
interval covers retraining).

Every statistic is ``mean over seeds of g(sum_p a[s, p], sum_p b[s, p], P)`` with
``g`` = ``A/P`` (arm mean), ``(A - B)/P`` (paired difference), ``1 - A/B`` (saving, e.g. tokens saved)
or ``A/B`` (ratio). Savings and ratios are ratios of sums per seed, not means of per-problem ratios, so a
problem with a zero denominator does not make the result infinite.

Methods (``method=``):

* ``"t"`` (the default): Student-t with ``seeds - 1`` degrees of freedom on the crossed seeds x
  problems variance ``var_s(g_s) / S + var_p(problem means) / P - residual / (S P)``: the first term is
  the retraining (seed) noise, the second the noise of having drawn these problems, and the third removes
  the seed x problem noise that both of the first two hold (the unbiased random-effects estimate of a
  grand mean over a crossed design; the problem part is floored at 0). For savings and ratios the problem
  part is taken on the first-order (delta-method) contributions of each problem. The degrees of freedom
  stay at ``S - 1``: seeds are the scarce replicate, so this is conservative when the problem term
  dominates.
* ``"t_seeds"``: Student-t on the per-seed values alone (``var_s(g_s) / S``, ``S - 1`` d.o.f.): the
  interval is conditional on this problem set (no generalisation to other problems).
* ``"bootstrap"``: two-level percentile bootstrap. Each replicate draws ``S`` seeds with replacement,
  then ``P`` problems with replacement, and uses that one problem draw inside every drawn seed and for
  both arms (so the pairing and the crossed design are kept). Reproducible through ``seed``.

Why ``"t"`` is the default: at the 3-5 seeds the protocol asks for, a percentile bootstrap over seeds
has no small-sample correction (with 3 seeds it sees at most 10 distinct seed sets, and its variance is
``(S-1)/S`` of the sample variance with normal-like quantiles), so it is too narrow: the very error of
a z interval on 2 seeds. Student-t carries the small-sample penalty (t_0.975 is 4.30 at 2 d.o.f.), and
the problem term keeps the problem-sampling noise that ``"t_seeds"`` leaves out. Use the bootstrap
from about 10 seeds up, or to check a non-linear statistic. A z (normal) interval is never used.

Not informative. An :class:`Estimate` is marked ``informative=False`` (with the reasons) when its mean or
interval is NaN or infinite, when its interval has zero width (every seed and problem tells the same:
too little variation to estimate anything, e.g. both arms at 100 %), when it rests on fewer than
``min_problems`` (30) problems, or on fewer than ``min_seeds`` (3) seeds or bases. A not-informative
value is never a headline and never makes a claim "reproduced" (falcon_h1r.claims).

Summary keys. :meth:`Estimate.summary` flattens an estimate into ``summary.json`` keys: ``<name>``,
``<name>_ci95`` (half-width), ``<name>_ci95_low``, ``<name>_ci95_high``, ``<name>_n_seeds``,
``<name>_n_problems`` (absent when there is no problem axis), ``<name>_informative``, ``<name>_unit``,
``<name>_method`` and ``<name>_reason`` (empty when informative). A NaN or infinite number is written as
``None`` (JSON null) and never as NaN: the key is kept, so a reader can tell "ran, gave no finite value"
(null) from "not run" (key absent).

The Wilson interval of one accuracy ``correct / n`` stays in ``falcon_h1r.evaluation.wilson_interval``:
it describes a single evaluation (one seed), not a comparison over seeds. This module uses numpy and scipy
only; scipy.stats gives the t quantiles and numpy the resampling (written here because scipy's
``bootstrap`` resamples one level, not seeds then problems).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

Method = Literal["t", "t_seeds", "bootstrap"]
METHODS: tuple[str, ...] = ("t", "t_seeds", "bootstrap")
DEFAULT_METHOD: Method = "t"
MIN_SEEDS = 3  # the protocol's rule at the small preset: at least 3 seeds (or bases) per compared arm
MIN_PROBLEMS = 30  # fewer held-out problems than this and a value is not informative
N_BOOT = 2000
ZERO_WIDTH = 1e-12
_KINDS = ("mean", "difference", "saving", "ratio")


@dataclass(frozen=True)
class Estimate:
    """A value with its 95 % interval and whether it may be read as evidence.

    ``ci95`` is the half-width (for the bootstrap: half the length of the percentile interval, which may
    be asymmetric around ``mean``; ``low`` and ``high`` are its ends). ``n_problems`` is None when the
    data had no problem axis. ``unit`` is "seeds" or "bases" (independently trained bases: the interval
    covers retraining).
    """

    mean: float
    ci95: float
    low: float
    high: float
    n_seeds: int
    n_problems: int | None
    method: str
    informative: bool
    reason: str
    unit: str = "seeds"

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (finite ends only)."""
        return math.isfinite(self.low) and math.isfinite(self.high) and (self.low > 0 or self.high < 0)

    def summary(self, name: str) -> dict[str, Any]:
        """The flat ``summary.json`` keys of this estimate (non-finite numbers become None)."""
        out: dict[str, Any] = {
            name: _finite_or_none(self.mean),
            f"{name}_ci95": _finite_or_none(self.ci95),
            f"{name}_ci95_low": _finite_or_none(self.low),
            f"{name}_ci95_high": _finite_or_none(self.high),
            f"{name}_n_seeds": int(self.n_seeds),
            f"{name}_informative": bool(self.informative),
            f"{name}_unit": self.unit,
            f"{name}_method": self.method,
            f"{name}_reason": self.reason,
        }
        if self.n_problems is not None:
            out[f"{name}_n_problems"] = int(self.n_problems)
        return out

    def describe(self, digits: int = 3) -> str:
        """``+0.071 ± 0.032 (95 % t, 3 seeds x 300 problems)``, plus ``; not informative: ...``."""
        def num(x: float, sign: str = "") -> str:
            return f"{x:{sign}.{digits}f}" if math.isfinite(x) else "n/a"

        over = f"{self.n_seeds} {self.unit}" + (f" x {self.n_problems} problems" if self.n_problems is not None else "")
        text = f"{num(self.mean, '+')} ± {num(self.ci95)} (95 % {self.method}, {over})"
        return text if self.informative else f"{text}; not informative: {self.reason}"


def summary_keys(estimates: Mapping[str, Estimate]) -> dict[str, Any]:
    """``{name: Estimate}`` -> one flat dict of summary keys (see :meth:`Estimate.summary`)."""
    out: dict[str, Any] = {}
    for name, est in estimates.items():
        out.update(est.summary(name))
    return out


# ----------------------------------------------------------------------------------------- public API
def arm_mean(outcomes: Any, *, method: Method = DEFAULT_METHOD, unit: str | None = None,
             min_seeds: int = MIN_SEEDS, min_problems: int = MIN_PROBLEMS, n_boot: int = N_BOOT,
             seed: int = 0) -> Estimate:
    """Mean of one arm over seeds and problems, with its 95 % interval."""
    a, u = _prepare(outcomes, "outcomes", unit)
    return _estimate("mean", a, None, method=method, unit=u, min_seeds=min_seeds, min_problems=min_problems,
                     n_boot=n_boot, seed=seed)


def paired_difference(a: Any, b: Any, *, method: Method = DEFAULT_METHOD, unit: str | None = None,
                      min_seeds: int = MIN_SEEDS, min_problems: int = MIN_PROBLEMS, n_boot: int = N_BOOT,
                      seed: int = 0) -> Estimate:
    """Mean of ``a - b``, paired by seed (row) and problem (column), with its 95 % interval."""
    a_, b_, u = _prepare_pair(a, b, unit)
    return _estimate("difference", a_, b_, method=method, unit=u, min_seeds=min_seeds, min_problems=min_problems,
                     n_boot=n_boot, seed=seed)


def paired_saving(a: Any, b: Any, *, method: Method = DEFAULT_METHOD, unit: str | None = None,
                  min_seeds: int = MIN_SEEDS, min_problems: int = MIN_PROBLEMS, n_boot: int = N_BOOT,
                  seed: int = 0) -> Estimate:
    """``1 - sum(a) / sum(b)`` per seed (e.g. tokens saved by ``a`` against ``b``, generation-call saving),
    averaged over seeds, with its 95 % interval. A seed whose ``b`` sums to 0 makes it non-finite, hence
    not informative."""
    a_, b_, u = _prepare_pair(a, b, unit)
    return _estimate("saving", a_, b_, method=method, unit=u, min_seeds=min_seeds, min_problems=min_problems,
                     n_boot=n_boot, seed=seed)


def paired_ratio(a: Any, b: Any, *, method: Method = DEFAULT_METHOD, unit: str | None = None,
                 min_seeds: int = MIN_SEEDS, min_problems: int = MIN_PROBLEMS, n_boot: int = N_BOOT,
                 seed: int = 0) -> Estimate:
    """``sum(a) / sum(b)`` per seed, averaged over seeds, with its 95 % interval."""
    a_, b_, u = _prepare_pair(a, b, unit)
    return _estimate("ratio", a_, b_, method=method, unit=u, min_seeds=min_seeds, min_problems=min_problems,
                     n_boot=n_boot, seed=seed)


def collapse_repeats(x: Any) -> np.ndarray:
    """``[bases, repeats, problems]`` -> ``[bases, problems]``: the mean over repeats within each base."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 3:
        raise ValueError(f"collapse_repeats expects [bases, repeats, problems], got shape {arr.shape}")
    return arr.mean(axis=1)


def stack_by_problem(per_seed: Sequence[Mapping[Hashable, float]],
                     ids: Sequence[Hashable] | None = None) -> tuple[np.ndarray, list[Hashable]]:
    """``[{problem id: value}, ...]`` (one mapping per seed) -> ``([seeds, problems] array, ids)``.

    Without ``ids``: the problems present in every seed, in the first seed's order. With ``ids``: exactly
    those, and a clear error when a seed lacks one (a paired comparison must not silently drop problems).
    """
    if not per_seed:
        raise ValueError("stack_by_problem: no seed given")
    if ids is None:
        ids = [k for k in per_seed[0] if all(k in m for m in per_seed[1:])]
    else:
        for i, m in enumerate(per_seed):
            missing = [k for k in ids if k not in m]
            if missing:
                raise ValueError(f"stack_by_problem: seed {i} has no value for {len(missing)} problem(s), "
                                 f"e.g. {missing[:3]}")
    ids = list(ids)
    return np.array([[float(m[k]) for k in ids] for m in per_seed], dtype=float).reshape(len(per_seed), len(ids)), ids


def t_quantile(n_seeds: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t quantile with ``n_seeds - 1`` degrees of freedom (inf below 2 seeds)."""
    if n_seeds < 2:
        return math.inf
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, n_seeds - 1))


# ------------------------------------------------------------------------------------------- internals
def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _prepare(x: Any, name: str, unit: str | None) -> tuple[np.ndarray, str]:
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 3:
        if unit not in (None, "bases"):
            raise ValueError(f"{name}: a 3-D array is [bases, repeats, problems]; unit must be 'bases', got {unit!r}")
        return collapse_repeats(arr), "bases"
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name}: expected [seeds], [seeds, problems] or [bases, repeats, problems], "
                         f"got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise ValueError(f"{name}: empty array (shape {arr.shape}); nothing to estimate")
    u = unit or "seeds"
    if u not in ("seeds", "bases"):
        raise ValueError(f"unit must be 'seeds' or 'bases', got {unit!r}")
    return arr, u


def _prepare_pair(a: Any, b: Any, unit: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    a_, ua = _prepare(a, "a", unit)
    b_, ub = _prepare(b, "b", unit)
    if a_.shape != b_.shape:
        raise ValueError(f"paired arms must have the same shape [seeds(, problems)], got a {a_.shape} and b {b_.shape}")
    if ua != ub:
        raise ValueError(f"both arms must have the same unit, got {ua!r} and {ub!r}")
    return a_, b_, ua


def _g(kind: str, sa: np.ndarray, sb: np.ndarray | None, n: int) -> np.ndarray:
    """The per-seed statistic from per-seed sums over ``n`` problems (broadcasts over extra axes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "mean":
            return sa / n
        if kind == "difference":
            return (sa - sb) / n
        if kind == "saving":
            return 1.0 - sa / sb
        if kind == "ratio":
            return sa / sb
    raise ValueError(f"unknown statistic {kind!r}; known: {', '.join(_KINDS)}")


def _estimate(kind: str, a: np.ndarray, b: np.ndarray | None, *, method: str, unit: str, min_seeds: int,
              min_problems: int, n_boot: int, seed: int) -> Estimate:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")
    a2 = a if a.ndim == 2 else a[:, None]
    b2 = None if b is None else (b if b.ndim == 2 else b[:, None])
    n_seeds, n_cols = a2.shape
    n_problems = n_cols if a.ndim == 2 else None
    bad_input = [name for name, x in (("a", a2), ("b", b2)) if x is not None and not np.all(np.isfinite(x))]
    if bad_input:  # e.g. generation calls per filled batch of an arm that filled none: no value, not 1 - x/inf
        nan = math.nan
        return Estimate(mean=nan, ci95=nan, low=nan, high=nan, n_seeds=int(n_seeds), n_problems=n_problems,
                        method=method, informative=False, unit=unit,
                        reason=f"non-finite input in arm {' and '.join(bad_input)} (NaN or infinite outcomes)")
    sa, sb = a2.sum(axis=1), None if b2 is None else b2.sum(axis=1)
    per_seed = _g(kind, sa, sb, n_cols)
    mean = float(per_seed.mean())

    if method == "bootstrap":
        low, high = _bootstrap(kind, a2, b2, n_boot=n_boot, seed=seed)
        half = (high - low) / 2 if math.isfinite(low) and math.isfinite(high) else math.inf
    else:
        with np.errstate(invalid="ignore"):
            var_seeds = float(per_seed.var(ddof=1)) / n_seeds if n_seeds > 1 else math.inf
        var_problems = _problem_var(kind, a2, b2) if (method == "t" and n_problems is not None) else 0.0
        se = math.sqrt(var_seeds + var_problems) if math.isfinite(var_seeds + var_problems) else math.inf
        half = t_quantile(n_seeds) * se if math.isfinite(se) else math.inf
        low, high = mean - half, mean + half

    reasons = []
    if not math.isfinite(mean):
        reasons.append("the value is not finite (a zero denominator or a non-finite input)")
    elif not (math.isfinite(half) and math.isfinite(low) and math.isfinite(high)):
        reasons.append("the interval is not finite" + (" (one seed: no spread to estimate)" if n_seeds < 2 else ""))
    elif half <= ZERO_WIDTH:
        reasons.append("zero-width interval: every seed and problem gives the same value (too little variation)")
    if n_seeds < min_seeds:
        reasons.append(f"rests on {n_seeds} {unit} (fewer than {min_seeds})")
    if n_problems is not None and n_problems < min_problems:
        reasons.append(f"rests on {n_problems} problems (fewer than {min_problems})")
    return Estimate(mean=mean, ci95=float(half), low=float(low), high=float(high), n_seeds=int(n_seeds),
                    n_problems=n_problems, method=method, informative=not reasons, reason="; ".join(reasons),
                    unit=unit)


def _influence(kind: str, a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``Z[s, p]``: problem p's contribution to seed s's statistic, scaled so that ``g_s`` moves by
    ``dZ / P`` (exact for means and differences; first-order, the delta method, for savings and ratios)."""
    n = a.shape[1]
    if kind == "mean":
        return a
    if kind == "difference":
        return a - b
    sa, sb = a.sum(axis=1, keepdims=True), b.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = n * (a / sb - sa * b / sb**2)
    return -z if kind == "saving" else z


def _problem_var(kind: str, a: np.ndarray, b: np.ndarray | None) -> float:
    """The problem-sampling part of the variance of ``mean_s g_s`` over a crossed seeds x problems design:
    ``var_p(column means of Z) / P - residual variance of Z / (S P)``, floored at 0. The residual term
    is the seed x problem noise that the seed term already holds; subtracting it makes the sum with
    ``var_s(g_s) / S`` the unbiased crossed random-effects estimate (no double counting)."""
    n_seeds, n = a.shape
    if n < 2:
        return 0.0
    z = _influence(kind, a, b)
    if not np.all(np.isfinite(z)):
        return math.inf
    col = z.mean(axis=0)
    part = float(col.var(ddof=1)) / n
    if n_seeds > 1:
        resid = z - z.mean(axis=1, keepdims=True) - col[None, :] + z.mean()
        part -= float((resid**2).sum()) / ((n_seeds - 1) * (n - 1)) / (n_seeds * n)
    return max(0.0, part)


def _bootstrap(kind: str, a: np.ndarray, b: np.ndarray | None, *, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile interval of ``mean_s g_s`` over replicates that resample seeds, then problems (the same
    problem draw inside every drawn seed and in both arms)."""
    rng = np.random.default_rng(seed)
    n_seeds, n = a.shape
    reps = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, n_seeds, n_seeds)
        cols = rng.integers(0, n, n)
        sa = a[np.ix_(rows, cols)].sum(axis=1)
        sb = None if b is None else b[np.ix_(rows, cols)].sum(axis=1)
        reps[i] = _g(kind, sa, sb, n).mean()
    if not np.all(np.isfinite(reps)):
        return math.nan, math.nan
    low, high = np.percentile(reps, [2.5, 97.5])
    return float(low), float(high)


__all__ = ["DEFAULT_METHOD", "Estimate", "METHODS", "MIN_PROBLEMS", "MIN_SEEDS", "arm_mean", "collapse_repeats",
           "paired_difference", "paired_ratio", "paired_saving", "stack_by_problem", "summary_keys", "t_quantile"]
