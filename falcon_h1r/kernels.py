"""Which hybrid-model kernels this machine can use, and explicit, undoable switches that turn them on.

The paper's efficiency rests on kernels that live in kept libraries, not here: causal-conv1d (the fused
causal depthwise conv of every Mamba-2 mixer), mamba-ssm (Triton chunked scan for prefill and training,
Triton selective-state update for decode), Liger (Triton RMSNorm, RoPE, SwiGLU and the fused linear
cross-entropy that never materialises the logits) and flash-attn. This module only

* reports what is installed, importable and usable (``kernel_report``, ``python -m falcon_h1r.kernels``),
* says whether a usable CUDA GPU is present and, if not, why (``cuda_status``),
* picks ``attn_implementation`` (``choose_attn_implementation``),
* applies Liger to a Falcon-H1 or Qwen3 model on request (``apply_liger``), returning what it applied and
  a handle that undoes it, and gives the trainers a per-token fused linear cross-entropy with a plain twin
  (``linear_cross_entropy``, ``hidden_state_losses``);
* resolves the trainers' switch (``kernels: auto | plain``) into the kernels a model's training forward uses
  (``select_training_kernels``, pure; ``training_kernels``, which also puts Liger in place).

Nothing is patched at import time, and nothing here knows presets or result folders. Liger's own
``apply_liger_kernel_to_*`` functions rebind transformers' module globals and the model's instance methods
and offer no way back; the snapshot/restore below is ours so that a caller (and the tests) can return to
the plain path.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import re
import sys
import weakref
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Callable

import torch

# ------------------------------------------------------------------------------------------- CUDA


@dataclass(frozen=True)
class CudaStatus:
    """Whether a CUDA GPU can run the kernels here; ``reason`` is one line: the device, or what is missing."""

    usable: bool
    reason: str
    device_name: str | None = None
    capability: tuple[int, int] | None = None
    torch_cuda: str | None = None


def _arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """True when this torch build carries code for ``capability``: a cubin of the same major and an equal or
    lower minor (``sm_80`` runs on sm_86), or PTX (``compute_XY``) at or below it, which the driver JITs."""
    major, minor = capability
    for arch in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", arch)
        if not m:
            continue
        a_major, a_minor = int(m.group(2)), int(m.group(3))
        if m.group(1) == "sm" and a_major == major and a_minor <= minor:
            return True
        if m.group(1) == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def cuda_status() -> CudaStatus:
    """Is there a CUDA GPU this torch can compute on? Creates no CUDA context (no allocation)."""
    version = torch.__version__
    if torch.version.cuda is None:
        build = "a ROCm build" if getattr(torch.version, "hip", None) else "a CPU-only build"
        return CudaStatus(False, f"torch {version} is {build}, so no CUDA kernel can run")
    if not torch.cuda.is_available():
        return CudaStatus(False, f"torch {version} (CUDA {torch.version.cuda}) sees no CUDA device: no GPU, "
                                 "CUDA_VISIBLE_DEVICES hides it, or the NVIDIA driver is missing or too old",
                          torch_cuda=torch.version.cuda)
    name = torch.cuda.get_device_name(0)
    cap = tuple(torch.cuda.get_device_capability(0))
    arches = torch.cuda.get_arch_list()
    if arches and not _arch_supported(cap, arches):
        return CudaStatus(False, f"{name} (sm_{cap[0]}{cap[1]}) is not among the architectures torch {version} "
                                 f"was built for ({', '.join(arches)})", name, cap, torch.version.cuda)
    return CudaStatus(True, f"{name} (sm_{cap[0]}{cap[1]}), torch {version}, CUDA {torch.version.cuda}",
                      name, cap, torch.version.cuda)


# ---------------------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class KernelStatus:
    """One kernel library: its distribution's version, whether its entry points import, whether it can run."""

    name: str
    distribution: str
    provides: str
    version: str | None
    importable: bool
    usable: bool
    detail: str


def _probe_causal_conv1d() -> None:
    # importing the package loads its compiled extension (causal_conv1d_cuda)
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update  # noqa: F401


