"""What DeepConf's live early stop costs per decode step: the same batch decoded with and without an
:class:`~falcon_h1r.deepconf.EarlyStopController` whose threshold never fires.

A timing primitive with plain arguments (a model and sizes): ``bench/deepconf_overhead.py`` and the §5
section both call it. The issue's target on a GPU: at most 3 % of a decode step.
"""

from __future__ import annotations

import time
from typing import Any

from falcon_h1r.deepconf.online import EarlyStopController
from falcon_h1r.deepconf.stop_kernel import fused_available


class _TimedStop:
    """An early stop that times the controller it wraps, inside the generation loop (eager loops only:
    the host clock brackets each call, with a device sync on GPU)."""

    def __init__(self, inner: EarlyStopController, sync: Any):
        self.inner, self.sync, self.seconds, self.calls = inner, sync, 0.0, 0

    def reset(self, batch_size: int, device: Any) -> None:
        self.inner.reset(batch_size, device)

    def __call__(self, top_logprobs: Any, running: Any) -> Any:
        self.sync()
        t0 = time.perf_counter()
        out = self.inner(top_logprobs, running)
        self.sync()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def measure_confidence_overhead(model: Any, *, vocab_size: int, batch_size: int, new_tokens: int,
                                window: int, top_k: int = 20, prompt_len: int = 32, repeats: int = 5,
                                temperature: float = 0.6, top_p: float = 0.95, seed: int = 0,
                                engine: str = "auto") -> dict[str, Any]:
    """Decode-step cost of DeepConf's live stop, as a fraction of a decode step (``overhead_fraction``).

    The decode loop runs with and without an :class:`EarlyStopController` whose threshold never fires
    (0: confidences are >= 0), EOS disabled, so both decode the same steps. ``engine`` as
    ``generation.engine`` ("auto": the fast engine on GPU, transformers' loop on CPU):

    * "fast", :class:`falcon_h1r.inference.engine.DecodeEngine`: on GPU the controller is captured inside the
      step's CUDA graph, so its cost is only visible as the difference of the two decode clocks (graph
      capture and prefill excluded): ``(step_with - step_without) / step_without``;
    * "hf", the loop of :mod:`falcon_h1r.inference.hf_loop`: the controller's calls are timed inside the loop
      and divided by the step time without it. (The difference of two whole runs, also reported as
      ``overhead_fraction_loop_diff``, drowns in noise on a shared CPU: +-20 % between identical runs.)

    On the fast engine each repeat decodes without, with, and with the torch form back to back, and the figure
    is the median over repeats of the paired fractions (:func:`paired_overhead`); the difference of the fastest
    runs is kept as ``overhead_fraction_min_diff``. (It was the headline until an H200 run gave -2.6 %: one run
    with the controller was faster than every run without it, so "other processes only ever add time" does not
    hold for a GPU's clocks.) Also: the controller alone in a tight eager loop (``overhead_fraction_isolated``).
    The controller's torch form (``fused=False``, about 12 small kernels) is timed beside its fused kernel
    (``overhead_fraction_torch_form``), and ``controller_form`` says which one ``overhead_fraction`` timed.
    """
    import torch

    from falcon_h1r.inference import engine as fast_engine
    from falcon_h1r.inference import resolve_engine
    from falcon_h1r.inference.hf_loop import generate_ids

    device = next(model.parameters()).device
    resolved = resolve_engine(engine, model)
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, vocab_size, (batch_size, prompt_len), generator=gen).tolist()
    kw = dict(eos_id=-1, pad_id=0, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def check(rows: list[dict[str, Any]], steps: int) -> None:
        if any(len(r["token_ids"]) != steps for r in rows):
            raise RuntimeError("a row stopped early although EOS and the threshold were disabled")

    in_loop: list[float] = []
    auto = EarlyStopController(0.0, window)  # fused=None: the fused kernel on CUDA, unless it fails to build
    if resolved == "fast":
        eng = fast_engine.DecodeEngine(model, batch_size, prompt_len + new_tokens + 1)

        def decode_step(controller: EarlyStopController | None) -> float:
            rows = eng.generate(prompts, max_new_tokens=new_tokens, early_stop=controller, **kw)
            check(rows, new_tokens)
            return eng.last_timing["decode_s"] / eng.last_timing["steps"]

        decode_step(None)  # warm-up: allocator, kernels, graph capture
        decode_step(auto)
        decode_step(EarlyStopController(0.0, window, fused=False))
        runs: dict[str, list[float]] = {"without": [], "with": [], "with_torch_form": []}
        for _ in range(repeats):
            runs["without"].append(decode_step(None))
            runs["with"].append(decode_step(EarlyStopController(0.0, window, fused=auto.fused)))
            runs["with_torch_form"].append(decode_step(EarlyStopController(0.0, window, fused=False)))
    else:
        def timed(steps: int, controller: Any) -> float:
            sync()
            t0 = time.perf_counter()
            rows = generate_ids(model, prompts, max_new_tokens=steps, early_stop=controller, **kw)
            sync()
            check(rows, steps)
            return time.perf_counter() - t0

        timed(2, None)  # warm-up
        timed(2, EarlyStopController(0.0, window))
        totals: dict[str, list[float]] = {"without": [], "with": [], "one_step": []}
        for _ in range(repeats):
            totals["without"].append(timed(new_tokens, None))
            timer = _TimedStop(EarlyStopController(0.0, window), sync)
            totals["with"].append(timed(new_tokens, timer))
            in_loop.append(timer.seconds / max(1, timer.calls))
            totals["one_step"].append(timed(1, None))
        prefill = min(totals["one_step"])  # prefill and the first sample, the same in both
        runs = {k: [(t - prefill) / max(1, new_tokens - 1) for t in totals[k]] for k in ("without", "with")}
    step_without, step_with = min(runs["without"]), min(runs["with"])
    loop_diff = (step_with - step_without) / step_without  # the fastest runs' difference (a second reading)
    # what the timed controllers ran: the auto choice, unless the warm-up's kernel fell back to the torch form
    fused_form = device.type == "cuda" and fused_available() and auto.fused is not False
    raw = {"step_s_runs_without": runs["without"], "step_s_runs_with": runs["with"],
           "step_s_runs_with_torch_form": runs.get("with_torch_form", [])}
    paired = paired_overhead(raw)

    # the controller alone, on the same shapes, eagerly (an upper bound for the graph-captured step)
    controller = EarlyStopController(0.0, window)
    controller.reset(batch_size, device)
    top = -torch.rand(batch_size, top_k, device=device) * 10
    running = torch.ones(batch_size, dtype=torch.bool, device=device)
    n_calls = 200
    for _ in range(10):
        controller(top, running)
    sync()
    t0 = time.perf_counter()
    for _ in range(n_calls):
        stop = controller(top, running)
    bool(stop.any())
    sync()
    call_s = (time.perf_counter() - t0) / n_calls
    return {
        "engine": resolved, "device": str(device), "batch_size": batch_size, "new_tokens": new_tokens,
        "window": window, "top_k": top_k, "repeats": repeats,
        "method": "decode-clock difference (graph)" if resolved == "fast" else "controller timed inside the loop",
        "step_s_without": step_without, "step_s_with": step_with,
        "overhead_fraction": paired["overhead_fraction"] if resolved == "fast" else min(in_loop) / step_without,
        "overhead_fraction_min_diff": loop_diff,
        "overhead_fraction_loop_diff": loop_diff,
        # the paired figures read the decode clocks of the fast engine; transformers' loop times the calls instead
        **({k: v for k, v in paired.items() if k != "overhead_fraction"} if resolved == "fast"
           else {"overhead_fraction_torch_form": None}),
        "controller_form": "fused Triton kernel" if fused_form else "torch ops",
        "controller_in_loop_s": min(in_loop) if in_loop else None,
        "controller_call_s": call_s, "overhead_fraction_isolated": call_s / step_without,
        **raw,
    }


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def paired_overhead(record: dict[str, Any]) -> dict[str, Any]:
    """The controller's cost from a record's per-repeat step times (``step_s_runs_without``, ``_with``,
    ``_with_torch_form``, decoded back to back in each repeat): the median over repeats of
    ``(with - without) / without`` as ``overhead_fraction`` (and ``overhead_fraction_torch_form``), with the
    per-repeat fractions and their range. The median of pairs, because a run's speed drifts with the GPU's
    clocks between repeats, and one fast or slow repeat must not set the figure."""
    without = record.get("step_s_runs_without") or []
    out: dict[str, Any] = {}
    for name, key in (("overhead_fraction", "step_s_runs_with"),
                      ("overhead_fraction_torch_form", "step_s_runs_with_torch_form")):
        pairs = [(w - o) / o for w, o in zip(record.get(key) or [], without)]
        out[name] = _median(pairs) if pairs else None
        out[f"{name}_repeats"] = pairs
        out[f"{name}_range"] = [min(pairs), max(pairs)] if pairs else None
    return out


def overhead_record(record: dict[str, Any]) -> dict[str, Any]:
    """A stored overhead record with its figures read by :func:`paired_overhead` (fast engine): records made
    before the paired median was the headline kept the fastest-runs difference in ``overhead_fraction``; this
    re-derives the headline from their raw step times (kept as ``overhead_fraction_min_diff``), so every record
    is read the same way. A record of transformers' loop (timed inside the loop) is returned as it is."""
    if record.get("engine") != "fast" or not record.get("step_s_runs_with"):
        return dict(record)
    min_diff = record.get("overhead_fraction_min_diff", record.get("overhead_fraction_loop_diff"))
    return {**record, **paired_overhead(record), "overhead_fraction_min_diff": min_diff}


__all__ = ["measure_confidence_overhead", "paired_overhead", "overhead_record"]
