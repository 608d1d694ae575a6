"""Paper-preset smoke run: the paper preset's whole path on random weights, each notebook at ``--preset paper``.

It saves (1) a random-weight checkpoint of the Falcon-H1R-7B architecture (``--layers N``: the first N of its 44
layers at the real widths, vocabulary and multipliers; ``--layers 0``: a microscopic hybrid for CPUs) with a
tokenizer and chat template of the real format (``<|im_start|>`` turns, ``<think>`` ... ``</think>``), (2) a
random Llama Guard 3 (LlamaForCausalLM; ``--guard-layers`` of Llama-Guard-3-8B's shapes, 0: microscopic) with a
chat template of Llama Guard 3's kind, (3) the package's fixture benchmarks in their public formats and (4) a
local copy of every Table 10 safety subset (a few prompts each); then it runs the six notebooks at
``--preset paper`` with overrides that point at those files and shrink K, lengths and counts
(:func:`smoke_overrides`), into a results folder of its own. Outputs are meaningless; the path is the real one.

Last it measures, in this process, the checkpoint's pass@1 path on every fixture benchmark with the paper's
per-benchmark protocol (capped) and its decode tokens/s, and writes ``<out>/summary.json``: ``sections_ok``,
``falcon_h1r_7b_layers``, per-section wall time and peak memory, tokens/s, provenance. The summary is rewritten
after every section, so a run stopped by a time limit still leaves its record.

    python scripts/paper_smoke.py --layers 0 --device cpu --out /tmp/smoke          # CPU, seconds per notebook
    python scripts/paper_smoke.py --layers 12 --guard-layers 4 --device cuda          # one H200, real widths
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURE_BENCHMARKS = ROOT / "tests" / "fixtures" / "benchmarks"
BENCHMARKS = ["aime24", "aime25", "hmmt25", "amo_bench", "math500", "gpqa_diamond", "livecodebench_v6"]


# ============================================================================== the files
def write_smoke_files(work: Path, *, layers: int, guard_layers: int, device: str) -> dict[str, str]:
    """Checkpoints, benchmarks and safety suites under ``work`` (reused when already there)."""
    import torch

    from falcon_h1r.models import falcon_h1r_7b_config
    from falcon_h1r.random_checkpoints import (falcon_style_tokenizer, llama_guard_3_8b_config,
                                               llama_guard_style_tokenizer, save_random_checkpoint,
                                               tiny_falcon_config, tiny_llama_config)

    work.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    files = {"checkpoint": work / f"falcon-h1r-{layers}l", "llama_guard": work / f"llama-guard-{guard_layers}l",
             "benchmarks": work / "benchmarks", "safety": work / "safety"}
    if not (files["benchmarks"] / "aime24.jsonl").exists():
        shutil.copytree(FIXTURE_BENCHMARKS, files["benchmarks"], dirs_exist_ok=True)
    if not (files["checkpoint"] / "config.json").exists():
        corpus = [f.read_text(errors="replace") for f in sorted(files["benchmarks"].rglob("*.*"))]
        tok = falcon_style_tokenizer(corpus + _task_texts(), vocab_size=2048)
        config = falcon_h1r_7b_config(layers) if layers else tiny_falcon_config(len(tok))
        save_random_checkpoint(files["checkpoint"], config, tok, dtype=dtype, device=device,
                               stop_tokens=["<|im_end|>"])
    if not (files["llama_guard"] / "config.json").exists():
        tok = llama_guard_style_tokenizer(vocab_size=512)
        config = llama_guard_3_8b_config(guard_layers) if guard_layers else tiny_llama_config(len(tok))
        save_random_checkpoint(files["llama_guard"], config, tok, dtype=dtype, device=device)
    write_safety_suites(files["safety"])
    return {k: str(v) for k, v in files.items()}


def _task_texts() -> list[str]:
    from falcon_h1r.tasks import make_task_sets

    sets = make_task_sets(["math", "code", "science"], [1, 2], 20, 2, 0)
    return [p["question"] for p in sets["train"]] + ["\\boxed{42} </think> Answer: C ```python\nprint(1)\n```"]


def write_safety_suites(root: Path, per_suite: int = 2) -> None:
    """Every Table 10 subset as a local ``save_to_disk`` copy holding a few of the package's built-in prompts,
    in the subset's own column (and split)."""
    import datasets

    from falcon_h1r.safety import SUITES, load_builtin_prompts

    prompts = [r["prompt"] for r in load_builtin_prompts()]
    for i, (key, spec) in enumerate(SUITES.items()):
        path = root / key
        if (path / "dataset_dict.json").exists():
            continue
        texts = [prompts[(i * per_suite + j) % len(prompts)] for j in range(per_suite)]
        data = {spec.text_columns[0]: texts}
        if spec.context_column:
            data[spec.context_column] = ["Context: a short article."] * per_suite
        datasets.DatasetDict({spec.split or "train": datasets.Dataset.from_dict(data)}).save_to_disk(str(path))


