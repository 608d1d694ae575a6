"""Supervised fine-tuning on ``<think>`` traces (paper §2): the trainer and the §2 ablations.

The trainer (:func:`train_sft`):

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
- periodic evaluation through a callback (:func:`heldout_eval`), checkpoints with exact resume
  (model, optimizer, scheduler, RNG and data position).

The ablations (:func:`run_grid`): each recipe grid in ``recipes/sft/*.yaml`` fine-tunes the preset's
base model once per arm and seed and evaluates it on held-out problems; rows are appended to a
JSONL work file so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from falcon_h1r.config import TrainConfig
from falcon_h1r.distributed import (DistContext, all_reduce_sum, batch_units, check_normalization, micro_batches,
                                    no_sync_unless, normalized_loss, shard_indices, unwrap)
from falcon_h1r.packed_mamba import enable_packed_mamba
from falcon_h1r.tasks import TeacherNoise, teacher_records
from falcon_h1r.tokenizer import ChatTokenizer, format_response


# ============================================================================== recipe (the preset's `sft:` block)
@dataclass
class SFTRecipe:
    """How the SFT trainer runs, and how large the §2 ablations are at this preset."""

    packing: bool = True  # pack samples into rows of pack_len tokens (no cross-contamination)
    pack_len: int = 0  # 0: the preset's train.max_seq_len
    loss_norm: Literal["sequence", "rank_token", "balanced"] = "balanced"  # paper §2 uses balanced
    ranks: int = 1  # data-parallel ranks simulated in one process (real ranks come from torchrun)
    shard: Literal["contiguous", "by_length", "random"] = "contiguous"  # how a global batch splits over ranks
    grad_accum: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    norm_eps: float = 1e-8  # the paper's "small constant" (value not given)
    save_every: int = 0  # checkpoint every N steps (0: never)
    keep_checkpoints: int = 2
    # ---- ablations (notebook 02): sizes of each fine-tuning arm
    cpu_threads: int = 0  # torch threads for the ablation runs on CPU (0: leave as is); tiny models run best on 1
    ablation_grids: list[str] = field(default_factory=lambda: list(GRIDS))
    ablation_seeds: list[int] = field(default_factory=lambda: [0, 1])
    ablation_steps: int = 30
    ablation_batch_size: int = 16
    ablation_lr: float = 1e-3  # the reference arm's learning rate; the LR grid scales it
    ablation_problems_per_domain: int = 40  # fresh problems (not the base model's) the arms fine-tune on
    ablation_eval_per_domain: int = 10
    ablation_max_new_tokens: int = 0  # 0: generation.max_new_tokens
    ablation_eval_every: int = 10  # the normalization curve's evaluation interval
    # wrong-answer rate of the ablation teacher at difficulty 1, 2, 3 (ours: makes pass rates fall with difficulty)
    teacher_wrong_rate: list[float] = field(default_factory=lambda: [0.05, 0.2, 0.5])

    def __post_init__(self) -> None:
        from falcon_h1r.config import RecipeError

        for name in ("ranks", "grad_accum", "ablation_steps", "ablation_batch_size", "ablation_problems_per_domain",
                     "ablation_eval_per_domain", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise RecipeError(f"sft.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("pack_len", "save_every", "ablation_max_new_tokens", "ablation_eval_every", "cpu_threads"):
            if getattr(self, name) < 0:
                raise RecipeError(f"sft.{name}: must be >= 0, got {getattr(self, name)}")
        bad = [g for g in self.ablation_grids if g not in GRIDS]
        if bad:
            raise RecipeError(f"sft.ablation_grids: {bad[0]!r} not accepted; grids are {', '.join(GRIDS)}")
        if len(self.teacher_wrong_rate) != 3 or not all(0 <= r <= 1 for r in self.teacher_wrong_rate):
            raise RecipeError(f"sft.teacher_wrong_rate: three rates in [0, 1] (difficulty 1, 2, 3), "
                              f"got {self.teacher_wrong_rate}")
        if not self.ablation_seeds:
            raise RecipeError("sft.ablation_seeds: at least one seed")


GRIDS = ("learning_rate", "rollouts", "incorrect", "teachers", "weighting", "mixture", "normalization")


def load_recipe(preset: Any) -> SFTRecipe:
    return preset.section("sft", SFTRecipe)


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


def token_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy ``[B, T-1]`` (next-token) and the matching weights (0 where not supervised).

    Padded batches pass their attention mask; packed batches pass position ids (and ``seq_idx`` to a
    Falcon-H1 model, whose Mamba-2 state then restarts per sample). The logits are the model's own, so
    Falcon-H1's µP multipliers (embedding, lm_head, ...) from its config are part of the loss.
    """
    falcon = _is_falcon_h1(model)
    if falcon:
        enable_packed_mamba()  # also keeps training off the fused kernel (see its docstring)
    if "position_ids" in batch:
        kw = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        if falcon:
            kw["seq_idx"] = batch["seq_idx"]
    else:
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    out = model(**kw, use_cache=False)
    logits = out.logits[:, :-1].float()
    target = batch["labels"][:, 1:]
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
def linear_warmup_schedule(step: int, total: int, warmup_frac: float) -> float:
    """LR multiplier: linear warm-up over ``warmup_frac`` of the steps, then linear decay to 0."""
    warm = max(1, int(round(total * warmup_frac)))
    if step < warm:
        return (step + 1) / warm
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


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint under ``directory`` (``step-NNNNNN/state.pt``), or None."""
    directory = Path(directory)
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
        import shutil

        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in directory.glob("step-*") if (p / "state.pt").exists())[:-keep]:
        import shutil

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


def backward_step(model: Any, plan: dict[int, list[dict[str, torch.Tensor]]], mode: str, world: int, *,
                  dist: DistContext | None = None, eps: float = 1e-8, precision: str = "auto") -> StepStats:
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
    for r, bs in plan.items():
        for k, batch in enumerate(bs):
            batch = {key: v.to(device) for key, v in batch.items()}
            with no_sync_unless(model, k == len(bs) - 1), _autocast(device, precision, base):
                tok_loss, w = token_losses(model, batch)
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
            tokens += int((w > 0).sum())
            input_tokens += int(batch["input_ids"].numel())
    if dist is not None and world > 1:
        num = all_reduce_sum(num, device)
        weight_sum = all_reduce_sum(weight_sum, device)
        tokens = int(all_reduce_sum(tokens, device))
        input_tokens = int(all_reduce_sum(input_tokens, device))
    return StepStats(num / max(weight_sum, 1e-12), weight_sum, tokens, input_tokens)


def train_sft(model: torch.nn.Module, examples: Sequence[Example], cfg: TrainConfig, *, pad_id: int,
              seed: int = 0, eval_fn: Callable[[int], dict[str, Any]] | None = None,
              progress: bool = True, desc: str = "sft", recipe: SFTRecipe | None = None,
              checkpoint_dir: str | Path | None = None, resume: bool = False, stop_after: int | None = None,
              on_step: Callable[[int, TrainHistory], None] | None = None,
              dist: DistContext | None = None) -> TrainHistory:
    """SFT for ``cfg.steps`` optimizer steps of ``cfg.batch_size`` samples each.

    Each step's global batch is split over the data-parallel ranks (``recipe.shard``), each rank's share
    into ``recipe.grad_accum`` micro-batches, and the loss normalized as ``recipe.loss_norm`` says.
    Ranks are simulated in this process (``recipe.ranks``) unless ``dist`` says this is one real rank
    of a ``torchrun`` job (then ``model`` is the DDP wrapper, or ``dist.ds_engine`` the DeepSpeed
    engine). ``checkpoint_dir`` + ``recipe.save_every`` save checkpoints; ``resume`` continues from the
    newest one; ``stop_after`` ends the run after that many steps, as a crash would (the checkpoints
    stay). Without ``recipe`` it trains unpacked, one rank, plain token mean (the base-model stage).
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
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: linear_warmup_schedule(s, cfg.steps, cfg.warmup_frac))
    data = _DataStream(len(examples), seed)
    hist = TrainHistory()
    start = 0
    if resume and checkpoint_dir is not None and engine is None:
        last = latest_checkpoint(checkpoint_dir)
        if last is not None:
            start, h = _restore(last, model, opt, sched, data)
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
                           precision=recipe.precision)
        if engine is None:
            gnorm = float(torch.nn.utils.clip_grad_norm_(base.parameters(), cfg.grad_clip))
            opt.step()
            sched.step()
        else:
            gnorm = float(engine.get_global_grad_norm() or 0.0)
        hist.tokens += st.tokens
        hist.input_tokens += st.input_tokens
        done = step + 1
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
        if checkpoint_dir is not None and recipe.save_every and done % recipe.save_every == 0 and engine is None \
                and (dist is None or dist.is_main):
            save_checkpoint(checkpoint_dir, done, model, opt, sched, data, hist, recipe.keep_checkpoints)
        if on_step is not None:
            on_step(done, hist)
        if stop_after is not None and done >= stop_after and done < cfg.steps:
            break
    bar.close()
    hist.wall_s = time.time() - t0
    model.eval()
    return hist


