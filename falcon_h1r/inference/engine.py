"""A fast batched decode engine for both model families: static caches and one decode step in a CUDA graph.

Why our own decode step: transformers' ``generate`` dispatches hundreds of small kernels from Python at every
token and grows its caches by concatenation, so on a GPU a 7B model spends most of a step on launch overhead and
copies (an 8-layer slice of Falcon-H1R-7B reached 1,368 tok/s at batch 128). A serving engine (vLLM)
preallocates the caches and replays a captured graph; this module does the same in plain PyTorch:

* **prefill** goes through the model's own forward (on GPU transformers binds mamba-ssm's Triton chunked scan);
  the caches it builds are copied into static buffers: K/V ``[L, B, n_kv, S, d]`` for attention, the conv
  window ``[L, B, C, K]`` and the SSM state ``[L, B, H, P, N]`` (float32, as transformers keeps it) for Mamba-2;
* the **decode step** is written here from the model's weights: every µP multiplier, norm, gate and rope detail
  mirrors transformers' ``modeling_falcon_h1.py`` / ``modeling_qwen3.py``. Attention over the static cache is
  PyTorch SDPA (the query heads of one KV group are laid out as that group's query rows, so GQA needs no
  copy); the SSM state update is our Triton kernel shaped for d_state 256 on GPU
  (:func:`~falcon_h1r.inference.decode_kernels.ssm_state_update`; mamba-ssm's ``selective_state_update`` on
  request, ``state_update="mamba_ssm"``) and the plain-torch twin :func:`ssm_update_ref` elsewhere; the SSM
  state is float32 (what transformers keeps) or bfloat16 (vLLM's default for Mamba caches: half the bytes, so a
  larger batch fits and each step moves less); the depthwise conv update is :func:`conv_update_ref`;
* two **fast paths** on GPU, each with its plain twin: ``attention="triton"`` (the split-KV decode attention of
  :mod:`falcon_h1r.inference.decode_kernels`, which streams the cache at ~2.8 TB/s where SDPA's one program per row and
  KV head reaches ~1.6 on an H100) and ``compile=True`` (the layers' element-wise glue, :func:`~falcon_h1r.inference.engine_ops.falcon_pre` and
  friends, through torch.compile: Inductor fuses the ~1,800 small element-wise, copy and norm kernels that a
  profiled 7B step launches, and the H100 step drops by 3.3-3.6 ms, ``bench/decode_profile.py``);
* **sampling** (temperature, top-p, as :func:`falcon_h1r.inference.sampling.sample_step`), the raw top-k log-probs, EOS
  and the per-row early stop all run on device inside the same step. On GPU the step is captured once per
  KV-length bucket and replayed; the host only looks at the "still running" mask every few steps.

On CPU the same static-cache step runs eagerly (no graph), which is what the tests compare with transformers.
Sampling draws differ from the transformers loop for the same seed (an exponential race instead of
``torch.multinomial``, so that it can live in a graph), the distribution is the same; greedy decoding is the
same token for token.

The layer arithmetic and its reference twins live in :mod:`falcon_h1r.inference.engine_ops`; this module holds
the engine (:class:`DecodeEngine`, used directly by the throughput study) and :func:`generate_ids`, one batch on
the model's cached engine. Callers go through :func:`falcon_h1r.inference.generate`, which picks this engine or
transformers' loop (``generation.engine``: ``auto`` | ``fast`` | ``hf``).
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from falcon_h1r.inference.architecture import architecture
from falcon_h1r.inference.decode_kernels import split_kv_attention, triton_available
from falcon_h1r.inference.engine_ops import (PLAIN_GLUE, compiled_glue, resolve_state_update, rms_norm, rope_tables,
                                             scale_by, ssm_update, weight_bias)
from falcon_h1r.inference.sampling import EarlyStop, left_pad, sample_step

ATTENTION_MODES = ("sdpa", "matmul", "triton")
FINISH_REASONS = ("length", "eos", "early_stop")  # codes 0, 1, 2 in the engine's reason buffer


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


# ============================================================================ the engine
class DecodeEngine:
    """Static caches for ``batch_size`` rows of up to ``max_len`` tokens, and the decode step over them.

    ``cuda_graph=None`` captures graphs on CUDA and runs eagerly elsewhere. ``attention``: ``"sdpa"``
    (PyTorch SDPA over the cache) or ``"matmul"`` (transformers' eager formula: two batched matmuls around a
    float32 softmax, which cuBLAS may split along the KV length when the batch is small); :meth:`pick_attention`
    times the modes on the live cache and keeps the fastest; ``"triton"``: the split-KV decode attention of
    :mod:`falcon_h1r.inference.decode_kernels` (CUDA only; reads each K/V tile once for the G query heads that share it,
    spread over every SM). ``ssm_state_dtype`` defaults to float32 (what
    transformers keeps; bfloat16 halves the state traffic). ``state_update``: ``"auto"`` (our Triton kernel on
    CUDA, the torch twin elsewhere), ``"triton"``, ``"mamba_ssm"`` or ``"torch"``. ``bucket``: on GPU a graph covers KV lengths up to a
    multiple of ``bucket`` tokens (one graph per bucket, captured before a call's prefill).
    """

    def __init__(self, model: torch.nn.Module, batch_size: int, max_len: int, *, cuda_graph: bool | None = None,
                 attention: str = "sdpa", ssm_state_dtype: torch.dtype = torch.float32, bucket: int | None = None,
                 compile: bool = False, state_update: str = "auto"):
        if batch_size < 1 or max_len < 2:
            raise ValueError(f"batch_size must be >= 1 and max_len >= 2, got {batch_size} and {max_len}")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention {attention!r} not accepted; use one of {ATTENTION_MODES}")
        if ssm_state_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"ssm_state_dtype {ssm_state_dtype} not accepted; use torch.float32 or torch.bfloat16")
        self.arch = architecture(model)
        self._model = weakref.ref(model)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        cuda = self.device.type == "cuda"
        self.cuda_graph = cuda if cuda_graph is None else bool(cuda_graph)
        if self.cuda_graph and not cuda:
            raise ValueError("cuda_graph=True needs the model on a CUDA device")
        if attention == "triton" and not (cuda and triton_available()):
            raise ValueError("attention 'triton' needs a CUDA model and Triton; use 'sdpa' or 'matmul' here")
        self.attention = attention
        self.batch_size = batch_size
        self.max_len = round_up(max_len, 64) if cuda else max_len  # aligned rows for the SDPA mask
        self.bucket = bucket or (max(256, round_up(self.max_len // 32, 256)) if self.cuda_graph else self.max_len)
        a, B, S, dev = self.arch, batch_size, self.max_len, self.device
        kv_shape = (a["layers"], B, a["kv_heads"], S, a["head_dim"])
        self.k_cache = torch.zeros(kv_shape, dtype=self.dtype, device=dev)
        self.v_cache = torch.zeros(kv_shape, dtype=self.dtype, device=dev)
        if a["family"] == "falcon_h1":
            self.conv_state = torch.zeros(a["layers"], B, a["conv_dim"], a["d_conv"], dtype=self.dtype, device=dev)
            self.ssm_state = torch.zeros(a["layers"], B, a["m_heads"], a["m_head_dim"], a["d_state"],
                                         dtype=ssm_state_dtype, device=dev)
        else:
            self.conv_state = self.ssm_state = None
        long = dict(dtype=torch.long, device=dev)
        self.token = torch.zeros(B, **long)
        self.pos = torch.zeros(B, **long)
        self.col = torch.zeros(1, **long)  # the cache column this step writes (same for every row)
        self.step = torch.zeros(1, **long)  # index of the output being produced
        self.valid = torch.zeros(B, S, dtype=torch.bool, device=dev)
        self.running = torch.ones(B, dtype=torch.bool, device=dev)
        self.finished = torch.zeros(B, dtype=torch.bool, device=dev)
        self.lengths = torch.zeros(B, **long)
        self.reason = torch.zeros(B, **long)
        self.noise: torch.Tensor | None = None
        self.out_shape: tuple[int, int] = (0, 0)
        self._graphs: dict[tuple, Any] = {}
        self._pool = None
        self._warm = False
        self.last_timing: dict[str, float] = {}
        self.state_update = resolve_state_update(state_update, self.device)
        # Per-call constants derived from the weights (A = -exp(A_log), float conv taps), refreshed eagerly at
        # the start of every call so that graphs read them from fixed addresses and training updates count.
        self._consts: list[dict[str, torch.Tensor | None]] = []
        if a["family"] == "falcon_h1":
            for layer in model.model.layers:
                mx = layer.mamba
                self._consts.append({
                    "A": torch.empty(a["m_heads"], dtype=torch.float32, device=dev),
                    "zxbcdt_scale": torch.empty(mx.mup_vector.numel(), dtype=self.dtype, device=dev),
                    "conv_w": torch.empty(a["conv_dim"], a["d_conv"], dtype=torch.float32, device=dev),
                    "conv_b": None if mx.conv1d.bias is None else torch.empty(a["conv_dim"], dtype=torch.float32,
                                                                              device=dev)})
        self.refresh_constants()
        self.info = {"ssm_update": self.state_update, "ssm_state_dtype": str(ssm_state_dtype).replace("torch.", ""),
                     "attention": attention,
                     "cuda_graph": self.cuda_graph, "bucket": self.bucket, "max_len": self.max_len, "compiled": False}
        # sizes the glue functions split and reshape by, and the MLP activation (stateless: the first layer's
        # serves every layer, so a compiled graph does not see a new module object per layer)
        self._sizes = (a.get("d_ssm", 0), a.get("conv_dim", 0), a.get("m_heads", 0),
                       a.get("n_groups", 0) * a.get("d_state", 0), a["heads"], a["kv_heads"], a["head_dim"])
        first = model.model.layers[0]
        self._act = (first.feed_forward if a["family"] == "falcon_h1" else first.mlp).act_fn
        self.compiled = False
        self._glue = PLAIN_GLUE
        if compile:
            self.set_compiled(True)

    # ---------------------------------------------------------------- bookkeeping
    @property
    def model(self) -> torch.nn.Module:
        m = self._model()
        if m is None:
            raise RuntimeError("the model this engine was built for has been freed")
        return m

    def cache_bytes(self) -> int:
        """Bytes of the static caches (K/V, conv and SSM states): what decides the largest batch."""
        ts = [self.k_cache, self.v_cache] + ([self.conv_state, self.ssm_state] if self.conv_state is not None else [])
        return sum(t.numel() * t.element_size() for t in ts)

    def prepare_outputs(self, max_new_tokens: int, top_k: int) -> None:
        """Per-step output buffers [B, max_new_tokens(, k)]; graphs that wrote to older buffers are dropped."""
        if self.out_shape == (max_new_tokens, top_k):
            return
        B, dev = self.batch_size, self.device
        self.out_tokens = torch.zeros(B, max_new_tokens, dtype=torch.long, device=dev)
        self.out_lp = torch.zeros(B, max_new_tokens, dtype=torch.float32, device=dev)
        self.out_top_lp = torch.zeros(B, max_new_tokens, top_k, dtype=torch.float32, device=dev)
        self.out_top_ids = torch.zeros(B, max_new_tokens, top_k, dtype=torch.long, device=dev)
        self.cur_top_lp = torch.zeros(B, top_k, dtype=torch.float32, device=dev)
        self.out_shape = (max_new_tokens, top_k)
        self._graphs.clear()

    @torch.no_grad()
    def refresh_constants(self) -> None:
        """Recompute the weight-derived constants (call after the weights changed; generate() does)."""
        if not self._consts:
            return
        for c, layer in zip(self._consts, self.model.model.layers):
            mx = layer.mamba
            c["A"].copy_(-torch.exp(mx.A_log.float()))
            # in_proj(h * ssm_in) * mup = in_proj(h) * (mup * ssm_in): one multiply instead of two
            c["zxbcdt_scale"].copy_(mx.mup_vector.reshape(-1).float() * mx.ssm_in_multiplier)
            c["conv_w"].copy_(mx.conv1d.weight[:, 0, :].float())
            if c["conv_b"] is not None:
                c["conv_b"].copy_(mx.conv1d.bias.float())

    def kv_len_for(self, col: int) -> int:
        """KV columns the step attends over when writing column ``col`` (a bucket end on GPU)."""
        return min(self.max_len, round_up(col + 1, self.bucket))

    # ---------------------------------------------------------------- the decode forward
    # A layer is three parts: the element-wise glue and projections before the cache-bound kernels
    # (``falcon_pre``/``qwen_pre``), the KV-cache write, SSM state update and attention (run as they are), and
    # the glue after (``falcon_post``/``qwen_post``). The glue functions are pure functions of tensors so that
    # ``compile=True`` can hand them to torch.compile (one compiled graph serves every layer); called directly
    # they are the reference twin of the compiled path.
    def set_compiled(self, on: bool, backend: str = "inductor") -> None:
        """Use torch.compile'd layer glue or the plain functions; captured graphs are dropped. Inductor is for
        CUDA (its fusions pay off inside CUDA graphs); tests pass ``backend='aot_eager'`` to trace on CPU."""
        if on and backend == "inductor" and self.device.type != "cuda":
            raise ValueError("compile=True needs a CUDA model (Inductor's fusions pay off inside CUDA graphs)")
        self.compiled = bool(on)
        self._glue = compiled_glue(backend) if on else PLAIN_GLUE
        self.info["compiled"] = self.compiled
        self._graphs.clear()
        self._warm = False

    def _cache_bound(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int, bias: torch.Tensor,
                     scale: float) -> torch.Tensor:
        """Write this token's K/V at column ``col``, then attend over the first ``kv_len`` columns."""
        a = self.arch
        B, KV, H, D = q.shape[0], a["kv_heads"], a["heads"], a["head_dim"]
        self.k_cache[i].index_copy_(2, self.col, k[:, :, None, :])
        self.v_cache[i].index_copy_(2, self.col, v[:, :, None, :])
        keys = self.k_cache[i, :, :, :kv_len]
        values = self.v_cache[i, :, :, :kv_len]
        # GQA without copies: the H/KV query heads that share a KV head become that head's query rows.
        return self._attend(q.view(B, KV, H // KV, D), keys, values, bias, scale, self.attention, self.valid)

    @staticmethod
    def _attend(qg: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, scale: float,
                mode: str, valid: torch.Tensor) -> torch.Tensor:
        """qg [B, KV, G, D] over keys/values [B, KV, T, D] with the additive mask ``bias`` [B, 1, 1, T]
        (``valid`` [B, >=T]: the same mask as booleans, what the Triton kernel reads)."""
        if mode == "triton":
            return split_kv_attention(qg, keys, values, valid, scale)
        if mode == "sdpa":
            return F.scaled_dot_product_attention(qg, keys, values, attn_mask=bias, scale=scale)
        # Batched matmuls over (row, KV head): the cache slice folds into one batch dimension without a copy.
        B, KV, G, D = qg.shape
        T = keys.shape[2]
        scores = torch.bmm(qg.reshape(B * KV, G, D), keys.reshape(B * KV, T, D).transpose(1, 2))
        p = torch.softmax(scores.view(B, KV, G, T).float() * scale + bias, dim=-1).to(qg.dtype)
        return torch.bmm(p.view(B * KV, G, T), values.reshape(B * KV, T, D)).view(B, KV, G, D)

    @torch.no_grad()
    def pick_attention(self, kv_len: int, reps: int = 10) -> dict[str, float]:
        """Time the attention modes on layer 0's live cache at ``kv_len`` and keep the fastest (CUDA only)."""
        if self.device.type != "cuda":
            return {}
        a = self.arch
        q = torch.randn(self.batch_size, a["kv_heads"], a["heads"] // a["kv_heads"], a["head_dim"], dtype=self.dtype,
                        device=self.device)
        bias = torch.zeros(self.batch_size, 1, 1, kv_len, dtype=self.dtype, device=self.device)
        valid = torch.ones(self.batch_size, kv_len, dtype=torch.bool, device=self.device)
        keys, values = self.k_cache[0, :, :, :kv_len], self.v_cache[0, :, :, :kv_len]
        times = {}
        for mode in ATTENTION_MODES if triton_available() else ("sdpa", "matmul"):
            try:
                for _ in range(2):  # compiles / autotunes, and sets up the side stream's handles
                    self._attend(q, keys, values, bias, 0.1, mode, valid)
                torch.cuda.synchronize(self.device)
                # timed as the step runs it, inside a CUDA graph: eager timing would charge the Python launch
                # cost (tens of microseconds for a Triton kernel) that graph replays do not pay
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(reps):
                        self._attend(q, keys, values, bias, 0.1, mode, valid)
                g.replay()
                torch.cuda.synchronize(self.device)
                t0 = time.perf_counter()
                g.replay()
                torch.cuda.synchronize(self.device)
                times[mode] = (time.perf_counter() - t0) / reps
                del g
            except Exception:  # noqa: BLE001 - a backend that refuses these shapes is not a candidate
                continue
        if times:
            self.attention = min(times, key=times.get)
            self.info["attention"] = self.attention
        return times

    def _falcon_layer(self, i: int, layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      bias: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Falcon-H1: Mamba-2 mixer and attention in parallel on the same normed input, then the MLP."""
        a, c = self.arch, self._consts[i]
        mx, attn, ff = layer.mamba, layer.self_attn, layer.feed_forward
        B, NH, HD, N, G = x.shape[0], a["m_heads"], a["m_head_dim"], a["d_state"], a["n_groups"]
        gate, xs, Bm, Cm, dt, q, k, v = self._glue["falcon_pre"](
            x, layer.input_layernorm.weight, weight_bias(mx.in_proj), c["zxbcdt_scale"], self.conv_state[i], c["conv_w"],
            c["conv_b"], weight_bias(attn.q_proj), weight_bias(attn.k_proj), weight_bias(attn.v_proj), cos, sin,
            eps=layer.input_layernorm.variance_epsilon, attn_in=layer.attention_in_multiplier,
            key_mult=attn.key_multiplier, sizes=self._sizes)
        y = ssm_update(self.ssm_state[i], xs.view(B, NH, HD), dt[:, :, None].expand(B, NH, HD),
                       c["A"][:, None, None].expand(NH, HD, N), Bm.view(B, G, N), Cm.view(B, G, N),
                       D=mx.D[:, None].expand(NH, HD), z=None if mx.mamba_rms_norm else gate.view(B, NH, HD),
                       dt_bias=mx.dt_bias[:, None].expand(NH, HD), dt_softplus=True, path=self.state_update)
        o = self._cache_bound(i, q, k, v, kv_len, bias, attn.scaling)
        norm = mx.norm if mx.mamba_rms_norm else None
        return self._glue["falcon_post"](
            x, y, gate, o, None if norm is None else norm.weight, weight_bias(mx.out_proj), weight_bias(attn.o_proj),
            layer.pre_ff_layernorm.weight, weight_bias(ff.up_proj), weight_bias(ff.gate_proj), weight_bias(ff.down_proj),
            norm_eps=0.0 if norm is None else norm.variance_epsilon,
            norm_groups=1 if norm is None else norm.n_groups,
            norm_before_gate=False if norm is None else norm.norm_before_gate,
            ssm_out=layer.ssm_out_multiplier, attn_out=layer.attn_out_multiplier,
            eps=layer.pre_ff_layernorm.variance_epsilon, gate_mult=ff.gate_multiplier, down_mult=ff.down_multiplier,
            act=self._act)

    def _qwen_layer(self, i: int, layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    bias: torch.Tensor, kv_len: int) -> torch.Tensor:
        attn, mlp = layer.self_attn, layer.mlp
        q, k, v = self._glue["qwen_pre"](
            x, layer.input_layernorm.weight, weight_bias(attn.q_proj), weight_bias(attn.k_proj), weight_bias(attn.v_proj),
            attn.q_norm.weight, attn.k_norm.weight, cos, sin, eps=layer.input_layernorm.variance_epsilon,
            qk_eps=attn.q_norm.variance_epsilon, sizes=self._sizes)
        o = self._cache_bound(i, q, k, v, kv_len, bias, attn.scaling)
        return self._glue["qwen_post"](x, o, weight_bias(attn.o_proj), layer.post_attention_layernorm.weight,
                                       weight_bias(mlp.gate_proj), weight_bias(mlp.up_proj), weight_bias(mlp.down_proj),
                                       eps=layer.post_attention_layernorm.variance_epsilon, act=self._act)

    def decode_logits(self, kv_len: int) -> torch.Tensor:
        """Logits [B, V] for ``self.token`` at ``self.pos``, writing its K/V at column ``self.col``."""
        m = self.model
        inner = m.model
        x = F.embedding(self.token, inner.embed_tokens.weight)
        falcon = self.arch["family"] == "falcon_h1"
        if falcon:
            x = scale_by(x, inner.embedding_multiplier)
        cos, sin = rope_tables(inner.rotary_emb, self.pos, x.dtype)
        self.valid.index_fill_(1, self.col, True)
        bias = torch.zeros(self.batch_size, 1, 1, kv_len, dtype=x.dtype, device=x.device)
        bias.masked_fill_(~self.valid[:, None, None, :kv_len], float("-inf"))
        layer_step = self._falcon_layer if falcon else self._qwen_layer
        for i, layer in enumerate(inner.layers):
            x = layer_step(i, layer, x, cos, sin, bias, kv_len)
        norm = inner.final_layernorm if falcon else inner.norm
        x = rms_norm(x, norm.weight, norm.variance_epsilon)
        logits = F.linear(x, m.lm_head.weight)
        if falcon:
            logits = scale_by(logits, inner.lm_head_multiplier)
        return logits

    # ---------------------------------------------------------------- sampling and bookkeeping (on device)
    def _sample_and_record(self, logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
                           eos_id: int, pad_id: int) -> None:
        # the transformers loop's step, drawing from the pre-drawn noise (graph-safe) instead of multinomial
        token, tok_lp, top_lp, top_ids = sample_step(logits, temperature, top_p, top_k, None,
                                                     noise=None if temperature == 0.0 else self.noise)
        token = torch.where(self.running, token, torch.full_like(token, pad_id))
        idx = self.step
        self.out_tokens.index_copy_(1, idx, token[:, None])
        self.out_lp.index_copy_(1, idx, tok_lp[:, None])
        self.out_top_lp.index_copy_(1, idx, top_lp[:, None])
        self.out_top_ids.index_copy_(1, idx, top_ids[:, None])
        self.cur_top_lp.copy_(top_lp)
        self.finished.copy_(self.running & (token == eos_id))
        self.token.copy_(token)

    def _finish(self, early_stop: EarlyStop | None) -> None:
        """EOS and early stop -> lengths, reasons, running (the order of ``generation.generate_ids``)."""
        fin, run = self.finished, self.running
        if early_stop is not None:
            stop = early_stop(self.cur_top_lp, run) & run & ~fin
        else:
            stop = torch.zeros_like(run)
        ended = fin | stop
        self.lengths.copy_(torch.where(ended, self.step + 1, self.lengths))
        self.reason.copy_(torch.where(fin, torch.ones_like(self.reason),
                                      torch.where(stop, torch.full_like(self.reason, 2), self.reason)))
        self.running.copy_(run & ~ended)

    @torch.no_grad()
    def _step_body(self, kv_len: int, sampling: tuple, early_stop: EarlyStop | None, finish: bool = True) -> None:
        """One decode step, all on device: forward, sample, record, (EOS and early stop), advance.

        ``finish=False`` leaves the stop checks to the caller (an early stop that cannot live in a graph)."""
        self.step.add_(1)
        self._sample_and_record(self.decode_logits(kv_len), *sampling)
        if finish:
            self._finish(early_stop)
        self.col.add_(1)
        self.pos.add_(1)

    # ---------------------------------------------------------------- CUDA graphs
    def _run_warm(self, body: Any) -> None:
        for _ in range(2):
            self.step.zero_()
            self.col.zero_()
            self.pos.zero_()
            body()

    def _warmup(self, body: Any) -> None:
        """Run the step twice on a side stream before the first capture (Triton JIT, cuBLAS handles).

        It scribbles on the caches and counters, so graphs are captured before a call loads its prompts.
        """
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._run_warm(body)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)

    def _capture(self, body: Any) -> Any:
        """Record ``body``'s kernels into a CUDA graph (nothing runs); graphs share one memory pool."""
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._pool):
            body()
        if self._pool is None:
            self._pool = g.pool()
        return g

    def graph(self, kv_len: int, sampling: tuple, early_stop: EarlyStop | None = None, finish: bool = True) -> Any:
        """The captured step for this KV length and sampling setting; with the stop checks (EOS and a
        graph-safe ``early_stop``) inside when ``finish``."""
        key = (kv_len, sampling, id(early_stop) if early_stop is not None else None, finish, self.attention)
        g = self._graphs.get(key)
        if g is None:
            if not self._warm:  # without the early stop: its state must not move before the call starts
                self._warmup(lambda: self._step_body(kv_len, sampling, None, True))
                self._warm = True
            g = self._capture(lambda: self._step_body(kv_len, sampling, early_stop, finish))
            self._graphs[key] = g
        return g

    def disable_graphs(self, exc: BaseException) -> None:
        """Fall back to the eager step (same results, slower) after a failed capture, and say why."""
        import warnings

        warnings.warn(f"CUDA graph capture failed ({exc!r}); the engine runs its step eagerly", RuntimeWarning)
        self._graphs.clear()
        self.cuda_graph = False
        self.info.update(cuda_graph=False, graph_error=repr(exc)[:300])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def drop_graphs(self, early_stop: EarlyStop | None = None) -> None:
        """Forget graphs (all, or those that captured ``early_stop``'s state tensors)."""
        if early_stop is None:
            self._graphs.clear()
        else:
            for key in [k for k in self._graphs if k[2] == id(early_stop)]:
                del self._graphs[key]

    # ---------------------------------------------------------------- prefill
    @torch.no_grad()
    def prefill(self, prompt_ids: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int,
                prefill_tokens: int = 32768) -> torch.Tensor:
        """Run the prompts through the model's forward (rows in chunks of ~``prefill_tokens`` tokens) and
        copy its caches into the static buffers. Returns the last-position logits [B, V] (float32)."""
        if len(prompt_ids) != self.batch_size:
            raise ValueError(f"this engine holds {self.batch_size} rows, got {len(prompt_ids)} prompts")
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        ids, mask = left_pad(prompt_ids, pad_id)
        width = ids.shape[1]
        if width + max_new_tokens > self.max_len:
            raise ValueError(f"prompt width {width} + {max_new_tokens} new tokens exceed the engine's "
                             f"max_len {self.max_len}")
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        m = self.model
        self.valid.zero_()
        self.valid[:, :width] = mask.bool()
        if self.conv_state is not None:
            self.conv_state.zero_()
            self.ssm_state.zero_()
        logits = torch.empty(self.batch_size, self.arch["vocab"], dtype=torch.float32, device=self.device)
        rows = max(1, prefill_tokens // width)
        for r0 in range(0, self.batch_size, rows):
            r1 = min(self.batch_size, r0 + rows)
            out = m(input_ids=ids[r0:r1], attention_mask=mask[r0:r1], position_ids=pos[r0:r1], use_cache=True,
                    logits_to_keep=1)
            for i, layer in enumerate(out.past_key_values.layers):
                self.k_cache[i, r0:r1, :, :width].copy_(layer.keys)
                self.v_cache[i, r0:r1, :, :width].copy_(layer.values)
                if self.conv_state is not None:
                    self.conv_state[i, r0:r1].copy_(layer.conv_states[0])
                    self.ssm_state[i, r0:r1].copy_(layer.recurrent_states[0])
            logits[r0:r1] = out.logits[:, -1].float()
            del out
        self.pos.copy_(pos[:, -1] + 1)
        self.col.fill_(width)
        self.step.zero_()
        self.running.fill_(True)
        self.lengths.fill_(max_new_tokens)
        self.reason.zero_()
        return logits

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[Sequence[int]], *, eos_id: int, pad_id: int, temperature: float,
                 top_p: float, max_new_tokens: int, top_k: int = 20, seed: int = 0,
                 early_stop: EarlyStop | None = None, check_every: int | None = None,
                 prefill_tokens: int = 32768) -> list[dict[str, Any]]:
        """Decode one batch; returns the rows of :func:`falcon_h1r.inference.hf_loop.generate_ids`."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        t0 = time.perf_counter()
        k = min(top_k, self.arch["vocab"])
        sampling = (float(temperature), float(top_p), int(k), int(eos_id), int(pad_id))
        self.refresh_constants()
        self.prepare_outputs(max_new_tokens, k)
        if temperature != 0.0 and self.noise is None:
            self.noise = torch.empty(self.batch_size, self.arch["vocab"], dtype=torch.float32, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        if early_stop is not None:
            early_stop.reset(self.batch_size, self.device)
        width = max(len(p) for p in prompt_ids)
        in_graph_stop = early_stop is None or _graph_safe(early_stop)
        graph_stop = early_stop if in_graph_stop else None
        if self.cuda_graph and max_new_tokens > 1:
            try:
                for kv_len in sorted({self.kv_len_for(width + s - 1) for s in range(1, max_new_tokens)}):
                    self.graph(kv_len, sampling, graph_stop, in_graph_stop)
            except Exception as exc:  # noqa: BLE001 - run the same step eagerly rather than fail the call
                self.disable_graphs(exc)
        t1 = time.perf_counter()
        logits = self.prefill(prompt_ids, pad_id, max_new_tokens, prefill_tokens)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        if temperature != 0.0:
            self.noise.exponential_(generator=gen)
        self._sample_and_record(logits, *sampling)
        self._finish(early_stop)
        every = check_every or (16 if self.cuda_graph else 1)
        steps = 1
        for s in range(1, max_new_tokens):
            if s % every == 0 and not bool(self.running.any()):
                break
            if temperature != 0.0:
                self.noise.exponential_(generator=gen)
            col = width + s - 1
            if self.cuda_graph:
                self.graph(self.kv_len_for(col), sampling, graph_stop, in_graph_stop).replay()
                if not in_graph_stop:
                    self._finish(early_stop)
            else:
                self._step_body(col + 1, sampling, None, finish=False)
                self._finish(early_stop)
            steps += 1
        rows = self._rows(prompt_ids, steps)
        t3 = time.perf_counter()
        if early_stop is not None and in_graph_stop:
            self.drop_graphs(early_stop)
        self.last_timing = {"capture_s": t1 - t0, "prefill_s": t2 - t1, "decode_s": t3 - t2, "steps": steps,
                            "total_s": t3 - t0}
        return rows

    def _rows(self, prompt_ids: Sequence[Sequence[int]], steps: int) -> list[dict[str, Any]]:
        tok = self.out_tokens[:, :steps].cpu()
        lp = self.out_lp[:, :steps].cpu()
        tlp = self.out_top_lp[:, :steps].cpu()
        tid = self.out_top_ids[:, :steps].cpu()
        lengths = self.lengths.cpu().tolist()
        reasons = self.reason.cpu().tolist()
        rows = []
        for i in range(self.batch_size):
            n = min(lengths[i], steps)
            rows.append({"token_ids": tok[i, :n].tolist(), "logprobs": lp[i, :n].numpy().astype(np.float32),
                         "top_logprobs": tlp[i, :n].numpy().astype(np.float32),
                         "top_ids": tid[i, :n].numpy().astype(np.int32), "finish_reason": FINISH_REASONS[reasons[i]],
                         "prompt_tokens": len(prompt_ids[i])})
        return rows

    # ---------------------------------------------------------------- throughput probes
    @torch.no_grad()
    def fill_random(self, seed: int = 0) -> None:
        """Random but well-scaled cache contents: a decode step's cost does not depend on the values."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.k_cache.normal_(generator=gen)
        self.v_cache.normal_(generator=gen)
        if self.conv_state is not None:
            self.conv_state.normal_(generator=gen)
            self.ssm_state.normal_(std=0.1, generator=gen)

    @torch.no_grad()
    def set_position(self, position: int, seed: int = 0) -> None:
        """Every row has ``position`` tokens in its cache and decodes the next one (random token ids)."""
        if not 0 <= position < self.max_len:
            raise ValueError(f"position {position} outside the cache (max_len {self.max_len})")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.token.copy_(torch.randint(0, self.arch["vocab"], (self.batch_size,), generator=gen,
                                       device=self.device))
        self.pos.fill_(position)
        self.col.fill_(position)
        self.step.zero_()
        self.valid.zero_()
        self.valid[:, :position] = True
        self.running.fill_(True)
        self.lengths.zero_()
        self.reason.zero_()


def _graph_safe(early_stop: Any) -> bool:
    """Early stops whose state lives in tensors updated in place (they say so with ``graph_safe = True``, as
    :class:`falcon_h1r.deepconf.EarlyStopController` does) can be captured in the graph; others run between
    replays."""
    return bool(getattr(early_stop, "graph_safe", False))
