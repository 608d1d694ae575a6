"""Run SFT data-parallel under torchrun (plain DDP or DeepSpeed ZeRO-2/3), from scratch or from a Hugging Face
checkpoint, and check it against one process.

Three commands:

    # a random-weight checkpoint at Falcon-H1R-7B's shapes (8 of its 44 layers) with the preset's tokenizer
    python scripts/sft_ddp.py make-checkpoint --preset small --layers 8 --out /tmp/fh1r7b-8l

    # one run: every rank takes its shard of each global batch (NCCL on GPU, gloo on CPU); from a checkpoint with
    # the paper's Table 1 recipe (recipes/sft/paper_scale.yaml) under ZeRO-3, checkpointed every 50 steps
    torchrun --nproc_per_node 8 scripts/sft_ddp.py worker --preset small --from-checkpoint /ckpt/Falcon-H1R-7B \
        --recipe paper --engine deepspeed --zero 3 --checkpoint-dir /ckpt/run --save-every 50 \
        --out results/small/02_sft/zero3_checkpoint_sft.json

    # the multi-GPU check: the same recipe on 1 GPU (N accumulation steps) and on N GPUs (1 step each), so both
    # see identical micro-batches at the same global batch; reports per-GPU throughput and whether the curves match
    python scripts/sft_ddp.py check --preset small --gpus 2 --engine deepspeed --zero 3 --steps 100 \
        --out results/small/02_sft/multi_gpu_check.json

Without ``--from-checkpoint`` the model is the preset's hybrid built from scratch (same seed on every rank). The
data are the clean teacher traces of the preset's training problems, or ``--data`` (JSON lines with ``question``,
``reasoning``, ``final`` and an optional difficulty ``weight``). ``--recipe preset`` trains with the preset's train
and ``sft:`` blocks; ``--recipe paper`` with Table 1 (``--global-batch``/``--pack-len`` shrink it for short runs).
Under ZeRO-3 a checkpoint is loaded already partitioned; ``--checkpoint-dir`` with ``--save-every`` saves DeepSpeed
checkpoints that a rerun of the same command resumes exactly. The last stdout line of each command is one JSON
record. Launch files for one node, several nodes and Slurm: scripts/launch/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--override {p!r}: expected key=value, e.g. train.steps=50")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _records(args: argparse.Namespace, preset, problems_per_domain: int) -> list[dict]:
    if args.data:
        path = Path(args.data)
        if not path.exists():
            raise SystemExit(f"--data {path}: no such file (JSON lines with question, reasoning, final)")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        bad = [i for i, r in enumerate(rows) if not {"question", "reasoning", "final"} <= set(r)]
        if bad:
            raise SystemExit(f"--data {path}: lines {bad[:5]} lack question/reasoning/final")
        return rows
    from falcon_h1r.tasks import generate_split, teacher_records

    t = preset.tasks
    problems = generate_split(t.domains, t.difficulties, problems_per_domain, "train", preset.seed)
    return teacher_records(problems, t.teacher_style, preset.seed)


def _tokenizer(args: argparse.Namespace, preset, ctx):
    import torch.distributed as dist

    from falcon_h1r.sections.common import get_tokenizer
    from falcon_h1r.tokenizer import ChatTokenizer

    ckpt = Path(args.from_checkpoint) if args.from_checkpoint else None
    if ckpt is not None and ((ckpt / "tokenizer.json").exists() or (ckpt / "tokenizer_config.json").exists()):
        return ChatTokenizer.load(ckpt)
    # the preset's tokenizer is trained once (rank 0) and cached; the others wait, then read it
    if ctx.rank == 0:
        tok = get_tokenizer(preset)
    dist.barrier()
    return tok if ctx.rank == 0 else get_tokenizer(preset)


def rank_tokens(examples, cfg, recipe, world: int, rank: int, pad_id: int, seed: int, steps: int) -> dict:
    """The tokens this rank holds per step over the first ``steps`` steps (the balanced normalization's point is
    that ranks hold very different counts): the trainer's own data stream and split, replayed without training."""
    from falcon_h1r.sft import _DataStream, plan_step

    data, sup, inp = _DataStream(len(examples), seed), 0, 0
    pack_len = recipe.pack_len or cfg.max_seq_len
    for step in range(steps):  # the shard seed is train_sft's
        plan = plan_step(examples, data.take(cfg.batch_size), world, [rank], recipe, pad_id, pack_len,
                         shard_seed=seed * 1_000_003 + step)
        sup += sum(int((b["weights"][:, 1:] > 0).sum()) for b in plan[rank])
        inp += sum(int(b["input_ids"].numel()) for b in plan[rank])
    return {"supervised_tokens_per_step": sup / max(steps, 1), "input_tokens_per_step": inp / max(steps, 1),
            "steps_counted": steps}


