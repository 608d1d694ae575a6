"""The hybrid-vs-transformer decode throughput study (paper Appendix B, Fig. 8) on one GPU.

The paper ran vLLM on H100s with several GPUs per model (tensor/data parallel) and reports tokens/s per GPU for
Falcon-H1R-7B and Qwen3-8B at batch 2..128, for 512 -> 32K and 8K -> 16K tokens. Full runs (32K decode steps
per point) are far beyond a lent GPU's minutes, so we measure what sets that number:

* **decode step time** of our engine (:class:`falcon_h1r.inference.engine.DecodeEngine`, CUDA graph, random weights of
  the full architectures) at a few context positions spread over the output, with the caches filled with
  random values (a step's cost does not depend on them), then **integrate over the output length**
  (piecewise linear between the sampled positions: attention grows linearly with the context, the Mamba
  part is constant) and add the measured prefill time;
* the **largest batch** each architecture fits in the GPU's memory, from the cache bytes per sequence
  (K/V per token x context, plus Mamba conv/SSM states, plus the per-step outputs) against the memory left
  after the weights, checked by allocating;
* a **roofline**: the bytes one decode step must read (weights + K/V up to the position + states, which are
  also written back) over the HBM bandwidth measured with a large copy;
* transformers' ``generate`` at batch 128 for the engine/transformers ratio.

:func:`summarize` turns the bench's records into the headline figures, so the notebook and
``results/small/04_throughput/summary.json`` share one computation.
"""

from __future__ import annotations

import gc
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from falcon_h1r.config import RecipeError, to_dict

HYBRID, TRANSFORMER = "Falcon-H1R-7B", "Qwen3-8B"
RECORDS_FILE = "throughput_records.json"
ENGINE_CHECK_FILE = "engine_check.json"
# Bytes per row of the [B, V] float temporaries of one sampling step (logits, log-softmax, sort values and
# indices, cumulative sums, the noise): what a batch costs beyond its caches.
SAMPLING_BYTES_PER_VOCAB_ENTRY = 48
# The headline figures: always written (None when not measured) so a rerun never leaves stale values.
HEADLINE = ("gpu_name", "engine_over_hf_generate_bs128", "step_time_over_roofline_bs32",
            "hybrid_tok_s_per_gpu_bs64_8k_16k", "hybrid_tok_s_per_gpu_bs128_8k_16k", "hybrid_max_batch_8k_16k",
            "transformer_max_batch_8k_16k", "hybrid_over_transformer_bs128")


@dataclass
class ThroughputRecipe:
    """The ``throughput:`` block of a preset (the GPU study reads it; the notebook's engine check too)."""

    batch_sizes: list[int] = field(default_factory=lambda: [2, 8, 16, 32, 64, 128])  # paper Fig. 8
    # setting name -> [input tokens, output tokens]; names as in papers/fig8_throughput.csv
    settings: dict[str, list[int]] = field(default_factory=lambda: {"8K->16K": [8192, 16384],
                                                                    "512->32K": [512, 32768]})
    positions: int = 5  # context positions timed per configuration, spread from the first to the last token
    warmup_steps: int = 2
    timed_steps: int = 8
    temperature: float = 0.6  # paper §4.1 sampling, so the step includes top-p's sort
    top_p: float = 0.95
    top_k: int = 20  # top-k log-probs recorded at every step (DeepConf)
    ssm_state_dtype: typing.Literal["float32", "bfloat16"] = "float32"  # float32: what transformers keeps
    # auto: the fastest on the live cache, per position (timed inside a CUDA graph, as the step runs it)
    attention: typing.Literal["auto", "sdpa", "matmul", "triton"] = "auto"
    compile: bool = False  # the engine's torch.compile'd layer glue (fuses the element-wise kernels)
    reserve_gib: float = 2.0  # GPU memory kept free beyond the caches (graph pool, allocator slack)
    copy_gib: float = 4.0  # size of the copy that measures HBM bandwidth
    prefill_tokens: int = 8192  # tokens per prefill forward when timing prefill
    hf_batch: int = 128
    hf_prompt_tokens: int = 128
    hf_new_tokens: int = 32
    falcon_layers: int = 44  # Falcon-H1R-7B
    qwen3_layers: int = 36  # Qwen3-8B
    check_prompts: int = 8  # the notebook's engine-vs-transformers check on the preset's base model
    check_new_tokens: int = 32

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise RecipeError(f"throughput.batch_sizes: need positive batch sizes, got {self.batch_sizes}")
        for name, io in self.settings.items():
            if len(io) != 2 or min(io) < 1:
                raise RecipeError(f"throughput.settings.{name}: expected [input tokens, output tokens] > 0, got {io}")
        if self.positions < 2:
            raise RecipeError(f"throughput.positions: need >= 2 to integrate, got {self.positions}")
        if self.timed_steps < 1 or self.warmup_steps < 0:
            raise RecipeError("throughput.timed_steps must be >= 1 and warmup_steps >= 0")
        if not 1 <= self.top_k <= 20:
            raise RecipeError(f"throughput.top_k: must be in 1..20, got {self.top_k}")
        for name in ("check_prompts", "check_new_tokens", "hf_batch", "hf_prompt_tokens", "hf_new_tokens",
                     "falcon_layers", "qwen3_layers", "prefill_tokens"):
            if getattr(self, name) < 1:
                raise RecipeError(f"throughput.{name}: must be >= 1, got {getattr(self, name)}")
        if self.hf_new_tokens < 3:
            raise RecipeError(f"throughput.hf_new_tokens: need >= 3 to separate prefill from steps, got {self.hf_new_tokens}")


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


