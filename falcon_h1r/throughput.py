"""Decode-throughput arithmetic and timing primitives for the hybrid-vs-transformer study (paper Appendix B,
Fig. 8): what sets tokens/s per GPU, computed from an architecture's shapes, and the clocks that measure it.

* **bytes**: K/V per token, Mamba-2 conv/SSM states per sequence, the per-token outputs, and the bytes one
  decode step must move (weights + K/V up to the position + states, read and written back): over the HBM
  bandwidth of a large copy this is the step's **roofline**;
* **capacity**: the largest batch whose whole-run caches fit in the memory left after the weights, and the
  batch plan a study measures within it;
* **integration**: a step's time sampled at a few context positions, integrated over the output length
  (piecewise linear: attention grows linearly with the context, the Mamba part is constant), plus prefill,
  gives tokens/s;
* **timing primitives**: the large-copy bandwidth, a CUDA-graph decode step timed with events, a prefill
  forward, and the device facts a record carries.

Nothing here knows presets or result folders: the study that runs these on a GPU and writes its records is
:mod:`falcon_h1r.sections.throughput`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

HYBRID, TRANSFORMER = "Falcon-H1R-7B", "Qwen3-8B"
# Bytes per row of the [B, V] float temporaries of one sampling step (logits, log-softmax, sort values and
# indices, cumulative sums, the noise): what a batch costs beyond its caches.
SAMPLING_BYTES_PER_VOCAB_ENTRY = 48


# ============================================================================ bytes
def arch_numbers(config: Any) -> dict[str, Any]:
    """Shapes that set memory and traffic, from a FalconH1Config or Qwen3Config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    out = {"family": "falcon_h1" if "FalconH1" in type(config).__name__ else "qwen3",
           "layers": config.num_hidden_layers, "kv_heads": config.num_key_value_heads, "head_dim": head_dim,
           "hidden": config.hidden_size, "vocab": config.vocab_size}
    if out["family"] == "falcon_h1":
        d_ssm = config.mamba_d_ssm or int(config.mamba_expand * config.hidden_size)
        out.update(d_ssm=d_ssm, m_heads=config.mamba_n_heads, m_head_dim=config.mamba_d_head,
                   d_state=config.mamba_d_state, d_conv=config.mamba_d_conv,
                   conv_dim=d_ssm + 2 * config.mamba_n_groups * config.mamba_d_state)
    return out


def kv_bytes_per_token(config: Any, dtype_bytes: int = 2) -> int:
    """K and V of every layer for one token."""
    a = arch_numbers(config)
    return a["layers"] * 2 * a["kv_heads"] * a["head_dim"] * dtype_bytes


def state_bytes_per_sequence(config: Any, dtype_bytes: int = 2, ssm_state_bytes: int = 4) -> int:
    """Mamba-2 conv window and SSM state of every layer for one sequence (0 for a transformer)."""
    a = arch_numbers(config)
    if a["family"] != "falcon_h1":
        return 0
    conv = a["conv_dim"] * a["d_conv"] * dtype_bytes
    ssm = a["m_heads"] * a["m_head_dim"] * a["d_state"] * ssm_state_bytes
    return a["layers"] * (conv + ssm)


def output_bytes_per_token(top_k: int) -> int:
    """What the engine records per generated token: id (8), log-prob (4), top-k log-probs (4k) and ids (8k)."""
    return 12 + 12 * top_k


def sequence_bytes(config: Any, context: int, output_len: int, *, dtype_bytes: int = 2, ssm_state_bytes: int = 4,
                   top_k: int = 20) -> int:
    """Everything one sequence holds in a full run: caches for ``context`` tokens, states, outputs and its
    share of the sampling temporaries."""
    return (kv_bytes_per_token(config, dtype_bytes) * context + state_bytes_per_sequence(config, dtype_bytes,
            ssm_state_bytes) + output_bytes_per_token(top_k) * output_len
            + arch_numbers(config)["vocab"] * SAMPLING_BYTES_PER_VOCAB_ENTRY)


