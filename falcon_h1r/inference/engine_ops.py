"""The decode engine's layer arithmetic, each piece with its plain-torch reference twin.

* Mamba-2 decode-step updates: :func:`conv_update_ref` (depthwise causal conv) and :func:`ssm_update_ref`
  (selective state update), whose fast twins on CUDA are our Triton kernel shaped for d_state 256
  (:func:`falcon_h1r.inference.decode_kernels.ssm_state_update`) and mamba-ssm's Triton ``selective_state_update``
  (:func:`ssm_update` takes the path the engine chose, :func:`resolve_state_update` chooses);
* the layers' element-wise glue (:func:`falcon_pre` / :func:`falcon_post` / :func:`qwen_pre` / :func:`qwen_post`),
  whose fast twin is the same functions through torch.compile (:func:`compiled_glue`). Every µP multiplier,
  norm, gate and rope detail mirrors transformers' ``modeling_falcon_h1.py`` / ``modeling_qwen3.py``.

Why our own arithmetic instead of the model's modules: the engine runs one token per row over static
caches inside a CUDA graph, which transformers' layers (growing caches, Python dispatch) cannot do.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F


# ============================================================================ plain-torch reference twins
def conv_update_ref(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    activation: bool = True) -> torch.Tensor:
    """One decode step of Mamba-2's depthwise causal conv.

    ``x`` [B, C] is the new input column, ``conv_state`` [B, C, K] holds the last K inputs and is shifted in
    place, ``weight`` [C, K]. Same result as transformers' ``causal_conv1d_update`` (a K-tap conv1d over
    state+x whose last output is taken), computed in float32 and rounded once.
    """
    window = torch.cat([conv_state[:, :, 1:], x.to(conv_state.dtype)[:, :, None]], dim=-1)
    conv_state.copy_(window)
    out = (window.float() * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    if activation:
        out = F.silu(out)
    return out.to(x.dtype)


def ssm_update_ref(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   dt_bias: torch.Tensor | None = None, dt_softplus: bool = True) -> torch.Tensor:
    """One step of the Mamba-2 selective state update, in place on ``state`` [B, H, P, N]; returns y [B, H, P].

    Shapes as mamba-ssm's ``selective_state_update``: x, dt, z [B, H, P]; A [H, P, N]; B, C [B, G, N];
    D, dt_bias [H, P]. h <- exp(dt*A) h + dt * B x ; y = C.h + D x (times silu(z) when given). The arithmetic
    and its dtypes follow transformers' torch fallback, so CPU runs match transformers exactly: with bf16
    inputs it rounds dt + dt_bias, softplus(dt), dt*B*x and the state fed to C.h to bf16. mamba-ssm's Triton
    kernel instead upcasts every input and computes in float32, rounding only y; its twin is this function
    called on float32 copies of the inputs (what ``bench/engine_check.py`` compares the kernel with).
    """
    batch, heads, head_dim = x.shape
    groups, n = B.shape[1], B.shape[-1]
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = dt[..., None]
    dA = torch.exp(dt.float() * A.float())
    Bh = B.reshape(batch, groups, 1, n).expand(batch, groups, heads // groups, n).reshape(batch, heads, 1, n)
    dBx = dt * Bh * x[..., None]
    new_state = state * dA + dBx
    state.copy_(new_state.to(state.dtype))
    Ch = C.reshape(batch, groups, 1, n).expand(batch, groups, heads // groups, n).reshape(batch * heads, n, 1)
    out = torch.bmm(new_state.to(C.dtype).view(batch * heads, head_dim, n), Ch).view(batch, heads, head_dim)
    if D is not None:
        out = (out + x * D).to(out.dtype)
    if z is not None:
        out = out * F.silu(z)
    return out.to(x.dtype)


_TRITON_SSU: Any = None


def triton_state_update() -> Any:
    """mamba-ssm's Triton ``selective_state_update``, or None where it cannot be imported (CPU machines)."""
    global _TRITON_SSU
    if _TRITON_SSU is None:
        try:
            from mamba_ssm.ops.triton.selective_state_update import selective_state_update
            _TRITON_SSU = selective_state_update
        except Exception:  # not installed, or its compiled parts missing: the torch twin is used
            _TRITON_SSU = False
    return _TRITON_SSU or None


STATE_UPDATES = ("auto", "triton", "mamba_ssm", "torch")


