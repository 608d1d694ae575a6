"""Supervised fine-tuning on ``<think>`` traces (paper §2): the trainer.

- loss on the assistant turn only (reasoning and answer); each sample may carry a difficulty weight
  (paper §2.1: hard x1.25-1.75, easy x0.5; the weights come from ``falcon_h1r.curation``);
- sequence packing without cross-contamination (:func:`collate_packed`): attention is block-diagonal
  (transformers builds it from position ids that restart per sample) and the Mamba-2 conv and SSM
  state restart at every sample boundary (``seq_idx``; see :func:`enable_packed_mamba` for why this
  module supplies that on CPU and for the conv on GPU);
- loss normalization per sequence, per rank, or the paper's balanced DP token normalization
  (``falcon_h1r.distributed``), with R data-parallel ranks simulated exactly in one process or real
  under ``torchrun`` (DDP or DeepSpeed ZeRO-2/3);
- linear schedule with 4 % warm-up, AdamW (weight decay 0.01), gradient clipping 1.0 (paper Table 1),
  bf16 autocast on GPU; Falcon-H1's µP multipliers live in the model's forward and are read from its
  config, so the optimizer uses the plain learning rate, as Falcon-H1 does;
- periodic evaluation through a callback (``eval_fn``; :func:`falcon_h1r.evaluation.pass1_callback` is
  one), checkpoints with exact resume (model, optimizer, scheduler, RNG and data position).

Why our own loop rather than transformers' ``Trainer``/TRL's ``SFTTrainer``: difficulty-weighted tokens,
the per-sequence / per-rank / balanced normalizations with R ranks simulated exactly in one process, and
packed Mamba-2 rows are what the §2 ablations vary, and none of them is exposed there (see
``falcon_h1r.distributed``). The §2 ablations that run this trainer live in
``falcon_h1r.sections.sft_ablations``.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from falcon_h1r.config import LR_DECAYS, TrainConfig
from falcon_h1r.distributed import (DistContext, all_reduce_sum, batch_units, check_normalization, micro_batches,
                                    no_sync_unless, normalized_loss, shard_indices, unwrap)
from falcon_h1r.packed_mamba import enable_packed_mamba
from falcon_h1r.tokenizer import ChatTokenizer, format_response


# ============================================================================== recipe (the preset's `sft:` block)
@dataclass
class SFTRecipe:
    """How the SFT trainer runs (the preset's ``sft:`` block). The §2 ablations' sizes are the
    ``sft_ablations:`` block (``falcon_h1r.sections.sft_ablations.SFTAblations``)."""

    packing: bool = True  # pack samples into rows of pack_len tokens (no cross-contamination)
    pack_len: int = 0  # 0: the preset's train.max_seq_len
    loss_norm: Literal["sequence", "rank_token", "balanced"] = "balanced"  # paper §2 uses balanced
    ranks: int = 1  # data-parallel ranks simulated in one process (real ranks come from torchrun)
    shard: Literal["contiguous", "by_length", "random"] = "contiguous"  # how a global batch splits over ranks
    grad_accum: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    # auto: the fused kernels on CUDA where installed (causal-conv1d, mamba-ssm's Triton scan, Liger RoPE/RMSNorm/
    # SwiGLU and fused linear cross-entropy; the paper trains with Liger, §2 Fig. 7); plain: PyTorch ops only;
    # no_liger: auto without Liger (the Fig. 7 baseline)
    kernels: Literal["auto", "plain", "no_liger"] = "auto"
    norm_eps: float = 1e-8  # the paper's "small constant" (value not given)
    save_every: int = 0  # checkpoint every N steps (0: never)
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        from falcon_h1r.config import RecipeError

        for name in ("ranks", "grad_accum", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise RecipeError(f"sft.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("pack_len", "save_every"):
            if getattr(self, name) < 0:
                raise RecipeError(f"sft.{name}: must be >= 0, got {getattr(self, name)}")
        if self.kernels not in ("auto", "plain", "no_liger"):
            raise RecipeError(f"sft.kernels: {self.kernels!r} not accepted; use auto, plain or no_liger")


# ============================================================================== examples
@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]
    weight: float = 1.0
    domain: str = ""
    problem_id: str = ""


def examples_from_traces(records: Sequence[dict[str, Any]], tokenizer: ChatTokenizer,
                         max_seq_len: int) -> list[Example]:
    """Records with ``question``, ``reasoning``, ``final`` (and optional ``weight``) -> token examples.

    Sequences longer than ``max_seq_len`` are right-trimmed (the paper trims its few >36K samples).
    """
    out = []
    for r in records:
        ids, mask = tokenizer.encode_example(r["question"], format_response(r["reasoning"], r["final"]))
        out.append(Example(ids[:max_seq_len], mask[:max_seq_len], float(r.get("weight", 1.0)),
                           r.get("domain", ""), r.get("id", "")))
    return out


def examples_from_text(texts: Sequence[str], tokenizer: ChatTokenizer, max_seq_len: int) -> list[Example]:
    """Plain documents -> language-modelling examples with the loss on every token (no chat turn, EOS
    appended): what a pretraining stage sees, e.g. the SFT ablations' common start (questions and answers
    of the task domain, no reasoning trace). Right-trimmed to ``max_seq_len``."""
    out = []
    for t in texts:
        ids = (tokenizer.encode(t) + [tokenizer.eos_id])[:max_seq_len]
        out.append(Example(ids, [1] * len(ids)))
    return out


# ============================================================================== batches
def collate(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, labels (-100 outside the assistant turn), attention mask, per-token weights,
    and each token's sequence index (``seq_ids``, -1 on padding) for the per-sequence loss."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    weights = torch.zeros((len(batch), width), dtype=torch.float32)
    seq_ids = torch.full((len(batch), width), -1, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        m = torch.tensor(e.loss_mask, dtype=torch.bool)
        lab = torch.tensor(e.input_ids)
        labels[i, :n] = torch.where(m, lab, torch.full_like(lab, -100))
        weights[i, :n] = m.float() * e.weight
        seq_ids[i, :n] = i
    return {"input_ids": ids, "attention_mask": attn, "labels": labels, "weights": weights, "seq_ids": seq_ids,
            "n_seqs": torch.tensor(len(batch))}


def pack_rows(lengths: Sequence[int], pack_len: int) -> list[list[int]]:
    """First-fit packing of samples (by index, in order) into rows of at most ``pack_len`` tokens.

    A sample longer than ``pack_len`` gets a row of its own (samples are already trimmed to
    ``train.max_seq_len``, so this only happens when pack_len is set below it).
    """
    if pack_len < 1:
        raise ValueError(f"pack_len must be >= 1, got {pack_len}")
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(pack_len - n)
    return rows


def collate_packed(batch: Sequence[Example], pad_id: int, pack_len: int) -> dict[str, torch.Tensor]:
    """Samples packed into rows: ``position_ids`` restart at every sample (transformers turns that into
    a block-diagonal attention mask), ``seq_idx`` numbers the samples in a row (the Mamba-2 conv and
    SSM state restart where it changes), labels and weights as in :func:`collate`. A row's tail padding
    is a segment of its own, so it never touches a real sample. No ``attention_mask``: packed rows need
    none, and passing one would switch transformers' packed-sequence detection off.
    """
    rows = pack_rows([len(e.input_ids) for e in batch], pack_len)
    width = max(sum(len(batch[i].input_ids) for i in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    seg = torch.zeros(shape, dtype=torch.int32)
    labels = torch.full(shape, -100, dtype=torch.long)
    weights = torch.zeros(shape, dtype=torch.float32)
    seq_ids = torch.full(shape, -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            e = batch[i]
            n = len(e.input_ids)
            lab = torch.tensor(e.input_ids)
            m = torch.tensor(e.loss_mask, dtype=torch.bool)
            m[0] = False  # a sample's first token is never predicted from the previous sample
            ids[r, at:at + n] = lab
            pos[r, at:at + n] = torch.arange(n)
            seg[r, at:at + n] = k
            labels[r, at:at + n] = torch.where(m, lab, torch.full_like(lab, -100))
            weights[r, at:at + n] = m.float() * e.weight
            seq_ids[r, at:at + n] = i
            at += n
        if at < width:
            pos[r, at:] = torch.arange(width - at)
            seg[r, at:] = len(row)
    return {"input_ids": ids, "position_ids": pos, "seq_idx": seg, "labels": labels, "weights": weights,
            "seq_ids": seq_ids, "n_seqs": torch.tensor(len(batch))}


def make_batch(examples: Sequence[Example], pad_id: int, *, packing: bool, pack_len: int) -> dict[str, torch.Tensor]:
    return collate_packed(examples, pad_id, pack_len) if packing else collate(examples, pad_id)


def _is_falcon_h1(model: Any) -> bool:
    return getattr(getattr(unwrap(model), "config", None), "model_type", "") == "falcon_h1"


def token_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 kernels: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy ``[B, T-1]`` (next-token) and the matching weights (0 where not supervised).

    Padded batches pass their attention mask; packed batches pass position ids (and ``seq_idx`` to a
    Falcon-H1 model, whose Mamba-2 state then restarts per sample). The logits are the model's own, so
    Falcon-H1's µP multipliers (embedding, lm_head, ...) from its config are part of the loss.
    ``kernels`` (``SFTRecipe.kernels``): ``auto`` runs the fused kernels on CUDA where installed
    (causal-conv1d, mamba-ssm's Triton scan, Liger's RoPE/RMSNorm/SwiGLU, and Liger's fused linear
    cross-entropy in place of the logits; :func:`falcon_h1r.kernels.training_kernels`); ``plain`` (and any
    CPU run) is PyTorch ops only, the path the GPU tests compare the kernels with.
    """
    from falcon_h1r.kernels import hidden_state_losses, training_kernels
    from falcon_h1r.packed_mamba import mamba_kernels

    falcon = _is_falcon_h1(model)
    if falcon:
        enable_packed_mamba()  # also keeps training off the fused kernel (see its docstring)
    chosen = training_kernels(model, kernels)
    if "position_ids" in batch:
        kw = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        if falcon:
            kw["seq_idx"] = batch["seq_idx"]
    else:
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    target = batch["labels"][:, 1:]
    with mamba_kernels(chosen.mamba_kernels):
        if chosen.fused_linear_cross_entropy:
            return hidden_state_losses(model, kw, target)[0], batch["weights"][:, 1:]
        out = model(**kw, use_cache=False)
    logits = out.logits[:, :-1].float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=-100, reduction="none").view(target.shape)
    return loss, batch["weights"][:, 1:]