# ============================================================================ the study (runs on GPU; on CPU for tests)
def default_architectures(recipe: ThroughputRecipe) -> dict[str, Any]:
    from falcon_h1r.models import falcon_h1r_7b_config, qwen3_8b_config

    return {HYBRID: falcon_h1r_7b_config(recipe.falcon_layers), TRANSFORMER: qwen3_8b_config(recipe.qwen3_layers)}


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


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Study:
    """Runs every measurement, writing each record to ``out_dir/throughput_records.json`` as it comes, so a
    run cut short keeps what it measured. A configuration that fails (out of memory, a kernel error) is
    recorded with its status and the study goes on; ``budget_s`` skips (and records) what would not finish.
    """

    def __init__(self, recipe: ThroughputRecipe, out_dir: str | Path, *, device: str = "cuda",
                 dtype: Any = None, budget_s: float | None = None, architectures: dict[str, Any] | None = None,
                 free_bytes: Callable[[], int] | None = None, log: Callable[[str], None] | None = None,
                 hf_compare: bool = True, seed: int = 0, records_name: str = RECORDS_FILE):
        import torch

        self.recipe = recipe
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.dtype_bytes = torch.empty(0, dtype=self.dtype).element_size()
        self.ssm_dtype = torch.float32 if recipe.ssm_state_dtype == "float32" else torch.bfloat16
        self.ssm_bytes = 4 if recipe.ssm_state_dtype == "float32" else 2
        self.architectures = architectures or default_architectures(recipe)
        self._free_bytes = free_bytes
        self.log = log or (lambda msg: print(msg, flush=True))
        self.hf_compare = hf_compare
        self.seed = seed
        self.start = time.time()
        self.deadline = self.start + budget_s if budget_s else float("inf")
        self.records: list[dict[str, Any]] = []
        self.records_name = records_name
        self.bandwidth: float | None = None

    # ---------------------------------------------------------------- records
    def elapsed(self) -> float:
        return time.time() - self.start

    def left(self, soft_deadline: float | None = None) -> float:
        return min(self.deadline, soft_deadline or float("inf")) - time.time()

    def add(self, **record: Any) -> dict[str, Any]:
        from falcon_h1r.results import write_json

        record["t_s"] = round(self.elapsed(), 2)
        self.records.append(record)
        write_json(self.out_dir / self.records_name, {"format": 1, "recipe": to_dict(self.recipe),
                                                  "dtype": str(self.dtype), "records": self.records})
        return record

    def free_bytes(self) -> int:
        import torch

        if self._free_bytes is not None:
            return int(self._free_bytes())
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            return int(torch.cuda.mem_get_info(self.device)[0])
        raise RuntimeError("free memory on CPU is not measured; pass free_bytes=")

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---------------------------------------------------------------- the run
    def run(self) -> list[dict[str, Any]]:
        self.add(kind="device", **_device_record(self.device))
        self.measure_bandwidth()
        names = list(self.architectures)
        for n, name in enumerate(names):
            share = 0.55 if n < len(names) - 1 else 1.0  # leave the later architectures their turn
            soft = time.time() + share * max(0.0, self.deadline - time.time()) if math.isfinite(self.deadline) else None
            self.run_architecture(name, self.architectures[name], soft)
        self.log(f"[throughput] done in {self.elapsed():.0f} s, {len(self.records)} records")
        return self.records

    def measure_bandwidth(self) -> None:
        import torch

        try:
            n = int(self.recipe.copy_gib * 2**30) if self.device.type == "cuda" else 2**26
            src = torch.empty(n, dtype=torch.uint8, device=self.device)
            dst = torch.empty_like(src)
            for _ in range(3):
                dst.copy_(src)
            self._sync()
            reps = 10
            t0 = time.perf_counter()
            for _ in range(reps):
                dst.copy_(src)
            self._sync()
            dt = (time.perf_counter() - t0) / reps
            self.bandwidth = 2 * n / dt  # a copy reads and writes every byte
            self.add(kind="bandwidth", bytes=n, copy_s=dt, bytes_per_s=self.bandwidth)
            self.log(f"[throughput] HBM copy bandwidth {self.bandwidth / 1e9:.0f} GB/s")
            del src, dst
        except Exception as exc:  # noqa: BLE001 - recorded, the study goes on
            self.add(kind="bandwidth", status="error", error=repr(exc)[:500])

    def build_model(self, config: Any) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.seed)
        with torch.device(self.device):
            model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        return model.eval()

    def run_architecture(self, name: str, config: Any, soft_deadline: float | None) -> None:
        import torch

        r = self.recipe
        if self.left() < 20:
            self.add(kind="model", model=name, status="skipped_budget")
            return
        self.log(f"[throughput] building {name} ({self.elapsed():.0f} s)")
        try:
            t0 = time.perf_counter()
            model = self.build_model(config)
            build_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            self.add(kind="model", model=name, status="oom" if _is_oom(exc) else "error", error=repr(exc)[:500])
            return
        a = arch_numbers(config)
        params = sum(p.numel() for p in model.parameters())
        free = self.free_bytes()
        self.add(kind="model", model=name, family=a["family"], status="ok", params=params,
                 weight_bytes=params * self.dtype_bytes, free_bytes_after_weights=free, build_s=build_s,
                 kv_bytes_per_token=kv_bytes_per_token(config, self.dtype_bytes),
                 state_bytes_per_sequence=state_bytes_per_sequence(config, self.dtype_bytes, self.ssm_bytes),
                 layers=a["layers"], dtype=str(self.dtype), ssm_state_dtype=r.ssm_state_dtype)
        with torch.no_grad():
            for setting in r.settings:
                self.time_prefill(model, name, setting, soft_deadline)
                self.run_setting(model, name, config, setting, params, soft_deadline, core=True)
            if self.hf_compare and a["family"] == "falcon_h1":
                self.compare_hf(model, name, soft_deadline)
            for setting in r.settings:
                self.run_setting(model, name, config, setting, params, soft_deadline, core=False)
            if a["family"] == "falcon_h1":
                self.variants(model, name, config, params, soft_deadline)
        del model
        self.free_bytes() if self.device.type == "cuda" else gc.collect()

    # ---------------------------------------------------------------- capacity and the batch plan
    def capacity(self, name: str, config: Any, setting: str, free: int) -> dict[str, Any]:
        r = self.recipe
        inp, out = r.settings[setting]
        ctx = inp + out
        per_seq = sequence_bytes(config, ctx, out, dtype_bytes=self.dtype_bytes, ssm_state_bytes=self.ssm_bytes,
                                 top_k=r.top_k)
        cache_only = kv_bytes_per_token(config, self.dtype_bytes) * ctx + state_bytes_per_sequence(
            config, self.dtype_bytes, self.ssm_bytes)
        return {"setting": setting, "context": ctx, "per_sequence_bytes": per_seq, "cache_bytes_per_sequence": cache_only,
                "free_bytes": free, "reserve_bytes": int(r.reserve_gib * 2**30),
                "max_batch": max_batch(per_seq, free, int(r.reserve_gib * 2**30)),
                "alloc_limit": max_batch(cache_only, free)}

    def verify_capacity(self, model: Any, cap: dict[str, Any], name: str) -> None:
        """Allocating the caches of ``alloc_limit + 1`` sequences must fail (the byte count is right)."""
        from falcon_h1r.inference.engine import DecodeEngine

        if self.device.type != "cuda":
            self.add(kind="capacity", model=name, verified="not_on_cpu", **cap)
            return
        over = cap["alloc_limit"] + 1
        eng = None
        try:
            eng = DecodeEngine(model, over, cap["context"], ssm_state_dtype=self.ssm_dtype)
            outcome = "allocated"  # more fit than the count says: the record shows it
        except Exception as exc:  # noqa: BLE001
            outcome = "oom" if _is_oom(exc) else f"error: {exc!r}"[:300]
        del eng
        self.free_bytes()
        self.add(kind="capacity", model=name, verified=outcome, tried_batch=over, **cap)
        self.log(f"[throughput] {name} {cap['setting']}: max batch {cap['max_batch']} "
                 f"({cap['per_sequence_bytes'] / 2**30:.2f} GiB/seq, {cap['free_bytes'] / 2**30:.1f} GiB free); "
                 f"allocating {over} -> {outcome}")

    def batch_plan(self, max_b: int, core: bool) -> list[int]:
        grid = self.recipe.batch_sizes
        top = max(grid)
        fits = [b for b in grid if b <= max_b]
        extra = [max_b] if 0 < max_b < top and max_b not in grid else []
        core_set = [b for b in grid if b >= 32 and b <= max_b] + extra
        if not core_set and fits:
            core_set = [max(fits)]
        if core:
            return sorted(set(core_set), key=lambda b: (b != 32, -b))
        return sorted(set(fits) - set(core_set), reverse=True)

    def run_setting(self, model: Any, name: str, config: Any, setting: str, params: int,
                    soft_deadline: float | None, core: bool) -> None:
        cap = self.capacity(name, config, setting, self.free_bytes())
        if core:
            self.verify_capacity(model, cap, name)
            for b in [b for b in self.recipe.batch_sizes if b > cap["max_batch"]]:
                self.add(kind="step", model=name, setting=setting, batch=b, variant="sample", status="does_not_fit",
                         predicted_bytes=b * cap["per_sequence_bytes"] + cap["reserve_bytes"],
                         free_bytes=cap["free_bytes"])
        for b in self.batch_plan(cap["max_batch"], core):
            self.measure(model, name, config, setting, b, params, soft_deadline,
                         is_max_batch=(b == min(cap["max_batch"], max(self.recipe.batch_sizes))))

    # ---------------------------------------------------------------- one configuration
    def measure(self, model: Any, name: str, config: Any, setting: str, batch: int, params: int,
                soft_deadline: float | None, *, variant: str = "sample", temperature: float | None = None,
                ssm_dtype: Any = None, positions: list[int] | None = None, is_max_batch: bool = False) -> None:
        import torch

        from falcon_h1r.inference.engine import DecodeEngine

        r = self.recipe
        inp, out = r.settings[setting]
        positions = positions or sample_positions(inp, out, r.positions)
        base = dict(kind="step", model=name, setting=setting, batch=batch, variant=variant, input_len=inp,
                    output_len=out, is_max_batch=is_max_batch)
        est = 3.0 + 1.5 * len(positions)
        if self.left(soft_deadline) < est:
            self.add(**base, status="skipped_budget")
            return
        temperature = r.temperature if temperature is None else temperature
        ssm_dtype = ssm_dtype or self.ssm_dtype
        ssm_bytes = torch.empty(0, dtype=ssm_dtype).element_size()
        sampling = (float(temperature), float(r.top_p), int(r.top_k), -1, 0)
        steps = r.warmup_steps + r.timed_steps
        eng = None
        self.log(f"[throughput] {name} {setting} batch {batch} {variant} ({self.elapsed():.0f} s)")
        try:
            eng = DecodeEngine(model, batch, inp + out + steps + 1, ssm_state_dtype=ssm_dtype,
                               attention="sdpa" if r.attention == "auto" else r.attention, compile=r.compile)
            eng.prepare_outputs(max(out, steps + 1), r.top_k)
            if temperature:
                eng.noise = torch.empty(batch, eng.arch["vocab"], dtype=torch.float32, device=self.device)
            eng.fill_random(self.seed)
            gen = torch.Generator(device=self.device).manual_seed(self.seed)
            for p in positions:
                if self.left(soft_deadline) < 2.0:
                    self.add(**base, position=p, status="skipped_budget")
                    continue
                kv_len = eng.kv_len_for(p + steps)
                attn_s = eng.pick_attention(kv_len) if r.attention == "auto" else {}
                g = None
                if eng.cuda_graph:
                    try:
                        g = eng.graph(kv_len, sampling, None, True)
                    except Exception as exc:  # noqa: BLE001 - time the eager step and say so in the record
                        eng.disable_graphs(exc)
                        self.log(f"    graph capture failed, timing the eager step: {exc!r}"[:300])
                eng.set_position(p, self.seed + p)
                times = self._time_steps(eng, g, kv_len, sampling, gen, steps)[r.warmup_steps:]
                nbytes = decode_step_bytes(config, batch, p + 1, params=params, dtype_bytes=self.dtype_bytes,
                                           ssm_state_bytes=ssm_bytes)
                rec = self.add(**base, status="ok", position=p, kv_len=kv_len, step_s=float(np.median(times)),
                               step_s_min=float(np.min(times)), steps_timed=len(times), bytes=nbytes["total"],
                               bytes_weights=nbytes["weights"], bytes_kv=nbytes["kv"], bytes_states=nbytes["states"],
                               roofline_s=nbytes["total"] / self.bandwidth if self.bandwidth else None,
                               cache_bytes=eng.cache_bytes(), ssm_state_dtype=str(ssm_dtype),
                               engine=dict(eng.info), attention_s=attn_s)
                self.log(f"    pos {p:>6}: {rec['step_s'] * 1e3:7.2f} ms/step"
                         + (f"  (roofline {rec['roofline_s'] * 1e3:.2f} ms)" if rec["roofline_s"] else ""))
        except Exception as exc:  # noqa: BLE001 - OOM or a kernel error: recorded, the study goes on
            self.add(**base, status="oom" if _is_oom(exc) else "error", error=repr(exc)[:500])
            self.log(f"    failed: {exc!r}"[:300])
        finally:
            del eng
            if self.device.type == "cuda":
                self.free_bytes()

    def _time_steps(self, eng: Any, graph: Any, kv_len: int, sampling: tuple, gen: Any, n: int) -> list[float]:
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
            torch.cuda.synchronize(self.device)
            return [a.elapsed_time(b) / 1e3 for a, b in events]
        for _ in range(n):
            t0 = time.perf_counter()
            if sample:
                eng.noise.exponential_(generator=gen)
            eng._step_body(kv_len, sampling, None, True)
            self._sync()
            times.append(time.perf_counter() - t0)
        return times

    # ---------------------------------------------------------------- prefill, transformers' generate, variants
    def time_prefill(self, model: Any, name: str, setting: str, soft_deadline: float | None) -> None:
        import torch

        inp = self.recipe.settings[setting][0]
        rows = max(1, self.recipe.prefill_tokens // inp)
        base = dict(kind="prefill", model=name, setting=setting, input_len=inp, rows=rows)
        if self.left(soft_deadline) < 15:
            self.add(**base, status="skipped_budget")
            return
        self.log(f"[throughput] {name} prefill {rows} x {inp} tokens ({self.elapsed():.0f} s)")
        try:
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
            ids = torch.randint(2, model.config.vocab_size, (rows, inp), generator=gen).to(self.device)
            model(input_ids=ids, use_cache=True, logits_to_keep=1)  # compiles / autotunes the kernels
            self._sync()
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self._sync()
            dt = time.perf_counter() - t0
            self.add(**base, status="ok", time_s=dt, s_per_sequence=dt / rows)
            self.log(f"    {dt:.3f} s ({dt / rows * 1e3:.1f} ms per sequence)")
        except Exception as exc:  # noqa: BLE001
            self.add(**base, status="oom" if _is_oom(exc) else "error", error=repr(exc)[:500])
        self.free_bytes() if self.device.type == "cuda" else None

    def compare_hf(self, model: Any, name: str, soft_deadline: float | None) -> None:
        """transformers' ``generate`` vs the engine, same prompts, greedy, exactly ``hf_new_tokens`` tokens."""
        import torch

        from falcon_h1r.inference import generate_ids
        from falcon_h1r.inference.engine import free_engines, set_defaults

        r = self.recipe
        B, P, N = r.hf_batch, r.hf_prompt_tokens, r.hf_new_tokens
        base = dict(kind="hf_generate", model=name, batch=B, prompt_tokens=P, new_tokens=N)
        before = None
        if self.left(soft_deadline) < 60:
            self.add(**base, status="skipped_budget")
            return
        self.log(f"[throughput] {name}: transformers generate vs engine at batch {B} ({self.elapsed():.0f} s)")
        try:
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
            ids = torch.randint(2, model.config.vocab_size, (B, P), generator=gen)
            mask = torch.ones_like(ids)
            kw = dict(do_sample=False, pad_token_id=0)

            def hf(n: int) -> tuple[float, Any]:
                self._sync()
                t0 = time.perf_counter()
                out = model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                     max_new_tokens=n, min_new_tokens=n, **kw)
                self._sync()
                return time.perf_counter() - t0, out

            hf(2)  # warm-up (kernels, allocator)
            t2, _ = hf(2)
            t_hf, out = hf(N)
            hf_tokens = out[:, P:].cpu()
            prompts = ids.tolist()
            # the engine as the study configures it; "auto" is SDPA here: contexts of 160 tokens, where its
            # single pass over the cache is as fast as a split one (bench/decode_profile.py)
            before = set_defaults(attention="sdpa" if r.attention == "auto" else r.attention, compile=r.compile)
            run = lambda: generate_ids(model, prompts, eos_id=-1, pad_id=0, temperature=0.0, top_p=1.0,  # noqa: E731
                                       max_new_tokens=N, top_k=r.top_k, engine="fast")
            self._sync()
            t0 = time.perf_counter()
            run()
            self._sync()
            t_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = run()
            self._sync()
            t_warm = time.perf_counter() - t0
            from falcon_h1r.inference.engine import _ENGINES

            timing = dict(_ENGINES[model][1].last_timing) if model in _ENGINES else {}
            eng_tokens = torch.tensor([row["token_ids"] for row in rows])
            agree = float((eng_tokens == hf_tokens[:, :eng_tokens.shape[1]]).float().mean())
            hf_step = (t_hf - t2) / (N - 2) if t_hf > t2 else None  # the per-step part of generate's time
            eng_step = timing["decode_s"] / max(1, timing["steps"] - 1) if timing else None
            self.add(**base, status="ok", hf_s=t_hf, hf_2_tokens_s=t2, hf_step_s=hf_step, engine_cold_s=t_cold,
                     engine_s=t_warm, engine_timing=timing, engine_step_s=eng_step, token_agreement=agree,
                     end_to_end_ratio=t_hf / t_warm, step_ratio=hf_step / eng_step if eng_step and hf_step else None)
            self.log(f"    transformers {t_hf:.1f} s, engine {t_warm:.2f} s (cold {t_cold:.1f} s): "
                     f"{t_hf / t_warm:.1f}x; greedy token agreement {agree:.3f}")
        except Exception as exc:  # noqa: BLE001
            self.add(**base, status="oom" if _is_oom(exc) else "error", error=repr(exc)[:500])
            self.log(f"    failed: {exc!r}"[:300])
        finally:
            if before is not None:
                set_defaults(**before)
            free_engines(model)

    def variants(self, model: Any, name: str, config: Any, params: int, soft_deadline: float | None) -> None:
        """Greedy (no top-p sort) and a bfloat16 SSM state, at batch 32 mid-output of the first setting."""
        import torch

        setting = next(iter(self.recipe.settings))
        inp, out = self.recipe.settings[setting]
        cap = self.capacity(name, config, setting, self.free_bytes())
        b = min(32, cap["max_batch"])
        if b < 1:
            return
        mid = [inp + out // 2]
        self.measure(model, name, config, setting, b, params, soft_deadline, variant="greedy", temperature=0.0,
                     positions=mid)
        self.measure(model, name, config, setting, b, params, soft_deadline, variant="ssm_bf16",
                     ssm_dtype=torch.bfloat16, positions=mid)


def _device_record(device: Any) -> dict[str, Any]:
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
    from falcon_h1r.inference.engine_ops import triton_state_update

    rec["mamba_ssm_triton_state_update"] = triton_state_update() is not None
    return rec


# ============================================================================ reading the records
def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a study: one ``throughput_records*.json`` file, or a folder holding one or more (runs
    split over several GPU calls, e.g. ``--models``; read in name order and concatenated)."""
    import json

    path = Path(path)
    files = sorted(path.glob("throughput_records*.json")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no throughput records at {path}; run bench/throughput.py on a GPU "
                                "(see notebooks/04_throughput) and copy its JSON there")
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
    """One row per timed position (status ok)."""
    rows = [r for r in records if r.get("kind") == "step" and r.get("status") == "ok"]
    cols = ["model", "setting", "batch", "variant", "position", "kv_len", "step_s", "step_s_min", "roofline_s",
            "bytes", "bytes_weights", "bytes_kv", "bytes_states", "input_len", "output_len"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    if len(df):
        df["step_over_roofline"] = df["step_s"] / df["roofline_s"]
    return df


def prefill_seconds(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(r["model"], r["setting"]): r["s_per_sequence"] for r in records
            if r.get("kind") == "prefill" and r.get("status") == "ok"}


def capacities(records: list[dict[str, Any]]) -> pd.DataFrame:
    cols = ["model", "setting", "context", "per_sequence_bytes", "free_bytes", "max_batch", "alloc_limit",
            "tried_batch", "verified"]
    rows = [{c: r.get(c) for c in cols} for r in records if r.get("kind") == "capacity"]
    return pd.DataFrame(rows, columns=cols)


def config_table(records: list[dict[str, Any]], positions_needed: int | None = None) -> pd.DataFrame:
    """One row per (model, setting, batch, variant): status, integrated decode time, tokens/s per GPU,
    step time over the roofline (mean over positions), and whether this is the model's largest batch."""
    steps = step_table(records)
    pre = prefill_seconds(records)
    caps = capacities(records)
    statuses: dict[tuple, list[str]] = {}
    for r in records:
        if r.get("kind") == "step":
            k = (r["model"], r["setting"], r["batch"], r.get("variant", "sample"))
            statuses.setdefault(k, []).append(r.get("status"))
    rows = []
    for (model, setting, batch, variant), seen in statuses.items():
        bad = [s for s in seen if s != "ok"]
        status = "ok" if not bad else (bad[0] if len(bad) == len(seen) else f"partial ({bad[0]})")
        sub = steps[(steps["model"] == model) & (steps["setting"] == setting) & (steps["batch"] == batch)
                    & (steps["variant"] == variant)] if len(steps) else steps
        row: dict[str, Any] = {"model": model, "setting": setting, "batch": batch, "variant": variant,
                               "status": status, "positions": len(sub)}
        cap = caps[(caps["model"] == model) & (caps["setting"] == setting)] if len(caps) else caps
        row["max_batch"] = int(cap["max_batch"].iloc[-1]) if len(cap) else None
        if len(sub):
            inp, out = int(sub["input_len"].iloc[0]), int(sub["output_len"].iloc[0])
            row["step_ms_first"] = 1e3 * float(sub.sort_values("position")["step_s"].iloc[0])
            row["step_ms_last"] = 1e3 * float(sub.sort_values("position")["step_s"].iloc[-1])
            row["step_over_roofline"] = float(sub["step_over_roofline"].mean()) if sub["roofline_s"].notna().all() else None
            complete = positions_needed is None or len(sub) >= positions_needed
            if variant == "sample" and complete and len(sub) >= 2:
                decode = integrate_steps(sub["position"].tolist(), sub["step_s"].tolist(), inp, inp + out)
                p = pre.get((model, setting))
                row.update(decode_s=decode, prefill_s_per_seq=p, prefill_included=p is not None,
                           tok_s_per_gpu=tokens_per_s(batch, out, decode, p))
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["model", "setting", "variant", "batch"]).reset_index(drop=True)
    return df


