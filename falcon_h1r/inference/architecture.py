"""What the fast decode engine implements: Falcon-H1 and Qwen3 models, read into the shapes its static caches
need; anything else is refused with a message naming what is accepted (callers then use transformers' loop)."""

from __future__ import annotations

from typing import Any

import torch


class EngineUnsupported(ValueError):
    """The model is not one the fast engine implements; the message says what is accepted."""


# ============================================================================ architecture
def architecture(model: torch.nn.Module) -> dict[str, Any]:
    """The shapes the engine needs, or :class:`EngineUnsupported` naming what is accepted."""
    name = type(model).__name__
    cfg = getattr(model, "config", None)
    if name not in ("FalconH1ForCausalLM", "Qwen3ForCausalLM") or cfg is None:
        raise EngineUnsupported(f"the fast engine implements FalconH1ForCausalLM and Qwen3ForCausalLM, not {name}; "
                                "use generation.engine 'hf' for other models")
    rope = getattr(getattr(model.model, "rotary_emb", None), "rope_type", "default")
    if "dynamic" in str(rope):
        raise EngineUnsupported(f"rope type {rope!r} changes with the sequence length; the fast engine needs a "
                                "fixed rope (use generation.engine 'hf')")
    family = "falcon_h1" if name.startswith("Falcon") else "qwen3"
    if family == "qwen3" and "sliding_attention" in (getattr(cfg, "layer_types", None) or []):
        raise EngineUnsupported("Qwen3 with sliding-window layers is not implemented by the fast engine; use 'hf'")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    arch = {"family": family, "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads, "head_dim": head_dim, "vocab": cfg.vocab_size}
    if family == "falcon_h1":
        mixer = model.model.layers[0].mamba
        arch.update(d_ssm=mixer.intermediate_size, m_heads=mixer.num_heads, m_head_dim=mixer.head_dim,
                    d_state=mixer.ssm_state_size, n_groups=mixer.n_groups, d_conv=mixer.conv_kernel_size,
                    conv_dim=mixer.conv_dim)
    return arch


def supports(model: torch.nn.Module) -> tuple[bool, str]:
    try:
        architecture(model)
    except EngineUnsupported as exc:
        return False, str(exc)
    return True, ""
