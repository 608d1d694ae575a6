"""SFT from a Hugging Face checkpoint under DeepSpeed ZeRO-2/3, with the paper's Table 1 recipe.

The trainer is :func:`falcon_h1r.sft.train_sft` (packing without cross-contamination, balanced token normalization
over the real ranks, checkpoints with exact resume); this module supplies what running it from a real checkpoint at
scale needs around it:

- :class:`ScaleSFTRecipe`: Table 1 (``recipes/sft/paper_scale.yaml``), turned into the trainer's ``TrainConfig`` and
  ``SFTRecipe`` for a given world size (:meth:`ScaleSFTRecipe.trainer_configs`);
- :func:`load_for_zero`: the checkpoint loaded already partitioned under ZeRO-3 (transformers' ``from_pretrained``
  inside DeepSpeed's ``zero.Init`` through ``HfDeepSpeedConfig``), so no rank ever holds the whole model; under
  ZeRO-2 (or plain DDP) every rank loads it whole;
- :func:`make_engine`: ``deepspeed.initialize`` with the trainer's own AdamW and linear schedule;
- :func:`make_random_checkpoint`: a random-weight checkpoint at Falcon-H1R-7B's shapes (or a slice of its layers),
  for memory and speed runs where the real weights are not at hand.

Why not transformers' ``Trainer`` with its DeepSpeed integration: the trainer's difficulty weights, packed Mamba-2
rows and balanced normalization are not exposed there (see :mod:`falcon_h1r.distributed`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from falcon_h1r.config import RecipeError, TrainConfig, load_recipe_grid, parse

_ZERO3_CONFIG: Any = None  # transformers' HfDeepSpeedConfig must stay alive while ZeRO-3 models are built


@dataclass
class ScaleSFTRecipe:
    """Paper Table 1 (``papers/table1_sft_hparams.yaml``); every default is its value."""

    lr: float = 1.024e-3  # Table 1: 1024e-6, muP
    lr_schedule: str = "linear"  # Table 1
    warmup_frac: float = 0.04  # Table 1
    global_batch: int = 512  # Table 1: effective batch (sequences per optimizer step)
    epochs: int = 3  # Table 1
    weight_decay: float = 0.01  # Table 1
    grad_clip: float = 1.0  # Table 1
    precision: str = "bf16"  # Table 1
    pack_len: int = 36864  # Table 1: 36K context, read as 36 x 1024
    max_seq_len: int = 49152  # Table 1: long samples up to 48K, right-trimmed
    loss_norm: str = "balanced"  # paper section 2
    zero_stage: int = 3  # DeepSpeed's counterpart of the paper's FSDP full sharding
    gradient_checkpointing: bool = True  # not stated; 36K-token rows need it

    def __post_init__(self) -> None:
        if self.lr_schedule != "linear":
            raise RecipeError(f"lr_schedule: only 'linear' (Table 1) is implemented, got {self.lr_schedule!r}")
        if self.zero_stage not in (2, 3):
            raise RecipeError(f"zero_stage: 2 or 3, got {self.zero_stage}")
        if self.precision not in ("bf16", "fp32"):
            raise RecipeError(f"precision: 'bf16' or 'fp32', got {self.precision!r}")
        for name in ("global_batch", "epochs", "pack_len", "max_seq_len"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name}: must be >= 1, got {getattr(self, name)}")

    @classmethod
    def load(cls, path: str | Path = "sft/paper_scale.yaml", **overrides: Any) -> "ScaleSFTRecipe":
        data = load_recipe_grid(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return parse(cls, data, "paper_scale")

    def steps_for(self, n_examples: int) -> int:
        """Optimizer steps for ``epochs`` passes over ``n_examples`` at the global batch."""
        return max(1, -(-self.epochs * n_examples // self.global_batch))

    def trainer_configs(self, world: int, grad_accum: int, n_examples: int, *, steps: int | None = None,
                        save_every: int = 0) -> tuple[TrainConfig, Any]:
        """The trainer's ``TrainConfig`` and ``SFTRecipe`` for ``world`` ranks of ``grad_accum`` micro-batches."""
        from falcon_h1r.sft import SFTRecipe

        if self.global_batch % (world * grad_accum):
            raise RecipeError(f"global_batch {self.global_batch} is not a multiple of ranks x grad_accum = "
                              f"{world} x {grad_accum}; every micro-batch must hold the same number of samples")
        cfg = TrainConfig(steps=steps or self.steps_for(n_examples), batch_size=self.global_batch, lr=self.lr,
                          warmup_frac=self.warmup_frac, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                          max_seq_len=self.max_seq_len, log_every=1, eval_every=0)
        # DeepSpeed runs the model in bf16 itself, so the trainer adds no autocast
        recipe = SFTRecipe(packing=True, pack_len=self.pack_len, loss_norm=self.loss_norm, ranks=1, shard="contiguous",
                           grad_accum=grad_accum, precision="fp32", save_every=save_every)
        return cfg, recipe