def per_sample_losses(model: torch.nn.Module, examples: Sequence[Example], pad_id: int, *, packing: bool,
                      pack_len: int = 0) -> list[float]:
    """Each sample's mean token loss on its supervised tokens (what the packing test compares)."""
    pack_len = pack_len or max(len(e.input_ids) for e in examples)
    batch = make_batch(examples, pad_id, packing=packing, pack_len=pack_len)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        loss, w = token_losses(model, batch)
    seq = batch["seq_ids"][:, 1:]
    on = batch["labels"][:, 1:] != -100
    return [float(loss[(seq == i) & on].mean()) for i in range(len(examples))]


# ============================================================================== schedule and history
def linear_warmup_schedule(step: int, total: int, warmup_frac: float, decay: str = "linear") -> float:
    """LR multiplier: linear warm-up over ``warmup_frac`` of the steps, then linear decay to 0 (``decay="linear"``,
    paper Table 1) or flat (``"constant"``: a checkpoint taken mid-run, before any annealing, so that a later
    fine-tune at a comparable rate continues it instead of kicking it out of an annealed minimum)."""
    if decay not in LR_DECAYS:
        raise ValueError(f"lr decay {decay!r} not accepted; use one of {', '.join(LR_DECAYS)}")
    warm = max(1, int(round(total * warmup_frac)))
    if step < warm:
        return (step + 1) / warm
    if decay == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warm))


