"""The two model families of the paper's comparisons, built with transformers' own classes.

- ``FalconH1ForCausalLM``: the Falcon-H1R architecture, every layer an attention block and a Mamba-2
  mixer in parallel (outputs summed), with Falcon-H1's µP multipliers in the config.
- ``Qwen3ForCausalLM``: the attention-only baseline, with its MLP width chosen so the parameter count
  matches the hybrid's (the paper compares Falcon-H1R-7B with Qwen3-8B).

``falcon_h1r_7b_config()`` and ``qwen3_8b_config()`` carry the real shapes for random-weight
throughput work (paper Table 8; Qwen3-8B's published config). ``load_checkpoint`` reads a real
checkpoint (e.g. tiiuae/Falcon-H1R-7B downloaded to a local directory) and says clearly what is
missing when it is not there; nothing is ever fetched from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from falcon_h1r.config import ModelConfig

# Falcon-H1R-7B µP multipliers as printed from its config.json by a third party ([S1] in
# paper_facts.md §8b; secondary source, used only for the random-weight throughput model).
FALCON_H1R_7B_MUP = {
    "embedding_multiplier": 5.656854249492381,
    "lm_head_multiplier": 0.0130208,
    "key_multiplier": 0.0306904,
    "attention_out_multiplier": 0.104167,
    "ssm_in_multiplier": 0.416667,
    "ssm_out_multiplier": 0.117851,
    "mlp_multipliers": [0.294628, 0.0325521],
    "ssm_multipliers": [0.353553, 0.25, 0.176777, 0.5, 0.353553],
}


def falcon_config(m: ModelConfig, vocab_size: int, *, pad_id: int = 0, eos_id: int = 1) -> Any:
    from transformers import FalconH1Config

    return FalconH1Config(
        vocab_size=vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim,
        mamba_d_ssm=m.mamba_d_ssm, mamba_n_heads=m.mamba_n_heads, mamba_d_head=m.mamba_d_ssm // m.mamba_n_heads,
        mamba_d_state=m.mamba_d_state, mamba_d_conv=m.mamba_d_conv, mamba_n_groups=m.mamba_n_groups,
        mamba_chunk_size=m.mamba_chunk_size, mamba_rms_norm=True,
        max_position_embeddings=m.max_position_embeddings, rope_theta=m.rope_theta,
        tie_word_embeddings=m.tie_word_embeddings, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id,
    )


def qwen3_config(m: ModelConfig, vocab_size: int, intermediate_size: int | None = None, *, pad_id: int = 0,
                 eos_id: int = 1) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=m.hidden_size,
        intermediate_size=intermediate_size or m.intermediate_size, num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim,
        max_position_embeddings=m.max_position_embeddings, rope_theta=m.rope_theta,
        tie_word_embeddings=m.tie_word_embeddings, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id,
    )


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _qwen3_params(m: ModelConfig, vocab: int, inter: int) -> int:
    """Parameter count of a Qwen3 with MLP width ``inter`` (closed form, so no model is built)."""
    h, L = m.hidden_size, m.num_hidden_layers
    q = m.num_attention_heads * m.head_dim
    kv = m.num_key_value_heads * m.head_dim
    attn = h * q + 2 * h * kv + q * h + 2 * m.head_dim  # q, k, v, o and the q/k norms
    mlp = 3 * h * inter
    layer = attn + mlp + 2 * h
    emb = vocab * h * (1 if m.tie_word_embeddings else 2)
    return L * layer + emb + h


def matched_qwen3_intermediate(m: ModelConfig, vocab: int, target_params: int) -> int:
    """The Qwen3 MLP width (a multiple of 8) whose total parameters come closest to ``target_params``."""
    base = _qwen3_params(m, vocab, 0)
    per_unit = 3 * m.hidden_size * m.num_hidden_layers
    inter = max(8, round((target_params - base) / per_unit / 8) * 8)
    return inter


def attention_for(device: str | torch.device, dtype: torch.dtype) -> str:
    """The ``attn_implementation`` a model computing in ``dtype`` on ``device`` is built with:
    flash-attn where it is installed and usable (CUDA, half precision), else PyTorch SDPA
    (:func:`falcon_h1r.kernels.choose_attn_implementation`). fp32 master weights trained under bf16 autocast
    compute attention in bf16: pass bfloat16 for them."""
    from falcon_h1r.kernels import choose_attn_implementation

    return choose_attn_implementation(device, dtype)


def build_model(m: ModelConfig, vocab_size: int, *, family: str | None = None, seed: int = 0,
                pad_id: int = 0, eos_id: int = 1, dtype: torch.dtype = torch.float32,
                device: str | torch.device | None = None) -> torch.nn.Module:
    """A randomly initialised model of the preset's shape; ``family='qwen3'`` gives the matched baseline.
    ``device``: where it will run, which picks its attention (:func:`attention_for`, with CUDA computing in
    bf16); the model itself is built on the CPU (move it). Without it: SDPA."""
    from transformers import FalconH1ForCausalLM, Qwen3ForCausalLM

    family = family or m.family
    torch.manual_seed(seed)
    if family == "falcon_h1":
        model = FalconH1ForCausalLM(falcon_config(m, vocab_size, pad_id=pad_id, eos_id=eos_id))
    elif family == "qwen3":
        hybrid = FalconH1ForCausalLM(falcon_config(m, vocab_size, pad_id=pad_id, eos_id=eos_id))
        target = count_params(hybrid)
        del hybrid
        inter = matched_qwen3_intermediate(m, vocab_size, target)
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(qwen3_config(m, vocab_size, inter, pad_id=pad_id, eos_id=eos_id))
    else:
        raise ValueError(f"model family {family!r} not accepted; use 'falcon_h1' or 'qwen3'")
    model = model.to(dtype)
    if device is not None:
        on_cuda = torch.device(device).type == "cuda"
        attention = attention_for(device, torch.bfloat16 if on_cuda else dtype)
        if attention != model.config._attn_implementation:
            model.set_attn_implementation(attention)
    return model


def falcon_h1r_7b_config(num_hidden_layers: int = 44) -> Any:
    """Falcon-H1R-7B's shapes (paper Table 8; intermediate 12288 and µP multipliers from config.json
    fields quoted in paper_facts.md §8b). ``num_hidden_layers`` < 44 gives a slice for quick timing."""
    from transformers import FalconH1Config

    return FalconH1Config(
        vocab_size=130048, hidden_size=3072, intermediate_size=12288, num_hidden_layers=num_hidden_layers,
        num_attention_heads=12, num_key_value_heads=2, head_dim=128, mamba_d_ssm=3072, mamba_n_heads=24,
        mamba_d_head=128, mamba_d_state=256, mamba_d_conv=4, mamba_n_groups=1, mamba_chunk_size=128,
        mamba_rms_norm=True, max_position_embeddings=262144, tie_word_embeddings=False, **FALCON_H1R_7B_MUP,
    )


def qwen3_8b_config(num_hidden_layers: int = 36) -> Any:
    """Qwen3-8B's published shapes: 36 layers, hidden 4096, 32/8 heads of 128, MLP 12288, vocab 151936."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=num_hidden_layers,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rope_theta=1_000_000.0, tie_word_embeddings=False,
    )