def deepspeed_on_this_machine() -> None:
    """DeepSpeed picks its accelerator at import: the CPU one (gloo, ZeRO on CPU) where CUDA is absent."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def load_for_zero(path: str | Path, ds_config: dict[str, Any], *, dtype: torch.dtype,
                  device: torch.device) -> torch.nn.Module:
    """The checkpoint at ``path`` for a DeepSpeed run: partitioned while loading under ZeRO-3, whole otherwise."""
    global _ZERO3_CONFIG
    from falcon_h1r.models import load_checkpoint

    stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
    if stage != 3:
        return load_checkpoint(path, dtype=dtype, device=str(device))
    deepspeed_on_this_machine()
    from transformers.integrations import HfDeepSpeedConfig

    from transformers import AutoModelForCausalLM

    path = Path(path).expanduser()
    if not (path / "config.json").exists() or not (list(path.glob("*.safetensors")) + list(path.glob("*.bin"))):
        load_checkpoint(path)  # raises the package's one clear error about the missing files
    import deepspeed

    deepspeed.init_distributed()  # DeepSpeed's own view of the process group torchrun set up (its world size)
    _ZERO3_CONFIG = HfDeepSpeedConfig(ds_config)  # makes from_pretrained build inside deepspeed.zero.Init
    # each parameter is partitioned over the ranks as it is built and filled; no .to(device): ZeRO places it
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)


def param_count(model: torch.nn.Module) -> int:
    """Parameters of a model whose weights may be ZeRO-3 partitioned (``ds_numel`` is the full size)."""
    return sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters())


def make_engine(model: torch.nn.Module, cfg: TrainConfig, ds_config: dict[str, Any]) -> Any:
    """``deepspeed.initialize`` with the trainer's AdamW (weight decay) and linear warm-up schedule."""
    deepspeed_on_this_machine()
    import deepspeed

    from falcon_h1r.sft import linear_warmup_schedule

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=opt, config=ds_config,
        lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(
            o, lambda s: linear_warmup_schedule(s, cfg.steps, cfg.warmup_frac)))
    return engine


def make_random_checkpoint(path: str | Path, tokenizer: Any, *, num_layers: int = 44, config: Any = None,
                           dtype: torch.dtype = torch.bfloat16, seed: int = 0, device: str = "cpu") -> Path:
    """Random weights at Falcon-H1R-7B's shapes (``num_layers`` of its 44) saved as a Hugging Face checkpoint with
    ``tokenizer``; ``config`` overrides the architecture (tests use a tiny one). Returns ``path``."""
    from falcon_h1r.models import falcon_h1r_7b_config, model_from_config, save_model

    config = config or falcon_h1r_7b_config(num_layers)
    if tokenizer is not None:
        config.pad_token_id, config.eos_token_id = tokenizer.pad_id, tokenizer.eos_id
        config.bos_token_id = tokenizer.eos_id
        if len(tokenizer.hf) > config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer.hf)} tokens, more than the architecture's vocabulary "
                             f"{config.vocab_size}")
    torch.manual_seed(seed)
    model = model_from_config(config, dtype=dtype, device=device)  # on a GPU: seconds instead of minutes
    return save_model(model, tokenizer, path,
                      extra={"random_weights": True, "num_hidden_layers": config.num_hidden_layers})


def checkpoint_summary(path: str | Path) -> dict[str, Any]:
    """What a checkpoint is, for a run's record: its architecture from ``config.json`` and whether its weights are
    random (written by :func:`make_random_checkpoint`)."""
    import json

    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    extra = json.loads((path / "falcon_h1r.json").read_text()) if (path / "falcon_h1r.json").exists() else {}
    keys = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "mamba_n_heads", "mamba_d_state", "vocab_size")
    return {**{k: cfg.get(k) for k in keys}, "random_weights": bool(extra.get("random_weights", False))}


__all__ = ["ScaleSFTRecipe", "checkpoint_summary", "deepspeed_on_this_machine", "load_for_zero", "make_engine",
           "make_random_checkpoint", "param_count"]