@dataclass
class TrainHistory:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # the global weighted token mean, whatever the normalization
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    tokens: int = 0  # supervised tokens seen (all ranks)
    input_tokens: int = 0  # tokens through the model, padding included (all ranks)
    resumed_from: int | None = None
    steps_done: int = 0  # optimizer steps taken, resumed ones included (< cfg.steps when stopped early)
    # per step, simulated ranks only: the largest over the smallest supervised-token count of a rank (paper
    # Fig. 4's regime is ranks holding very different token counts in the same step)
    rank_tokens_max_over_min: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ============================================================================== checkpoints
class _DataStream:
    """The data position: a reshuffled pass over the examples per epoch, seeded; its state is saved."""

    def __init__(self, n: int, seed: int):
        self.n, self.rng, self.order = n, random.Random(seed), []

    def take(self, k: int) -> list[int]:
        while len(self.order) < k:
            fresh = list(range(self.n))
            self.rng.shuffle(fresh)
            self.order += fresh
        idx, self.order = self.order[:k], self.order[k:]
        return idx

    def state(self) -> dict[str, Any]:
        return {"order": list(self.order), "rng": self.rng.getstate()}

    def load(self, s: dict[str, Any]) -> None:
        self.order = list(s["order"])
        st = s["rng"]
        self.rng.setstate((st[0], tuple(st[1]), st[2]))


