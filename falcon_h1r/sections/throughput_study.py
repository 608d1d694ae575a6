"""The hybrid-vs-transformer decode throughput study on one GPU (paper Appendix B, Fig. 8): its recipe (the
``throughput:`` block) and its runner.

The paper ran vLLM on H100s with several GPUs per model (tensor/data parallel) and reports tokens/s per GPU for
Falcon-H1R-7B and Qwen3-8B at batch 2..128, for 512 -> 32K and 8K -> 16K tokens. Full runs (32K decode steps
per point) are far beyond a short GPU session, so :class:`Study` measures what sets that number, with the
arithmetic and clocks of :mod:`falcon_h1r.throughput`:

* the **decode step time** of our engine (:class:`falcon_h1r.inference.engine.DecodeEngine`, CUDA graph, random
  weights of the full architectures) at a few context positions spread over the output, with the caches filled
  with random values (a step's cost does not depend on them), to be integrated over the output length
  (:func:`~falcon_h1r.throughput.integrate_steps`) plus the measured prefill time;
* the **largest batch** each architecture fits in the GPU's memory (:func:`~falcon_h1r.throughput.capacity`),
  checked by allocating;
* a **roofline** (:func:`~falcon_h1r.throughput.decode_step_bytes` over the bandwidth of a large copy);
* transformers' ``generate`` at batch 128 for the engine/transformers ratio.

Every record is written as it is measured (``throughput_records.json``); :mod:`falcon_h1r.sections.throughput_records`
reads them. ``bench/throughput.py`` runs the study; notebook 04 renders it (:mod:`falcon_h1r.sections.throughput`).
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

from falcon_h1r.config import RecipeError, to_dict
from falcon_h1r.sections.throughput_records import RECORDS_FILE
from falcon_h1r.throughput import (
    arch_numbers,
    batch_plan,
    capacity,
    copy_seconds,
    decode_step_bytes,
    device_record,
    is_oom,
    kv_bytes_per_token,
    paper_architectures,
    sample_positions,
    state_bytes_per_sequence,
    synchronize,
    time_decode_steps,
    time_prefill,
)


@dataclass
class ThroughputRecipe:
    """The ``throughput`` block of a preset: the one-GPU study (``bench/throughput.py``, :class:`Study`) and the
    notebook's engine check on the preset's base model.

    Fields:
        batch_sizes: batches timed per setting (those that fit one GPU). Paper Fig. 8: 2, 8, 16, 32, 64, 128.
        settings: setting name -> [input tokens, output tokens]. Paper Appendix B: 8K->16K and 512->32K (the
            names of ``papers/fig8_throughput.csv``).
        positions: context positions timed per configuration, spread from the first output token to the last
            (>= 2: the step time is integrated between them).
        warmup_steps: untimed decode steps before the timed ones at each position.
        timed_steps: decode steps timed at each position (their median is the step time).
        temperature: sampling temperature of the timed step, so it includes top-p's sort. Paper §4.1: 0.6.
        top_p: nucleus of the timed step. Paper §4.1: 0.95.
        top_k: top-k log-probs recorded at every step (1..20; DeepConf's confidence needs 20).
        ssm_state_dtype: dtype of the Mamba-2 SSM state: ``float32`` is what transformers keeps; vLLM keeps the
            model dtype (``bfloat16``).
        attention: the decode attention kernel: ``auto`` picks the fastest of SDPA, batched matmuls and the
            split-KV Triton kernel on the live cache, per position (timed inside a CUDA graph, as the step runs).
        compile: run the engine's layer glue torch.compile'd (fuses the element-wise kernels).
        reserve_gib: GPU memory kept free beyond the caches (graph pool, allocator slack).
        copy_gib: size of the device copy that measures the HBM bandwidth (the roofline's denominator).
        prefill_tokens: tokens per prefill forward when timing prefill (rows of the setting's input length).
        hf_batch: batch of transformers' ``generate`` against the engine (the paper's largest, 128).
        hf_prompt_tokens: prompt length of that comparison.
        hf_new_tokens: new tokens of that comparison (>= 3, to separate prefill from the decode steps).
        falcon_layers: depth of the Falcon-H1R-7B architecture. Paper Table 8: 44.
        qwen3_layers: depth of the Qwen3-8B architecture (its published config: 36).
        check_prompts: held-out prompts of the notebook's engine-vs-transformers check on the preset's base model.
        check_new_tokens: greedy tokens per prompt of that check.
    """

    batch_sizes: list[int] = field(default_factory=lambda: [2, 8, 16, 32, 64, 128])
    settings: dict[str, list[int]] = field(default_factory=lambda: {"8K->16K": [8192, 16384],
                                                                    "512->32K": [512, 32768]})
    positions: int = 5
    warmup_steps: int = 2
    timed_steps: int = 8
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    ssm_state_dtype: typing.Literal["float32", "bfloat16"] = "float32"
    attention: typing.Literal["auto", "sdpa", "matmul", "triton"] = "auto"
    compile: bool = False
    reserve_gib: float = 2.0
    copy_gib: float = 4.0
    prefill_tokens: int = 8192
    hf_batch: int = 128
    hf_prompt_tokens: int = 128
    hf_new_tokens: int = 32
    falcon_layers: int = 44
    qwen3_layers: int = 36
    check_prompts: int = 8
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


def model_family(model: Any) -> str:
    return getattr(getattr(model, "config", None), "model_type", "")


class Study:
    """Runs every measurement, writing each record to ``out_dir/throughput_records.json`` as it comes, so a
    run cut short keeps what it measured. A configuration that fails (out of memory, a kernel error) is
    recorded with its status and the study goes on; ``budget_s`` skips (and records) what would not finish.
    """

    def __init__(self, recipe: ThroughputRecipe, out_dir: str | Path, *, device: str = "cuda",
                 dtype: Any = None, budget_s: float | None = None, architectures: dict[str, Any] | None = None,
                 free_bytes: Callable[[], int] | None = None, log: Callable[[str], None] | None = None,
                 hf_compare: bool = True, seed: int = 0, records_name: str = RECORDS_FILE, variants: bool = True):
        import torch

        self.recipe = recipe
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.dtype_bytes = torch.empty(0, dtype=self.dtype).element_size()
        self.ssm_dtype = torch.float32 if recipe.ssm_state_dtype == "float32" else torch.bfloat16
        self.ssm_bytes = 4 if recipe.ssm_state_dtype == "float32" else 2
        self.architectures = architectures or paper_architectures(recipe.falcon_layers, recipe.qwen3_layers)
        self._free_bytes = free_bytes
        self.log = log or (lambda msg: print(msg, flush=True))
        self.hf_compare = hf_compare
        self.with_variants = variants
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
        synchronize(self.device)

    # ---------------------------------------------------------------- the run
    def run(self) -> list[dict[str, Any]]:
        self.add(kind="device", **device_record(self.device))
        self.measure_bandwidth()
        names = list(self.architectures)
        for n, name in enumerate(names):
            share = 0.55 if n < len(names) - 1 else 1.0  # leave the later architectures their turn
            soft = time.time() + share * max(0.0, self.deadline - time.time()) if math.isfinite(self.deadline) else None
            self.run_architecture(name, self.architectures[name], soft)
        from falcon_h1r.inference.decode_kernels import tuned_state_update_configs

        self.add(kind="state_update_configs", configs=tuned_state_update_configs())
        self.log(f"[throughput] done in {self.elapsed():.0f} s, {len(self.records)} records")
        return self.records

    def measure_bandwidth(self) -> None:
        try:
            n = int(self.recipe.copy_gib * 2**30) if self.device.type == "cuda" else 2**26
            dt = copy_seconds(self.device, n)
            self.bandwidth = 2 * n / dt  # a copy reads and writes every byte
            self.add(kind="bandwidth", bytes=n, copy_s=dt, bytes_per_s=self.bandwidth)
            self.log(f"[throughput] HBM copy bandwidth {self.bandwidth / 1e9:.0f} GB/s")
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
            self.add(kind="model", model=name, status="oom" if is_oom(exc) else "error", error=repr(exc)[:500])
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
            if a["family"] == "falcon_h1" and self.with_variants:
                self.variants(model, name, config, params, soft_deadline)
        del model
        self.free_bytes() if self.device.type == "cuda" else gc.collect()

    # ---------------------------------------------------------------- capacity and the batch plan
    def capacity(self, name: str, config: Any, setting: str, free: int, ssm_dtype: Any = None) -> dict[str, Any]:
        """The largest batch of ``setting`` in ``free`` bytes with an SSM state of ``ssm_dtype`` (the recipe's)."""
        import torch

        r = self.recipe
        inp, out = r.settings[setting]
        ssm_dtype = ssm_dtype or self.ssm_dtype
        ssm_bytes = torch.empty(0, dtype=ssm_dtype).element_size()
        return {"setting": setting, "ssm_state_dtype": str(ssm_dtype).replace("torch.", ""),
                **capacity(config, inp, out, free, reserve_bytes=int(r.reserve_gib * 2**30),
                           dtype_bytes=self.dtype_bytes, ssm_state_bytes=ssm_bytes, top_k=r.top_k)}

    def verify_capacity(self, model: Any, cap: dict[str, Any], name: str) -> None:
        """Allocating the caches of ``alloc_limit + 1`` sequences must fail (the byte count is right)."""
        import torch

        from falcon_h1r.inference.engine import DecodeEngine

        if self.device.type != "cuda":
            self.add(kind="capacity", model=name, verified="not_on_cpu", **cap)
            return
        over = cap["alloc_limit"] + 1
        eng = None
        try:
            eng = DecodeEngine(model, over, cap["context"], ssm_state_dtype=getattr(torch, cap["ssm_state_dtype"]))
            outcome = "allocated"  # more fit than the count says: the record shows it
        except Exception as exc:  # noqa: BLE001
            outcome = "oom" if is_oom(exc) else f"error: {exc!r}"[:300]
        del eng
        self.free_bytes()
        self.add(kind="capacity", model=name, verified=outcome, tried_batch=over, **cap)
        self.log(f"[throughput] {name} {cap['setting']} ({cap['ssm_state_dtype']} SSM state): max batch {cap['max_batch']} "
                 f"({cap['per_sequence_bytes'] / 2**30:.2f} GiB/seq, {cap['free_bytes'] / 2**30:.1f} GiB free); "
                 f"allocating {over} -> {outcome}")

    def run_setting(self, model: Any, name: str, config: Any, setting: str, params: int,
                    soft_deadline: float | None, core: bool) -> None:
        cap = self.capacity(name, config, setting, self.free_bytes())
        if core:
            self.verify_capacity(model, cap, name)
            for b in [b for b in self.recipe.batch_sizes if b > cap["max_batch"]]:
                self.add(kind="step", model=name, setting=setting, batch=b, variant="sample", status="does_not_fit",
                         predicted_bytes=b * cap["per_sequence_bytes"] + cap["reserve_bytes"],
                         free_bytes=cap["free_bytes"])
        for b in batch_plan(self.recipe.batch_sizes, cap["max_batch"], core):
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
                times = time_decode_steps(eng, g, kv_len, sampling, gen, steps, self.device)[r.warmup_steps:]
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
            self.add(**base, status="oom" if is_oom(exc) else "error", error=repr(exc)[:500])
            self.log(f"    failed: {exc!r}"[:300])
        finally:
            del eng
            if self.device.type == "cuda":
                self.free_bytes()

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
            dt = time_prefill(model, ids, self.device)
            self.add(**base, status="ok", time_s=dt, s_per_sequence=dt / rows)
            self.log(f"    {dt:.3f} s ({dt / rows * 1e3:.1f} ms per sequence)")
        except Exception as exc:  # noqa: BLE001
            self.add(**base, status="oom" if is_oom(exc) else "error", error=repr(exc)[:500])
        self.free_bytes() if self.device.type == "cuda" else None

    def compare_hf(self, model: Any, name: str, soft_deadline: float | None) -> None:
        """transformers' ``generate`` vs the engine, same prompts, greedy, exactly ``hf_new_tokens`` tokens."""
        import torch

        from falcon_h1r.inference import generate_ids
        from falcon_h1r.inference.engine_pool import free_engines, set_defaults

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
            from falcon_h1r.inference.engine_pool import _ENGINES

            timing = dict(_ENGINES[model][1].last_timing) if model in _ENGINES else {}
            eng_tokens = torch.tensor([row["token_ids"] for row in rows])
            agree = float((eng_tokens == hf_tokens[:, :eng_tokens.shape[1]]).float().mean())
            hf_step = (t_hf - t2) / (N - 2) if t_hf > t2 else None  # the per-step part of generate's time
            eng_step = timing["decode_s"] / max(1, timing["steps"] - 1) if timing else None
            # the same engine with a bfloat16 SSM state (vLLM's default for Mamba caches): the state is most of what
            # a short-context step at batch 128 moves
            bf16: dict[str, Any] = {}
            if model_family(model) == "falcon_h1":
                free_engines(model)
                set_defaults(ssm_state_dtype=torch.bfloat16)
                run()
                self._sync()
                t0 = time.perf_counter()
                rows16 = run()
                self._sync()
                t16 = time.perf_counter() - t0
                tok16 = torch.tensor([row["token_ids"] for row in rows16])
                bf16 = {"engine_bf16_state_s": t16, "end_to_end_ratio_bf16_state": t_hf / t16,
                        "token_agreement_bf16_state": float((tok16 == hf_tokens[:, :tok16.shape[1]]).float().mean())}
            self.add(**base, status="ok", hf_s=t_hf, hf_2_tokens_s=t2, hf_step_s=hf_step, engine_cold_s=t_cold,
                     engine_s=t_warm, engine_timing=timing, engine_step_s=eng_step, token_agreement=agree,
                     end_to_end_ratio=t_hf / t_warm, step_ratio=hf_step / eng_step if eng_step and hf_step else None,
                     **bf16)
            self.log(f"    transformers {t_hf:.1f} s, engine {t_warm:.2f} s (cold {t_cold:.1f} s): "
                     f"{t_hf / t_warm:.1f}x; greedy token agreement {agree:.3f}"
                     + (f"; bf16 state {bf16['engine_bf16_state_s']:.2f} s: {bf16['end_to_end_ratio_bf16_state']:.1f}x"
                        if bf16 else ""))
        except Exception as exc:  # noqa: BLE001
            self.add(**base, status="oom" if is_oom(exc) else "error", error=repr(exc)[:500])
            self.log(f"    failed: {exc!r}"[:300])
        finally:
            if before is not None:
                set_defaults(**before)
            free_engines(model)

    def variants(self, model: Any, name: str, config: Any, params: int, soft_deadline: float | None) -> None:
        """The hybrid with the other SSM state dtype (bfloat16, vLLM's default for Mamba caches, when the recipe
        keeps float32): its own largest batch (counted and checked by allocating) measured at every position of
        the first setting, so that its tokens/s stand beside the recipe state's; then greedy decoding (no top-p
        sort) at batch 32 mid-output."""
        import torch

        setting = next(iter(self.recipe.settings))
        inp, out = self.recipe.settings[setting]
        other = torch.bfloat16 if self.ssm_dtype == torch.float32 else torch.float32
        variant = "ssm_bf16" if other == torch.bfloat16 else "ssm_fp32"
        cap = self.capacity(name, config, setting, self.free_bytes(), ssm_dtype=other)
        self.verify_capacity(model, cap, name)
        top = min(cap["max_batch"], max(self.recipe.batch_sizes))
        if top >= 1:
            self.measure(model, name, config, setting, top, params, soft_deadline, variant=variant, ssm_dtype=other,
                         is_max_batch=True)
        b = min(32, cap["max_batch"])
        if b >= 1:
            self.measure(model, name, config, setting, b, params, soft_deadline, variant="greedy", temperature=0.0,
                         positions=[inp + out // 2])


__all__ = ["ThroughputRecipe", "Study"]
