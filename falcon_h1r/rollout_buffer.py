"""Online sampling for GRPO: what to do with zero-advantage groups (paper §3, ``papers/rl_sampling_strategies.yaml``).

A group (one prompt, G rollouts) whose rewards are all equal (all right or all wrong) has zero
advantage everywhere and gives no policy gradient. Three ways to keep the batch useful:

- ``backfill`` (the paper's choice): drop those groups and pull more prompts from later in the
  stream until the batch holds ``batch_prompts`` informative groups. Informative groups produced
  beyond what the batch needs go to a bounded **generation cache** (Kimi k1.5 style) and open the
  next batch; a cached group older than ``cache_max_age`` steps is dropped (the optional refresh that
  keeps samples near on-policy), and when the cache is full the oldest group is evicted.
  ``cache_size = 0`` is backfill without a cache (DAPO's dynamic sampling: the overflow is wasted).
- ``reject``: one generation call per step; zero-advantage groups are dropped and the batch is
  whatever is left (variable size), at most ``batch_prompts`` groups.
- ``duplicate``: one generation call per step; when fewer than ``batch_prompts`` groups are
  informative, the batch is topped up with copies of positive-advantage rollouts of the same call
  (at most ``batch_prompts`` unique groups, as for reject).

Every strategy generates ``gen_prompts_per_call`` prompts per call, so a call costs the same in each, and
no strategy trains on more than ``batch_prompts`` groups a step (equal trained groups per step): the
informative groups reject and duplicate get beyond the batch are dropped (``overflow_dropped``).

Bookkeeping, per strategy: generation calls, prompts and rollouts generated, informative groups
used (each counted once), groups wasted (zero advantage, evicted, expired, dropped over the cap). The
comparable figure is **generation calls per filled batch** = calls / (unique informative groups used /
``batch_prompts``): what it costs to feed the trainer one batch's worth of gradient-carrying groups. It is
defined for every strategy; a run that used no informative group filled no batch and says so
(``filled_batches`` 0, the cost None), never an infinite cost.

The module knows nothing of models: groups come from a ``sample_fn(problems) -> list[Group]`` that
the trainer supplies (one call = one generation call of the rollout engine), or from
:class:`ReplaySampler`, which replays measured per-problem success rates so the strategies can be compared
over many seeds without a model (:func:`simulate_strategy`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

STRATEGIES = ("backfill", "reject", "duplicate")


@dataclass
class Group:
    """One prompt and its G rollouts, graded; ``advantages`` are group-normalized at creation."""

    problem: dict[str, Any]
    rollouts: list[Any]  # falcon_h1r.inference.Completion (or anything the trainer understands)
    rewards: list[float]
    correct: list[bool]
    advantages: list[float]
    born_step: int  # the trainer step (policy version) that sampled it
    duplicate_of: str | None = None  # set on duplicated rollouts (strategy "duplicate")

    @property
    def informative(self) -> bool:
        """False for zero-advantage groups: every reward equal (all right or all wrong)."""
        return len(self.rewards) > 1 and max(self.rewards) > min(self.rewards)

    @property
    def all_correct(self) -> bool:
        return all(self.correct)


def group_advantages(rewards: Sequence[float], eps: float, std: str = "unbiased") -> list[float]:
    """(R - mean) / (std + eps) over one group (paper Table 2: group-normalized advantage).

    ``std="unbiased"`` divides by G-1 (``torch.std``, as verl's GRPO estimator does); ``"population"``
    by G. A zero-variance group gets all-zero advantages.
    """
    g = len(rewards)
    if g == 0:
        return []
    mean = sum(rewards) / g
    dev = [r - mean for r in rewards]
    denom = (g - 1) if std == "unbiased" else g
    if std not in ("unbiased", "population"):
        raise ValueError(f"std {std!r} not accepted; use 'unbiased' or 'population'")
    var = sum(d * d for d in dev) / max(1, denom)
    s = var ** 0.5
    if s == 0.0:
        return [0.0] * g
    return [d / (s + eps) for d in dev]


class PromptStream:
    """An endless, seeded stream over a prompt pool: reshuffled every epoch, domains interleaved.

    With several domains in the pool, each epoch shuffles each domain and then takes them round-robin,
    so a mixed curriculum has every domain in every batch (paper Table 3, "Math + Code mixed").
    """

    def __init__(self, problems: Sequence[dict[str, Any]], seed: int = 0):
        if not problems:
            raise ValueError("empty RL prompt pool: nothing to sample from (check the pool's filter report)")
        self.problems = list(problems)
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self._order = self._make_order(0)

    def _make_order(self, epoch: int) -> list[int]:
        rng = random.Random(f"{self.seed}-stream-{epoch}")
        by_domain: dict[str, list[int]] = {}
        for i, p in enumerate(self.problems):
            by_domain.setdefault(str(p.get("domain")), []).append(i)
        lanes = []
        for d in sorted(by_domain):
            lane = by_domain[d][:]
            rng.shuffle(lane)
            lanes.append(lane)
        order = []
        for k in range(max(len(lane) for lane in lanes)):
            order += [lane[k] for lane in lanes if k < len(lane)]
        return order

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            if self.pos >= len(self._order):
                self.epoch += 1
                self.pos = 0
                self._order = self._make_order(self.epoch)
            out.append(self.problems[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "n": len(self.problems)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n"] != len(self.problems) or state["seed"] != self.seed:
            raise ValueError(f"prompt stream state is for a pool of {state['n']} prompts with seed {state['seed']}, "
                             f"this pool has {len(self.problems)} with seed {self.seed}: resume with the same pool")
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._make_order(self.epoch)


@dataclass
class FillStats:
    """What one batch cost and what it holds."""

    gen_calls: int = 0
    prompts_generated: int = 0
    rollouts_generated: int = 0
    informative_new: int = 0  # informative groups generated this step
    all_correct: int = 0  # zero-advantage groups dropped: all right
    all_wrong: int = 0  # ... all wrong (all rewards equal and not all correct)
    from_cache: int = 0  # informative groups taken from the cache
    to_cache: int = 0
    evicted: int = 0  # informative groups pushed out of a full cache (wasted)
    expired: int = 0  # cached groups dropped as too old (wasted)
    duplicated: int = 0  # rollouts copied in (strategy "duplicate")
    overflow_dropped: int = 0  # informative groups over the batch cap (reject, duplicate): wasted
    groups_used: int = 0  # unique informative groups in the batch
    underfilled: bool = False  # backfill hit max_gen_calls before the batch was full
    cache_len: int = 0
    mean_staleness: float = 0.0  # mean (step - born_step) over the batch's groups

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BatchFiller:
    """Fills one training batch of groups per step with the chosen strategy (see the module doc)."""

    strategy: str
    batch_prompts: int  # informative groups wanted per batch
    gen_prompts_per_call: int
    cache_size: int = 0
    cache_max_age: int = 0  # steps; 0 = never refresh
    max_gen_calls: int = 8  # per batch, so a pool of all-solved prompts cannot loop forever
    cache: list[Group] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} not accepted; use one of {list(STRATEGIES)}")
        for name in ("batch_prompts", "gen_prompts_per_call", "max_gen_calls"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cache_size < 0 or self.cache_max_age < 0:
            raise ValueError(f"cache_size and cache_max_age must be >= 0, got {self.cache_size}, {self.cache_max_age}")

    # ------------------------------------------------------------------ one batch
    def fill(self, stream: PromptStream, sample_fn: Callable[[list[dict[str, Any]]], list[Group]],
             step: int) -> tuple[list[Group], FillStats]:
        st = FillStats()
        if self.strategy == "backfill":
            batch = self._backfill(stream, sample_fn, step, st)
        else:  # one generation call of the same size as backfill's, at most batch_prompts groups trained
            groups = self._generate(stream, sample_fn, self.gen_prompts_per_call, st)
            batch = [g for g in groups if g.informative]
            st.overflow_dropped = max(0, len(batch) - self.batch_prompts)
            batch = batch[: self.batch_prompts]
            if self.strategy == "duplicate":
                batch = batch + self._duplicates(batch, self.batch_prompts - len(batch), st)
        st.groups_used = sum(1 for g in batch if g.duplicate_of is None)
        st.cache_len = len(self.cache)
        if batch:
            st.mean_staleness = sum(step - g.born_step for g in batch) / len(batch)
        self._accumulate(st)
        return batch, st

    def _generate(self, stream: PromptStream, sample_fn, n: int, st: FillStats) -> list[Group]:
        problems = stream.take(n)
        groups = sample_fn(problems)
        st.gen_calls += 1
        st.prompts_generated += len(problems)
        st.rollouts_generated += sum(len(g.rollouts) for g in groups)
        for g in groups:
            if g.informative:
                st.informative_new += 1
            elif g.all_correct:
                st.all_correct += 1
            else:
                st.all_wrong += 1
        return groups

    def _backfill(self, stream: PromptStream, sample_fn, step: int, st: FillStats) -> list[Group]:
        if self.cache_max_age:
            fresh = [g for g in self.cache if step - g.born_step <= self.cache_max_age]
            st.expired += len(self.cache) - len(fresh)
            self.cache = fresh
        batch = self.cache[: self.batch_prompts]
        self.cache = self.cache[self.batch_prompts:]
        st.from_cache = len(batch)
        while len(batch) < self.batch_prompts and st.gen_calls < self.max_gen_calls:
            for g in self._generate(stream, sample_fn, self.gen_prompts_per_call, st):
                if not g.informative:
                    continue
                if len(batch) < self.batch_prompts:
                    batch.append(g)
                else:
                    self.cache.append(g)
                    st.to_cache += 1
        st.underfilled = len(batch) < self.batch_prompts
        overflow = len(self.cache) - self.cache_size
        if overflow > 0:  # a full cache keeps the newest groups (closest to on-policy)
            st.evicted += overflow
            self.cache = self.cache[overflow:]
        return batch

    @staticmethod
    def _duplicates(batch: list[Group], n_missing: int, st: FillStats) -> list[Group]:
        """``n_missing`` groups' worth of rollouts copied from positive-advantage rollouts of ``batch``."""
        pos = [(g, i) for g in batch for i, a in enumerate(g.advantages) if a > 0]
        if not pos or n_missing <= 0:
            return []
        out = []
        k = 0
        for _ in range(n_missing):
            members = [pos[(k + j) % len(pos)] for j in range(len(batch[0].rollouts))]
            k += len(members)
            out.append(Group(problem=members[0][0].problem, rollouts=[g.rollouts[i] for g, i in members],
                             rewards=[g.rewards[i] for g, i in members], correct=[g.correct[i] for g, i in members],
                             advantages=[g.advantages[i] for g, i in members],
                             born_step=min(g.born_step for g, _ in members),
                             duplicate_of=",".join(sorted({str(g.problem.get("id")) for g, _ in members}))))
            st.duplicated += len(members)
        return out

    # ------------------------------------------------------------------ bookkeeping
    def _accumulate(self, st: FillStats) -> None:
        t = self.totals
        t["steps"] = t.get("steps", 0) + 1
        for k, v in st.as_dict().items():
            if isinstance(v, bool):
                t[k] = t.get(k, 0) + int(v)
            elif k not in ("cache_len", "mean_staleness"):
                t[k] = t.get(k, 0) + v

    def summary(self) -> dict[str, Any]:
        """Totals and the comparable cost: generation calls per filled batch (see the module doc)."""
        return summarize(self.totals, self.batch_prompts)

    def state_dict(self) -> dict[str, Any]:
        return {"cache": list(self.cache), "totals": dict(self.totals), "strategy": self.strategy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["strategy"] != self.strategy:
            raise ValueError(f"sampler state is for strategy {state['strategy']!r}, this run uses {self.strategy!r}")
        self.cache = list(state["cache"])
        self.totals = dict(state["totals"])


def summarize(totals: dict[str, float], batch_prompts: int) -> dict[str, Any]:
    """Totals (summed :class:`FillStats` plus ``steps``) and the per-filled-batch costs derived from them.

    ``filled_batches`` = unique informative groups used / ``batch_prompts``; the costs per filled batch are
    None (and ``filled_no_batch`` True) when no informative group was used: such a run filled no batch, which
    is reported as such rather than as an infinite cost."""
    t: dict[str, Any] = dict(totals)
    used = t.get("groups_used", 0)
    t["filled_batches"] = used / batch_prompts
    t["filled_no_batch"] = not used
    t["gen_calls_per_filled_batch"] = t.get("gen_calls", 0) / t["filled_batches"] if used else None
    t["rollouts_per_filled_batch"] = t.get("rollouts_generated", 0) / t["filled_batches"] if used else None
    gen = t.get("prompts_generated", 0)
    t["informative_frac"] = t.get("informative_new", 0) / gen if gen else 0.0
    return t


def totals_from_rows(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """:meth:`BatchFiller.fill` bookkeeping summed over per-step records (e.g. the first n steps of a run)."""
    keys = [k for k in FillStats().as_dict() if k not in ("cache_len", "mean_staleness")]
    t: dict[str, float] = {"steps": len(rows)}
    for k in keys:
        t[k] = sum(int(r[k]) if isinstance(r[k], bool) else r[k] for r in rows)
    return t


# ============================================================================== replayed outcomes
class ReplaySampler:
    """A ``sample_fn`` without a model: each rollout of problem ``p`` is correct with probability ``rates[p["id"]]``
    (a measured success rate, e.g. c/k from k rollouts of a checkpoint), reward 1 or 0.

    Why: the strategies differ only in what they do with the groups a call returns, so their cost can be
    measured on the groups a policy would produce, over many seeds, at no generation cost. The policy is
    frozen at the checkpoint whose rates are replayed (it does not improve during the replay).
    Draws come from a generator keyed by (seed, problem id, how many times this sampler has generated that
    problem), so every strategy run with the same seed sees the same group the n-th time it generates the
    same prompt: the strategies are compared on common random numbers (paired).
    """

    def __init__(self, rates: dict[str, float], group_size: int, seed: int = 0, advantage_eps: float = 1e-6):
        bad = {k: v for k, v in rates.items() if not 0.0 <= float(v) <= 1.0}
        if bad:
            raise ValueError(f"success rates must lie in [0, 1]; got {dict(list(bad.items())[:3])}")
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a group of one has no advantage), got {group_size}")
        self.rates = {str(k): float(v) for k, v in rates.items()}
        self.group_size, self.seed, self.eps = group_size, seed, advantage_eps
        self.step = 0  # the policy version stamped on new groups (the caller sets it each step)
        self.visits: dict[str, int] = {}

    def __call__(self, problems: list[dict[str, Any]]) -> list[Group]:
        out = []
        for p in problems:
            pid = str(p["id"])
            if pid not in self.rates:
                raise KeyError(f"no measured success rate for problem {pid!r}: replay only problems whose rates were measured")
            visit = self.visits.get(pid, 0)
            self.visits[pid] = visit + 1
            rng = random.Random(f"{self.seed}-{pid}-{visit}")
            rewards = [1.0 if rng.random() < self.rates[pid] else 0.0 for _ in range(self.group_size)]
            out.append(Group(problem=p, rollouts=[f"{pid}#{visit}/{k}" for k in range(self.group_size)],
                             rewards=rewards, correct=[r > 0 for r in rewards],
                             advantages=group_advantages(rewards, self.eps), born_step=self.step))
        return out


def informative_probability(rate: float, group_size: int) -> float:
    """P(a group of ``group_size`` rollouts, each right with probability ``rate``, is not all equal)."""
    return 1.0 - rate ** group_size - (1.0 - rate) ** group_size


def simulate_strategy(strategy: str, pool: Sequence[dict[str, Any]], rates: dict[str, float], *, group_size: int,
                      batch_prompts: int, gen_prompts_per_call: int, steps: int, cache_size: int = 0,
                      cache_max_age: int = 0, max_gen_calls: int = 8, seed: int = 0) -> dict[str, Any]:
    """``steps`` batches of one strategy on replayed outcomes (:class:`ReplaySampler`): its :func:`summarize`
    figures, plus the mean and smallest batch. The same ``seed`` gives every strategy the same prompt order and
    the same groups (paired)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sampler = ReplaySampler(rates, group_size, seed)
    stream = PromptStream(pool, seed=seed)
    filler = BatchFiller(strategy, batch_prompts, gen_prompts_per_call, cache_size, cache_max_age, max_gen_calls)
    sizes = []
    for step in range(steps):
        sampler.step = step
        batch, _ = filler.fill(stream, sampler, step)
        sizes.append(len(batch))
    return {**filler.summary(), "batch_groups_mean": sum(sizes) / len(sizes), "batch_groups_min": min(sizes)}


__all__ = ["BatchFiller", "FillStats", "Group", "PromptStream", "ReplaySampler", "STRATEGIES", "group_advantages",
           "informative_probability", "simulate_strategy", "summarize", "totals_from_rows"]
