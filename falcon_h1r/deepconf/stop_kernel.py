"""The live stop's per-step bookkeeping as one fused Triton kernel, with its plain-torch reference twin.

Why a kernel of our own: :class:`falcon_h1r.deepconf.online.EarlyStopController` runs inside the decode step's
CUDA graph, and at the small preset a decode step is ~1.7 ms (batch 512, H200). Its torch form is about 12
tiny kernels (a float64 sum, a gather and a scatter on the ring, the window sum, the count, three compares)
and each costs a few microseconds even inside a graph: 4.0 % of the step on the H200 (3.3 % as the median of
paired runs), over the 3 % target of the §5 issue. One program per block of rows does the same in a single
launch. Neither vLLM nor the DeepConf release has such a kernel (their stop runs on the host between steps).

:func:`window_stop_update_ref` is the twin (the controller's original torch code); ``tests/test_stop_kernel.py``
compares the two under Triton's CPU interpreter (and compiled, in a CUDA graph, with ``-m gpu``), and
:func:`falcon_h1r.deepconf.overhead.measure_confidence_overhead` times the controller on the GPU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


def window_stop_update_ref(top_logprobs: torch.Tensor, running: torch.Tensor, ring: torch.Tensor,
                           sums: torch.Tensor, count: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """One step of the sliding-window stop, in place on ``ring`` [B, W] (float64, per token: the sum of its
    top-k log-probs), ``sums`` [B] (the window's sum) and ``count`` [B] (tokens seen): rows not ``running``
    keep their state. Returns the rows to stop: running, window full and window mean confidence below
    ``threshold``, i.e. ``sums > -threshold * k * W`` (no division; None never stops)."""
    window = ring.shape[1]
    k = int(top_logprobs.shape[1])
    total = top_logprobs.sum(-1, dtype=torch.float64)[:, None]  # -k * confidence
    slot = (count % window)[:, None]
    old = ring.gather(1, slot)
    new = torch.where(running[:, None], total, old)
    ring.scatter_(1, slot, new)
    sums += (new - old)[:, 0]
    count += running
    if threshold is None:
        return torch.zeros_like(running)
    return running & (count >= window) & (sums > -float(threshold) * k * window)


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    """Build the kernel on first use (so that ``TRITON_INTERPRET`` set by a test is honoured and machines
    without Triton can import this module)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _window_stop(TOP, RUN, RING, SUMS, COUNT, THR, STOP, n_rows, k, s_top,
                     WINDOW: tl.constexpr, HAS_LIMIT: tl.constexpr, BLOCK_B: tl.constexpr,
                     BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        live = rows < n_rows
        cols = tl.arange(0, BLOCK_K)
        lp = tl.load(TOP + rows[:, None] * s_top + cols[None, :], mask=live[:, None] & (cols[None, :] < k),
                     other=0.0)
        total = tl.sum(lp.to(tl.float64), axis=1)
        run = tl.load(RUN + rows, mask=live, other=0) != 0
        cnt = tl.load(COUNT + rows, mask=live, other=0)
        ring_at = RING + rows * WINDOW + cnt % WINDOW
        old = tl.load(ring_at, mask=live, other=0.0)
        new = tl.where(run, total, old)
        tl.store(ring_at, new, mask=live)
        window_sum = tl.load(SUMS + rows, mask=live, other=0.0) + (new - old)
        tl.store(SUMS + rows, window_sum, mask=live)
        cnt = cnt + run.to(tl.int64)
        tl.store(COUNT + rows, cnt, mask=live)
        if HAS_LIMIT:
            limit = -tl.load(THR) * k * WINDOW  # float64, in the twin's order: (-threshold * k) * W
            stop = run & (cnt >= WINDOW) & (window_sum > limit)
        else:
            stop = run & (cnt < 0)  # never
        tl.store(STOP + rows, stop.to(tl.int8), mask=live)

    return _window_stop


def window_stop_update(top_logprobs: torch.Tensor, running: torch.Tensor, ring: torch.Tensor,
                       sums: torch.Tensor, count: torch.Tensor, threshold: float | None,
                       threshold_buf: torch.Tensor | None = None, block_rows: int = 128) -> torch.Tensor:
    """:func:`window_stop_update_ref` in one Triton launch (same arguments, same in-place updates, same result).
    The state tensors must be contiguous: ``ring`` float64 [B, W], ``sums`` float64 [B], ``count`` int64 [B];
    ``running`` bool [B]; ``top_logprobs`` [B, k] with unit stride along k. ``threshold_buf``: a float64 [1]
    tensor on the device holding ``threshold`` (Triton passes a Python float as float32, which would move the
    comparison; a caller inside a CUDA graph makes it once, before capture)."""
    import triton

    n_rows, k = top_logprobs.shape
    if not (ring.is_contiguous() and sums.is_contiguous() and count.is_contiguous() and running.is_contiguous()):
        raise ValueError("window_stop_update needs contiguous ring, sums, count and running tensors")
    if ring.dtype != torch.float64 or sums.dtype != torch.float64 or count.dtype != torch.long:
        raise ValueError(f"window_stop_update needs a float64 ring and sums and an int64 count; got {ring.dtype}, "
                         f"{sums.dtype}, {count.dtype}")
    if top_logprobs.stride(1) != 1:
        top_logprobs = top_logprobs.contiguous()
    if threshold is not None and threshold_buf is None:
        threshold_buf = torch.full((1,), float(threshold), dtype=torch.float64, device=ring.device)
    stop = torch.empty_like(running)
    _kernel()[(triton.cdiv(n_rows, block_rows),)](
        top_logprobs, running.view(torch.int8), ring, sums, count,
        sums if threshold_buf is None else threshold_buf, stop.view(torch.int8), n_rows, k,
        top_logprobs.stride(0), WINDOW=ring.shape[1], HAS_LIMIT=threshold is not None, BLOCK_B=block_rows,
        BLOCK_K=max(16, triton.next_power_of_2(k)))
    return stop


@functools.lru_cache(maxsize=1)
def fused_available() -> bool:
    """Whether the fused kernel can run on CUDA tensors here: the decode kernels' Triton check, made once (the
    controller asks every step)."""
    from falcon_h1r.inference.decode_kernels import triton_available

    return triton_available()


__all__ = ["window_stop_update", "window_stop_update_ref", "fused_available"]
