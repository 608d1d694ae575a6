"""The data of section 02's §2 ablations and their common start.

**The common start.** Every arm of every grid fine-tunes the same checkpoint, trained from scratch on the task
domain's text: one document per problem of the base-model training split (never an arm's problem nor a held-out
one). ``sft_ablations.start_corpus`` picks the text:

- ``answers``: ``question\nfinal answer``. The start knows how questions read and what answers look like and
  nothing of any method. Measured on one H200 (commit 4a5156b, small preset, 200 start steps): it scores 0.000, and
  100 steps x 32 traces of SFT from it leave every arm at 0.000-0.011 held-out pass@1 (final loss 0.8-1.3 where the
  base run ends at 0.03), so every comparison sits at the floor: a testbed that cannot show the §2 effects.
- ``traces``: ``question\nworked solution\nfinal answer``, the solution a clean trace of either teacher (the
  tasks' ``mixed`` style: stepwise column methods for half the problems, terse decompositions for the other
  half), as a pretrained base has read worked solutions of its domain. The start then computes, and the arms'
  SFT on their own curated pools (chat format, ``<think>`` turn, one teacher or both, with or without wrong
  traces) moves a model that is still learning, which is the regime the paper's ablations measure. Both
  teachers' methods are in it in equal parts, so the teacher-mixing axis favours neither single teacher.
  Measured on one H200 (commit f65a96b, small, 400 start steps, 11.8M tokens, final loss 0.30): the start scores
  0.000 (it never saw the chat turn) and the reference arm 0.004 after its 100 steps (its curve 0 -> 0.022): the
  floor again. At this model size accuracy only appears late in a run (the base reaches 0.44 greedy pass@1 at
  1,500 steps x 64), so a start with no answers yet leaves 100 arm steps at the floor whatever the arm.
- ``chat``: the same clean worked solutions of both teachers in the chat turn (``<think>`` block, loss on the
  response), i.e. an earlier and shorter SFT stage on other problems, as the paper's base had read reasoning
  data before its SFT. The start already answers some held-out problems and is still learning, so each arm's
  100 steps move it up or down from a common, measured point (the start's own pass@1 is every curve's step 0).
  What it cannot be is a start that has never seen a worked solution: the arms' effects are those of the last
  steps of SFT on new problems and new (slipping) teachers, not of SFT from nothing.

Why not the finished SFT base: it has already learnt the stepwise teacher's traces to convergence, so an arm can
only add more of the same (issue 15: every arm then scored at or below it). Why not one from-scratch run per arm:
the base needs ~50M tokens to reach 20-80 % at small, far more than the grid's GPU budget per arm. Cached by a
hash of everything that shapes it (``_cache/sft-start-<key>``).

**The ablation teacher.** The tasks' two teachers (stepwise: column methods; terse: decompositions) with one
slipped step per trace (``TeacherNoise.slip``: a carry dropped, a digit off, a constant misread in the code, the
rest of the trace following from it) at a rate per difficulty level (``sft_ablations.teacher_slip_by_level``), so
the teacher's pass rate falls with the level as a real teacher's does with the length of the work, and a wrong
trace looks like a real mistake rather than a bad final line.

**Pools.** One pool per teacher: ``problems_per_domain`` fresh problems per domain (split ``sft_ablation``,
never a test or base-training question) x the largest ``n`` any arm uses; an arm with ``n`` rollouts keeps each
problem's first ``n`` (the teacher's rollouts are drawn per problem, so the first ``n`` of 12 are a draw of
``n``). A problem's pass rate is the reference (stepwise) teacher's verified pass rate over those rollouts (paper
§2.1: hard by pass rate); it sets the difficulty weights and which problems are "hardest" for the
incorrect-rollout exception. Curation (``falcon_h1r.curation.curate_sft_records``) runs once per distinct trace:
correct rollouts of one problem are identical, so verification runs a few times per problem instead of 12.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from falcon_h1r.config import Preset, RecipeError, to_dict
from falcon_h1r.curation import CurationRecipe, curate_sft_records, grade, grade_kwargs, trace_response
from falcon_h1r.env import cpu_model, pick_device, seed_everything
from falcon_h1r.sections.common import cache_dir, recipe_hash, torch_threads
from falcon_h1r.sections.curation import load_recipe as curation_recipe
from falcon_h1r.sections.sft_ablation_recipes import SFTAblations
from falcon_h1r.sft import SFTRecipe, examples_from_text, examples_from_traces, train_sft
from falcon_h1r.tasks import GENERATOR_VERSION, TeacherNoise, generate_split, style_for, teacher_records, teacher_trace
from falcon_h1r.tokenizer import ChatTokenizer

# what the start's info calls each sft_ablations.start_corpus (summary.json's ablation_start begins with it)
START_KINDS = {"answers": "qa_pretrain", "traces": "trace_pretrain", "chat": "trace_sft"}
START_VERSION = 1  # bump when the start's corpus or training changes what a key produces
POOL_VERSION = 1  # likewise for the pools


# ============================================================================== problems and the teacher
def ablation_levels(preset: Preset, recipe: SFTAblations) -> dict[str, list[int]]:
    """Each domain's levels the ablations use (``sft_ablations.levels`` among the preset's)."""
    out = {d: recipe.levels_of(preset.tasks.levels(d)) for d in preset.tasks.domains}
    empty = [d for d, lv in out.items() if not lv]
    if empty:
        raise RecipeError(f"sft_ablations.levels {recipe.levels}: no level of domain {empty[0]!r} "
                          f"({preset.tasks.levels(empty[0])}) is among them")
    return out


def ablation_problems(preset: Preset, recipe: SFTAblations, exclude_questions: set[str]) -> list[dict[str, Any]]:
    """Fresh problems for the ablation fine-tunes (split ``sft_ablation``, the ablations' levels), none in
    ``exclude_questions``."""
    return generate_split(preset.tasks.domains, ablation_levels(preset, recipe), recipe.problems_per_domain,
                          "sft_ablation", preset.seed, exclude_questions=exclude_questions)


def held_out_problems(test: Sequence[dict[str, Any]], preset: Preset, recipe: SFTAblations,
                      per_domain: int) -> list[dict[str, Any]]:
    """The first ``per_domain`` test problems of each domain at the ablations' levels (the same for every arm)."""
    from falcon_h1r.sections.common import first_per_domain

    levels = ablation_levels(preset, recipe)
    return first_per_domain([p for p in test if p["difficulty"] in levels[p["domain"]]], per_domain)


def teacher_pool(problems: Sequence[dict[str, Any]], teacher: str, rollouts: int, recipe: SFTAblations,
                 seed: int) -> list[dict[str, Any]]:
    """``rollouts`` traces per problem from the ablation teacher (``teacher``: stepwise, terse or mixed per
    rollout), each slipping with the chance of its problem's level. Each problem's rollouts come from its own
    random stream, so a problem's first ``n`` rollouts do not depend on ``rollouts`` or on the other problems."""
    out = []
    for i, p in enumerate(problems):
        rng = random.Random(f"{seed}-ablation-teacher-{teacher}-{p['id']}")
        noise = TeacherNoise(slip=recipe.slip_rate(int(p["difficulty"])))
        for r in range(rollouts):
            style = style_for(i * 7919 + r, teacher, seed)
            t = teacher_trace(p, style, rng, noise)
            out.append({**p, "reasoning": t["reasoning"], "final": t["final"], "style": t["style"], "rollout": r})
    return out


def _distinct(pool: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The pool's distinct traces (by problem, reasoning and final answer) and each record's index among them."""
    index: dict[tuple[str, str, str], int] = {}
    unique, which = [], []
    for r in pool:
        k = (r["id"], r["reasoning"], r["final"])
        if k not in index:
            index[k] = len(unique)
            unique.append({**r, "trace_key": len(unique)})
        which.append(index[k])
    return unique, which


def problem_pass_rates(pool: Sequence[dict[str, Any]], crec: CurationRecipe) -> dict[str, float]:
    """Each problem's verified pass rate over its rollouts in ``pool`` (``falcon_h1r.curation.grade``, once per
    distinct trace)."""
    unique, which = _distinct(pool)
    verdicts = grade(unique, [trace_response(r) for r in unique], **grade_kwargs(crec))
    right: dict[str, list[bool]] = {}
    for r, u in zip(pool, which):
        right.setdefault(r["id"], []).append(bool(verdicts[u].correct))
    return {pid: sum(v) / len(v) for pid, v in right.items()}


def curate_pool(pool: Sequence[dict[str, Any]], tokenizer: ChatTokenizer, crec: CurationRecipe, *, incorrect: bool,
                pass_rates: dict[str, float], eval_questions: Sequence[str],
                levels: Sequence[int]) -> dict[str, Any]:
    """Curate the pool's distinct traces (incorrect ones of the hardest problems kept when ``incorrect``;
    difficulty by ``pass_rates``) and map them back to rollouts: ``{"records": curated distinct traces,
    "rollouts": [[problem id, rollout, trace index or -1 when removed], ...], "dropped": {rule: count}}``."""
    unique, which = _distinct(pool)
    cur = curate_sft_records(unique, tokenizer, replace(crec, keep_incorrect_hard=incorrect),
                             eval_questions=eval_questions, pass_rates=pass_rates, levels=levels)
    kept = {r["trace_key"]: i for i, r in enumerate(cur.records)}
    return {"records": cur.records, "dropped": cur.dropped_by_rule(),
            "rollouts": [[r["id"], int(r["rollout"]), kept.get(u, -1)] for r, u in zip(pool, which)]}


def pool_records(pool: dict[str, Any], rollouts: int) -> list[dict[str, Any]]:
    """The curated records of each problem's first ``rollouts`` rollouts (a distinct trace repeats once per
    rollout that produced it)."""
    recs = pool["records"]
    return [{**recs[i], "rollout": r} for _, r, i in pool["rollouts"] if i >= 0 and r < rollouts]


def pool_key(preset: Preset, recipe: SFTAblations, crec: CurationRecipe, *, teacher: str, incorrect: bool,
             rollouts: int, held_out: Sequence[str]) -> str:
    """Everything that shapes a curated pool: the problems (tasks, seed, ``problems_per_domain``), the teacher and
    its error model (``teacher_slip_by_level``), the rollouts, the curation recipe, the tokenizer (lengths), the
    held-out questions (contamination check) and the code versions."""
    return recipe_hash(preset.tasks, preset.tokenizer, preset.seed, crec, GENERATOR_VERSION, POOL_VERSION,
                       {"teacher": teacher, "incorrect": incorrect, "rollouts": rollouts,
                        "problems_per_domain": recipe.problems_per_domain, "levels": recipe.levels,
                        "teacher_slip_by_level": recipe.teacher_slip_by_level, "held_out": sorted(held_out)})


# ============================================================================== the common start
def start_corpus(problems: Sequence[dict[str, Any]], style: str, seed: int, kind: str = "answers") -> list[str]:
    """The start's documents, one per problem: ``question\nfinal answer`` (``kind="answers"``: a clean teacher's
    final line, no reasoning) or ``question\nreasoning\nfinal answer`` (``"traces"``: a clean trace of either
    teacher, the ``mixed`` style whatever ``style`` the preset's base uses)."""
    if kind == "traces":
        return [f"{r['question']}\n{r['reasoning']}\n{r['final']}" for r in teacher_records(problems, "mixed", seed)]
    return [f"{r['question']}\n{r['final']}" for r in teacher_records(problems, style, seed)]


def start_key(preset: Preset, recipe: SFTAblations, trainer: SFTRecipe) -> str:
    """What shapes the start's weights: model, tokenizer, tasks, seed, its own sizes and threads, the trainer's
    packing and precision, the training knobs it shares with the preset (schedule, decay, clipping, length)."""
    t = preset.train
    return recipe_hash(preset.model, preset.tokenizer, preset.tasks, preset.seed, preset.device, GENERATOR_VERSION,
                       START_VERSION, {"steps": recipe.start_steps, "batch_size": recipe.start_batch_size,
                                       "lr": recipe.start_lr, "threads": recipe.cpu_threads,
                                       "warmup_frac": t.warmup_frac, "weight_decay": t.weight_decay,
                                       "grad_clip": t.grad_clip, "max_seq_len": t.max_seq_len},
                       {"packing": trainer.packing, "pack_len": trainer.pack_len, "precision": trainer.precision},
                       # the corpus joins the key only when it is not the original one, so the answers starts
                       # cached and committed before start_corpus existed keep their keys
                       *([] if recipe.start_corpus == "answers" else [{"start_corpus": recipe.start_corpus}]),
                       *([] if recipe.start_lr_decay == "linear" else [{"start_lr_decay": recipe.start_lr_decay}]))


def train_start(preset: Preset, recipe: SFTAblations, trainer: SFTRecipe, tokenizer: ChatTokenizer,
                train_problems: Sequence[dict[str, Any]], *, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train the common start from scratch (float32 weights; bf16 autocast on GPU) and describe it."""
    from falcon_h1r.models import build_model, count_params

    device = pick_device(preset.device)
    seed_everything(preset.seed)
    if recipe.start_corpus == "chat":
        records = teacher_records(train_problems, "mixed", preset.seed)
        examples = examples_from_traces(records, tokenizer, preset.train.max_seq_len)
        docs = [f"{r['question']}\n{r['reasoning']}\n{r['final']}" for r in records]
    else:
        docs = start_corpus(train_problems, preset.tasks.teacher_style, preset.seed, recipe.start_corpus)
        examples = examples_from_text(docs, tokenizer, preset.train.max_seq_len)
    cfg = replace(preset.train, steps=recipe.start_steps, batch_size=recipe.start_batch_size, lr=recipe.start_lr,
                  eval_every=0, log_every=max(1, recipe.start_steps // 20))
    with torch_threads(recipe.cpu_threads, device):
        model = build_model(preset.model, tokenizer.vocab_size, seed=preset.seed, pad_id=tokenizer.pad_id,
                            eos_id=tokenizer.eos_id, dtype=torch.float32).to(device)
        hist = train_sft(model, examples, cfg, pad_id=tokenizer.pad_id, seed=preset.seed, progress=progress,
                         desc=f"ablation start ({START_KINDS[recipe.start_corpus]})",
                         recipe=replace(trainer, loss_norm="balanced", ranks=1, shard="contiguous", save_every=0),
                         lr_decay=recipe.start_lr_decay)
    info = {"kind": START_KINDS[recipe.start_corpus], "documents": len(docs), "steps": recipe.start_steps,
            "batch_size": recipe.start_batch_size, "lr": recipe.start_lr, "lr_decay": recipe.start_lr_decay, "tokens": hist.tokens,
            "train_wall_s": round(hist.wall_s, 2), "params": count_params(model), "seed": preset.seed,
            "loss_first": hist.loss[0], "loss_last": hist.loss[-1],
            "loss_curve": {"step": hist.steps, "loss": hist.loss}, "cpu_threads": recipe.cpu_threads,
            "cpu_model": cpu_model(), "device": str(device), "example_document": docs[0]}
    return model.eval(), info


def get_start(preset: Preset, recipe: SFTAblations, trainer: SFTRecipe, tokenizer: ChatTokenizer,
              train_problems: Sequence[dict[str, Any]], *, root: Path, progress: bool = True
              ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The cached common start (trained on first use; written to a private folder, then renamed, so parallel
    workers and interrupted runs never see half a checkpoint)."""
    from transformers import FalconH1ForCausalLM

    from falcon_h1r.models import save_model
    from falcon_h1r.results import read_json

    key = start_key(preset, recipe, trainer)
    path = cache_dir(preset, root) / f"sft-start-{key}"
    device = pick_device(preset.device)
    if (path / "falcon_h1r.json").exists():
        model = FalconH1ForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(device).eval()
        return model, read_json(path / "falcon_h1r.json")
    t0 = time.time()
    model, info = train_start(preset, recipe, trainer, tokenizer, train_problems, progress=progress)
    info.update(key=key, total_wall_s=round(time.time() - t0, 2), recipe=to_dict(recipe))
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    save_model(model, None, tmp, extra=info)
    if path.exists():  # another worker finished first: keep its copy, use ours (identical by construction)
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    return model, info


def describe_start(info: dict[str, Any]) -> str:
    """One line for summary.json's ``ablation_start``."""
    what = {START_KINDS["traces"]: f"question+worked-solution documents of both teachers ({info['tokens']:,} tokens, "
                                   f"no chat turn, no <think>)",
            START_KINDS["chat"]: f"chat-format SFT on clean worked solutions of both teachers for the base-training "
                                 f"problems ({info['tokens']:,} tokens; no arm's or held-out problem)",
            }.get(info["kind"], f"question+answer documents ({info['tokens']:,} tokens, no reasoning trace)")
    sched = " at a constant rate (a mid-run checkpoint)" if info.get("lr_decay") == "constant" else ""
    return (f"{info['kind']}: {info['steps']} steps x {info['batch_size']} {what} from scratch{sched}; "
            f"every arm starts here")


__all__ = ["POOL_VERSION", "START_KINDS", "START_VERSION", "ablation_levels", "ablation_problems", "held_out_problems", "curate_pool", "curation_recipe", "describe_start",
           "get_start", "pool_key", "pool_records", "problem_pass_rates", "start_corpus", "start_key", "teacher_pool",
           "train_start"]
