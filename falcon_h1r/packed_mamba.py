"""Packed-sequence training for Falcon-H1's Mamba-2 mixer: segment-aware twins and an explicit switch.

Packing several samples into one row must not let a sample see the previous one. transformers 5.23 keeps
packed samples apart in attention (position ids that restart per sample give a block-diagonal mask) and
forwards ``seq_idx`` to its Mamba-2 kernels, but its torch fallbacks (CPU, or a GPU without causal-conv1d
for the conv) refuse it. This module supplies the missing pieces in plain torch, as reference twins of the
kernels that honour ``seq_idx`` (mamba-ssm's Triton chunked scan, causal-conv1d):

- :func:`segmented_causal_conv1d`: the depthwise causal conv with its window cut at sample boundaries;
- :func:`segmented_chunk_scan`: transformers' chunked SSD scan with the state reset at sample boundaries;
- :func:`enable_packed_mamba` / :func:`disable_packed_mamba`: install / remove dispatchers in transformers'
  Falcon-H1 module that use the library kernel whenever it honours ``seq_idx`` and the twins otherwise.

Nothing is patched at import time: the SFT and GRPO trainers call :func:`enable_packed_mamba` when they
train a Falcon-H1 model, and tests undo it with :func:`disable_packed_mamba`.

The trainers' ``kernels`` switch reaches the dispatchers through :func:`mamba_kernels` (a context around the
forward): ``True`` uses the library kernels where they run (and, under CUDA autocast, feeds them the
in-projection in the autocast dtype, as mamba-ssm's own Mamba-2 block is fed: Falcon-H1's float32 µP vector
would otherwise promote the conv and the scan to float32); ``False`` is the plain path, PyTorch ops only, on
any device. :func:`kernel_calls` counts which path each call took (what the benchmarks record as "ran").
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections import Counter
from typing import Any, Iterator

import torch
import torch.nn.functional as F


_STATE = {"kernels": True}
_CALLS: Counter = Counter()


@contextlib.contextmanager
def mamba_kernels(on: bool) -> Iterator[None]:
    """Within the block, the dispatchers use the library kernels where they run (``on``) or the plain PyTorch
    path everywhere (``not on``); autograd keeps each call's choice for the backward."""
    before = _STATE["kernels"]
    _STATE["kernels"] = bool(on)
    try:
        yield
    finally:
        _STATE["kernels"] = before


def kernel_calls(reset: bool = False) -> dict[str, int]:
    """How many conv and scan calls went to each path since the last reset: ``causal_conv1d`` / ``mamba_ssm``
    (the library kernels), ``torch_conv`` / ``torch_scan`` (PyTorch: transformers' fallbacks or our twins)."""
    out = dict(_CALLS)
    if reset:
        _CALLS.clear()
    return out


@functools.lru_cache(maxsize=1)
def mamba_ssm_installed() -> bool:
    """Whether mamba-ssm's Triton chunked scan imports (what transformers binds on a GPU)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or its compiled parts absent
        return False
    return True


def torch_causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        activation: str | None) -> torch.Tensor:
    """transformers' torch fallback of ``causal_conv1d_fn`` (the same ops): the plain path's conv without
    ``seq_idx`` on any device."""
    _, channels, length = x.shape
    out = F.conv1d(x.to(weight.dtype), weight.unsqueeze(1), bias, padding=weight.shape[-1] - 1,
                   groups=channels)[:, :, :length]
    if activation in ("silu", "swish"):
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"conv activation {activation!r} not supported; Falcon-H1 uses silu")
    return out.to(x.dtype)


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` [B, C, L] in the CUDA autocast dtype, keeping its channel-last layout (causal-conv1d's ``seq_idx``
    needs it)."""
    if not (x.is_cuda and torch.is_autocast_enabled("cuda")) or x.dtype != torch.float32:
        return x
    return x.transpose(1, 2).to(torch.get_autocast_dtype("cuda")).transpose(1, 2)


def causal_conv1d_installed() -> bool:
    """Whether the causal-conv1d CUDA extension can be imported (its Python package alone is not enough)."""
    return importlib.util.find_spec("causal_conv1d") is not None and importlib.util.find_spec("causal_conv1d_cuda") is not None


