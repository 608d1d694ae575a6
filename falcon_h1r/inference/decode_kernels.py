"""Decode-step kernels the field's libraries lack for our shapes, each with a plain-torch reference twin.

Two kernels: the split-KV decode attention below, and the Mamba-2 state update
(:func:`ssm_state_update`, further down).

**Split-KV grouped-query decode attention** (flash-decoding). One new token per row attends over a static
KV cache. PyTorch's SDPA treats the G query heads that share a KV head as G query rows of one block and walks
the whole cache in a single program per (row, KV head): at batch 32 with 2 KV heads that is 64 programs for
132 SMs, and the cache is read at about 2 TB/s of the H100's 3. vLLM and FlashAttention split the KV length
across programs and merge the partial softmaxes; flash-attn is not installable on the lent GPU machine (a long
CUDA build), so this module writes the same two-pass scheme in Triton:

1. ``_attn_partial``: program (row·KV head, split) loads the G queries once, walks its slice of the cache in
   ``block_n`` tiles with an online softmax (masked by the row's ``valid`` columns), and writes its unnormalised
   output, running max and running sum.
2. ``_attn_combine``: one program per (row·KV head) rescales the splits to a common max and normalises.

Each K/V tile is read once for all G query heads (the GQA saving). The reference twin is
:func:`attention_ref` (SDPA with the same mask); ``tests/test_decode_kernels.py`` compares them under Triton's
CPU interpreter and ``bench/engine_check.py`` on the GPU.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

# H100 has 132 SMs; aim for about four programs per SM so that the cache is streamed by every SM.
PROGRAMS_PER_SM = 4


def attention_ref(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """q [B, KV, G, D] over keys/values [B, KV, T, D] where ``valid`` [B, T] (bool) marks the columns to attend."""
    bias = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill_(~valid, float("-inf"))
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=bias[:, None, None, :], scale=scale)


@functools.lru_cache(maxsize=1)
def _kernels() -> tuple[Any, Any]:
    """Build the Triton kernels on first use (so that ``TRITON_INTERPRET`` set by a test is honoured and
    machines without Triton can import this module)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _attn_partial(Q, K, V, VALID, O_PART, M_PART, L_PART,
                      s_qb, s_qh, s_qg, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_valid,
                      kv_len, n_splits, scale,
                      KV_HEADS: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr,
                      BLOCK_N: tl.constexpr, SPLIT_LEN: tl.constexpr):
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // KV_HEADS
        h = bh % KV_HEADS
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        q = tl.load(Q + b * s_qb + h * s_qh + offs_g[:, None] * s_qg + offs_d[None, :],
                    mask=offs_g[:, None] < G, other=0.0)
        start = split * SPLIT_LEN
        end = tl.minimum(start + SPLIT_LEN, kv_len)  # the last split may be short: its tail tiles are masked
        m_i = tl.full([G_PAD], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([G_PAD], dtype=tl.float32)
        acc = tl.zeros([G_PAD, D], dtype=tl.float32)
        k_base = K + b * s_kb + h * s_kh
        v_base = V + b * s_vb + h * s_vh
        for i in range(0, SPLIT_LEN, BLOCK_N):
            offs_n = start + i + tl.arange(0, BLOCK_N)
            inside = offs_n < end
            ok = (tl.load(VALID + b * s_valid + offs_n, mask=inside, other=0) != 0) & inside
            k = tl.load(k_base + offs_n[:, None] * s_kt + offs_d[None, :], mask=inside[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing valid yet stays at 0
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + offs_n[:, None] * s_vt + offs_d[None, :], mask=inside[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        part = bh * n_splits + split
        tl.store(O_PART + (part * G_PAD + offs_g[:, None]) * D + offs_d[None, :], acc)
        tl.store(M_PART + part * G_PAD + offs_g, m_i)
        tl.store(L_PART + part * G_PAD + offs_g, l_i)

    @triton.jit
    def _attn_combine(O_PART, M_PART, L_PART, OUT, s_ob, s_oh, s_og, n_splits,
                      KV_HEADS: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr,
                      SPLITS_PAD: tl.constexpr):
        bh = tl.program_id(0)
        b = bh // KV_HEADS
        h = bh % KV_HEADS
        offs_s = tl.arange(0, SPLITS_PAD)
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        in_s = offs_s < n_splits
        ml_idx = (bh * n_splits + offs_s[:, None]) * G_PAD + offs_g[None, :]
        m = tl.load(M_PART + ml_idx, mask=in_s[:, None], other=float("-inf"))  # [S, G]
        l = tl.load(L_PART + ml_idx, mask=in_s[:, None], other=0.0)
        m_max = tl.max(m, 0)
        m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
        w = tl.exp(m - m_max[None, :])  # [S, G]; empty splits carry m = -inf -> weight 0
        denom = tl.sum(w * l, 0)  # [G]
        acc = tl.zeros([G_PAD, D], dtype=tl.float32)
        for s_i in range(SPLITS_PAD):  # a constexpr bound; the splits past n_splits load nothing
            w_s = tl.sum(tl.where(offs_s[:, None] == s_i, w, 0.0), 0)  # [G]
            o = tl.load(O_PART + ((bh * n_splits + s_i) * G_PAD + offs_g[:, None]) * D + offs_d[None, :],
                        mask=(offs_g[:, None] < G_PAD) & (s_i < n_splits), other=0.0)
            acc += o * w_s[:, None]
        out = acc / denom[:, None]
        tl.store(OUT + b * s_ob + h * s_oh + offs_g[:, None] * s_og + offs_d[None, :],
                 out.to(OUT.dtype.element_ty), mask=offs_g[:, None] < G)

    return _attn_partial, _attn_combine


def triton_available() -> bool:
    """Whether Triton can be imported here (the GPU image has it; CPU installs use it only in tests)."""
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def plan_splits(rows_times_heads: int, kv_len: int, block_n: int, sm_count: int,
                max_splits: int = 256) -> tuple[int, int]:
    """(number of KV splits, tokens per split): enough programs to keep every SM streaming, no split
    shorter than one tile. The split length is ``block_n`` times a power of two (it is a compile-time
    constant of the kernel, so few variants get compiled); fixed per (batch, KV length), so a captured
    graph replays the same plan."""
    want = min(max_splits, max(1, math.ceil(PROGRAMS_PER_SM * sm_count / max(1, rows_times_heads))))
    tiles = max(1, math.ceil(kv_len / block_n))
    per_split = 1
    while math.ceil(tiles / per_split) > want:
        per_split *= 2
    split_len = per_split * block_n
    return math.ceil(kv_len / split_len), split_len


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def split_kv_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor,
                       scale: float, *, block_n: int = 64, num_warps: int = 4, num_stages: int = 2,
                       sm_count: int | None = None) -> torch.Tensor:
    """The Triton twin of :func:`attention_ref`: same arguments, same result within rounding.

    ``keys``/``values`` may be strided slices of a larger cache (only their last dimension must be
    contiguous); ``valid`` [B, T'] with T' >= T.
    """
    B, KV, G, D = q.shape
    T = keys.shape[2]
    if keys.shape != (B, KV, T, D) or values.shape != keys.shape:
        raise ValueError(f"keys/values must be [B, KV, T, D] = [{B}, {KV}, T, {D}], got {tuple(keys.shape)} "
                         f"and {tuple(values.shape)}")
    if D & (D - 1) or D < 16:
        raise ValueError(f"head_dim must be a power of two >= 16 for the Triton kernel, got {D}")
    if valid.dtype != torch.bool or valid.shape[0] != B or valid.shape[1] < T:
        raise ValueError(f"valid must be a bool [B, >=T] mask, got {valid.dtype} {tuple(valid.shape)}")
    for name, t in (("q", q), ("keys", keys), ("values", values), ("valid", valid)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last dimension")
    if sm_count is None:
        sm_count = _sm_count(q.device.index or 0) if q.is_cuda else 132
    partial_kernel, combine_kernel = _kernels()
    n_splits, split_len = plan_splits(B * KV, T, block_n, sm_count)
    g_pad = max(16, 1 << (G - 1).bit_length())
    o_part = torch.empty(B * KV * n_splits * g_pad * D, dtype=torch.float32, device=q.device)
    m_part = torch.empty(B * KV * n_splits * g_pad, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    valid_u8 = valid.view(torch.uint8)
    partial_kernel[(B * KV, n_splits)](
        q, keys, values, valid_u8, o_part, m_part, l_part,
        q.stride(0), q.stride(1), q.stride(2), keys.stride(0), keys.stride(1), keys.stride(2),
        values.stride(0), values.stride(1), values.stride(2), valid_u8.stride(0),
        T, n_splits, float(scale),
        KV_HEADS=KV, G=G, G_PAD=g_pad, D=D, BLOCK_N=block_n, SPLIT_LEN=split_len,
        num_warps=num_warps, num_stages=num_stages)
    out = torch.empty_like(q)
    combine_kernel[(B * KV,)](o_part, m_part, l_part, out, out.stride(0), out.stride(1), out.stride(2), n_splits,
                              KV_HEADS=KV, G=G, G_PAD=g_pad, D=D,
                              SPLITS_PAD=max(2, 1 << (n_splits - 1).bit_length()), num_warps=4)
    return out


# ============================================================================ the Mamba-2 decode state update
# One decode step of Mamba-2 reads and writes the whole SSM state (Falcon-H1R-7B: 24 heads x 128 x 256 per row
# and layer, 3 MiB in float32), so the step is a pure stream over that state. mamba-ssm's Triton
# ``selective_state_update`` tiles it for small states: at d_state 256 its programs hold 4 rows of the state
# (4 KiB) each, and on an H200 it moves 2.8 TB/s with a float32 state and 1.4 TB/s with a bfloat16 one, 145 us a
# layer at batch 64 either way: bound by the kernel, not by the bytes. This kernel is shaped for large states:
# one program per (row, head, block of ``block_p`` head rows) streams a [block_p, d_state] tile (16 KiB by default),
# reads the per-head scalars once (dt, A, D, dt_bias are tied along the head's rows in Mamba-2), and computes in
# float32 exactly as mamba-ssm's kernel does (softplus, exp(dt A), (dt B) x, C.h, D x, the optional silu(z)
# gate), rounding only the stored state and y. Its plain twin is
# :func:`falcon_h1r.inference.engine_ops.ssm_update_ref` on float32 copies of the inputs.

# (block_p, num_warps) tried by :func:`tune_state_update`; the first is the default before tuning (and on CPU)
STATE_UPDATE_CONFIGS = ((16, 4), (8, 2), (8, 4), (16, 8), (32, 4), (32, 8), (64, 8))
_TUNED: dict[tuple, tuple[int, int]] = {}


@functools.lru_cache(maxsize=1)
def _state_update_kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def _ssm_state_update(STATE, X, DT, DT_BIAS, A, BM, CM, D, Z, OUT,
                          s_sb, s_sh, s_sp, s_xb, s_xh, s_dtb, s_dth, s_bb, s_bg, s_cb, s_cg, s_zb, s_zh,
                          s_ob, s_oh, s_dtbias, s_a, s_d,
                          P, N, heads_per_group,
                          H: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
                          DT_SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr):
        bh = tl.program_id(0)
        b = bh // H
        h = bh % H
        g = h // heads_per_group
        offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_n = tl.arange(0, BLOCK_N)
        in_p = offs_p < P
        in_n = offs_n < N
        # the head's scalars: Mamba-2 ties dt, A, D and dt_bias along the head's rows and the state dimension
        dt = tl.load(DT + b * s_dtb + h * s_dth).to(tl.float32)
        if HAS_DT_BIAS:
            dt += tl.load(DT_BIAS + h * s_dtbias).to(tl.float32)
        if DT_SOFTPLUS:
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        decay = tl.exp(tl.load(A + h * s_a).to(tl.float32) * dt)
        x = tl.load(X + b * s_xb + h * s_xh + offs_p, mask=in_p, other=0.0).to(tl.float32)
        bv = tl.load(BM + b * s_bb + g * s_bg + offs_n, mask=in_n, other=0.0).to(tl.float32)
        cv = tl.load(CM + b * s_cb + g * s_cg + offs_n, mask=in_n, other=0.0).to(tl.float32)
        ptrs = STATE + b * s_sb + h * s_sh + offs_p[:, None] * s_sp + offs_n[None, :]
        inside = in_p[:, None] & in_n[None, :]
        state = tl.load(ptrs, mask=inside, other=0.0).to(tl.float32)
        state = state * decay + (bv * dt)[None, :] * x[:, None]  # h <- exp(dt A) h + (dt B) x
        tl.store(ptrs, state.to(STATE.dtype.element_ty), mask=inside)
        y = tl.sum(state * cv[None, :], axis=1)  # C.h on the float32 state, as mamba-ssm's kernel
        if HAS_D:
            y += x * tl.load(D + h * s_d).to(tl.float32)
        if HAS_Z:
            z = tl.load(Z + b * s_zb + h * s_zh + offs_p, mask=in_p, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(OUT + b * s_ob + h * s_oh + offs_p, y.to(OUT.dtype.element_ty), mask=in_p)

    return _ssm_state_update


def _head_scalar(t: torch.Tensor | None, name: str, ndim_full: int) -> tuple[torch.Tensor | None, int]:
    """A per-head tensor given as [H] or as Mamba-2's expanded view ([H, P] or [H, P, N], stride 0 past the
    head): the tensor and its head stride. A view that varies along the head's rows is refused."""
    if t is None:
        return None, 0
    if t.dim() == ndim_full and all(s == 0 for s in t.stride()[1:]):
        return t, t.stride(0)
    if t.dim() == 1:
        return t, t.stride(0)
    raise ValueError(f"ssm_state_update: {name} must be per head ([H] or an expanded view with stride 0 past the "
                     f"head, as Mamba-2 ties it); got shape {tuple(t.shape)} strides {t.stride()}: use ssm_update_ref")


def _launch_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, block_p, num_warps) -> torch.Tensor:
    Bsz, H, P, N = state.shape
    G = B.shape[1]
    out = torch.empty_like(x)
    d_b, d_h = dt.stride(0), dt.stride(1)
    z_b, z_h = (z.stride(0), z.stride(1)) if z is not None else (0, 0)
    _state_update_kernel()[(Bsz * H, triton_cdiv(P, block_p))](
        state, x, dt, dt_bias if dt_bias is not None else x, A, B, C, D if D is not None else x,
        z if z is not None else x, out,
        state.stride(0), state.stride(1), state.stride(2), x.stride(0), x.stride(1), d_b, d_h,
        B.stride(0), B.stride(1), C.stride(0), C.stride(1), z_b, z_h, out.stride(0), out.stride(1),
        _head_scalar(dt_bias, "dt_bias", 2)[1], _head_scalar(A, "A", 3)[1], _head_scalar(D, "D", 2)[1],
        P, N, H // G,
        H=H, BLOCK_P=block_p, BLOCK_N=max(16, 1 << (N - 1).bit_length()), HAS_DT_BIAS=dt_bias is not None,
        DT_SOFTPLUS=bool(dt_softplus), HAS_D=D is not None, HAS_Z=z is not None, num_warps=num_warps)
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def ssm_state_update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                     dt_bias: torch.Tensor | None = None, dt_softplus: bool = True, *, block_p: int | None = None,
                     num_warps: int | None = None) -> torch.Tensor:
    """The Triton twin of :func:`~falcon_h1r.inference.engine_ops.ssm_update_ref` (same arguments and shapes, the
    state updated in place, y [B, H, P] returned in ``x``'s dtype), with Mamba-2's per-head ``dt``, ``A``, ``D``,
    ``dt_bias`` (given as [B, H] / [H] or as the expanded views the engine passes). The state may be float32 or
    bfloat16 (vLLM's default for Mamba caches); the arithmetic is float32 either way.

    ``block_p``/``num_warps`` pick the tile; left out, the configuration :func:`tune_state_update` found for
    these shapes is used (on CUDA it times :data:`STATE_UPDATE_CONFIGS` once per shape, outside graph capture,
    on a copy of the state), else the first of them.
    """
    if state.dim() != 4 or state.stride(-1) != 1:
        raise ValueError(f"state must be [B, H, P, N] with a contiguous last dimension, got {tuple(state.shape)}")
    Bsz, H, P, N = state.shape
    G = B.shape[1]
    if x.shape != (Bsz, H, P) or B.shape != (Bsz, G, N) or C.shape != B.shape or H % G:
        raise ValueError(f"shapes: state {tuple(state.shape)}, x {tuple(x.shape)} (want [B, H, P]), B {tuple(B.shape)}"
                         f" and C {tuple(C.shape)} (want [B, G, N] with G dividing H)")
    if dt.shape[:2] != (Bsz, H) or (dt.dim() == 3 and dt.stride(-1) != 0) or dt.dim() not in (2, 3):
        raise ValueError(f"dt must be [B, H] or [B, H, P] with stride 0 along P (tied), got {tuple(dt.shape)} "
                         f"strides {dt.stride()}")
    for name, t in (("x", x), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last dimension")
    for name, t, full in (("A", A, 3), ("D", D, 2), ("dt_bias", dt_bias, 2)):
        _head_scalar(t, name, full)
    if block_p is None or num_warps is None:
        key = (Bsz, H, P, N, state.dtype, x.dtype, z is not None, str(state.device))
        if key not in _TUNED and state.is_cuda and not torch.cuda.is_current_stream_capturing():
            _TUNED[key] = tune_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
        tuned = _TUNED.get(key, STATE_UPDATE_CONFIGS[0])
        block_p, num_warps = block_p or tuned[0], num_warps or tuned[1]
    return _launch_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, block_p, num_warps)


def tune_state_update(state: torch.Tensor, *args: Any, reps: int = 5) -> tuple[int, int]:
    """The fastest (block_p, num_warps) of :data:`STATE_UPDATE_CONFIGS` on these tensors (CUDA), timed with CUDA
    events on a copy of the state, which is put back afterwards."""
    saved = state.clone()
    best, best_t = STATE_UPDATE_CONFIGS[0], float("inf")
    for block_p, warps in STATE_UPDATE_CONFIGS:
        if block_p > max(8, 1 << (state.shape[2] - 1).bit_length()):
            continue
        try:
            _launch_state_update(state, *args, block_p, warps)  # compiles
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                _launch_state_update(state, *args, block_p, warps)
            end.record()
            end.synchronize()
            t = start.elapsed_time(end)
        except Exception:  # noqa: BLE001 - a configuration that does not compile here is not a candidate
            continue
        if t < best_t:
            best, best_t = (block_p, warps), t
    state.copy_(saved)
    return best


def tuned_state_update_configs() -> dict[str, tuple[int, int]]:
    """What :func:`tune_state_update` chose so far (for the records), keyed by shapes and dtypes."""
    return {"x".join(map(str, k[:4])) + f" {k[4]} state, {k[5]} x{', z' if k[6] else ''}": v for k, v in _TUNED.items()}