def model_from_config(config: Any, *, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> torch.nn.Module:
    """Random weights for a full-size architecture (throughput does not depend on the weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def save_model(model: torch.nn.Module, tokenizer: Any, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Hugging Face format (config.json + safetensors + tokenizer), loadable with from_pretrained."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    if tokenizer is not None:
        tokenizer.save(path)
    if extra:
        (path / "falcon_h1r.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    return path


REQUIRED_CHECKPOINT_FILES = ("config.json",)


def load_checkpoint(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.nn.Module:
    """Load a local Hugging Face checkpoint (Falcon-H1 or Qwen3). Never downloads. Its attention is
    :func:`attention_for` the device (flash-attn on a GPU where installed, else SDPA).

    A missing directory or missing weights is one clear error naming the path and what to do.
    """
    from transformers import AutoModelForCausalLM

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint directory {path} does not exist. Download the weights on a machine with hub access "
            f"(e.g. `huggingface-cli download tiiuae/Falcon-H1R-7B --local-dir {path}`) and set "
            "model.checkpoint to that directory; this package never downloads weights itself.")
    missing = [f for f in REQUIRED_CHECKPOINT_FILES if not (path / f).exists()]
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
    if missing or not weights:
        raise FileNotFoundError(
            f"checkpoint directory {path} is incomplete: missing {missing + ([] if weights else ['*.safetensors'])}. "
            "Expected a Hugging Face model directory (config.json and safetensors shards).")
    attention = attention_for(device, torch.bfloat16 if torch.device(device).type == "cuda" else dtype)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True,
                                                attn_implementation=attention).to(device)