def _at_batch(table: pd.DataFrame, model: str | None, setting: str, batch: int) -> tuple[float | None, int | None]:
    """tokens/s at ``batch``, or at the largest measured batch below it when it does not fit / was skipped."""
    if model is None or not len(table) or "tok_s_per_gpu" not in table:
        return None, None
    sub = table[(table["model"] == model) & (table["setting"] == setting) & (table["variant"] == "sample")
                & table["tok_s_per_gpu"].notna() & (table["batch"] <= batch)]
    if not len(sub):
        return None, None
    row = sub.sort_values("batch").iloc[-1]
    return float(row["tok_s_per_gpu"]), int(row["batch"])


def summarize(records: list[dict[str, Any]], positions_needed: int | None = None) -> dict[str, Any]:
    """The headline figures (flat name -> number/string) for ``summary.json``.

    ``hybrid``/``transformer`` are the Falcon-H1 and Qwen3 architectures. A figure "at bsN" is taken at the
    largest measured batch <= N that fits one GPU (the batch used is written beside it as ``..._batch``).
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
    for setting, tag in (("8K->16K", "8k_16k"), ("512->32K", "512_32k")):
        for who, model in (("hybrid", hybrid), ("transformer", transformer)):
            cap = caps[(caps["model"] == model) & (caps["setting"] == setting)] if len(caps) else caps
            if len(cap):
                out[f"{who}_max_batch_{tag}"] = int(cap["max_batch"].iloc[-1])
        for b in (64, 128):
            v, used = _at_batch(table, hybrid, setting, b)
            if v is not None:
                out[f"hybrid_tok_s_per_gpu_bs{b}_{tag}"] = v
                out[f"hybrid_tok_s_per_gpu_bs{b}_{tag}_batch"] = used
        t, t_used = _at_batch(table, transformer, setting, 128)
        h, h_used = _at_batch(table, hybrid, setting, 128)
        if t is not None:
            out[f"transformer_tok_s_per_gpu_bs128_{tag}"] = t
            out[f"transformer_tok_s_per_gpu_bs128_{tag}_batch"] = t_used
        if t is not None and h is not None:
            key = "hybrid_over_transformer_bs128" + ("" if setting == "8K->16K" else f"_{tag}")
            out[key] = h / t
    steps = step_table(records)
    if len(steps) and hybrid is not None:
        for setting in ("8K->16K", "512->32K"):
            sub = steps[(steps["model"] == hybrid) & (steps["batch"] == 32) & (steps["variant"] == "sample")
                        & (steps["setting"] == setting) & steps["roofline_s"].notna()]
            if len(sub):
                out["step_time_over_roofline_bs32"] = float(sub["step_over_roofline"].mean())
                out["step_time_over_roofline_bs32_setting"] = setting
                break
    return out


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


__all__ = [
    "ThroughputRecipe", "Study", "HYBRID", "TRANSFORMER", "smoke_architectures", "arch_numbers", "kv_bytes_per_token",
    "state_bytes_per_sequence", "output_bytes_per_token", "sequence_bytes", "param_count", "decode_step_bytes",
    "max_batch", "sample_positions", "integrate_steps", "tokens_per_s", "load_records", "records_dir",
    "step_table", "config_table", "capacities", "summarize", "paper_comparison", "default_architectures",
]