def sweep_checkpoint_temps(directory: str | Path) -> list[Path]:
    """Remove the temporary folders (``.tmp-step-NNNNNN-<pid>``) that a writer killed mid-save left behind
    (their pid is gone); a live writer's folder stays."""
    from falcon_h1r.results import sweep_dead_folders

    return sweep_dead_folders(directory, ".tmp-step-*-*")


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint under ``directory`` (``step-NNNNNN/state.pt``), or None; leftovers of
    killed saves are swept first."""
    directory = Path(directory)
    if directory.is_dir():
        sweep_checkpoint_temps(directory)
    done = sorted(p for p in directory.glob("step-*") if (p / "state.pt").exists())
    return done[-1] if done else None


def save_checkpoint(directory: str | Path, step: int, model: torch.nn.Module, opt: Any, sched: Any,
                    data: _DataStream, hist: TrainHistory, keep: int = 2) -> Path:
    """Everything exact resume needs, written to a temporary folder and renamed (a kill mid-save never
    leaves a half checkpoint that :func:`latest_checkpoint` would pick)."""
    directory = Path(directory)
    final = directory / f"step-{step:06d}"
    tmp = directory / f".tmp-step-{step:06d}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step, "model": unwrap(model).state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "data": data.state(), "history": hist.to_json(),
        "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in directory.glob("step-*") if (p / "state.pt").exists())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _restore(path: Path, model: torch.nn.Module, opt: Any, sched: Any, data: _DataStream) -> tuple[int, dict]:
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    unwrap(model).load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    data.load(state["data"])
    rs = state["rng"]
    random.setstate((rs["python"][0], tuple(rs["python"][1]), rs["python"][2]))
    torch.set_rng_state(rs["torch"])
    if rs["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rs["cuda"])
    return int(state["step"]), state["history"]


# ============================================================================== the trainer
def _autocast(device: torch.device, precision: str, model: torch.nn.Module):
    import contextlib

    param_dtype = next(model.parameters()).dtype
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16 and param_dtype == torch.float32 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if use_bf16 and param_dtype == torch.float32 and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def plan_step(examples: Sequence[Example], idx: Sequence[int], world: int, ranks: Sequence[int],
              recipe: SFTRecipe, pad_id: int, pack_len: int, shard_seed: int = 0) -> dict[int, list[dict[str, torch.Tensor]]]:
    """One optimizer step's data: the global batch ``idx`` split over ``world`` ranks (``recipe.shard``),
    each rank's share into ``recipe.grad_accum`` micro-batches, collated (packed or padded). Only the
    ``ranks`` asked for are built (all of them when simulating, one under torchrun)."""
    lengths = [len(examples[i].input_ids) for i in idx]
    shards = shard_indices(lengths, world, recipe.shard, seed=shard_seed)
    return {r: [make_batch([examples[idx[j]] for j in mb], pad_id, packing=recipe.packing, pack_len=pack_len)
                for mb in micro_batches(shards[r], recipe.grad_accum)] for r in ranks}


@dataclass
class StepStats:
    loss: float  # the global weighted token mean (comparable across normalizations)
    weight_sum: float
    tokens: int  # supervised target tokens, all ranks
    input_tokens: int  # tokens through the model, padding included, all ranks
    rank_tokens: dict[int, int] = field(default_factory=dict)  # supervised target tokens of each rank in the plan


def backward_step(model: Any, plan: dict[int, list[dict[str, torch.Tensor]]], mode: str, world: int, *,
                  dist: DistContext | None = None, eps: float = 1e-8, precision: str = "auto",
                  kernels: str = "auto") -> StepStats:
    """Accumulate one step's gradients into ``model`` (no optimizer step).

    Simulated ranks (``dist`` None): rank r's normalized loss is back-propagated scaled by ``1/world``,
    which is what the gradient all-reduce mean of ``world`` real ranks computes. Under torchrun
    (``dist``) the plan holds this rank only; the unit counts are all-reduced first, DDP (or DeepSpeed)
    averages the gradients, and DDP syncs only on the last micro-batch.
    """
    base = unwrap(model)
    device = next(base.parameters()).device
    engine = dist.ds_engine if dist is not None else None
    units = {r: sum(batch_units(b, mode) for b in bs) for r, bs in plan.items()}
    weight_sum = sum(float(b["weights"][:, 1:].sum()) for bs in plan.values() for b in bs)
    global_units = sum(units.values())
    if dist is not None and world > 1:
        global_units = all_reduce_sum(global_units, device)
    num, tokens, input_tokens = 0.0, 0, 0
    rank_tokens = {r: 0 for r in plan}
    for r, bs in plan.items():
        for k, batch in enumerate(bs):
            batch = {key: v.to(device) for key, v in batch.items()}
            with no_sync_unless(model, k == len(bs) - 1), _autocast(device, precision, base):
                tok_loss, w = token_losses(model, batch, kernels)
                loss = normalized_loss(tok_loss, batch, mode, rank_units=units[r], global_units=global_units,
                                       world=world, eps=eps)
                if dist is None:
                    loss = loss / world  # the all-reduce mean over the simulated ranks
                if engine is not None:
                    engine.backward(loss, scale_wrt_gas=False)
                    engine.step()  # DeepSpeed applies the optimizer at the accumulation boundary
                else:
                    loss.backward()
            num += float((tok_loss.detach() * w).sum())
            rank_tokens[r] += int((w > 0).sum())
            tokens += int((w > 0).sum())
            input_tokens += int(batch["input_ids"].numel())
    if dist is not None and world > 1:
        num = all_reduce_sum(num, device)
        weight_sum = all_reduce_sum(weight_sum, device)
        tokens = int(all_reduce_sum(tokens, device))
        input_tokens = int(all_reduce_sum(input_tokens, device))
    return StepStats(num / max(weight_sum, 1e-12), weight_sum, tokens, input_tokens, rank_tokens)


def train_sft(model: torch.nn.Module, examples: Sequence[Example], cfg: TrainConfig, *, pad_id: int,
              seed: int = 0, eval_fn: Callable[[int], dict[str, Any]] | None = None,
              progress: bool = True, desc: str = "sft", recipe: SFTRecipe | None = None,
              checkpoint_dir: str | Path | None = None, resume: bool = False, stop_after: int | None = None,
              deadline: float | None = None, on_step: Callable[[int, TrainHistory], None] | None = None,
              dist: DistContext | None = None, lr_decay: str = "linear") -> TrainHistory:
    """SFT for ``cfg.steps`` optimizer steps of ``cfg.batch_size`` samples each.

    Each step's global batch is split over the data-parallel ranks (``recipe.shard``), each rank's share
    into ``recipe.grad_accum`` micro-batches, and the loss normalized as ``recipe.loss_norm`` says.
    Ranks are simulated in this process (``recipe.ranks``) unless ``dist`` says this is one real rank
    of a ``torchrun`` job (then ``model`` is the DDP wrapper, or ``dist.ds_engine`` the DeepSpeed
    engine). ``checkpoint_dir`` + ``recipe.save_every`` save checkpoints; ``resume`` continues from the
    newest one; ``stop_after`` ends the run after that many steps, as a crash would (the checkpoints
    stay); ``deadline`` (a ``time.time()``) likewise ends it at the first checkpoint step past that moment, so a
    long run can go in resumable pieces (``hist.steps_done`` says how far it got; the checkpoints
    stay). Without ``recipe`` it trains unpacked, one rank, plain token mean (the base-model stage).
    ``lr_decay``: after the warm-up, ``"linear"`` to 0 (paper Table 1) or ``"constant"`` (a mid-run checkpoint).
    """
    from tqdm.auto import tqdm

    recipe = recipe or SFTRecipe(packing=False)
    check_normalization(recipe.loss_norm)
    if not examples:
        raise ValueError("no training examples: the curated set is empty (check the filters' rejects report)")
    world = dist.world if dist else recipe.ranks
    my_ranks = [dist.rank] if dist else list(range(world))
    if cfg.batch_size < world * recipe.grad_accum:
        raise ValueError(f"train.batch_size {cfg.batch_size} < ranks x grad_accum = {world * recipe.grad_accum}: "
                         "every micro-batch needs at least one sample")
    pack_len = recipe.pack_len or cfg.max_seq_len
    base = unwrap(model)
    engine = dist.ds_engine if dist is not None else None
    if engine is not None:
        opt, sched = engine.optimizer, engine.lr_scheduler
    else:
        opt = torch.optim.AdamW(base.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: linear_warmup_schedule(s, cfg.steps, cfg.warmup_frac,
                                                                                  lr_decay))
    data = _DataStream(len(examples), seed)
    hist = TrainHistory()
    start = 0
    if resume and checkpoint_dir is not None and engine is None:
        last = latest_checkpoint(checkpoint_dir)
        if last is not None:
            start, h = _restore(last, model, opt, sched, data)
            hist = TrainHistory(**h)
            hist.resumed_from = start
    elif resume and checkpoint_dir is not None:  # DeepSpeed: the engine's partitioned states, on every rank
        from falcon_h1r.scaleout.zero_checkpoint import restore_engine_checkpoint

        got = restore_engine_checkpoint(engine, checkpoint_dir)
        if got is not None:
            start, data_state, h = got
            data.load(data_state)
            hist = TrainHistory(**h)
            hist.resumed_from = start
    model.train()
    t0 = time.time() - hist.wall_s
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not progress or (dist is not None and not dist.is_main),
               leave=False, initial=start, total=cfg.steps)
    for step in bar:
        plan = plan_step(examples, data.take(cfg.batch_size), world, my_ranks, recipe, pad_id, pack_len,
                         shard_seed=seed * 1_000_003 + step)
        if engine is None:
            opt.zero_grad(set_to_none=True)
        st = backward_step(model, plan, recipe.loss_norm, world, dist=dist, eps=recipe.norm_eps,
                           precision=recipe.precision, kernels=recipe.kernels)
        if engine is None:
            gnorm = float(torch.nn.utils.clip_grad_norm_(base.parameters(), cfg.grad_clip))
            opt.step()
            sched.step()
        else:
            gnorm = float(engine.get_global_grad_norm() or 0.0)
        hist.tokens += st.tokens
        hist.input_tokens += st.input_tokens
        if len(st.rank_tokens) > 1:
            hist.rank_tokens_max_over_min.append(max(st.rank_tokens.values()) / max(1, min(st.rank_tokens.values())))
        done = step + 1
        hist.steps_done = done
        if step % cfg.log_every == 0 or done == cfg.steps:
            hist.steps.append(step)
            hist.loss.append(st.loss)
            hist.lr.append(float(sched.get_last_lr()[0]))
            hist.grad_norm.append(gnorm)
            bar.set_postfix(loss=f"{st.loss:.3f}")
        if eval_fn is not None and cfg.eval_every and done % cfg.eval_every == 0:
            model.eval()
            hist.evals.append({"step": done, **eval_fn(done)})
            model.train()
        hist.wall_s = time.time() - t0
        if checkpoint_dir is not None and recipe.save_every and done % recipe.save_every == 0:
            if engine is not None:  # every rank saves its ZeRO shards
                from falcon_h1r.scaleout.zero_checkpoint import save_engine_checkpoint

                save_engine_checkpoint(engine, checkpoint_dir, done, data.state(), hist.to_json(),
                                       recipe.keep_checkpoints)
            elif dist is None or dist.is_main:
                save_checkpoint(checkpoint_dir, done, model, opt, sched, data, hist, recipe.keep_checkpoints)
        if on_step is not None:
            on_step(done, hist)
        saved_here = checkpoint_dir is not None and recipe.save_every and done % recipe.save_every == 0
        if deadline is not None and saved_here and time.time() > deadline and done < cfg.steps:
            break
        if stop_after is not None and done >= stop_after and done < cfg.steps:
            break
    bar.close()
    hist.wall_s = time.time() - t0
    model.eval()
    return hist


__all__ = ["Example", "SFTRecipe", "StepStats", "TrainHistory", "backward_step", "collate", "collate_packed",
           "LR_DECAYS", "examples_from_text", "examples_from_traces", "latest_checkpoint", "sweep_checkpoint_temps", "linear_warmup_schedule", "make_batch", "pack_rows",
           "per_sample_losses", "plan_step", "save_checkpoint", "token_losses", "train_sft"]