# ============================================================================== the overrides
def smoke_overrides(files: dict[str, str], *, device: str, layers: int = 0) -> dict[str, Any]:
    """The paper preset pointed at the smoke files, with K, lengths and counts shrunk (on a GPU, longer
    generations and the throughput study at ``layers`` layers of both architectures); every other value stays
    the paper's."""
    gpu = device == "cuda"
    new = 64 if gpu else 8
    study = {"throughput.falcon_layers": layers, "throughput.qwen3_layers": max(1, round(layers * 36 / 44))} \
        if gpu and layers else {}
    return {**study,
        "device": device, "dtype": "bfloat16" if device == "cuda" else "float32",
        "model.checkpoint": files["checkpoint"], "tokenizer.path": None,
        "tasks.train_per_domain": 6, "tasks.test_per_domain": 3, "tasks.difficulties": [1, 2],
        "generation.max_new_tokens": new, "generation.batch_size": 16,
        "eval.n_samples": 2, "eval.problems_per_domain": 2, "eval.benchmarks": BENCHMARKS,
        "eval.benchmark_dir": files["benchmarks"], "eval.benchmark_limit": 2, "eval.allow_pickle": True,
        # 01: teacher rollouts, RL pool, pass-rate rollouts
        "curation.teacher_rollouts": 2, "curation.rl_pool_per_domain": 2, "curation.pass_rate_k": 2,
        "curation.sft_pass_rate_k": 2, "curation.pass_rate_max_new_tokens": new, "curation.code_workers": 2,
        "curation.rollout_batch_size": 16, "curation.majority_drop_at_least": 2,
        # 03: one short curriculum, two prompts x two rollouts, no attack suite
        "rl_experiments.steps": 1, "rl_experiments.curricula": ["math_only"], "rl_experiments.strategy_steps": 1,
        "rl_experiments.strategies_compared": ["backfill", "reject"], "rl_experiments.eval_problems_per_domain": 2,
        "rl_experiments.eval_samples": 1, "rl_experiments.pool_per_domain": 4, "rl_experiments.attack_suite": False,
        "rl_experiments.resumable": False,
        "rl.group_size": 2, "rl.batch_prompts": 2, "rl.gen_prompts_per_call": 2, "rl.max_gen_calls_per_step": 2,
        "rl.max_new_tokens": new, "rl.micro_batch_seqs": 1, "rl.cache_size": 4,
        "rl.trainer_dtype": "bfloat16" if device == "cuda" else "float32",
        "rl.rewards.science_judge": "numeric", "rl.rewards.reward_workers": 2,
        # 04: the study at one short setting (GPU), the engine check on the checkpoint
        "throughput.batch_sizes": [2, 8], "throughput.settings": {"512->1K": [512, 1024]},
        "throughput.positions": 2, "throughput.timed_steps": 2, "throughput.prefill_tokens": 1024,
        "throughput.hf_batch": 8, "throughput.hf_new_tokens": 4, "throughput.copy_gib": 1.0,
        "throughput.check_prompts": 2, "throughput.check_new_tokens": 4,
        # 05: DeepConf with K = 8 traces and a 16-trace pool
        "deepconf.n_init": 4, "deepconf.budget": 8, "deepconf.window": 4, "deepconf.tail_tokens": 4,
        "deepconf.online_batch_size": 8, "deepconf_experiments.budgets": [8], "deepconf_experiments.pool_size": 8,
        "deepconf_experiments.n_resamples": 4, "deepconf_experiments.max_problems": 2,
        "deepconf_experiments.live_problems": 1,
        # 06: every subset (two prompts each), Llama Guard from disk
        "safety.max_new_tokens": new, "safety.judge": files["llama_guard"], "safety.data_dir": files["safety"],
        "safety.max_prompts_per_suite": 1, "safety.batch_size": 8, "safety.judge_chunk": 64,
    }


