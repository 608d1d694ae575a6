"""What every section shares: the preset's task sets, its tokenizer and its SFT base model (each computed
once and cached by a hash of the recipe values that shape it), the one cache helper, the held-out selection,
the torch thread setting for small CPU models, and whether this machine computes a preset or renders its
committed records.

The cache lives in ``results/<preset>/_cache/`` (git-ignored); deleting it reruns the stage. At the
paper preset the base is the real checkpoint loaded from ``model.checkpoint``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from falcon_h1r.config import PRESETS, Preset, RecipeError, to_dict
from falcon_h1r.env import pick_device, seed_everything
from falcon_h1r.results import RESULTS_ROOT, SectionWriter, read_json, write_json
from falcon_h1r.tasks import GENERATOR_VERSION, make_task_sets, teacher_records
from falcon_h1r.tokenizer import ChatTokenizer, format_response, train_tokenizer

T = TypeVar("T")


def cache_dir(preset: Preset, root: Path = RESULTS_ROOT) -> Path:
    return Path(root) / preset.name / "_cache"


def recipe_hash(*parts: Any) -> str:
    """A short hash of recipe values (dataclasses, dicts, numbers): the key of a cached stage."""
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached_json(path: str | Path | None, compute: Callable[[], T]) -> T:
    """The one cache of the sections' JSON-able stages: ``compute()`` once, kept at ``path`` (atomic write);
    later calls read it back. ``path`` None computes without caching."""
    if path is None:
        return compute()
    path = Path(path)
    if path.exists():
        return read_json(path)
    value = compute()
    write_json(path, value)
    return value


@contextlib.contextmanager
def torch_threads(n: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run with ``n`` torch threads when ``device`` is the CPU (0: unchanged), restoring the count after.

    Why: a tiny model's step is a hundred small ops, where OpenMP threads cost more than they bring, and on a
    shared machine spinning threads made it far worse (64 traces x 96 tokens of the tiny model took 2.2 s with
    one thread and 20-30 s with two while other jobs ran).
    """
    before = torch.get_num_threads()
    if n and torch.device(device).type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def task_sets(preset: Preset) -> dict[str, list[dict[str, Any]]]:
    t = preset.tasks
    return make_task_sets(t.domains, t.difficulties, t.train_per_domain, t.test_per_domain, preset.seed)


def tokenizer_corpus(sets: dict[str, list[dict[str, Any]]], seed: int) -> list[str]:
    """Questions and teacher responses of the training set (both styles), for BPE training."""
    recs = teacher_records(sets["train"], "mixed", seed)
    return [r["question"] for r in recs] + [format_response(r["reasoning"], r["final"]) for r in recs]


def get_tokenizer(preset: Preset, sets: dict[str, list[dict[str, Any]]] | None = None,
                  root: Path = RESULTS_ROOT) -> Any:
    """The preset's tokenizer: a checkpoint's prompt builder (its own tokenizer and chat template), a saved
    ChatTokenizer (``tokenizer.path``), or the package's BPE trained on the task corpus (cached)."""
    if preset.model.checkpoint:
        from falcon_h1r.prompts import load_prompt_builder

        return load_prompt_builder(preset.tokenizer.path or preset.model.checkpoint)
    if preset.tokenizer.path:
        return ChatTokenizer.load(preset.tokenizer.path)
    key = recipe_hash(preset.tokenizer, preset.tasks, preset.seed, GENERATOR_VERSION)
    path = cache_dir(preset, root) / f"tokenizer-{key}"
    if (path / "tokenizer.json").exists():
        return ChatTokenizer.load(path)
    sets = sets or task_sets(preset)
    tok = train_tokenizer(tokenizer_corpus(sets, preset.seed), preset.tokenizer.vocab_size)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tok.save(tmp)
    if not path.exists():
        os.replace(tmp, path)
    else:
        shutil.rmtree(tmp)
    return tok


@dataclass
class BaseModel:
    """A preset's base model. ``tokenizer`` is the package's ChatTokenizer (tiny, small) or, for a checkpoint,
    its :class:`falcon_h1r.prompts.PromptBuilder` (``prompt``, ``encode``, ``decode``, ``eos_id``, ``pad_id``,
    ``split``, ``stop_token_ids``); ``info["checkpoint"]`` is true for a loaded checkpoint, whose ``info`` has no
    training fields (it was not trained here: see :func:`checkpoint_base`)."""

    model: torch.nn.Module
    tokenizer: Any
    sets: dict[str, list[dict[str, Any]]]
    info: dict[str, Any]  # accuracies (greedy before/after, sampled pass@1), wall time, params, trace lengths
    path: Path

    @property
    def seed(self) -> int:
        return int(self.info.get("seed", 0))


