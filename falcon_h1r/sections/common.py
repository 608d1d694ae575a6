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
from dataclasses import dataclass
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
                  root: Path = RESULTS_ROOT) -> ChatTokenizer:
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
    model: torch.nn.Module
    tokenizer: ChatTokenizer
    sets: dict[str, list[dict[str, Any]]]
    info: dict[str, Any]  # accuracy before/after, wall time, params, cache path
    path: Path


def torch_dtype(preset: Preset) -> torch.dtype:
    return torch.bfloat16 if preset.dtype == "bfloat16" else torch.float32


def get_base_model(preset: Preset, *, root: Path = RESULTS_ROOT, progress: bool = True,
                   force: bool = False) -> BaseModel:
    """The preset's SFT base: trained from scratch on teacher traces (tiny/small), or loaded (paper).

    Records the held-out accuracy before and after training and the wall time in ``info``.
    """
    from falcon_h1r.evaluation import evaluate, majority_answer_baseline
    from falcon_h1r.models import build_model, count_params, load_checkpoint, save_model
    from falcon_h1r.sft import examples_from_traces, train_sft

    device = pick_device(preset.device)
    dtype = torch_dtype(preset)
    if preset.model.checkpoint:
        model = load_checkpoint(preset.model.checkpoint, dtype=dtype, device=device)
        tok = ChatTokenizer.load(preset.tokenizer.path or preset.model.checkpoint)
        return BaseModel(model, tok, {"train": [], "test": []}, {"source": preset.model.checkpoint},
                         Path(preset.model.checkpoint))

    sets = task_sets(preset)
    tok = get_tokenizer(preset, sets, root)
    key = recipe_hash(preset.model, preset.tokenizer, preset.tasks, preset.train, preset.seed, preset.dtype,
                      GENERATOR_VERSION)
    path = cache_dir(preset, root) / f"base-{key}"
    test = held_out(sets, preset)

    def untrained() -> torch.nn.Module:
        return build_model(preset.model, tok.vocab_size, seed=preset.seed, pad_id=tok.pad_id, eos_id=tok.eos_id,
                           dtype=dtype).to(device)

    def greedy_eval(m: torch.nn.Module) -> Any:
        return evaluate(m, tok, test, _eval_gen(preset), n_samples=1, seed=preset.seed, progress=progress)

    def accuracy_fields(before: Any, after: Any) -> dict[str, Any]:
        return {"greedy_acc_before": before.pass1, "greedy_acc_after": after.pass1,
                "greedy_acc_before_by_domain": before.pass1_by_domain,
                "greedy_acc_after_by_domain": after.pass1_by_domain,
                "majority_answer_baseline": majority_answer_baseline(sets["train"], test), "eval_problems": len(test)}

    if (path / "falcon_h1r.json").exists() and not force:
        from transformers import FalconH1ForCausalLM

        model = FalconH1ForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
        info = json.loads((path / "falcon_h1r.json").read_text())
        if info.get("eval_problems") != len(test):
            # The cache key covers what shapes the weights, not the evaluation: a changed
            # eval.problems_per_domain re-measures the accuracies instead of reporting stale ones.
            info.update(accuracy_fields(greedy_eval(untrained()), greedy_eval(model)))
            write_json(path / "falcon_h1r.json", info)
            write_json(path / "history.json", info)
        return BaseModel(model, tok, sets, info, path)

    seed_everything(preset.seed)
    model = untrained()
    t0 = time.time()
    before = greedy_eval(model)
    records = teacher_records(sets["train"], preset.tasks.teacher_style, preset.seed)
    examples = examples_from_traces(records, tok, preset.train.max_seq_len)
    hist = train_sft(model, examples, preset.train, pad_id=tok.pad_id, seed=preset.seed, progress=progress,
                     desc="base SFT")
    after = greedy_eval(model)
    info = {
        "preset": preset.name, "params": count_params(model), "train_wall_s": round(hist.wall_s, 2),
        "total_wall_s": round(time.time() - t0, 2), "train_tokens": hist.tokens, "steps": preset.train.steps,
        **accuracy_fields(before, after),
        "loss_curve": {"step": hist.steps, "loss": hist.loss}, "recipe_hash": key,
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
    return BaseModel(model.eval(), tok, sets, info, path)


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
    :func:`falcon_h1r.kernels.cuda_status`); paper needs a GPU and the checkpoint on disk.
    """
    from falcon_h1r.kernels import cuda_status

    if preset.name == "tiny" or preset.device == "cpu":
        return "compute"
    if not cuda_status().usable:
        return "render"
    if preset.model.checkpoint and not Path(preset.model.checkpoint).expanduser().is_dir():
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