def heldout_eval(tokenizer: ChatTokenizer, problems: Sequence[dict[str, Any]], gen_cfg: Any, *,
                 model: torch.nn.Module, n_samples: int = 1, seed: int = 0) -> Callable[[int], dict[str, Any]]:
    """An ``eval_fn`` for :func:`train_sft`: pass@1 on held-out problems with the evaluation harness."""
    from falcon_h1r.evaluation import evaluate

    def run(step: int) -> dict[str, Any]:
        rep = evaluate(unwrap(model), tokenizer, problems, gen_cfg, n_samples=n_samples, seed=seed, progress=False)
        return {"pass1": rep.pass1, **{f"pass1_{d}": v for d, v in rep.pass1_by_domain.items()}}

    return run


# ============================================================================== ablations (notebook 02)
@dataclass
class Arm:
    """One fine-tuning configuration of an ablation grid (fields not set take the reference values)."""

    name: str = "reference"
    lr_scale: float = 1.0
    rollouts: int = 4  # teacher rollouts per problem (paper: n in {4, 8, 12})
    incorrect: bool = False  # keep wrong traces of the hardest problems (paper §2.1)
    teacher: Literal["stepwise", "terse", "mixed"] = "stepwise"  # one teacher style, or both mixed
    weighting: bool = True  # difficulty-aware weights (hard x1.25-1.75, easy x0.5) vs all 1
    mixture: dict[str, float] = field(default_factory=lambda: {"math": 1.0, "code": 1.0, "science": 1.0})
    loss_norm: Literal["sequence", "rank_token", "balanced"] = "balanced"
    ranks: int = 1
    shard: Literal["contiguous", "by_length", "random"] = "contiguous"
    curve: bool = False  # evaluate every sft.ablation_eval_every steps (the normalization curve)

    def key(self) -> str:
        """Identifies the training run (the name is a label only), so grids share identical arms."""
        d = asdict(self)
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Grid:
    name: str
    axis: str  # row of papers/sft_ablation_findings.csv
    question: str
    arms: list[Arm]
    compare: list[str] = field(default_factory=list)  # [arm A, arm B]: the headline difference is A - B