def _probe_mamba_ssm() -> None:
    # transformers imports the package root first (which loads the compiled Mamba-1 scan), then these
    importlib.import_module("mamba_ssm")
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update  # noqa: F401
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined  # noqa: F401


def _probe_liger_kernel() -> None:
    from liger_kernel.transformers import (  # noqa: F401
        LigerFusedLinearCrossEntropyLoss,
        apply_liger_kernel_to_falcon_h1,
        apply_liger_kernel_to_qwen3,
    )


def _probe_flash_attn() -> None:
    from flash_attn import flash_attn_func, flash_attn_varlen_func  # noqa: F401  (loads flash_attn_2_cuda)


# name -> (distribution, what it provides, import probe, lowest compute capability it runs on)
KERNELS: dict[str, tuple[str, str, Callable[[], None], tuple[int, int]]] = {
    "causal_conv1d": ("causal-conv1d", "fused causal depthwise conv of the Mamba-2 mixer (training, prefill, "
                      "decode)", _probe_causal_conv1d, (0, 0)),
    "mamba_ssm": ("mamba-ssm", "Triton chunked scan (training, prefill) and selective-state update (decode)",
                  _probe_mamba_ssm, (0, 0)),
    "liger_kernel": ("liger-kernel", "Triton RMSNorm, RoPE, SwiGLU and fused linear cross-entropy (training)",
                     _probe_liger_kernel, (0, 0)),
    "flash_attn": ("flash-attn", "FlashAttention-2 as attn_implementation='flash_attention_2'",
                   _probe_flash_attn, (8, 0)),
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def kernel_status(name: str, cuda: CudaStatus | None = None) -> KernelStatus:
    """Status of one kernel in :data:`KERNELS`; ``cuda`` defaults to :func:`cuda_status`."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    dist, provides, probe, min_cap = KERNELS[name]
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return KernelStatus(name, dist, provides, None, False, False, "not installed")
    try:
        probe()
    except Exception as exc:  # a missing compiled extension, an ABI mismatch with this torch, ...
        return KernelStatus(name, dist, provides, version, False, False, f"installed but does not import ({_first_line(exc)})")
    cuda = cuda if cuda is not None else cuda_status()
    if not cuda.usable:
        return KernelStatus(name, dist, provides, version, True, False, f"inactive: no usable CUDA GPU ({cuda.reason})")
    if cuda.capability is not None and cuda.capability < min_cap:
        return KernelStatus(name, dist, provides, version, True, False,
                            f"inactive: needs compute capability {min_cap[0]}.{min_cap[1]}+, this GPU has "
                            f"{cuda.capability[0]}.{cuda.capability[1]}")
    return KernelStatus(name, dist, provides, version, True, True, "active")


def kernel_report(cuda: CudaStatus | None = None) -> dict[str, KernelStatus]:
    """:func:`kernel_status` of every kernel in :data:`KERNELS`."""
    cuda = cuda if cuda is not None else cuda_status()
    return {name: kernel_status(name, cuda) for name in KERNELS}


# -------------------------------------------------------------------------------------- attention

_FLASH_DTYPES = (torch.float16, torch.bfloat16)


def choose_attn_implementation(device: str | torch.device, dtype: torch.dtype, *,
                               need_attention_weights: bool = False, flash_attn_usable: bool | None = None) -> str:
    """transformers' ``attn_implementation`` for a model that will run on ``device`` in ``dtype``.

    * ``"flash_attention_2"``: the flash-attn package is importable, the device is a CUDA GPU of compute
      capability 8.0+, and the dtype is float16 or bfloat16 (the only ones its kernels take). Packed rows are
      kept apart through ``position_ids`` as with SDPA.
    * ``"sdpa"`` otherwise: PyTorch's scaled_dot_product_attention, whose CUDA backend is itself a
      FlashAttention-2 kernel (or the memory-efficient one for float32), and a fused C++ kernel on CPU.
    * ``"eager"`` only when the caller needs the attention weights back (``output_attentions``), which no
      fused kernel returns.

    ``flash_attn_usable`` overrides the probe (tests; callers that already hold a :func:`kernel_report`).
    """
    if need_attention_weights:
        return "eager"
    if torch.device(device).type != "cuda" or dtype not in _FLASH_DTYPES:
        return "sdpa"
    if flash_attn_usable is None:
        flash_attn_usable = kernel_status("flash_attn").usable
    return "flash_attention_2" if flash_attn_usable else "sdpa"


# ------------------------------------------------------------------------------------------ Liger

LIGER_FAMILIES = {"falcon_h1": ("transformers.models.falcon_h1.modeling_falcon_h1", "apply_liger_kernel_to_falcon_h1"),
                  "qwen3": ("transformers.models.qwen3.modeling_qwen3", "apply_liger_kernel_to_qwen3")}


@dataclass
class LigerPatch:
    """What :func:`apply_liger` did: ``applied`` names the kernels now in use (empty when it did nothing, with
    ``reason`` saying why); :meth:`undo` puts the plain path back."""

    applied: tuple[str, ...]
    reason: str
    _restore: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def active(self) -> bool:
        return bool(self.applied)

    def undo(self) -> None:
        """Restore transformers' module globals and this model's modules as they were before the patch.

        Models constructed while the patch was active keep Liger's classes (Liger swaps the classes that
        ``__init__`` uses); build them again after :meth:`undo` for the plain path.
        """
        while self._restore:
            self._restore.pop()()
        self.applied = ()
        self.reason = "undone"


def _snapshot_module_globals(module: ModuleType) -> Callable[[], None]:
    before = dict(vars(module))

    def restore() -> None:
        now = vars(module)
        for key in [k for k in now if k not in before]:
            del now[key]
        for key, value in before.items():
            if now.get(key, object()) is not value:
                now[key] = value
    return restore


def _snapshot_attribute(owner: Any, name: str) -> Callable[[], None]:
    had = name in vars(owner)
    value = vars(owner).get(name)

    def restore() -> None:
        if had:
            setattr(owner, name, value)
        elif name in vars(owner):
            delattr(owner, name)
    return restore


def _snapshot_modules(model: torch.nn.Module) -> Callable[[], None]:
    """Every submodule's instance dict (bound ``forward``/``extra_repr``/``_get_name``, plain attributes) and
    its parameter, buffer and child registries, by reference: undo puts the same objects back."""
    saved = [(m, dict(vars(m)), dict(m._parameters), dict(m._buffers), dict(m._modules)) for m in model.modules()]

    def restore() -> None:
        for m, attrs, params, buffers, children in saved:
            for store, old in ((vars(m), attrs), (m._parameters, params), (m._buffers, buffers), (m._modules, children)):
                for key in [k for k in store if k not in old]:
                    del store[key]
                store.update(old)
    return restore


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def apply_liger(model: torch.nn.Module, *, rope: bool = True, rms_norm: bool = True, swiglu: bool = False,
                fused_linear_cross_entropy: bool = False) -> LigerPatch:
    """Put Liger's kernels into a Falcon-H1 or Qwen3 ``model`` (already on its GPU) and return what was applied.

    The paper's SFT uses Liger for RoPE, RMSNorm and the cross-entropy. The defaults here are the first two:
    with ``fused_linear_cross_entropy`` the model's ``forward`` returns no logits in training mode when given
    ``labels`` (it computes a mean loss only), so trainers that weight tokens leave it off and compute their
    loss with :func:`linear_cross_entropy`, which runs the same fused kernel per token.
    ``swiglu`` swaps the MLP for Liger's fused SiLU-times-up projection (Falcon-H1's gate and down multipliers
    are kept).

    A no-op with a reason, never an error, where the kernels cannot run: no usable CUDA GPU, the model not on
    it, or liger-kernel missing. An unknown model family is an error (accepted: falcon_h1, qwen3). Liger
    rebinds module-level functions of transformers (RoPE) for every model of the family in this process:
    call :meth:`LigerPatch.undo` to restore them.
    """
    requested = tuple(k for k, on in (("rope", rope), ("rms_norm", rms_norm), ("swiglu", swiglu),
                                      ("fused_linear_cross_entropy", fused_linear_cross_entropy)) if on)
    family = getattr(getattr(model, "config", None), "model_type", None)
    if family not in LIGER_FAMILIES:
        raise ValueError(f"apply_liger: model_type {family!r} has no Liger patch here; accepted: "
                         f"{', '.join(LIGER_FAMILIES)}")
    if not requested:
        return LigerPatch((), "nothing requested")
    cuda = cuda_status()
    if not cuda.usable:
        return LigerPatch((), f"Liger not applied: no usable CUDA GPU ({cuda.reason})")
    device = _model_device(model)
    if device.type != "cuda":
        return LigerPatch((), f"Liger not applied: the model is on {device}; its Triton kernels run on CUDA only")
    status = kernel_status("liger_kernel", cuda)
    if not status.usable:
        return LigerPatch((), f"Liger not applied: liger-kernel {status.detail}")

    import liger_kernel.transformers as liger

    modeling = importlib.import_module(LIGER_FAMILIES[family][0])
    # with model= Liger rebinds this model's methods; the class's forward only without it: keep both
    restore = [_snapshot_module_globals(modeling), _snapshot_modules(model), _snapshot_attribute(type(model), "forward")]
    apply = getattr(liger, LIGER_FAMILIES[family][1])
    try:
        apply(rope=rope, rms_norm=rms_norm, swiglu=swiglu, cross_entropy=False,
              fused_linear_cross_entropy=fused_linear_cross_entropy, model=model)
    except Exception:
        for undo in reversed(restore):
            undo()
        raise
    return LigerPatch(requested, f"liger-kernel {status.version} on {cuda.device_name}", restore)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, scale: float = 1.0,
                         ignore_index: int = -100, fused: bool | None = None) -> torch.Tensor:
    """Per-token cross-entropy of the logits ``(hidden * scale) @ weight.T`` against ``targets``, in float32,
    0 where ``targets == ignore_index``. ``hidden`` is ``[N, H]``, ``weight`` the LM head ``[V, H]``.

    ``fused=True`` runs Liger's fused linear cross-entropy, which never holds the ``[N, V]`` logits (the
    memory Fig. 7 is about); ``False`` is the plain twin (logits, then ``F.cross_entropy``), which the GPU
    test compares it with; ``None`` picks fused where Liger is usable and ``hidden`` is on CUDA. ``scale`` is
    Falcon-H1's ``lm_head_multiplier`` (the head has no bias, so it folds into ``hidden``).
    """
    if fused is None:
        fused = hidden.is_cuda and kernel_status("liger_kernel").usable
    hidden = hidden * scale if scale != 1.0 else hidden
    if not fused:
        logits = (hidden @ weight.t()).float()
        return torch.nn.functional.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="none")
    if not hidden.is_cuda:
        raise ValueError("linear_cross_entropy(fused=True): Liger's kernel needs CUDA tensors; pass fused=False on CPU")
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    # Liger's function is not autocast-aware: give it both operands in the dtype autocast would compute the
    # head's matmul in (bf16 under the trainers' autocast), and run it with autocast off
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else hidden.dtype
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="none")
    with torch.autocast("cuda", enabled=False):
        return loss(weight.to(dtype), hidden.to(dtype).contiguous(), targets.contiguous()).float()


# ------------------------------------------------------------------------------- training kernels

KERNEL_MODES = ("auto", "plain", "no_liger")


@dataclass(frozen=True)
class TrainingKernels:
    """Which fused kernels a training forward of one model uses (:func:`training_kernels`).

    ``causal_conv1d`` and ``mamba_ssm``: the Mamba-2 conv and chunked scan go to the libraries' kernels
    (Falcon-H1 only; :mod:`falcon_h1r.packed_mamba` dispatches, counting the calls); ``liger``: the Liger
    kernels patched into the model (RoPE, RMSNorm, SwiGLU); ``fused_linear_cross_entropy``: the trainers' loss
    goes through Liger's fused linear cross-entropy (no ``[tokens, vocab]`` logits); ``attention``: the
    ``attn_implementation`` the model is switched to (flash-attn where usable, else SDPA, whose CUDA backend is
    FlashAttention-2 too). ``reason`` says why what is off is off."""

    mode: str
    causal_conv1d: bool = False
    mamba_ssm: bool = False
    liger: tuple[str, ...] = ()
    fused_linear_cross_entropy: bool = False
    attention: str = "sdpa"
    reason: str = ""

    @property
    def mamba_kernels(self) -> bool:
        return self.causal_conv1d or self.mamba_ssm

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "causal_conv1d": self.causal_conv1d, "mamba_ssm": self.mamba_ssm,
                "liger": list(self.liger), "fused_linear_cross_entropy": self.fused_linear_cross_entropy,
                "attention": self.attention, "reason": self.reason}


def select_training_kernels(mode: str, family: str, device_type: str, report: dict[str, KernelStatus], *,
                            lm_head_partitioned: bool = False) -> TrainingKernels:
    """The kernels a ``mode`` run of a ``family`` model on ``device_type`` uses, given what is usable here
    (``report``, :func:`kernel_report`). ``auto``: every usable kernel on CUDA, none elsewhere; ``plain``: none
    (PyTorch ops only, the reference the GPU tests compare with); ``no_liger``: ``auto`` without Liger (the
    baseline of the paper's Fig. 7, Liger on vs off). The fused cross-entropy reads the LM head's
    weight outside the head's forward, which a ZeRO-3 partitioned weight does not allow
    (``lm_head_partitioned``)."""
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernels {mode!r} not accepted; use one of {', '.join(KERNEL_MODES)} (auto: the fused "
                         "kernels on CUDA where installed; plain: PyTorch ops only; no_liger: auto without Liger)")
    if mode == "plain":
        return TrainingKernels(mode, reason="plain: PyTorch ops only")
    if device_type != "cuda":
        return TrainingKernels(mode, reason=f"the model is on {device_type}: the fused kernels run on CUDA only")
    hybrid = family == "falcon_h1"
    use_liger = report["liger_kernel"].usable and mode != "no_liger"
    liger = use_liger and family in LIGER_FAMILIES
    why = [f"{n}: {report[n].detail}" for n in ("causal_conv1d", "mamba_ssm", "liger_kernel")
           if not report[n].usable and (hybrid or n == "liger_kernel")]
    if mode == "no_liger":
        why.append("Liger off (no_liger)")
    if use_liger and lm_head_partitioned:
        why.append("fused cross-entropy: the LM head is ZeRO-3 partitioned")
    return TrainingKernels(mode, causal_conv1d=hybrid and report["causal_conv1d"].usable,
                           mamba_ssm=hybrid and report["mamba_ssm"].usable,
                           liger=("rope", "rms_norm", "swiglu") if liger else (),
                           fused_linear_cross_entropy=use_liger and not lm_head_partitioned,
                           attention=choose_attn_implementation(device_type, torch.bfloat16,
                                                                flash_attn_usable=report["flash_attn"].usable),
                           reason="; ".join(why) or "every kernel usable")


# model -> (what training_kernels chose for it, its Liger patch or None); weak keys, so copies of a model
# (deepcopy) and freed models carry no stale entry
_TRAINING: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[TrainingKernels, LigerPatch | None]]" = \
    weakref.WeakKeyDictionary()
_LIGER_OWNER: dict[str, "weakref.ref[torch.nn.Module]"] = {}  # family -> the model whose patch is active
_REPORT: dict[str, KernelStatus] = {}


def _cached_report() -> dict[str, KernelStatus]:
    if not _REPORT:
        _REPORT.update(kernel_report())
    return _REPORT


def training_kernels(model: torch.nn.Module, mode: str = "auto") -> TrainingKernels:
    """Resolve ``mode`` for ``model`` (a Falcon-H1 or Qwen3 model, or a DDP / DeepSpeed wrapper of one) and put
    its Liger kernels in place: what :func:`falcon_h1r.sft.token_losses` and
    :func:`falcon_h1r.grpo.token_logprobs` call before each forward. Cheap after the first call (cached per
    model and mode). ``plain`` on a model Liger was applied to undoes it; ``plain`` while Liger is applied to
    another model of the same family in this process is refused (Liger's RoPE is rebound for the whole
    family: the "plain" run would not be plain)."""
    while hasattr(model, "module"):  # DDP / DeepSpeed wrappers
        model = model.module
    cached = _TRAINING.get(model)
    if cached is not None and cached[0].mode == mode:
        return cached[0]
    family = getattr(getattr(model, "config", None), "model_type", "")
    head = getattr(model, "lm_head", None)
    partitioned = head is not None and hasattr(head.weight, "ds_id")
    device_type = _model_device(model).type
    # probing the kernels imports them (Liger, Triton): only where they could run
    rep = _cached_report() if device_type == "cuda" and mode != "plain" else {}
    choice = select_training_kernels(mode, family, device_type, rep, lm_head_partitioned=partitioned)
    patch = cached[1] if cached is not None else None
    if not choice.liger and patch is not None:
        release_training_kernels(model)
        patch = None
    owner = _LIGER_OWNER.get(family)
    if not choice.liger and owner is not None and owner() is not None and owner() is not model:
        raise RuntimeError(f"kernels 'plain' asked for a {family} model while Liger is applied to another {family} "
                           "model in this process (its RoPE is rebound for the whole family); call "
                           "falcon_h1r.kernels.release_training_kernels on that model first")
    if choice.liger and patch is None:
        if owner is not None and owner() is not None and owner() is not model:
            release_training_kernels(owner())
        patch = apply_liger(model, rope=True, rms_norm=True, swiglu=True)
        if not patch.active:
            choice = TrainingKernels(**{**choice.__dict__, "liger": (), "reason": patch.reason})
            patch = None
        else:
            _LIGER_OWNER[family] = weakref.ref(model)
    _TRAINING[model] = (choice, patch)
    try:
        _set_attention(model, choice.attention)
    except Exception:
        release_training_kernels(model)
        raise
    return choice


def _set_attention(model: torch.nn.Module, attention: str) -> None:
    """Switch between flash-attn and SDPA (a model set to another implementation, e.g. eager, is left alone)."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current in ("sdpa", "flash_attention_2") and current != attention and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attention)


def release_training_kernels(model: torch.nn.Module) -> None:
    """Undo :func:`training_kernels` on ``model`` (its Liger patch); the next call resolves again."""
    while hasattr(model, "module"):
        model = model.module
    cached = _TRAINING.pop(model, None)
    if cached is not None and cached[1] is not None:
        cached[1].undo()
    for family, ref in list(_LIGER_OWNER.items()):
        if ref() is None or ref() is model:
            del _LIGER_OWNER[family]


def hidden_state_losses(model: torch.nn.Module, forward_kwargs: dict[str, Any], targets: torch.Tensor, *,
                        scales: tuple[float, ...] = (1.0,), fused: bool = True,
                        return_hidden: bool = False) -> Any:
    """Per-token cross-entropy ``[B, T-1]`` of next-token ``targets`` ``[B, T-1]`` without the model's
    ``[B, T, V]`` logits: the forward runs through ``model`` (so DDP / DeepSpeed see it) with
    ``logits_to_keep=1``, the last hidden states are taken from its decoder stack by a forward hook, and each
    loss is :func:`linear_cross_entropy` with the LM head at ``scale * model's logit multiplier`` (Falcon-H1's
    ``lm_head_multiplier``; a temperature ``T`` is ``scale = 1 / T``). ``fused=False`` runs the plain twin on
    the same hidden states (what the CPU tests compare with the logits path). ``return_hidden``: also return
    the hidden states ``[B, T-1, H]`` the losses came from (detached) and the logit multiplier."""
    base = model
    while hasattr(base, "module"):
        base = base.module
    seen: list[torch.Tensor] = []
    hook = base.model.register_forward_hook(lambda _m, _a, out: seen.append(out[0]))
    try:
        model(**forward_kwargs, use_cache=False, logits_to_keep=1)
    finally:
        hook.remove()
    hidden = seen[-1][:, :-1]
    mult = float(getattr(base.model, "lm_head_multiplier", 1.0))
    flat_h, flat_t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    losses = [linear_cross_entropy(flat_h, base.lm_head.weight, flat_t, scale=mult * s, fused=fused).view(targets.shape)
              for s in scales]
    return (losses, hidden.detach(), mult) if return_hidden else losses


def fused_token_logprobs(model: torch.nn.Module, forward_kwargs: dict[str, Any], targets: torch.Tensor,
                         temperature: float, *, with_ce: bool, with_entropy: bool,
                         chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """GRPO's per-token log-probs through the fused cross-entropy (:func:`hidden_state_losses`): log p at
    ``temperature`` (-CE at scale 1/T), optionally at temperature 1 (the CE term), and the entropy of the
    tempered distribution, logged only, from chunks of logits without gradient."""
    scales = (1.0 / temperature,) + ((1.0,) if with_ce else ())
    losses, hidden, mult = hidden_state_losses(model, forward_kwargs, targets, scales=scales, return_hidden=True)
    ent = None
    if with_entropy:
        base = model
        while hasattr(base, "module"):
            base = base.module
        with torch.no_grad():
            h = hidden.reshape(-1, hidden.shape[-1])
            w = base.lm_head.weight.to(h.dtype)
            parts = []
            for i in range(0, h.shape[0], chunk):  # one chunk of logits at a time
                lsm = torch.log_softmax((h[i:i + chunk] @ w.t()).float() * (mult / temperature), dim=-1)
                parts.append(-(lsm.exp() * lsm).sum(-1))
            ent = torch.cat(parts).view(targets.shape)
    return -losses[0], (-losses[1] if with_ce else None), ent


# ------------------------------------------------------------------------------------------ report


def format_report(report: dict[str, KernelStatus], cuda: CudaStatus) -> str:
    """The table ``python -m falcon_h1r.kernels`` prints."""
    lines = [f"CUDA: {'usable' if cuda.usable else 'NOT usable'}: {cuda.reason}"]
    width = max(len(n) for n in report)
    for name, st in report.items():
        lines.append(f"  {name:<{width}}  {st.version or '-':<12} {st.detail}")
    attn = choose_attn_implementation("cuda" if cuda.usable else "cpu", torch.bfloat16,
                                      flash_attn_usable=report["flash_attn"].usable if "flash_attn" in report else False)
    why = ("flash-attn" if attn == "flash_attention_2" else
           "PyTorch SDPA (its CUDA backend runs FlashAttention-2 kernels)" if cuda.usable else "PyTorch SDPA on CPU")
    lines.append(f"attention (bfloat16): attn_implementation={attn!r}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m falcon_h1r.kernels",
                                     description="Report which hybrid kernels are installed and active here.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--require-importable", default="", metavar="NAMES",
                        help=f"comma-separated kernels that must import (exit 1 otherwise); from {', '.join(KERNELS)}")
    args = parser.parse_args(argv)
    required = [n.strip() for n in args.require_importable.split(",") if n.strip()]
    unknown = [n for n in required if n not in KERNELS]
    if unknown:
        print(f"kernels: unknown kernel(s) {', '.join(unknown)}; known: {', '.join(KERNELS)}", file=sys.stderr)
        return 2
    cuda = cuda_status()
    report = kernel_report(cuda)
    if args.json:
        print(json.dumps({"cuda": asdict(cuda), "kernels": {k: asdict(v) for k, v in report.items()}}))
    else:
        print(format_report(report, cuda))
    missing = [n for n in required if not report[n].importable]
    if missing:
        print(f"kernels: {', '.join(f'{n} ({report[n].detail})' for n in missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