# ============================================================================== running and measuring
class PeakMemory:
    """Peak resident memory of this process's descendants (the notebook kernels) and peak GPU memory in use
    (nvidia-smi), polled every ``every_s`` seconds while a section runs."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.rss, self.gpu_mib, self._stop = every_s, 0, 0, threading.Event()
        self._gpu = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        import subprocess

        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.rss = max(self.rss, sum(p.memory_info().rss for p in me.children(recursive=True)))
            except psutil.Error:
                pass
            if self._gpu:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout.split()
                self.gpu_mib = max([self.gpu_mib] + [int(x) for x in out if x.isdigit()])
            self._stop.wait(self.every_s)


def decode_measure(files: dict[str, str], overrides: dict[str, Any], *, new_tokens: int, batch: int) -> dict[str, Any]:
    """In this process: the checkpoint's pass@1 path on each fixture benchmark (paper protocol, capped), and
    its decode tokens/s at ``batch`` x ``new_tokens`` (``generation.engine`` auto)."""
    import torch

    from falcon_h1r.config import load_preset
    from falcon_h1r.evaluation import evaluate_benchmarks
    from falcon_h1r.inference import generate
    from falcon_h1r.sections.common import benchmark_problems, get_base_model

    cfg = load_preset("paper", overrides)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    base = get_base_model(cfg, progress=False)
    results = evaluate_benchmarks(base.model, base.tokenizer, benchmark_problems(cfg), cfg.generation,
                                  max_samples=cfg.eval.n_samples, max_new_tokens=cfg.generation.max_new_tokens,
                                  progress=False)
    problems = base.sets["test"]
    prompts = [base.tokenizer.prompt(problems[i % len(problems)]) for i in range(batch)]
    gen = replace(cfg.generation, temperature=0.6, top_p=0.95, max_new_tokens=new_tokens, batch_size=batch)
    generate(base.model, base.tokenizer, prompts, replace(gen, max_new_tokens=4), progress=False)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    comps = generate(base.model, base.tokenizer, prompts, gen, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    tokens = sum(c.num_tokens for c in comps)
    return {"benchmarks": {n: {k: v for k, v in r.record().items() if k != "per_problem"} for n, r in results.items()},
            "decode_batch": batch, "decode_new_tokens": new_tokens, "decode_tokens": tokens,
            "decode_wall_s": round(wall, 3), "decode_tokens_per_s": round(tokens / wall, 1),
            "params": base.info["params"], "thinking_markers": base.info["thinking_markers"],
            "peak_gpu_mem_gib_in_process": (torch.cuda.max_memory_allocated() / 2**30
                                            if torch.cuda.is_available() else None)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=0, help="Falcon-H1R-7B layers at the real widths (0: microscopic)")
    ap.add_argument("--guard-layers", type=int, default=0, help="Llama-Guard-3-8B layers (0: microscopic)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--work", default="/tmp/falcon_h1r_paper_smoke", help="where the checkpoints and data go")
    ap.add_argument("--out", default=str(ROOT / "results" / "paper" / "smoke"), help="summary.json goes here")
    ap.add_argument("--sections", nargs="*", default=None, help="e.g. 01 06 (default: all six)")
    ap.add_argument("--decode-tokens", type=int, default=256)
    ap.add_argument("--decode-batch", type=int, default=16)
    args = ap.parse_args(argv)
    if args.layers < 0 or args.layers > 44 or args.guard_layers < 0 or args.guard_layers > 32:
        print("paper_smoke: --layers must be in 0..44 and --guard-layers in 0..32", file=sys.stderr)
        return 2
    out = Path(args.out)
    results_root = Path(args.work) / "results"
    os.environ["FALCON_H1R_RESULTS"] = str(results_root)  # the notebooks' records stay out of results/
    # the notebook kernels import this checkout's package (not another installed copy)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p and p != "."])
    from falcon_h1r.cli import resolve_sections, run_notebook
    from falcon_h1r.env import env_snapshot
    from falcon_h1r.results import write_json

    t_all = time.time()
    files = write_smoke_files(Path(args.work), layers=args.layers, guard_layers=args.guard_layers, device=args.device)
    overrides = smoke_overrides(files, device=args.device, layers=args.layers)
    summary: dict[str, Any] = {
        "what": "paper-preset smoke run on RANDOM weights (outputs meaningless; the path is the real one)",
        "falcon_h1r_7b_layers": args.layers or None, "microscopic_model": args.layers == 0,
        "llama_guard_3_8b_layers": args.guard_layers or None, "device": args.device,
        "files_s": round(time.time() - t_all, 1), "sections": {}, "sections_ok": 0, "overrides": overrides,
        "command": "python scripts/paper_smoke.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    for section in resolve_sections(args.sections):
        t0 = time.time()
        with PeakMemory() as mem:
            try:
                run_notebook(section, "paper", parameters={"overrides": overrides}, root=results_root)
                row: dict[str, Any] = {"ok": True}
            except Exception as exc:  # recorded; the next section still runs
                row = {"ok": False, "error": (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:400]}
        row.update(wall_s=round(time.time() - t0, 1), peak_rss_gib=round(mem.rss / 2**30, 2),
                   peak_gpu_mem_gib=round(mem.gpu_mib / 1024, 2) if mem.gpu_mib else None)
        summary["sections"][section] = row
        summary["sections_ok"] = sum(r["ok"] for r in summary["sections"].values())
        print(f"[{'ok' if row['ok'] else 'FAILED'}] {section} in {row['wall_s']} s"
              + ("" if row["ok"] else f": {row['error']}"), file=sys.stderr, flush=True)
        write_json(out / "summary.json", {**summary, "total_wall_s": round(time.time() - t_all, 1)})
    t0 = time.time()
    summary.update(decode_measure(files, overrides, new_tokens=args.decode_tokens, batch=args.decode_batch))
    summary.update(measure_wall_s=round(time.time() - t0, 1), total_wall_s=round(time.time() - t_all, 1),
                   provenance=env_snapshot())
    write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("sections_ok", "falcon_h1r_7b_layers", "decode_tokens_per_s",
                                              "total_wall_s")}))
    return 0 if summary["sections_ok"] == len(summary["sections"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