def load_grid(name: str, preset_name: str = "tiny") -> Grid:
    """``recipes/sft/<name>.yaml``: arms over the reference arm (``recipes/sft/reference.yaml``, plus
    the grid's own ``reference:`` overrides); an arm may list the ``presets`` it runs at."""
    from falcon_h1r.config import RecipeError, load_recipe_grid, parse

    if name not in GRIDS:
        raise RecipeError(f"unknown SFT grid {name!r}; grids are {', '.join(GRIDS)}")
    raw = load_recipe_grid(f"sft/{name}.yaml")
    unknown = sorted(set(raw) - {"axis", "question", "reference", "arms", "compare"})
    if unknown:
        raise RecipeError(f"sft/{name}.yaml: unknown key {unknown[0]!r}; accepted: axis, question, reference, "
                          "arms, compare")
    ref = {**load_recipe_grid("sft/reference.yaml"), **raw.get("reference", {})}
    arms = []
    for i, a in enumerate(raw.get("arms", [])):
        a = dict(a)
        presets = a.pop("presets", None)
        if presets is not None and preset_name not in presets:
            continue
        arms.append(parse(Arm, {**ref, **a}, f"sft/{name}.yaml arms[{i}]"))
    if not arms:
        raise RecipeError(f"sft/{name}.yaml: no arm runs at preset {preset_name!r}")
    names = [a.name for a in arms]
    for c in raw.get("compare", []):
        if c not in names:
            raise RecipeError(f"sft/{name}.yaml: compare names {c!r}, which is not an arm at preset "
                              f"{preset_name!r} ({', '.join(names)})")
    return Grid(name, raw.get("axis", name), raw.get("question", ""), arms, list(raw.get("compare", [])))


def ablation_problems(preset: Any, recipe: SFTRecipe, test_questions: Sequence[str]) -> list[dict[str, Any]]:
    """Fresh problems for the ablation fine-tunes (split "sft_ablation"), never a test question."""
    from falcon_h1r.tasks import generate_split

    t = preset.tasks
    return generate_split(t.domains, t.difficulties, recipe.ablation_problems_per_domain, "sft_ablation",
                          preset.seed, exclude_questions=set(test_questions))


def ablation_pool(problems: Sequence[dict[str, Any]], recipe: SFTRecipe, teacher: str, rollouts: int,
                  seed: int) -> list[dict[str, Any]]:
    """``rollouts`` teacher traces per problem from a teacher whose wrong-answer rate grows with the
    problem's difficulty (``sft.teacher_wrong_rate``), so pass rates fall with difficulty."""
    out = []
    for level, rate in zip((1, 2, 3), recipe.teacher_wrong_rate):
        probs = [p for p in problems if p["difficulty"] == level]
        if probs:
            out += teacher_records(probs, teacher, seed * 31 + level, rollouts=rollouts,
                                   noise=TeacherNoise(wrong_answer=rate))
    return out


def curate_arm(pool: Sequence[dict[str, Any]], tokenizer: ChatTokenizer, preset: Any, arm: Arm,
               eval_questions: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Filter, verify and weight an arm's pool with ``falcon_h1r.curation`` (incorrect traces of the
    hardest problems kept when the arm says so; weights set to 1 when weighting is off)."""
    from falcon_h1r.curation import curate_sft_records
    from falcon_h1r.sections.curation import load_recipe as curation_recipe  # until the ablations move up

    crec = replace(curation_recipe(preset), keep_incorrect_hard=arm.incorrect)
    cur = curate_sft_records(pool, tokenizer, crec, eval_questions=eval_questions,
                             levels=preset.tasks.difficulties)
    records = cur.records
    if not arm.weighting:
        records = [{**r, "weight": 1.0} for r in records]
    stats = {"pool": len(pool), "kept": len(records), "kept_incorrect": sum(not r.get("correct", True) for r in records),
             "dropped": dict(cur.dropped_by_rule())}
    return records, stats


def mixture_sample(records: Sequence[dict[str, Any]], proportions: dict[str, float], n: int,
                   seed: int) -> list[dict[str, Any]]:
    """``n`` records drawn with the domain ``proportions`` (renormalised over present domains), each
    domain cycling through its shuffled records, so every mixture trains on the same number of samples."""
    from falcon_h1r.curation import mixture_probabilities

    by_dom: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_dom.setdefault(r["domain"], []).append(r)
    probs = mixture_probabilities(proportions, by_dom)
    rng = random.Random(seed)
    for d in by_dom:
        rng.shuffle(by_dom[d])
    counts = {d: int(math.floor(p * n)) for d, p in probs.items()}
    for d in sorted(probs, key=lambda d: -(probs[d] * n - counts[d]))[: n - sum(counts.values())]:
        counts[d] += 1
    out = []
    for d, c in counts.items():
        out += [by_dom[d][i % len(by_dom[d])] for i in range(c)]
    rng.shuffle(out)
    return out


def output_entropy(model: torch.nn.Module, tokenizer: ChatTokenizer, prompts: Sequence[str],
                   completions: Sequence[Any]) -> float:
    """Mean entropy (nats) of the model's next-token distribution over its own generated tokens,
    computed exactly (full vocabulary) in one teacher-forced pass."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(prompts), 64):
            rows = [(tokenizer.encode(p), list(c.token_ids)) for p, c in zip(prompts[s:s + 64], completions[s:s + 64])]
            rows = [(p, c) for p, c in rows if c]
            if not rows:
                continue
            width = max(len(p) + len(c) for p, c in rows)
            ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
            attn = torch.zeros_like(ids)
            gen = torch.zeros(ids.shape, dtype=torch.bool)
            for i, (p, c) in enumerate(rows):
                ids[i, :len(p) + len(c)] = torch.tensor(p + c)
                attn[i, :len(p) + len(c)] = 1
                gen[i, len(p) - 1:len(p) + len(c) - 1] = True  # positions whose prediction is a generated token
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).logits.float()
            logp = torch.log_softmax(logits, -1)
            ent = -(logp.exp() * logp).sum(-1).cpu()
            total += float(ent[gen].sum())
            count += int(gen.sum())
    return total / max(count, 1)