class StageIncomplete(RuntimeError):
    """A cached stage stopped at its time budget; its checkpoints are kept and the next call resumes them."""


def torch_dtype(preset: Preset) -> torch.dtype:
    return torch.bfloat16 if preset.dtype == "bfloat16" else torch.float32


def base_seeds(preset: Preset) -> list[int]:
    """The seeds of the preset's independently trained bases (``eval.base_seeds``); a checkpoint is one base."""
    return [preset.seed] if preset.model.checkpoint else list(preset.eval.base_seeds)


def base_training_recipe(preset: Preset) -> Any:
    """How the base SFT run trains: the preset's ``sft`` block (packing, normalization, precision), plus a
    checkpoint every tenth of the run so a long run goes in resumable pieces."""
    from falcon_h1r.sft import SFTRecipe

    recipe = preset.section("sft", SFTRecipe)
    return replace(recipe, save_every=max(1, preset.train.steps // 10), keep_checkpoints=1)


def sampled_eval_config(preset: Preset) -> Any:
    """The paper's sampling for pass@1 (the preset's generation block: T 0.6, top-p 0.95 as in paper §4.1)."""
    return preset.generation


def _pass1_fields(report: Any) -> dict[str, Any]:
    by_cell: dict[str, list[float]] = {}
    for r in report.per_problem:
        by_cell.setdefault(f"{r['domain']}/{r['difficulty']}", []).append(r["correct"] / r["n"])
    return {"pass1": report.pass1, "pass1_by_domain": report.pass1_by_domain,
            "pass1_by_domain_level": {k: sum(v) / len(v) for k, v in sorted(by_cell.items())},
            "pass1_by_difficulty": report.pass1_by_difficulty, "n_samples": report.n_samples,
            "per_problem": {r["id"]: r["correct"] / r["n"] for r in report.per_problem},
            "mean_response_tokens": report.mean_response_tokens}


def get_base_model(preset: Preset, *, seed: int | None = None, root: Path = RESULTS_ROOT, progress: bool = True,
                   force: bool = False, budget_s: float | None = None) -> BaseModel:
    """One of the preset's SFT bases: trained from scratch on teacher traces (tiny/small), or loaded (paper).

    ``seed`` picks the base (default: the preset's seed; see :func:`base_seeds`): the bases share the task sets
    and the tokenizer and differ in initialisation and data order. The run trains with
    ``train.cpu_threads`` torch threads on a CPU (recorded, and part of the cache key), checkpoints as it goes
    and, with ``budget_s``, stops at a checkpoint past that time and raises :class:`StageIncomplete` (call again
    to resume). ``info`` holds the held-out greedy accuracy before and after training, the sampled pass@1 at the
    paper's settings (per domain, per difficulty, per problem), the teacher traces' token lengths and the wall
    time.
    """
    from falcon_h1r.env import cpu_model
    from falcon_h1r.evaluation import evaluate, majority_answer_baseline
    from falcon_h1r.models import build_model, count_params, save_model
    from falcon_h1r.sft import examples_from_traces, train_sft
    from falcon_h1r.tasks import length_summary, trace_token_lengths

    seed = preset.seed if seed is None else seed
    device = pick_device(preset.device)
    dtype = torch_dtype(preset)
    if preset.model.checkpoint:
        return checkpoint_base(preset, seed=seed, device=device, dtype=dtype)

    sets = task_sets(preset)
    tok = get_tokenizer(preset, sets, root)
    trainer = base_training_recipe(preset)
    key = recipe_hash(preset.model, preset.tokenizer, preset.tasks, preset.train.key(), seed, preset.dtype,
                      GENERATOR_VERSION, trainer)
    path = cache_dir(preset, root) / f"base-{key}"
    test = held_out(sets, preset)
    threads = preset.train.cpu_threads

    def untrained() -> torch.nn.Module:
        return build_model(preset.model, tok.vocab_size, seed=seed, pad_id=tok.pad_id, eos_id=tok.eos_id,
                           dtype=dtype).to(device)

    def greedy_eval(m: torch.nn.Module) -> Any:
        return evaluate(m, tok, test, _eval_gen(preset), n_samples=1, seed=seed, progress=progress)

    def sampled_eval(m: torch.nn.Module) -> dict[str, Any]:
        rep = evaluate(m, tok, test, sampled_eval_config(preset), n_samples=preset.eval.n_samples, seed=seed,
                       progress=progress, desc="pass@1 (T 0.6)")
        return _pass1_fields(rep)

    def accuracy_fields(before: Any, after: Any) -> dict[str, Any]:
        return {"greedy_acc_before": before.pass1, "greedy_acc_after": after.pass1,
                "greedy_acc_before_by_domain": before.pass1_by_domain,
                "greedy_acc_after_by_domain": after.pass1_by_domain,
                "majority_answer_baseline": majority_answer_baseline(sets["train"], test), "eval_problems": len(test)}

    def eval_key() -> dict[str, Any]:  # what the cached accuracies were measured with
        return {"eval_problems": len(test), "n_samples": preset.eval.n_samples,
                "generation": to_dict(sampled_eval_config(preset))}

    if (path / "falcon_h1r.json").exists() and not force:
        from transformers import FalconH1ForCausalLM

        try:
            model = FalconH1ForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
            info = read_json(path / "falcon_h1r.json")
        except Exception as exc:  # a truncated or corrupt cache entry: say which, and how to rebuild it
            raise CacheError(f"cached base model {path} cannot be loaded ({type(exc).__name__}: {str(exc)[:160]}); "
                             f"delete that folder and rerun (falcon-h1r reproduce --preset {preset.name}) to rebuild "
                             "it") from None
        if info.get("eval_key") != eval_key():
            # The cache key covers what shapes the weights, not the evaluation: re-measure instead of
            # reporting accuracies of another evaluation.
            with torch_threads(threads, device):
                info.update(accuracy_fields(greedy_eval(untrained()), greedy_eval(model)))
                info["sampled"] = sampled_eval(model)
            info["eval_key"] = eval_key()
            write_json(path / "falcon_h1r.json", info)
            write_json(path / "history.json", info)
        return BaseModel(model, tok, sets, info, path)

    ranks = preset.train.cpu_ranks if torch.device(device).type == "cpu" else 1  # real CPU processes (cpu_ranks)
    if ranks > 1 and budget_s is not None:  # before any work
        raise RecipeError(f"a base trained on train.cpu_ranks={ranks} CPU processes runs whole: a time budget needs "
                          "train.cpu_ranks=1")
    work = path.with_name(f"{path.name}.work")
    seed_everything(seed)
    with torch_threads(threads, device):
        model = untrained()
        t0 = time.time()
        before = greedy_eval(model)
        records = teacher_records(sets["train"], preset.tasks.teacher_style, preset.seed)
        examples = examples_from_traces(records, tok, preset.train.max_seq_len)
        if ranks > 1:
            from falcon_h1r.cpu_ranks import train_sft_on_cpu_ranks

            hist = train_sft_on_cpu_ranks(model, examples, preset.train, ranks=ranks, pad_id=tok.pad_id, seed=seed,
                                          recipe=trainer, checkpoint_dir=work, progress=progress,
                                          desc=f"base SFT (seed {seed}, {ranks} CPU ranks)")
        else:
            hist = train_sft(model, examples, preset.train, pad_id=tok.pad_id, seed=seed, progress=progress,
                             desc=f"base SFT (seed {seed})", recipe=trainer, checkpoint_dir=work, resume=True,
                             deadline=None if budget_s is None else time.time() + budget_s)
        if hist.steps_done < preset.train.steps:
            raise StageIncomplete(f"base model (seed {seed}) stopped at step {hist.steps_done} of "
                                  f"{preset.train.steps} on its time budget; its checkpoint is in {work}; run again "
                                  "to resume")
        after = greedy_eval(model)
        sampled = sampled_eval(model)
    lengths = length_summary(trace_token_lengths(records, tok))
    info = {
        "preset": preset.name, "seed": seed, "params": count_params(model), "train_wall_s": round(hist.wall_s, 2),
        "total_wall_s": round(time.time() - t0, 2), "train_tokens": hist.tokens, "steps": preset.train.steps,
        "resumed_from": hist.resumed_from, **accuracy_fields(before, after), "sampled": sampled,
        "eval_key": eval_key(), "trace_tokens": lengths, "cpu_threads": threads,
        "cpu_ranks": ranks, "cpu_model": cpu_model(),
        "device": str(device), "loss_curve": {"step": hist.steps, "loss": hist.loss}, "recipe_hash": key,
    }
    # Write into a private folder, then rename: a concurrent run or an interrupted one never leaves
    # a half-written cache entry behind.
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    save_model(model, tok, tmp, extra=info)
    write_json(tmp / "history.json", info)
    if path.exists() and force:
        shutil.rmtree(path)
    if path.exists():  # another process finished the same run first: keep its copy
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    shutil.rmtree(work, ignore_errors=True)
    return BaseModel(model.eval(), tok, sets, info, path)


# ============================================================================== a checkpoint as the base
def checkpoint_key(path: str | Path) -> str:
    """A short hash of a checkpoint directory: its config, tokenizer files and the names and sizes of its weight
    files (cheap at 15 GB; a re-downloaded copy of the same release keeps its key). Keys its cached stages."""
    path = Path(path).expanduser()
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in (".json", ".jinja", ".model", ".txt"):
            h.update(f.name.encode() + f.read_bytes())
        elif f.is_file() and f.suffix in (".safetensors", ".bin"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


def benchmark_problems(preset: Preset) -> dict[str, list[dict[str, Any]]]:
    """The preset's ``eval.benchmarks`` read from ``eval.benchmark_dir`` (``falcon_h1r.benchmarks``), the first
    ``eval.benchmark_limit`` problems of each (all by default)."""
    from falcon_h1r.benchmarks import load_benchmark

    e = preset.eval
    return {name: load_benchmark(name, e.benchmark_dir, limit=e.benchmark_limit, allow_pickle=e.allow_pickle)
            for name in e.benchmarks}


def checkpoint_base(preset: Preset, *, seed: int, device: Any, dtype: torch.dtype) -> BaseModel:
    """The base of a checkpoint preset (paper): the checkpoint's model, its prompt builder (own tokenizer and
    chat template, the paper's system prompt) as ``tokenizer``, and as ``sets`` the preset's synthetic training
    problems (what curation and the RL pools work on) with the paper's benchmarks as the test split. Every
    local file is checked first (:func:`falcon_h1r.sections.local_files.require_local_files`)."""
    from falcon_h1r.models import count_params, load_checkpoint
    from falcon_h1r.prompts import load_prompt_builder
    from falcon_h1r.sections.local_files import require_local_files

    require_local_files(preset)
    model = load_checkpoint(preset.model.checkpoint, dtype=dtype, device=device).eval()
    builder = load_prompt_builder(preset.tokenizer.path or preset.model.checkpoint)
    test = [p for problems in benchmark_problems(preset).values() for p in problems]
    sets = {"train": task_sets(preset)["train"], "test": test}
    info = {"source": str(preset.model.checkpoint), "seed": seed, "checkpoint": True, "params": count_params(model),
            "dtype": preset.dtype, "device": str(device), "recipe_hash": checkpoint_key(preset.model.checkpoint),
            "benchmarks": {name: sum(p["benchmark"] == name for p in test) for name in preset.eval.benchmarks},
            "thinking_markers": list(vars(builder.markers).values()) if builder.markers else None,
            "prompt_opens_thinking": builder.opens_thinking, "stop_token_ids": builder.stop_token_ids}
    return BaseModel(model, builder, sets, info, Path(preset.model.checkpoint))


def benchmark_results(preset: Preset, base: BaseModel, *, root: Path = RESULTS_ROOT,
                      progress: bool = True) -> dict[str, dict[str, Any]]:
    """pass@1 of a checkpoint base on each of ``eval.benchmarks`` with the paper's protocol
    (``falcon_h1r.evaluation.evaluate_benchmarks``; samples capped by ``eval.n_samples``, length by
    ``generation.max_new_tokens``), cached by the checkpoint, the problems and the sampling. One record per
    benchmark (``BenchmarkResult.record``)."""
    from falcon_h1r.evaluation import evaluate_benchmarks

    problems: dict[str, list[dict[str, Any]]] = {}
    for p in base.sets["test"]:
        problems.setdefault(p["benchmark"], []).append(p)
    key = recipe_hash(base.info.get("recipe_hash", str(base.path)), {k: [p["id"] for p in v] for k, v in problems.items()},
                      preset.eval.n_samples, preset.generation, preset.seed)

    def compute() -> dict[str, Any]:
        results = evaluate_benchmarks(base.model, base.tokenizer, problems, preset.generation,
                                      max_samples=preset.eval.n_samples,
                                      max_new_tokens=preset.generation.max_new_tokens, seed=preset.seed,
                                      progress=progress)
        return {name: r.record() for name, r in results.items()}

    return cached_json(cache_dir(preset, root) / f"benchmarks-{key}.json", compute)


def get_base_models(preset: Preset, *, root: Path = RESULTS_ROOT, progress: bool = True,
                    budget_s: float | None = None) -> list[BaseModel]:
    """Every base of :func:`base_seeds`, in order (each cached on its own)."""
    return [get_base_model(preset, seed=s, root=root, progress=progress, budget_s=budget_s) for s in base_seeds(preset)]


class CacheError(RuntimeError):
    """A cached stage that cannot be read; the message names it and how to rebuild it."""


def first_per_domain(problems: Sequence[dict[str, Any]], per_domain: int,
                     domains: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The first ``per_domain`` problems of each domain (of ``domains`` only, when given), in order: the one
    held-out selection every section uses."""
    out, seen = [], {}
    for p in problems:
        d = p["domain"]
        if (domains is None or d in domains) and seen.get(d, 0) < per_domain:
            out.append(p)
            seen[d] = seen.get(d, 0) + 1
    return out


def held_out(sets: dict[str, list[dict[str, Any]]], preset: Preset) -> list[dict[str, Any]]:
    """The first ``eval.problems_per_domain`` test problems of each domain."""
    return first_per_domain(sets["test"], preset.eval.problems_per_domain)


def _eval_gen(preset: Preset):
    from falcon_h1r.inference import greedy

    return greedy(preset.generation)


def run_mode(preset: Preset) -> str:
    """'compute' when this machine can run the preset, else 'render' from its committed records.

    tiny runs anywhere; small needs a usable CUDA GPU (the same test as the CLI's "no usable GPU" line:
    :func:`falcon_h1r.kernels.cuda_status`); paper needs a GPU and its local files. A checkpoint preset whose
    files are absent never renders: :class:`falcon_h1r.sections.local_files.LocalFilesMissing` names them.
    """
    from falcon_h1r.kernels import cuda_status
    from falcon_h1r.sections.local_files import require_local_files

    require_local_files(preset)
    if preset.name == "tiny" or preset.device == "cpu":
        return "compute"
    if not cuda_status().usable:
        return "render"
    return "compute"


@dataclass
class SectionRun:
    """One notebook's run: the resolved preset, whether this machine computes it or renders its committed
    records (:func:`run_mode`), and the writer of its results folder."""

    cfg: Preset
    mode: str  # "compute" | "render"
    writer: SectionWriter

    @property
    def computing(self) -> bool:
        return self.mode == "compute"


class ParameterError(RecipeError):
    """A notebook parameter papermill injected that the notebook does not take, or one of the wrong type."""


def _injected_parameter_names() -> set[str]:
    """Names assigned in papermill's injected ``# Parameters`` cell of the running notebook (read from the
    kernel's input history); empty outside a notebook or when nothing was injected."""
    import ast

    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        return set()
    shell = get_ipython()
    history = shell.user_ns.get("In", []) if shell is not None else []
    names: set[str] = set()
    for source in history:
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Assign):
                    names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def check_notebook_parameters(preset: Any, overrides: Any, allowed: Sequence[str] = ("preset", "overrides")) -> None:
    """Reject what papermill injected that this notebook does not take (a misspelled parameter would
    otherwise be ignored and the default preset run), and wrong types, naming what is accepted."""
    unknown = sorted(_injected_parameter_names() - set(allowed))
    if unknown:
        raise ParameterError(f"unknown notebook parameter {unknown[0]!r}; this notebook takes {', '.join(allowed)}")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ParameterError(f"parameter preset={preset!r}: expected one of {', '.join(PRESETS)}")
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ParameterError(f"parameter overrides={overrides!r}: expected a mapping of dotted keys to values, "
                             "e.g. {'train.steps': 600}")


def open_section(preset: str, section: str, overrides: dict[str, Any] | None = None, *,
                 root: Path = RESULTS_ROOT, parameters: Sequence[str] = ("preset", "overrides")) -> SectionRun:
    """Check the notebook's parameters, load the preset (with ``overrides``) and every section block of it,
    decide compute or render, and open the section's writer."""
    from falcon_h1r.sections.recipes import validate_preset

    overrides = {} if overrides is None else overrides
    check_notebook_parameters(preset, overrides, parameters)
    cfg = validate_preset(preset, overrides)
    mode = run_mode(cfg)
    writer = SectionWriter(preset, section, params=cfg.to_dict(), seed=cfg.seed, root=root,
                           mode="computed" if mode == "compute" else "rendered")
    return SectionRun(cfg, mode, writer)