def worker(args: argparse.Namespace) -> dict:
    from falcon_h1r.scaleout.zero_sft import deepspeed_on_this_machine

    deepspeed_on_this_machine()
    import torch
    import torch.distributed as dist

    from falcon_h1r.config import load_preset
    from falcon_h1r.distributed import deepspeed_config, init_from_env, wrap_ddp
    from falcon_h1r.env import device_info, package_versions
    from falcon_h1r.models import build_model, load_checkpoint
    from falcon_h1r.scaleout.zero_sft import (ScaleSFTRecipe, checkpoint_summary, load_for_zero, make_engine,
                                              param_count)
    from falcon_h1r.sections.sft import load_recipe
    from falcon_h1r.sft import examples_from_traces, train_sft

    ctx = init_from_env(engine=args.engine)
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.world))
    preset = load_preset(args.preset, _overrides(args.override))
    device = torch.device(f"cuda:{ctx.local_rank}" if torch.cuda.is_available() else "cpu")
    tok = _tokenizer(args, preset, ctx)
    records = _records(args, preset, args.problems_per_domain or preset.tasks.train_per_domain)

    if args.recipe == "paper":
        scale = ScaleSFTRecipe.load(global_batch=args.batch_size or None, pack_len=args.pack_len or None,
                                    lr=args.lr or None)
        examples = examples_from_traces(records, tok, scale.max_seq_len)
        cfg, recipe = scale.trainer_configs(ctx.world, args.grad_accum, len(examples), steps=args.steps or None,
                                            save_every=args.save_every)
        grad_ckpt = scale.gradient_checkpointing if args.grad_ckpt is None else args.grad_ckpt
    else:
        examples = examples_from_traces(records, tok, preset.train.max_seq_len)
        cfg = replace(preset.train, steps=args.steps or preset.train.steps,
                      batch_size=args.batch_size or preset.train.batch_size, log_every=1, eval_every=0)
        if args.lr:
            cfg = replace(cfg, lr=args.lr)
        base_recipe = load_recipe(preset)
        recipe = replace(base_recipe, grad_accum=args.grad_accum, ranks=1, save_every=args.save_every,
                         pack_len=args.pack_len or base_recipe.pack_len)
        if args.engine == "deepspeed":
            recipe = replace(recipe, precision="fp32")  # DeepSpeed already runs the model in bf16
        grad_ckpt = bool(args.grad_ckpt)
    recipe = replace(recipe, shard=args.shard, loss_norm=args.norm or recipe.loss_norm)

    bf16 = device.type == "cuda"
    ds_cfg = None
    if args.engine == "deepspeed":
        ds_cfg = deepspeed_config(args.zero, micro_batch=max(1, cfg.batch_size // (ctx.world * args.grad_accum)),
                                  grad_accum=args.grad_accum, world=ctx.world, grad_clip=cfg.grad_clip, bf16=bf16)
    t_load = time.time()
    if args.from_checkpoint and ds_cfg is not None:
        model = load_for_zero(args.from_checkpoint, ds_cfg, dtype=torch.bfloat16 if bf16 else torch.float32,
                              device=device)
    elif args.from_checkpoint:
        model = load_checkpoint(args.from_checkpoint, dtype=torch.float32, device=str(device))
    else:
        model = build_model(preset.model, tok.vocab_size, seed=preset.seed, pad_id=tok.pad_id,
                            eos_id=tok.eos_id).to(device)
    load_s = time.time() - t_load
    if grad_ckpt:
        model.gradient_checkpointing_enable()
    n_params = param_count(model)
    if ds_cfg is not None:
        engine = make_engine(model, cfg, ds_cfg)
        ctx.ds_engine = engine
        wrapped = engine
    else:
        wrapped = wrap_ddp(model, ctx)
    marks = []  # (time, input tokens, supervised tokens) after each step, for throughput past the warm-up

    def mark(step: int, h) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append((time.time(), h.input_tokens, h.tokens))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    hist = train_sft(wrapped, examples, cfg, pad_id=tok.pad_id, seed=preset.seed, recipe=recipe, dist=ctx,
                     progress=ctx.is_main, desc=f"sft {args.engine} x{ctx.world}", on_step=mark,
                     checkpoint_dir=args.checkpoint_dir, resume=bool(args.checkpoint_dir), stop_after=args.stop_after)
    wall = time.time() - t0
    # the first steps compile the Triton kernels (about a minute on a fresh machine): time the rest
    mine = {"rank": ctx.rank, "wall_s": wall, "timed_steps": 0, "tokens_per_s": None, "supervised_tokens_per_s": None,
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
            "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / 1e9 if device.type == "cuda" else None}
    if len(marks) >= 2:
        skip = min(args.warmup_steps, len(marks) - 2)
        (ta, ia, sa), (tb, ib, sb) = marks[skip], marks[-1]
        mine.update(timed_steps=len(marks) - 1 - skip, tokens_per_s=(ib - ia) / ctx.world / (tb - ta),
                    supervised_tokens_per_s=(sb - sa) / ctx.world / (tb - ta))
    mine["tokens_held"] = rank_tokens(examples, cfg, recipe, ctx.world, ctx.rank, tok.pad_id, preset.seed,
                                      min(cfg.steps, 20))
    per_rank = [None] * ctx.world
    dist.all_gather_object(per_rank, mine)
    if args.save_model and ds_cfg is not None:
        ctx.ds_engine.save_16bit_model(args.save_model)  # ZeRO-3 gathers the shards (zero3.yaml says so)
        if ctx.is_main:
            tok.save(args.save_model)
    tps = [r["tokens_per_s"] for r in per_rank if r["tokens_per_s"] is not None]
    rec = {"kind": "sft_ddp_run", "preset": args.preset, "engine": args.engine,
           "zero": args.zero if args.engine == "deepspeed" else None, "world": ctx.world,
           "from_checkpoint": str(args.from_checkpoint) if args.from_checkpoint else None, "recipe": args.recipe,
           "checkpoint": checkpoint_summary(args.from_checkpoint) if args.from_checkpoint else None,
           "grad_accum": args.grad_accum, "global_batch": cfg.batch_size, "steps": cfg.steps,
           "steps_done": hist.steps_done, "resumed_from": hist.resumed_from, "pack_len": recipe.pack_len,
           "loss_norm": recipe.loss_norm, "shard": recipe.shard, "packing": recipe.packing, "lr_peak": cfg.lr,
           "gradient_checkpointing": grad_ckpt, "bf16": bf16, "params": n_params, "load_s": load_s,
           "examples": len(examples), "loss": hist.loss, "lr": hist.lr, "per_rank": per_rank,
           "tokens_per_s_per_gpu": sum(tps) / len(tps) if tps else None,
           "rank_token_imbalance": (max(r["tokens_held"]["supervised_tokens_per_step"] for r in per_rank)
                                    / max(min(r["tokens_held"]["supervised_tokens_per_step"] for r in per_rank), 1e-9)),
           "peak_mem_gb_max": max((r["peak_mem_gb"] or 0) for r in per_rank) if bf16 else None,
           "note": "tokens_per_s: input tokens (padding included) per GPU, steps after --warmup-steps",
           "commit": os.environ.get("FALCON_H1R_COMMIT"), "device": device_info(), "packages": package_versions()}
    if ctx.is_main and args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    return rec


def make_checkpoint(args: argparse.Namespace) -> dict:
    """A random-weight checkpoint at Falcon-H1R-7B's shapes (``--layers`` of 44), or at the preset's own
    architecture (``--arch preset``), with the preset's tokenizer."""
    import torch

    from falcon_h1r.config import load_preset
    from falcon_h1r.models import falcon_config
    from falcon_h1r.scaleout.zero_sft import make_random_checkpoint
    from falcon_h1r.sections.common import get_tokenizer

    preset = load_preset(args.preset, _overrides(args.override))
    tok = get_tokenizer(preset)
    config = None
    if args.arch == "preset":
        config = falcon_config(preset.model, tok.vocab_size, pad_id=tok.pad_id, eos_id=tok.eos_id)
    t0 = time.time()
    dtype = torch.float32 if args.arch == "preset" else torch.bfloat16
    path = make_random_checkpoint(args.out, tok, num_layers=args.layers, config=config, dtype=dtype, seed=args.seed,
                                  device="cuda" if torch.cuda.is_available() else "cpu")
    size = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
    return {"kind": "random_checkpoint", "path": str(path), "arch": args.arch, "layers": args.layers,
            "bytes": size, "wall_s": time.time() - t0}


def check(args: argparse.Namespace) -> dict:
    """The recipe on 1 GPU and on ``--gpus`` GPUs at the same global batch; compare the loss curves."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = {}
    for n, accum in ((1, args.gpus), (args.gpus, 1)):
        path = out.with_name(f"{out.stem}_{n}gpu.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               str(Path(__file__).resolve()), "worker", "--preset", args.preset, "--engine", args.engine,
               "--zero", str(args.zero), "--grad-accum", str(accum), "--out", str(path), "--recipe", args.recipe,
               "--shard", args.shard]
        for flag, val in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--norm", args.norm),
                          ("--problems-per-domain", args.problems_per_domain), ("--pack-len", args.pack_len),
                          ("--from-checkpoint", args.from_checkpoint), ("--data", args.data)):
            if val:
                cmd += [flag, str(val)]
        for o in args.override or []:
            cmd += ["--override", o]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        runs[n] = json.loads(path.read_text())
    a, b = runs[1]["loss"], runs[args.gpus]["loss"]
    diffs = [abs(x - y) for x, y in zip(a, b)]
    rel = [d / max(abs(x), 1e-8) for d, x in zip(diffs, a)]
    rec = {"kind": "sft_multi_gpu_check", "preset": args.preset, "engine": args.engine, "zero": args.zero,
           "gpus": args.gpus, "global_batch": runs[1]["global_batch"], "steps": len(a),
           "from_checkpoint": runs[1]["from_checkpoint"], "loss_norm": runs[1]["loss_norm"], "shard": args.shard,
           "loss_1gpu": a, f"loss_{args.gpus}gpu": b, "max_abs_loss_diff": max(diffs),
           "max_rel_loss_diff": max(rel), "final_loss_1gpu": a[-1], f"final_loss_{args.gpus}gpu": b[-1],
           "curves_match": max(rel) <= args.tolerance, "tolerance_rel": args.tolerance,
           "tokens_per_s_per_gpu_1gpu": runs[1]["tokens_per_s_per_gpu"],
           f"tokens_per_s_per_gpu_{args.gpus}gpu": runs[args.gpus]["tokens_per_s_per_gpu"],
           "per_rank": runs[args.gpus]["per_rank"], "device": runs[args.gpus]["device"]}
    out.write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("worker", "check"):
        p = sub.add_parser(name)
        p.add_argument("--preset", default="small")
        p.add_argument("--engine", choices=["ddp", "deepspeed"], default="ddp")
        p.add_argument("--zero", type=int, choices=[2, 3], default=2)
        p.add_argument("--recipe", choices=["preset", "paper"], default="preset",
                       help="preset: the preset's train/sft blocks; paper: Table 1 (recipes/sft/paper_scale.yaml)")
        p.add_argument("--from-checkpoint", default=None, help="a Hugging Face checkpoint directory (never downloaded)")
        p.add_argument("--data", default=None, help="JSON lines of question/reasoning/final[/weight] (default: the "
                                                    "preset's teacher traces)")
        p.add_argument("--steps", type=int, default=0, help="0: the recipe's (preset train.steps, or paper epochs)")
        p.add_argument("--batch-size", type=int, default=0, help="global batch (samples); 0: the recipe's")
        p.add_argument("--pack-len", type=int, default=0, help="packed row length; 0: the recipe's")
        p.add_argument("--norm", choices=["sequence", "rank_token", "balanced"], default=None)
        p.add_argument("--shard", choices=["contiguous", "by_length", "random"], default="contiguous",
                       help="how a global batch splits over ranks (by_length: very unequal token counts)")
        p.add_argument("--problems-per-domain", type=int, default=0, help="0: tasks.train_per_domain")
        p.add_argument("--override", action="append", help="preset override key=value (repeatable)")
        p.add_argument("--out", default="")
    w = sub.choices["worker"]
    w.add_argument("--grad-accum", type=int, default=1)
    w.add_argument("--lr", type=float, default=0.0)
    w.add_argument("--checkpoint-dir", default=None, help="save here every --save-every steps; a rerun resumes")
    w.add_argument("--save-every", type=int, default=0)
    w.add_argument("--stop-after", type=int, default=None, help="end after this many steps, as a kill would")
    w.add_argument("--save-model", default=None, help="DeepSpeed: write the trained model (16-bit) and tokenizer")
    w.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=None,
                   help="activation checkpointing (default: the paper recipe's, off for the preset)")
    w.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the throughput (Triton compile)")
    c = sub.choices["check"]
    c.add_argument("--gpus", type=int, default=2)
    c.add_argument("--tolerance", type=float, default=0.02, help="max relative loss difference (bf16 noise)")
    m = sub.add_parser("make-checkpoint")
    m.add_argument("--preset", default="small")
    m.add_argument("--arch", choices=["falcon-h1r-7b", "preset"], default="falcon-h1r-7b")
    m.add_argument("--layers", type=int, default=44, help="layers of Falcon-H1R-7B's 44 (falcon-h1r-7b arch)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--override", action="append")
    m.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "check" and not args.out:
        args.out = str(ROOT / "results" / args.preset / "02_sft" / "multi_gpu_check.json")
    if args.cmd == "make-checkpoint":
        rec = make_checkpoint(args)
    else:
        rec = worker(args) if args.cmd == "worker" else check(args)
    if args.cmd != "worker" or int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in rec.items() if k not in ("device", "packages", "lr")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