def evaluate_arm(model: torch.nn.Module, tokenizer: ChatTokenizer, problems: Sequence[dict[str, Any]],
                 gen_cfg: Any, seed: int) -> dict[str, Any]:
    """Greedy pass@1 on held-out problems (by domain and difficulty), per-problem outcomes and the
    output entropy."""
    from falcon_h1r.evaluation import score_completions
    from falcon_h1r.inference import generate

    prompts = [tokenizer.prompt(p["question"]) for p in problems]
    comps = generate(model, tokenizer, prompts, gen_cfg, seed=seed, progress=False)
    rep = score_completions(problems, comps, 1)
    return {"acc": rep.pass1, **{f"acc_{d}": v for d, v in rep.pass1_by_domain.items()},
            **{f"acc_level{k}": v for k, v in rep.pass1_by_difficulty.items()},
            "entropy": output_entropy(model, tokenizer, prompts, comps),
            "mean_response_tokens": rep.mean_response_tokens,
            "outcomes": [int(r["correct"]) for r in rep.per_problem],
            "outcome_levels": [int(r["difficulty"]) for r in rep.per_problem],
            "outcome_domains": [r["domain"] for r in rep.per_problem]}


@dataclass
class AblationContext:
    """What every arm shares: the base model, tokenizer, problems, held-out set and sizes."""

    preset: Any
    recipe: SFTRecipe
    base: torch.nn.Module
    tokenizer: ChatTokenizer
    problems: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    gen_cfg: Any
    base_key: str
    work_dir: Path
    max_rollouts: int = 12
    _pools: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, preset: Any, base: Any, work_dir: str | Path, max_rollouts: int = 12) -> "AblationContext":
        from falcon_h1r.inference import greedy

        recipe = load_recipe(preset)
        per = recipe.ablation_eval_per_domain
        heldout, seen = [], {}
        for p in base.sets["test"]:
            if seen.get(p["domain"], 0) < per:
                heldout.append(p)
                seen[p["domain"]] = seen.get(p["domain"], 0) + 1
        gen = greedy(replace(preset.generation, max_new_tokens=recipe.ablation_max_new_tokens
                             or preset.generation.max_new_tokens))
        key = str(base.info.get("recipe_hash", "")) or hashlib.sha256(str(base.path).encode()).hexdigest()[:12]
        test_q = [p["question"] for p in base.sets["test"]]
        return cls(preset, recipe, base.model, base.tokenizer, ablation_problems(preset, recipe, test_q), heldout, gen,
                   key, Path(work_dir), max_rollouts)

    def base_eval(self) -> dict[str, Any]:
        """The base model on the held-out set (step 0 of every curve), computed once."""
        if "base" not in self._pools:
            with cpu_threads(self.recipe.cpu_threads, next(self.base.parameters()).device):
                self._pools["base"] = evaluate_arm(self.base, self.tokenizer, self.heldout, self.gen_cfg, 0)
        return self._pools["base"]

    def curated_pool(self, arm: Arm) -> list[dict[str, Any]]:
        """The curated pool of the arm's (teacher, incorrect), kept in the work folder: verifying thousands
        of code traces costs minutes of CPU, and parallel workers (``--workers``) would each redo it."""
        from falcon_h1r.results import write_json

        path = self.work_dir / f"pool-{arm.teacher}-{'incorrect' if arm.incorrect else 'correct'}-n{self.max_rollouts}" \
                               f"-{self.base_key}-s{self.preset.seed}.json"
        if path.exists():
            return json.loads(path.read_text())
        pool = ablation_pool(self.problems, self.recipe, arm.teacher, self.max_rollouts, self.preset.seed)
        records = curate_arm(pool, self.tokenizer, self.preset, replace(arm, weighting=True),
                             [p["question"] for p in self.heldout])[0]
        write_json(path, records)
        return records

    def records(self, arm: Arm, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The arm's curated training records, drawn to the arm's domain mixture.

        One pool per (teacher, incorrect) is generated at the largest n any grid uses and curated
        once; an arm with n rollouts keeps each problem's first n of them (the same distribution as
        drawing n), and weighting off sets every weight to 1.
        """
        k = (arm.teacher, arm.incorrect)
        if k not in self._pools:
            self._pools[k] = self.curated_pool(arm)
        records = [r for r in self._pools[k] if r["rollout"] < arm.rollouts]
        if not arm.weighting:
            records = [{**r, "weight": 1.0} for r in records]
        stats = {"kept": len(records), "kept_incorrect": sum(not r.get("correct", True) for r in records),
                 "problems_covered": len({r["id"] for r in records}),
                 "pool": len(self.problems) * arm.rollouts}
        n = self.recipe.ablation_steps * self.recipe.ablation_batch_size
        return mixture_sample(records, arm.mixture, min(n, len(records)), seed), stats


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device | str = "cpu") -> Any:
    """Run with ``n`` torch threads on CPU (0: unchanged), restoring the previous count."""
    before = torch.get_num_threads()
    if n and torch.device(device).type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_arm(ctx: AblationContext, arm: Arm, seed: int) -> dict[str, Any]:
    """Fine-tune a copy of the base model as ``arm`` says, then evaluate it; one result row."""
    with cpu_threads(ctx.recipe.cpu_threads, next(ctx.base.parameters()).device):
        return _run_arm(ctx, arm, seed)


def _run_arm(ctx: AblationContext, arm: Arm, seed: int) -> dict[str, Any]:
    from falcon_h1r.env import seed_everything

    r = ctx.recipe
    records, stats = ctx.records(arm, seed)
    examples = examples_from_traces(records, ctx.tokenizer, ctx.preset.train.max_seq_len)
    seed_everything(seed)
    model = copy.deepcopy(ctx.base).float()
    cfg = replace(ctx.preset.train, steps=r.ablation_steps, batch_size=r.ablation_batch_size,
                  lr=r.ablation_lr * arm.lr_scale, eval_every=r.ablation_eval_every if arm.curve else 0,
                  log_every=max(1, r.ablation_steps // 10))
    trainer = replace(r, loss_norm=arm.loss_norm, ranks=arm.ranks, shard=arm.shard, save_every=0)
    eval_fn = None
    if arm.curve:
        def eval_fn(step: int) -> dict[str, Any]:
            if step == cfg.steps:
                return {"acc": None}  # filled from the final evaluation below
            return {"acc": evaluate_arm(model, ctx.tokenizer, ctx.heldout, ctx.gen_cfg, seed)["acc"]}
    hist = train_sft(model, examples, cfg, pad_id=ctx.tokenizer.pad_id, seed=seed, eval_fn=eval_fn, progress=False,
                     recipe=trainer)
    res = evaluate_arm(model, ctx.tokenizer, ctx.heldout, ctx.gen_cfg, seed)
    for e in hist.evals:
        if e["acc"] is None:
            e["acc"] = res["acc"]
    return {"arm": arm.name, "arm_key": arm.key(), "seed": seed, "base_key": ctx.base_key, **asdict(arm),
            **res, "train_loss_final": hist.loss[-1], "train_wall_s": round(hist.wall_s, 3),
            "train_tokens": hist.tokens, "n_records": len(records), **{f"data_{k}": v for k, v in stats.items()},
            "curve": hist.evals, "loss_curve": {"step": hist.steps, "loss": hist.loss}}


def run_grid(ctx: AblationContext, grid: Grid, *, progress: bool = True,
             done: dict[tuple[str, int], dict[str, Any]] | None = None,
             deadline: float | None = None, only: set[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """Every arm of ``grid`` at every seed; rows already in the work file (same arm, seed and base) are
    reused, new rows are appended to it as soon as they exist. Past ``deadline`` (a ``time.time()``)
    no new arm starts, and only the rows that exist are returned. With ``only`` (a set of
    ``(arm.key(), seed)``), runs outside it are not computed here (another worker's share)."""
    from tqdm.auto import tqdm

    work = ctx.work_dir / "ablation_rows.jsonl"
    done = done if done is not None else load_rows(work, ctx.base_key)
    todo = [(a, s) for a in grid.arms for s in ctx.recipe.ablation_seeds]
    rows = []
    bar = tqdm(todo, desc=f"SFT grid {grid.name}", disable=not progress, leave=False)
    try:
        for arm, seed in bar:
            key = (arm.key(), seed)
            if key not in done:
                if (deadline is not None and time.time() > deadline) or (only is not None and key not in only):
                    continue
                row = run_arm(ctx, arm, seed)
                append_row(work, row)
                done[key] = row
            rows.append({**done[key], "arm": arm.name, "grid": grid.name})
    finally:
        bar.close()
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line with a single O_APPEND write, so that parallel workers never interleave lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(row, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def grid_runs(grids: Sequence[Grid], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """Every distinct ``(arm.key(), seed)`` the grids need, in a fixed order (the reference arm that several
    grids share is one run)."""
    return list(dict.fromkeys((a.key(), s) for g in grids for a in g.arms for s in seeds))


def _runs_done(ctx: AblationContext, grids: Sequence[Grid], seeds: Sequence[int]) -> dict[str, int]:
    """How many of the grids' runs have a row in the work file (every worker's), and how many they need."""
    need = set(grid_runs(grids, seeds))
    done = load_rows(ctx.work_dir / "ablation_rows.jsonl", ctx.base_key)
    return {"done": len(need & set(done)), "needed": len(need)}


def _ablation_setup(preset_name: str, overrides: dict[str, Any] | None, progress: bool) -> tuple:
    """(sft recipe, grids, AblationContext) of a preset: its base model (trained or cached) and work folder."""
    from falcon_h1r.config import load_preset
    from falcon_h1r.results import section_dir
    from falcon_h1r.sections.common import get_base_model

    preset = load_preset(preset_name, overrides)
    recipe = load_recipe(preset)
    grids = [load_grid(g, preset_name) for g in recipe.ablation_grids]
    base = get_base_model(preset, progress=progress)
    ctx = AblationContext.build(preset, base, section_dir(preset_name, "02_sft") / "_work",
                                max_rollouts=max((a.rollouts for g in grids for a in g.arms), default=1))
    return recipe, grids, ctx


def run_ablations(preset_name: str, overrides: dict[str, Any] | None = None, *, budget_s: float | None = None,
                  progress: bool = True, shard: tuple[int, int] = (0, 1)) -> dict[str, int]:
    """Compute the preset's ablation rows into the section's work file, stopping before ``budget_s`` runs
    out (rows are kept; run again to continue). The notebook then renders them without recomputing.
    ``shard=(i, n)`` computes only every n-th missing run starting at i (see :func:`main`'s ``--workers``).
    Returns how many (arm, seed) runs are done and how many the grids need."""
    t0 = time.time()
    recipe, grids, ctx = _ablation_setup(preset_name, overrides, progress)
    deadline = t0 + budget_s if budget_s else None
    work = ctx.work_dir / "ablation_rows.jsonl"
    done = load_rows(work, ctx.base_key)
    i, n = shard
    missing = [k for k in grid_runs(grids, recipe.ablation_seeds) if k not in done]
    only = set(missing[i::n]) if n > 1 else None
    for g in grids:
        run_grid(ctx, g, progress=progress, done=done, deadline=deadline, only=only)
    return {**_runs_done(ctx, grids, recipe.ablation_seeds), "wall_s": round(time.time() - t0, 1)}


def run_ablations_parallel(preset_name: str, overrides: dict[str, Any] | None, *, workers: int,
                           budget_s: float | None) -> dict[str, int]:
    """The grid split over ``workers`` processes that time-share one device. A ~6M-parameter model's step
    is mostly Python and kernel-launch time, so a second process fills the GPU's idle gaps (on an H100,
    2 workers ran 20 runs in 535 s beside an RL job; 4 workers beside RL and the engine check were slower
    per run). The base model is trained (or read from its cache) and the curated pools are built here
    first; each worker then computes its share (``--shard i/n``) into the shared work file."""
    import subprocess

    t0 = time.time()
    recipe, grids, ctx = _ablation_setup(preset_name, overrides, True)
    for arm in {(a.teacher, a.incorrect): a for g in grids for a in g.arms}.values():
        ctx.curated_pool(arm)  # once, here, before the workers read it
    extra = [a for k, v in (overrides or {}).items() for a in ("--override", f"{k}={json.dumps(v)}")]
    budget = [] if budget_s is None else ["--budget-s", str(max(1.0, budget_s - (time.time() - t0)))]
    procs = [subprocess.Popen([sys.executable, "-m", "falcon_h1r.sft", "--preset", preset_name, "--shard",
                               f"{i}/{workers}", *budget, *extra]) for i in range(workers)]
    codes = [p.wait() for p in procs]
    bad = [c for c in codes if c not in (0, 3)]
    if bad:
        raise RuntimeError(f"SFT ablation workers exited with codes {codes} (0: all done, 3: budget reached)")
    # Count the workers' rows; no run is started here (a worker that stopped on its budget leaves runs missing).
    return {**_runs_done(ctx, grids, recipe.ablation_seeds), "wall_s": round(time.time() - t0, 1), "workers": workers}


def load_rows(path: str | Path, base_key: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    path = Path(path)
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if base_key is None or row.get("base_key") == base_key:
                    out[(row["arm_key"], int(row["seed"]))] = row
    return out


# ---------------------------------------------------------------------------- statistics
def arm_summary(rows: Sequence[dict[str, Any]], metric: str = "acc") -> dict[str, Any]:
    """Mean of ``metric`` over seeds and a 95 % interval over (seed, problem) outcomes (normal approx.)."""
    vals = [r[metric] for r in rows]
    out = {"mean": sum(vals) / len(vals), "seeds": len(vals),
           "seed_sd": (sum((v - sum(vals) / len(vals)) ** 2 for v in vals) / max(1, len(vals) - 1)) ** 0.5}
    if metric == "acc" and all("outcomes" in r for r in rows):
        o = [x for r in rows for x in r["outcomes"]]
        m = sum(o) / len(o)
        out["ci95"] = 1.96 * (m * (1 - m) / len(o)) ** 0.5
    return out


def _outcomes(row: dict[str, Any], level: int | None, domain: str | None) -> list[int]:
    keep = [(level is None or lv == level) and (domain is None or d == domain)
            for lv, d in zip(row["outcome_levels"], row["outcome_domains"])]
    return [o for o, k in zip(row["outcomes"], keep) if k]


def paired_difference(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]], metric: str = "acc", *,
                      level: int | None = None, domain: str | None = None) -> dict[str, float]:
    """A - B, paired by seed (and by held-out problem, for accuracy; optionally only the problems of one
    difficulty ``level`` or ``domain``): mean and 95 % interval (normal approximation)."""
    by_seed_b = {r["seed"]: r for r in rows_b}
    pairs = [(a, by_seed_b[a["seed"]]) for a in rows_a if a["seed"] in by_seed_b]
    if not pairs:
        raise ValueError("no seed is shared by the two arms; run both at the same seeds")
    if metric == "acc":
        d = [x - y for a, b in pairs for x, y in zip(_outcomes(a, level, domain), _outcomes(b, level, domain))]
    else:
        d = [a[metric] - b[metric] for a, b in pairs]
    if not d:
        raise ValueError(f"no held-out problem at level {level} / domain {domain}")
    m = sum(d) / len(d)
    sd = (sum((x - m) ** 2 for x in d) / max(1, len(d) - 1)) ** 0.5
    return {"diff": m, "ci95": 1.96 * sd / math.sqrt(len(d)), "n": len(d)}


def finding_status(diff: float, ci95: float, expected_sign: int) -> tuple[str, str]:
    """Status of our result against the paper's direction: ``reproduced`` when the difference has the
    paper's sign and its 95 % interval excludes 0, ``partly`` when the sign agrees but the interval
    includes 0, ``not`` when there is no difference or the sign is opposite."""
    if abs(diff) < 1e-12:
        if ci95 > 0:
            return "not", "zero mean difference: the arms differ problem by problem, but gains and losses cancel"
        return "not", "no difference at all between the arms"
    if diff * expected_sign > 0:
        if abs(diff) > ci95:
            return "reproduced", "same direction, 95 % interval excludes 0"
        return "partly", "same direction, but the 95 % interval includes 0"
    if abs(diff) <= ci95:
        return "not", "opposite sign, within noise (95 % interval includes 0)"
    return "not", "opposite direction, 95 % interval excludes 0"


# ---------------------------------------------------------------------------- the report beside the paper
# How each grid is read against the paper: (paper finding row or source, metric, expected sign of A - B,
# restrict to difficulty level). The paper's directions are in papers/sft_ablation_findings.csv.
_READING = {
    "learning_rate": ("learning_rate", "acc", +1, None),
    "rollouts": ("rollouts_per_prompt", "acc", +1, None),
    "incorrect": ("incorrect_rollouts", "acc", +1, 3),  # the paper's gain is on the hardest problems only
    "teachers": ("teacher_mixing", "acc", +1, None),
    "weighting": ("difficulty_weighting", "acc", +1, None),
    "mixture": ("domain_mixture", "acc", +1, None),
    "normalization": ("fig4_dp_balance", "acc", +1, None),
}


def ablation_report(rows: Sequence[dict[str, Any]], grids: Sequence[Grid], *, ablation_lr: float,
                    context: str) -> dict[str, Any]:
    """Per-arm results, each grid's headline comparison beside the paper's finding with a status (``why``
    ends with ``context``: the scale the result was measured at), and the flat headline figures for
    summary.json. Every number is computed from ``rows``."""
    from falcon_h1r import papers

    findings = {r["axis"]: r for r in papers.load("sft_ablation_findings").to_dict("records")}
    fig4 = papers.load("fig4_dp_balance")
    findings["fig4_dp_balance"] = {
        "axis": "dp_normalization", "values_tried": "balanced vs plain DP token normalization",
        "finding": f"balanced DP normalization scored {fig4['gain_points_min']}-{fig4['gain_points_max']} points "
                   f"higher on {fig4['metric']} throughout the first {fig4['steps_compared']} steps"}
    arms, out, summary = [], [], {}
    for g in grids:
        by_arm = {a.name: [r for r in rows if r.get("grid") == g.name and r["arm"] == a.name] for a in g.arms}
        for a in g.arms:
            rs = by_arm[a.name]
            if not rs:
                continue
            st = arm_summary(rs)
            ent = arm_summary(rs, "entropy")
            arms.append({"grid": g.name, "arm": a.name, "acc": st["mean"], "acc_ci95": st.get("ci95"),
                         "seeds": st["seeds"], "acc_seed_sd": st["seed_sd"], "entropy": ent["mean"],
                         **{k: sum(r[k] for r in rs) / len(rs) for k in rs[0]
                            if k.startswith("acc_") and isinstance(rs[0][k], (int, float))},
                         "train_records": sum(r["n_records"] for r in rs) / len(rs),
                         "lr": ablation_lr * a.lr_scale})
        if len(g.compare) != 2 or not all(by_arm.get(c) for c in g.compare):
            continue
        src, metric, sign, level = _READING[g.name]
        a_rows, b_rows = by_arm[g.compare[0]], by_arm[g.compare[1]]
        where = f" on difficulty-{level} problems" if level else ""
        if level and level not in set(a_rows[0]["outcome_levels"]):
            level, where = None, f" (no difficulty-{level} problem held out: all problems)"
        d = paired_difference(a_rows, b_rows, metric, level=level)
        status, why = finding_status(d["diff"], d["ci95"], sign)
        paper = findings.get(src, {})
        out.append({"grid": g.name, "paper_axis": paper.get("axis", src), "paper_finding": paper.get("finding", ""),
                    "ours": f"{g.compare[0]} minus {g.compare[1]}{where}: {d['diff']:+.3f} ± {d['ci95']:.3f} "
                            f"(95 %, {d['n']} paired outcomes)",
                    "diff": d["diff"], "ci95": d["ci95"], "status": status, "why": f"{why}; {context}"})
        if g.name == "teachers":  # the paper's second claim: mixing raises output entropy
            e = paired_difference(b_rows, a_rows, "entropy")
            status, why = finding_status(e["diff"], e["ci95"], +1)
            out.append({"grid": "teachers (entropy)", "paper_axis": paper.get("axis", src),
                        "paper_finding": "mixing teachers raised output entropy",
                        "ours": f"{g.compare[1]} minus {g.compare[0]}, output entropy: {e['diff']:+.3f} ± "
                                f"{e['ci95']:.3f} nats (95 %, {e['n']} seeds)",
                        "diff": e["diff"], "ci95": e["ci95"], "status": status, "why": f"{why}; {context}"})
    # headline figures
    arm_acc = {(a["grid"], a["arm"]): a for a in arms}
    lr_arms = [a for a in arms if a["grid"] == "learning_rate"]
    if lr_arms:
        summary["best_lr"] = max(lr_arms, key=lambda a: a["acc"])["lr"]
    for n in (4, 8, 12):
        if ("rollouts", f"n={n}") in arm_acc:
            summary[f"acc_n{n}"] = arm_acc[("rollouts", f"n={n}")]["acc"]
    names = {"teachers": "single_minus_multi_teacher_acc", "weighting": "weighting_on_minus_off_acc",
             "normalization": "balanced_minus_per_rank_heldout_acc", "mixture": "math_heavy_minus_balanced_acc",
             "incorrect": "with_minus_without_incorrect_acc_hard", "learning_rate": "larger_minus_smaller_lr_acc",
             "rollouts": "n12_minus_n4_acc"}
    for f in out:
        if f["grid"] in names:
            summary[names[f["grid"]]] = f["diff"]
    if ("teachers", "mixed teachers") in arm_acc and ("teachers", "single teacher") in arm_acc:
        summary["multi_minus_single_teacher_entropy"] = (arm_acc[("teachers", "mixed teachers")]["entropy"]
                                                         - arm_acc[("teachers", "single teacher")]["entropy"])
    return {"arms": arms, "findings": out, "summary": summary}


def normalization_curves(rows: Sequence[dict[str, Any]], base_acc: float | None = None) -> list[dict[str, Any]]:
    """Held-out accuracy over steps for each normalization arm and seed (step 0 = the base model)."""
    out = []
    for r in rows:
        if r.get("grid") != "normalization":
            continue
        pts = ([{"step": 0, "acc": base_acc}] if base_acc is not None else []) + list(r["curve"])
        out += [{"arm": r["arm"], "seed": r["seed"], "step": p["step"], "acc": p["acc"]} for p in pts]
    return out


__all__ = ["AblationContext", "Arm", "ablation_report", "normalization_curves", "Example", "StepStats", "backward_step", "plan_step", "GRIDS", "Grid", "SFTRecipe", "TrainHistory", "arm_summary",
           "collate", "collate_packed", "cpu_threads", "curate_arm", "evaluate_arm", "examples_from_traces",
           "finding_status", "heldout_eval", "latest_checkpoint", "linear_warmup_schedule", "load_grid",
           "load_recipe", "load_rows", "append_row", "grid_runs", "run_ablations_parallel", "make_batch", "mixture_sample", "output_entropy", "pack_rows",
           "paired_difference", "per_sample_losses", "run_ablations", "run_arm", "run_grid", "save_checkpoint",
           "teacher_records", "token_losses", "train_sft"]


def main(argv: list[str] | None = None) -> int:
    """``python -m falcon_h1r.sft --preset small --budget-s 540``: compute ablation rows in resumable chunks
    (each call stops before its budget; run it until it reports all rows done, then run the notebook)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting new runs after this many seconds")
    ap.add_argument("--override", action="append", default=[], help="preset override key=value (YAML value)")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the device, each taking a share of "
                    "the runs (a small model leaves a GPU mostly idle)")
    ap.add_argument("--shard", default="0/1", help="i/n: compute only every n-th missing run from i (set by --workers)")
    args = ap.parse_args(argv)
    import yaml

    try:
        shard = tuple(int(x) for x in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        ap.error(f"--shard {args.shard!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    if args.workers < 1:
        ap.error(f"--workers {args.workers}: expected a count of 1 or more")
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.override)}
    if args.workers > 1:
        res = run_ablations_parallel(args.preset, overrides, workers=args.workers, budget_s=args.budget_s)
    else:
        res = run_ablations(args.preset, overrides, budget_s=args.budget_s, shard=shard)
    print(json.dumps({"preset": args.preset, **res}))
    return 0 if res["done"] == res["needed"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