def resolve_state_update(path: str, device: torch.device | str) -> str:
    """The SSM state-update path for a requested one: ``auto`` is our Triton kernel on CUDA (where Triton imports),
    else mamba-ssm's, else the torch twin; an explicit fast path that cannot run here is an error."""
    from falcon_h1r.inference.decode_kernels import triton_available

    if path not in STATE_UPDATES:
        raise ValueError(f"state_update {path!r} not accepted; use one of {STATE_UPDATES}")
    cuda = torch.device(device).type == "cuda"
    if path == "auto":
        return "triton" if cuda and triton_available() else "mamba_ssm" if cuda and triton_state_update() else "torch"
    if path == "triton" and not (cuda and triton_available()):
        raise ValueError("state_update 'triton' needs a CUDA model and Triton; use 'torch' here")
    if path == "mamba_ssm" and not (cuda and triton_state_update()):
        raise ValueError("state_update 'mamba_ssm' needs a CUDA model and mamba-ssm; use 'torch' here")
    return path


def ssm_update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
               C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
               dt_bias: torch.Tensor | None = None, dt_softplus: bool = True, *, path: str = "auto") -> torch.Tensor:
    """The state update on ``path`` (:func:`resolve_state_update`): our Triton kernel, mamba-ssm's, or
    :func:`ssm_update_ref`."""
    path = resolve_state_update(path, x.device)
    if path == "triton":
        from falcon_h1r.inference.decode_kernels import ssm_state_update

        return ssm_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
    if path == "mamba_ssm":
        return triton_state_update()(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
    return ssm_update_ref(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)


# ============================================================================ small pieces of the layers
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it: normalise in float32, round, then scale (``F.rms_norm`` is the
    same formula in fewer kernels)."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def gated_rms_norm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float, n_groups: int,
                   norm_before_gate: bool) -> torch.Tensor:
    """Falcon-H1's grouped RMSNorm with a silu gate (``FalconH1RMSNormGated``) on [B, D]."""
    dtype = x.dtype
    if not norm_before_gate:
        x = x * F.silu(gate.float())
    b, d = x.shape
    h = F.rms_norm(x.float().view(b, n_groups, d // n_groups), (d // n_groups,), eps=eps)
    h = (weight.view(n_groups, d // n_groups) * h).view(b, d)
    if norm_before_gate:
        h = h * F.silu(gate.float())
    return h.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(rotary: torch.nn.Module, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [B, d] for positions ``pos`` [B] from the model's own rotary module (its inv_freq and scaling)."""
    freqs = pos[:, None].float() * rotary.inv_freq.to(device=pos.device, dtype=torch.float)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    scale = getattr(rotary, "attention_scaling", 1.0)
    return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def scale_by(x: torch.Tensor, m: float) -> torch.Tensor:
    """x * m, skipped when m == 1 (µP multipliers are often 1; every kernel saved counts in a decode step)."""
    return x if m == 1.0 else x * m


# ============================================================================ the layers' element-wise glue
# Pure functions of tensors (weights, biases and caches passed in, sizes and multipliers as Python numbers that
# are the same for every layer), so that one torch.compile'd graph serves all layers. Called directly they
# are the reference twin of the compiled path and what CPU runs.
def _rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return qk * cos[:, None, :] + _rotate_half(qk) * sin[:, None, :]


def falcon_pre(x: torch.Tensor, norm_w: torch.Tensor, in_proj: tuple, zxbcdt_scale: torch.Tensor,
               conv_state: torch.Tensor, conv_w: torch.Tensor, conv_b: torch.Tensor | None, q_proj: tuple,
               k_proj: tuple, v_proj: tuple, cos: torch.Tensor, sin: torch.Tensor, *, eps: float, attn_in: float,
               key_mult: float, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Falcon-H1 layer up to the cache-bound kernels: input RMSNorm, the Mamba-2 in-projection and conv step
    (``conv_state`` shifted in place), and the attention projections with rope. Returns
    (gate, x, B, C, dt) for the state update and (q, k, v) for the attention."""
    P, conv_dim, NH, GN, H, KV, D = sizes
    B = x.shape[0]
    h = rms_norm(x, norm_w, eps)
    # in_proj(h * ssm_in) * mup = in_proj(h) * (mup * ssm_in): one multiply instead of two
    zxbcdt = F.linear(h, *in_proj) * zxbcdt_scale
    gate, xbc, dt = zxbcdt.split([P, conv_dim, NH], dim=-1)
    xbc = conv_update_ref(xbc, conv_state, conv_w, conv_b)
    xs, Bm, Cm = xbc.split([P, GN, GN], dim=-1)
    ha = scale_by(h, attn_in)
    q = F.linear(ha, *q_proj).view(B, H, D)
    k = scale_by(F.linear(ha, *k_proj).view(B, KV, D), key_mult)  # Falcon-H1 µP: keys scaled before rope
    v = F.linear(ha, *v_proj).view(B, KV, D)
    qk = _rope(torch.cat([q, k], dim=1), cos, sin)  # rope on queries and keys together: half the kernels
    return gate, xs, Bm, Cm, dt, qk[:, :H], qk[:, H:], v


def falcon_post(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, o: torch.Tensor, mamba_norm_w: torch.Tensor | None,
                out_proj: tuple, o_proj: tuple, pre_ff_w: torch.Tensor, up: tuple, gate_proj: tuple, down: tuple, *,
                norm_eps: float, norm_groups: int, norm_before_gate: bool, ssm_out: float, attn_out: float,
                eps: float, gate_mult: float, down_mult: float, act: Any) -> torch.Tensor:
    """Falcon-H1 layer after the cache-bound kernels: gated norm and out-projection of the mixer, the attention
    output, the scaled residual sum, then the MLP with its residual."""
    B = x.shape[0]
    y = y.reshape(B, -1)
    if mamba_norm_w is not None:
        y = gated_rms_norm(y, gate, mamba_norm_w, norm_eps, norm_groups, norm_before_gate)
    mamba_out = scale_by(F.linear(y.to(x.dtype), *out_proj), ssm_out)
    attn_o = scale_by(F.linear(o.reshape(B, -1), *o_proj), attn_out)
    # transformers' order: residual + (m*s_m + a*s_a). Not torch.add(..., alpha=): Inductor (torch 2.11 on the
    # H100, 2.13 on CPU) miscompiles torch.add(x, F.linear(...), alpha=a), giving x + a*x@W.T-like garbage
    # (tests/test_decode_kernels.py keeps a check of the pattern the glue uses).
    x = x + (mamba_out + attn_o)
    h = rms_norm(x, pre_ff_w, eps)
    z = F.linear(h, *up) * act(scale_by(F.linear(h, *gate_proj), gate_mult))
    return x + scale_by(F.linear(z, *down), down_mult)


def qwen_pre(x: torch.Tensor, norm_w: torch.Tensor, q_proj: tuple, k_proj: tuple, v_proj: tuple, q_norm_w: torch.Tensor,
             k_norm_w: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, eps: float, qk_eps: float,
             sizes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Qwen3 layer up to the attention: input RMSNorm, projections, per-head q/k RMSNorm, rope."""
    H, KV, D = sizes[-3:]
    B = x.shape[0]
    h = rms_norm(x, norm_w, eps)
    q = rms_norm(F.linear(h, *q_proj).view(B, H, D), q_norm_w, qk_eps)
    k = rms_norm(F.linear(h, *k_proj).view(B, KV, D), k_norm_w, qk_eps)
    v = F.linear(h, *v_proj).view(B, KV, D)
    qk = _rope(torch.cat([q, k], dim=1), cos, sin)
    return qk[:, :H], qk[:, H:], v


def qwen_post(x: torch.Tensor, o: torch.Tensor, o_proj: tuple, post_norm_w: torch.Tensor, gate_proj: tuple, up: tuple,
              down: tuple, *, eps: float, act: Any) -> torch.Tensor:
    """Qwen3 layer after the attention: output projection and residual, then the MLP and its residual."""
    B = x.shape[0]
    x = x + F.linear(o.reshape(B, -1), *o_proj)
    h = rms_norm(x, post_norm_w, eps)
    return x + F.linear(act(F.linear(h, *gate_proj)) * F.linear(h, *up), *down)


PLAIN_GLUE = {"falcon_pre": falcon_pre, "falcon_post": falcon_post, "qwen_pre": qwen_pre, "qwen_post": qwen_post}


@functools.lru_cache(maxsize=4)
def compiled_glue(backend: str = "inductor") -> dict[str, Any]:
    """torch.compile'd twins of the glue (Inductor fuses the norms, scalings, conv step and rope into a few
    Triton kernels; matmuls stay cuBLAS). ``fullgraph`` so that a graph break fails loudly instead of silently
    splitting; each new batch size compiles once (``dynamic=False`` keeps the kernels specialised)."""
    import torch._dynamo

    limit = max(64, getattr(torch._dynamo.config, "recompile_limit", 8))
    torch._dynamo.config.recompile_limit = limit
    return {name: torch.compile(fn, backend=backend, dynamic=False, fullgraph=True) for name, fn in PLAIN_GLUE.items()}


def weight_bias(layer: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return layer.weight, layer.bias