def param_count(config: Any) -> int:
    """Parameters of the architecture, counted on the meta device (nothing is allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def decode_step_bytes(config: Any, batch: int, context: int, *, params: int, dtype_bytes: int = 2,
                      ssm_state_bytes: int = 4) -> dict[str, int]:
    """Bytes one decode step must move at ``context`` tokens: every weight but the input embedding table
    (only B rows of it are read), the K/V of the context, and the Mamba states read and written back."""
    a = arch_numbers(config)
    weights = (params - a["vocab"] * a["hidden"]) * dtype_bytes
    kv = batch * kv_bytes_per_token(config, dtype_bytes) * context
    states = batch * 2 * state_bytes_per_sequence(config, dtype_bytes, ssm_state_bytes)
    return {"weights": weights, "kv": kv, "states": states, "total": weights + kv + states}


def max_batch(per_sequence_bytes: int, free_bytes: int, reserve_bytes: int = 0) -> int:
    """The largest batch whose sequences fit in ``free_bytes`` after keeping ``reserve_bytes``."""
    if per_sequence_bytes <= 0:
        raise ValueError(f"per_sequence_bytes must be > 0, got {per_sequence_bytes}")
    return max(0, int((free_bytes - reserve_bytes) // per_sequence_bytes))


def sample_positions(input_len: int, output_len: int, n: int) -> list[int]:
    """``n`` context positions from the first decode step (``input_len``) to the last (input + output - 1)."""
    last = input_len + output_len - 1
    return sorted({int(round(input_len + j * (last - input_len) / max(1, n - 1))) for j in range(n)})


def integrate_steps(positions: list[int], step_s: list[float], start: int, stop: int) -> float:
    """Sum of the step times over positions ``start .. stop-1``, linear between the measured positions
    (constant beyond them)."""
    if not positions:
        raise ValueError("no measured positions to integrate")
    order = np.argsort(positions)
    xs = np.asarray(positions, dtype=float)[order]
    ys = np.asarray(step_s, dtype=float)[order]
    return float(np.interp(np.arange(start, stop, dtype=float), xs, ys).sum())


def tokens_per_s(batch: int, output_len: int, decode_s: float, prefill_s_per_seq: float | None = None) -> float:
    """Generated tokens per second for ``batch`` sequences of ``output_len`` tokens, prefill included when given."""
    total = decode_s + (batch * prefill_s_per_seq if prefill_s_per_seq else 0.0)
    return batch * output_len / total


# ============================================================================ capacity and the batch plan
def capacity(config: Any, input_len: int, output_len: int, free_bytes: int, *, reserve_bytes: int = 0,
             dtype_bytes: int = 2, ssm_state_bytes: int = 4, top_k: int = 20) -> dict[str, Any]:
    """How many whole runs of ``input_len + output_len`` tokens fit in ``free_bytes``: ``max_batch`` counts
    everything a sequence holds (:func:`sequence_bytes`) and keeps ``reserve_bytes`` free; ``alloc_limit``
    counts the caches alone, which is what allocating them must confirm (one more must not fit)."""
    ctx = input_len + output_len
    per_seq = sequence_bytes(config, ctx, output_len, dtype_bytes=dtype_bytes, ssm_state_bytes=ssm_state_bytes,
                             top_k=top_k)
    cache_only = kv_bytes_per_token(config, dtype_bytes) * ctx + state_bytes_per_sequence(
        config, dtype_bytes, ssm_state_bytes)
    return {"context": ctx, "per_sequence_bytes": per_seq, "cache_bytes_per_sequence": cache_only,
            "free_bytes": free_bytes, "reserve_bytes": reserve_bytes,
            "max_batch": max_batch(per_seq, free_bytes, reserve_bytes),
            "alloc_limit": max_batch(cache_only, free_bytes)}


def batch_plan(grid: list[int], max_b: int, core: bool) -> list[int]:
    """The batches to time, within ``max_b``: ``core`` ones first (batch 32, then the others >= 32 from the
    largest down, plus ``max_b`` itself when it falls between the grid's sizes; the largest that fits when none
    of those does), then (``core=False``) the rest of the grid that fits, from the largest down."""
    top = max(grid)
    fits = [b for b in grid if b <= max_b]
    extra = [max_b] if 0 < max_b < top and max_b not in grid else []
    core_set = [b for b in grid if b >= 32 and b <= max_b] + extra
    if not core_set and fits:
        core_set = [max(fits)]
    if core:
        return sorted(set(core_set), key=lambda b: (b != 32, -b))
    return sorted(set(fits) - set(core_set), reverse=True)


# ============================================================================ architectures
def paper_architectures(falcon_layers: int = 44, qwen3_layers: int = 36) -> dict[str, Any]:
    """The two architectures compared: Falcon-H1R-7B and Qwen3-8B (their full depths by default)."""
    from falcon_h1r.models import falcon_h1r_7b_config, qwen3_8b_config

    return {HYBRID: falcon_h1r_7b_config(falcon_layers), TRANSFORMER: qwen3_8b_config(qwen3_layers)}


def smoke_architectures() -> dict[str, Any]:
    """Two-layer, 64-wide Falcon-H1 (with Falcon-H1R-7B's µP multipliers) and Qwen3 configs: the study's code
    path on CPU in seconds (``bench/throughput.py --smoke`` and the tests)."""
    from transformers import FalconH1Config, Qwen3Config

    from falcon_h1r.models import FALCON_H1R_7B_MUP

    fal = FalconH1Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, mamba_d_ssm=64, mamba_n_heads=4,
                         mamba_d_head=16, mamba_d_state=8, mamba_d_conv=4, mamba_chunk_size=8, mamba_rms_norm=True,
                         max_position_embeddings=512, **FALCON_H1R_7B_MUP)
    qwen = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512)
    return {HYBRID: fal, TRANSFORMER: qwen}


# ============================================================================ timing primitives
def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def synchronize(device: Any) -> None:
    """Wait for the device's queued work (a no-op on CPU), so host clocks bracket what they time."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def copy_seconds(device: Any, nbytes: int, reps: int = 10, warmup: int = 3) -> float:
    """Seconds per copy of an ``nbytes`` buffer into another on ``device`` (a copy reads and writes every
    byte, so the bandwidth is ``2 * nbytes / seconds``)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    synchronize(device)
    return (time.perf_counter() - t0) / reps


def time_decode_steps(eng: Any, graph: Any, kv_len: int, sampling: tuple, gen: Any, n: int,
                      device: Any) -> list[float]:
    """Seconds of ``n`` decode steps of a :class:`falcon_h1r.inference.engine.DecodeEngine` at its current
    position: replays of its captured CUDA ``graph`` timed with CUDA events, else its eager step timed with the
    host clock. A sampling step (``sampling[0]`` > 0) draws fresh exponential noise each time, as decoding does."""
    import torch

    times = []
    sample = sampling[0] != 0.0
    if graph is not None:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for a, b in events:
            a.record()
            if sample:
                eng.noise.exponential_(generator=gen)
            graph.replay()
            b.record()
        torch.cuda.synchronize(device)
        return [a.elapsed_time(b) / 1e3 for a, b in events]
    for _ in range(n):
        t0 = time.perf_counter()
        if sample:
            eng.noise.exponential_(generator=gen)
        eng._step_body(kv_len, sampling, None, True)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def time_prefill(model: Any, ids: Any, device: Any) -> float:
    """Seconds of one prefill forward over ``ids`` (keeping the last position's logits), after one untimed
    forward that compiles / autotunes the kernels."""
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    synchronize(device)
    t0 = time.perf_counter()
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    synchronize(device)
    return time.perf_counter() - t0


def device_record(device: Any) -> dict[str, Any]:
    """What a measurement ran on: torch, Triton, packages, git state, the GPU, which SSM state update the engine
    uses by default and whether mamba-ssm's (the alternative) is there."""
    import torch

    from falcon_h1r.env import git_state, package_versions

    rec: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                           "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        rec["packages"] = package_versions()
        rec["git"] = git_state()
    except Exception:  # noqa: BLE001
        pass
    try:
        import triton

        rec["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        rec["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rec.update(gpu_name=props.name, total_memory=props.total_memory, sm_count=props.multi_processor_count,
                   cuda=torch.version.cuda)
    else:
        rec["gpu_name"] = None
    from falcon_h1r.inference.engine_ops import resolve_state_update, triton_state_update

    rec["mamba_ssm_triton_state_update"] = triton_state_update() is not None
    rec["ssm_state_update"] = resolve_state_update("auto", device)  # what the engine uses by default
    return rec


__all__ = [
    "HYBRID", "TRANSFORMER", "SAMPLING_BYTES_PER_VOCAB_ENTRY", "arch_numbers", "kv_bytes_per_token",
    "state_bytes_per_sequence", "output_bytes_per_token", "sequence_bytes", "param_count", "decode_step_bytes",
    "max_batch", "sample_positions", "integrate_steps", "tokens_per_s", "capacity", "batch_plan",
    "paper_architectures", "smoke_architectures", "is_oom", "synchronize", "copy_seconds", "time_decode_steps",
    "time_prefill", "device_record",
]