def segmented_causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            activation: str | None, seq_idx: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv ``[B, D, T]`` whose window never reaches into the previous sample: tap ``j``
    of position ``t`` counts only when ``seq_idx[t - j] == seq_idx[t]`` (what causal-conv1d does with
    ``seq_idx``). Plain torch, so it runs on CPU and on GPUs without the causal-conv1d build."""
    _, _, t = x.shape
    k = weight.shape[-1]
    xp = F.pad(x.to(weight.dtype), (k - 1, 0))
    sp = F.pad(seq_idx, (k - 1, 0), value=-1)
    out = torch.zeros_like(xp[..., k - 1:])
    for j in range(k):  # tap j looks j steps back; weight[:, k - 1 - j] multiplies it (cross-correlation)
        same = (sp[:, k - 1 - j:k - 1 - j + t] == seq_idx)[:, None, :].to(xp.dtype)
        out = out + weight[:, k - 1 - j, None] * xp[..., k - 1 - j:k - 1 - j + t] * same
    if bias is not None:
        out = out + bias[:, None]
    if activation in ("silu", "swish"):
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"conv activation {activation!r} not supported; Falcon-H1 uses silu")
    return out.to(x.dtype)


def segmented_chunk_scan(hidden_states: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, chunk_size: int, D: torch.Tensor | None = None,
                         dt_bias: torch.Tensor | None = None, initial_states: torch.Tensor | None = None,
                         dt_softplus: bool = False, dt_limit: tuple[float, float] = (0.0, float("inf")),
                         return_final_states: bool = False, seq_idx: torch.Tensor | None = None,
                         **_: Any) -> Any:
    """transformers' chunked Mamba-2 (SSD) scan in torch, with the SSM state reset where ``seq_idx``
    changes: the same masks mamba-ssm's Triton kernels apply (intra-chunk decay, chunk-end states and
    the inter-chunk recurrence only connect positions of the same sample). Without ``seq_idx`` it is
    transformers' scan step for step (tests check both)."""
    from transformers.models.falcon_h1 import modeling_falcon_h1 as mf

    b, L, h, p = hidden_states.shape
    g = B.shape[2]
    if seq_idx is None:
        seq_idx = torch.zeros(b, L, dtype=torch.int32, device=hidden_states.device)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
    x = hidden_states.float()
    B = B.float().repeat_interleave(h // g, dim=2, output_size=h)
    C = C.float().repeat_interleave(h // g, dim=2, output_size=h)
    pad = (chunk_size - L % chunk_size) % chunk_size
    d_res = D[..., None] * mf.pad_tensor_by_size(x, pad) if D is not None else None
    x = x * dt[..., None].float()
    A = A.to(x.dtype) * dt.float()
    x, A, B, C = [mf.reshape_into_chunks(t, pad, chunk_size) for t in (x, A, B, C)]
    seg = torch.cat([seq_idx, seq_idx[:, -1:].expand(b, pad)], dim=1).view(b, -1, chunk_size)  # b c l
    A = A.permute(0, 3, 1, 2)  # b h c l
    a_cum = torch.cumsum(A, dim=-1)
    # 1. within a chunk: position l sees position s only inside the same sample
    same = (seg[..., :, None] == seg[..., None, :]).to(x.dtype)  # b c l s
    decay = torch.exp(mf.segment_sum(A)) * same[:, None]
    y_diag = torch.einsum("bclsh,bcshp->bclhp", torch.einsum("bclhn,bcshn->bclsh", C, B) * decay.permute(0, 2, 3, 4, 1), x)
    # 2. each chunk's end state, from the positions of the sample live at the chunk's end
    last = seg[..., -1]  # b c
    to_end = torch.exp(a_cum[:, :, :, -1:] - a_cum) * (seg == last[..., None]).to(x.dtype)[:, None]
    states = torch.einsum("bclhn,bclhp->bchpn", B * to_end.permute(0, 2, 3, 1)[..., None], x)
    prev = (initial_states[:, None].to(dtype=states.dtype, device=states.device) if initial_states is not None
            else torch.zeros_like(states[:, :1]))
    states = torch.cat([prev, states], dim=1)
    # 3. carry states across chunks only while the sample continues (source z's sample is live at target c)
    live = torch.cat([seg[:, :1, 0], last], dim=1)  # b (c+1): sample live before chunk 0, then at each chunk end
    chain = (live[:, :, None] == live[:, None, :]).to(x.dtype)  # b z c
    decay_chunk = torch.exp(mf.segment_sum(F.pad(a_cum[:, :, :, -1], (1, 0)))).transpose(1, 3)  # b z c h
    new_states = torch.einsum("bzch,bzhpn->bchpn", decay_chunk * chain[..., None], states)
    states, final_state = new_states[:, :-1], new_states[:, -1]
    # 4. a chunk's carried-in state reaches only the positions of the sample it belongs to
    cont = (seg == live[:, :-1, None]).to(x.dtype)  # b c l
    y_off = torch.einsum("bclhn,bchpn->bclhp", C, states) * (torch.exp(a_cum).permute(0, 2, 3, 1) * cont[..., None])[..., None]
    out = (y_diag + y_off).contiguous().reshape(b, -1, h, p)
    if d_res is not None:
        out = out + d_res
    out = out[:, :L]
    return (out, final_state) if return_final_states else out


def enable_packed_mamba() -> None:
    """Make transformers' Falcon-H1 Mamba-2 path keep packed samples apart, on CPU and GPU. Idempotent.

    What transformers 5.23 does by itself (checked in tests/test_sft.py): the attention honours
    packing through position ids; the Mamba-2 mixer forwards ``seq_idx`` to its kernels, but its torch
    fallbacks (CPU, or a GPU without causal-conv1d for the conv) refuse it with a ValueError, so a
    packed batch would either fail or, without ``seq_idx``, leak state across samples. This installs
    dispatchers that keep the library kernel whenever it honours ``seq_idx`` (mamba-ssm's Triton scan
    on GPU, causal-conv1d when installed) and use the torch twins above otherwise. Calls without
    ``seq_idx`` are passed through untouched.

    It also routes training through the split (conv, then scan) path instead of the fused
    ``mamba_split_conv1d_scan_combined``: that kernel needs the causal-conv1d CUDA build (absent on
    the lent GPUs: it fails with a TypeError) and transformers calls it with ``norm_before_gate=False``
    while the model's own path follows ``config.mamba_norm_before_gate`` (True by default), so
    training and inference would compute different functions.
    """
    from transformers.models.falcon_h1 import modeling_falcon_h1 as mf

    if getattr(mf, "_falcon_h1r_library", None) is not None:
        return
    lib_scan, lib_conv = mf.mamba2_chunk_scan, mf.causal_conv1d_fn

    def chunk_scan(*args: Any, seq_idx: torch.Tensor | None = None, **kw: Any) -> Any:
        x = args[0] if args else kw["hidden_states"]
        if _STATE["kernels"] and x.is_cuda and mamba_ssm_installed():
            try:
                out = lib_scan(*args, **kw) if seq_idx is None else lib_scan(*args, seq_idx=seq_idx, **kw)
                _CALLS["mamba_ssm"] += 1
                return out
            except ValueError:  # transformers' torch fallback refusing seq_idx: use the segmented twin
                pass
        _CALLS["torch_scan"] += 1
        if seq_idx is None and not x.is_cuda:
            return lib_scan(*args, **kw)  # transformers' own torch scan on CPU (the twin equals it, see tests)
        return segmented_chunk_scan(*args, seq_idx=seq_idx, **kw)

    def conv(hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             activation: str | None = None, seq_idx: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        # ``activation`` by keyword: causal-conv1d's own causal_conv1d_fn takes seq_idx as its 4th parameter.
        if _STATE["kernels"] and hidden_states.is_cuda and causal_conv1d_installed():
            _CALLS["causal_conv1d"] += 1
            x = _autocast_input(hidden_states)
            if seq_idx is None:
                return lib_conv(x, weight, bias, activation=activation, **kw)
            return lib_conv(x, weight, bias, activation=activation, seq_idx=seq_idx, **kw)
        _CALLS["torch_conv"] += 1
        if _STATE["kernels"] and hidden_states.is_cuda:
            hidden_states = _autocast_input(hidden_states)  # the scan after it still takes bf16 (mamba-ssm)
        if seq_idx is None:
            return torch_causal_conv1d(hidden_states, weight, bias, activation)
        return segmented_causal_conv1d(hidden_states, weight, bias, activation, seq_idx)

    def fused(*args: Any, **kw: Any) -> None:
        return None  # None tells the mixer to take the split path (see the docstring)

    mf._falcon_h1r_library = {"chunk_scan": lib_scan, "conv": lib_conv, "fused": mf.mamba2_split_conv1d_scan_combined}
    mf.mamba2_chunk_scan, mf.causal_conv1d_fn, mf.mamba2_split_conv1d_scan_combined = chunk_scan, conv, fused


def disable_packed_mamba() -> None:
    """Undo :func:`enable_packed_mamba`: transformers' own functions back in place (tests call it). Idempotent."""
    from transformers.models.falcon_h1 import modeling_falcon_h1 as mf

    lib = getattr(mf, "_falcon_h1r_library", None)
    if lib is None:
        return
    mf.mamba2_chunk_scan, mf.causal_conv1d_fn = lib["chunk_scan"], lib["conv"]
    mf.mamba2_split_conv1d_scan_combined = lib["fused"]
    mf._falcon_h1r_library = None


def packed_mamba_enabled() -> bool:
    from transformers.models.falcon_h1 import modeling_falcon_h1 as mf

    return getattr(mf, "_falcon_h1r_library", None) is not None
