"""Run the SFT recipe data-parallel under torchrun (plain DDP or DeepSpeed ZeRO-2/3), and check it.

Two commands:

    # one run; every rank takes its shard of each global batch (NCCL on GPU, gloo on CPU)
    torchrun --nproc_per_node 2 scripts/sft_ddp.py worker --preset small --engine deepspeed --zero 2 \
        --out results/small/02_sft/ddp_run.json

    # the multi-GPU check: the same recipe on 1 GPU (2 accumulation steps) and on N GPUs (1 step each),
    # so both see identical micro-batches at the same global batch; reports per-GPU throughput and
    # whether the two loss curves match
    python scripts/sft_ddp.py check --preset small --gpus 2 --engine deepspeed --zero 2 --steps 100 \
        --out results/small/02_sft/multi_gpu_check.json

The model is the preset's hybrid built from scratch (same seed on every rank), trained on the clean
teacher traces of the preset's training problems with the preset's train block and its ``sft:``
block (packing, loss normalization). The last stdout line of each command is one JSON record.
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


def worker(args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from falcon_h1r.config import load_preset
    from falcon_h1r.distributed import deepspeed_config, init_from_env, wrap_ddp
    from falcon_h1r.env import device_info, package_versions
    from falcon_h1r.models import build_model, count_params
    from falcon_h1r.sections.sft import load_recipe
    from falcon_h1r.sft import examples_from_traces, linear_warmup_schedule, train_sft
    from falcon_h1r.tasks import teacher_records
    from falcon_h1r.sections.common import get_tokenizer
    from falcon_h1r.tasks import generate_split

    ctx = init_from_env(engine=args.engine)
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.world))
    preset = load_preset(args.preset, _overrides(args.override))
    device = torch.device(f"cuda:{ctx.local_rank}" if torch.cuda.is_available() else "cpu")
    # the tokenizer is trained once (rank 0) and cached; the others wait, then read it
    if ctx.rank == 0:
        tok = get_tokenizer(preset)
    dist.barrier()
    if ctx.rank != 0:
        tok = get_tokenizer(preset)
    t = preset.tasks
    per = args.problems_per_domain or t.train_per_domain
    problems = generate_split(t.domains, t.difficulties, per, "train", preset.seed)
    examples = examples_from_traces(teacher_records(problems, t.teacher_style, preset.seed), tok,
                                    preset.train.max_seq_len)
    cfg = replace(preset.train, steps=args.steps or preset.train.steps,
                  batch_size=args.batch_size or preset.train.batch_size, log_every=1, eval_every=0)
    if args.lr:
        cfg = replace(cfg, lr=args.lr)
    recipe = replace(load_recipe(preset), grad_accum=args.grad_accum, ranks=1, shard="contiguous",
                     loss_norm=args.norm or load_recipe(preset).loss_norm)
    model = build_model(preset.model, tok.vocab_size, seed=preset.seed, pad_id=tok.pad_id, eos_id=tok.eos_id).to(device)
    if args.engine == "deepspeed":
        import deepspeed

        bf16 = device.type == "cuda"
        ds_cfg = deepspeed_config(args.zero, micro_batch=max(1, cfg.batch_size // (ctx.world * args.grad_accum)),
                                  grad_accum=args.grad_accum, world=ctx.world, grad_clip=cfg.grad_clip, bf16=bf16)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=opt, config=ds_cfg,
            lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(
                o, lambda s: linear_warmup_schedule(s, cfg.steps, cfg.warmup_frac)))
        ctx.ds_engine = engine
        wrapped = engine
        recipe = replace(recipe, precision="fp32")  # DeepSpeed already runs the model in bf16
    else:
        wrapped = wrap_ddp(model, ctx)
    marks = []  # (time, input tokens, supervised tokens) after each step, for throughput past the warm-up

    def mark(step: int, h) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append((time.time(), h.input_tokens, h.tokens))

    t0 = time.time()
    hist = train_sft(wrapped, examples, cfg, pad_id=tok.pad_id, seed=preset.seed, recipe=recipe, dist=ctx,
                     progress=ctx.is_main, desc=f"sft {args.engine} x{ctx.world}", on_step=mark,
                     checkpoint_dir=args.checkpoint_dir, resume=bool(args.checkpoint_dir))
    wall = time.time() - t0
    # the first steps compile the Triton kernels (about a minute on a fresh machine): time the rest
    skip = min(args.warmup_steps, len(marks) - 2)
    (ta, ia, sa), (tb, ib, sb) = marks[skip], marks[-1]
    mine = {"rank": ctx.rank, "wall_s": wall, "timed_steps": len(marks) - 1 - skip,
            "tokens_per_s": (ib - ia) / ctx.world / (tb - ta),
            "supervised_tokens_per_s": (sb - sa) / ctx.world / (tb - ta),
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None}
    per_rank = [None] * ctx.world
    dist.all_gather_object(per_rank, mine)
    rec = {"kind": "sft_ddp_run", "preset": args.preset, "engine": args.engine,
           "zero": args.zero if args.engine == "deepspeed" else None, "world": ctx.world,
           "grad_accum": args.grad_accum, "global_batch": cfg.batch_size, "steps": cfg.steps,
           "loss_norm": recipe.loss_norm, "packing": recipe.packing, "params": count_params(model),
           "loss": hist.loss, "lr": hist.lr, "per_rank": per_rank,
           "tokens_per_s_per_gpu": sum(r["tokens_per_s"] for r in per_rank) / ctx.world,
           "note": "tokens_per_s: input tokens (padding included) per GPU, steps after --warmup-steps",
           "device": device_info(), "packages": package_versions()}
    if ctx.is_main and args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    return rec


def check(args: argparse.Namespace) -> dict:
    """The recipe on 1 GPU and on ``--gpus`` GPUs at the same global batch; compare the loss curves."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = {}
    for n, accum in ((1, args.gpus), (args.gpus, 1)):
        path = out.with_name(f"{out.stem}_{n}gpu.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               str(Path(__file__).resolve()), "worker", "--preset", args.preset, "--engine", args.engine,
               "--zero", str(args.zero), "--grad-accum", str(accum), "--out", str(path)]
        for flag, val in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--norm", args.norm),
                          ("--problems-per-domain", args.problems_per_domain)):
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
        p.add_argument("--steps", type=int, default=0, help="0: the preset's train.steps")
        p.add_argument("--batch-size", type=int, default=0, help="global batch (samples); 0: train.batch_size")
        p.add_argument("--norm", choices=["sequence", "rank_token", "balanced"], default=None)
        p.add_argument("--problems-per-domain", type=int, default=0, help="0: tasks.train_per_domain")
        p.add_argument("--override", action="append", help="preset override key=value (repeatable)")
        p.add_argument("--out", default="")
    w = sub.choices["worker"]
    w.add_argument("--grad-accum", type=int, default=1)
    w.add_argument("--lr", type=float, default=0.0)
    w.add_argument("--checkpoint-dir", default=None, help="save/resume here (DDP; sft.save_every)")
    w.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the throughput (Triton compile)")
    c = sub.choices["check"]
    c.add_argument("--gpus", type=int, default=2)
    c.add_argument("--tolerance", type=float, default=0.02, help="max relative loss difference (bf16 noise)")
    args = ap.parse_args(argv)
    if args.cmd == "check" and not args.out:
        args.out = str(ROOT / "results" / args.preset / "02_sft" / "multi_gpu_check.json")
    rec = worker(args) if args.cmd == "worker" else check(args)
    if args.cmd == "check" or int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in rec.items() if k not in ("device", "packages", "lr")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
