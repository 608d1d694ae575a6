"""Recipes: YAML presets read into typed dataclasses.

A preset (``tiny``, ``small``, ``paper``) is one YAML file under ``falcon_h1r/recipes/presets``.
Its core blocks (model, tokenizer, tasks, train, generation, eval) are typed here; each paper
section keeps its own block (``curation``, ``sft``, ``rl``, ``throughput``, ``deepconf``,
``safety``) typed by a dataclass in that section's module and parsed with :func:`parse`, so a
section's knobs live beside the code that uses them.

Validation is strict on purpose: an unknown key or a value of the wrong type is an error that
names the key path and what is accepted, never a silent default.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
PRESETS_DIR = RECIPES_DIR / "presets"
PRESETS = ("tiny", "small", "paper")
# Blocks a preset may carry that belong to a paper section's module.
SECTION_BLOCKS = ("curation", "sft", "sft_ablations", "rl", "rl_experiments", "throughput", "deepconf",
                  "deepconf_experiments", "safety")

T = TypeVar("T")


class RecipeError(ValueError):
    """A recipe key or value is wrong; the message names the key and what is accepted."""


# ----------------------------------------------------------------------------- generic parsing
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (and coerce ints to floats, lists to tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(f"{where}: {value!r} is not any of {[_type_name(a) for a in args]}")
    if origin is typing.Literal:
        if value not in args:
            raise RecipeError(f"{where}: {value!r} is not accepted; use one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return parse(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "3e-4" (no dot) as a string; accept numeric strings explicitly.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise RecipeError(
            f"unknown key {prefix}{unknown[0]!s}; {cls.__name__} accepts: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            key = f"{where}.{f.name}" if where else f.name
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise RecipeError(f"{where or cls.__name__}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for provenance records)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _positive(where: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise RecipeError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


# ----------------------------------------------------------------------------- core blocks
@dataclass
class ModelConfig:
    """Shapes of the hybrid model; the attention-only baseline is matched to it by parameters."""

    family: typing.Literal["falcon_h1", "qwen3"] = "falcon_h1"
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    intermediate_size: int = 128
    mamba_d_ssm: int = 64
    mamba_n_heads: int = 4
    mamba_d_state: int = 16
    mamba_d_conv: int = 4
    mamba_n_groups: int = 1
    mamba_chunk_size: int = 32
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    # A real checkpoint directory (paper preset); when set, the model is loaded, not built.
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "head_dim", "intermediate_size", "mamba_d_ssm", "mamba_n_heads", "mamba_d_state"):
            _positive(f"model.{name}", getattr(self, name))
        if self.num_attention_heads % self.num_key_value_heads:
            raise RecipeError("model.num_key_value_heads must divide model.num_attention_heads "
                              f"({self.num_attention_heads} % {self.num_key_value_heads} != 0)")
        if self.mamba_d_ssm % self.mamba_n_heads:
            raise RecipeError("model.mamba_n_heads must divide model.mamba_d_ssm "
                              f"({self.mamba_d_ssm} % {self.mamba_n_heads} != 0)")


@dataclass
class TokenizerConfig:
    vocab_size: int = 512
    # A tokenizer directory to load instead of training one (paper preset: the checkpoint's own).
    path: str | None = None

    def __post_init__(self) -> None:
        if self.vocab_size < 64:
            raise RecipeError(f"tokenizer.vocab_size: must be >= 64, got {self.vocab_size}")


@dataclass
class TasksConfig:
    """Procedurally generated, verifiable problems (see falcon_h1r.tasks)."""

    domains: list[str] = field(default_factory=lambda: ["math", "code", "science"])
    train_per_domain: int = 2000
    test_per_domain: int = 100
    # Difficulty levels 1-10 (falcon_h1r.tasks): one list for every domain, or a list per domain, so each
    # domain can be calibrated on its own (the small base should solve 20-80 % of every domain).
    difficulties: list[int] | dict[str, list[int]] = field(default_factory=lambda: [1, 2, 3])
    teacher_style: str = "stepwise"

    def __post_init__(self) -> None:
        bad = [d for d in self.domains if d not in ("math", "code", "science")]
        if bad or not self.domains:
            raise RecipeError(f"tasks.domains: {bad or self.domains} not accepted; use a non-empty subset of "
                              "['math', 'code', 'science']")
        lists = self.difficulties.values() if isinstance(self.difficulties, dict) else [self.difficulties]
        bad = [d for levels in lists for d in levels if d not in range(1, 11)]
        if bad or not all(lists) or not self.difficulties:
            raise RecipeError(f"tasks.difficulties: {bad or self.difficulties} not accepted; use levels from 1 to 10 "
                              "(one list, or one non-empty list per domain)")
        if isinstance(self.difficulties, dict):
            missing = [d for d in self.domains if d not in self.difficulties]
            extra = [d for d in self.difficulties if d not in self.domains]
            if missing or extra:
                raise RecipeError(f"tasks.difficulties: per-domain levels must name exactly the domains "
                                  f"{self.domains}; missing {missing}, unknown {extra}")
        if self.teacher_style not in ("stepwise", "terse", "mixed"):
            raise RecipeError(f"tasks.teacher_style: {self.teacher_style!r} not accepted; use 'stepwise', 'terse' or 'mixed'")
        _positive("tasks.train_per_domain", self.train_per_domain)
        _positive("tasks.test_per_domain", self.test_per_domain)

    def levels(self, domain: str) -> list[int]:
        """The difficulty levels of ``domain``."""
        return list(self.difficulties[domain] if isinstance(self.difficulties, dict) else self.difficulties)

    def all_levels(self) -> list[int]:
        """Every level any domain uses, sorted (for rules that read difficulty across domains)."""
        return sorted({lv for d in self.domains for lv in self.levels(d)})


# The learning-rate decays after the warm-up that falcon_h1r.sft's schedule accepts (sft_ablations.start_lr_decay
# picks one for the SFT ablations' common start): "linear" to 0 (paper Table 1) or "constant" (a mid-run checkpoint).
LR_DECAYS = ("linear", "constant")


@dataclass
class TrainConfig:
    """The base SFT run that trains the preset's model from scratch (or fine-tunes a checkpoint)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup_frac: float = 0.04  # paper Table 1: linear schedule, 4 % warm-up
    weight_decay: float = 0.01  # paper Table 1: AdamW, weight decay 0.01
    grad_clip: float = 1.0  # paper Table 1: gradient clipping 1.0
    max_seq_len: int = 256
    eval_every: int = 100
    log_every: int = 10
    # torch threads while a cached stage trains or evaluates on the CPU. Fixed here, not by whichever notebook
    # happens to build the cache first: the weights of a CPU run depend on the thread count (float sums are
    # reordered), so it is part of the cache key and the provenance. No effect on a GPU.
    cpu_threads: int = 2
    # data-parallel ranks on the CPU, one process of ``cpu_threads`` threads each (falcon_h1r.cpu_ranks): a tiny
    # model gains nothing from a second thread but two processes run side by side at full speed, so 2 ranks halve
    # the base run on a 2-core machine. Part of the cache key (the float sums are reordered). No effect on a GPU.
    cpu_ranks: int = 1

    def __post_init__(self) -> None:
        _positive("train.steps", self.steps)
        _positive("train.batch_size", self.batch_size)
        _positive("train.lr", self.lr)
        if not 0 <= self.warmup_frac < 1:
            raise RecipeError(f"train.warmup_frac: must be in [0, 1), got {self.warmup_frac}")
        _positive("train.max_seq_len", self.max_seq_len)
        _positive("train.cpu_threads", self.cpu_threads)
        _positive("train.cpu_ranks", self.cpu_ranks)

    def key(self) -> dict[str, Any]:
        """These values for a stage's cache key: ``cpu_ranks`` joins only when it is not 1, so the keys of the
        bases trained before it existed (the committed small ones among them) still find them."""
        out = to_dict(self)
        if out.get("cpu_ranks") == 1:
            del out["cpu_ranks"]
        return out


@dataclass
class GenerationConfig:
    temperature: float = 0.6  # paper §4.1: temperature 0.6, top-p 0.95 for evaluation
    top_p: float = 0.95
    max_new_tokens: int = 160
    top_logprobs: int = 20  # DeepConf needs the top-20 log-probs at every step
    batch_size: int = 64
    engine: typing.Literal["auto", "hf", "fast"] = "auto"

    def __post_init__(self) -> None:
        _positive("generation.temperature", self.temperature, allow_zero=True)
        if not 0 < self.top_p <= 1:
            raise RecipeError(f"generation.top_p: must be in (0, 1], got {self.top_p}")
        _positive("generation.max_new_tokens", self.max_new_tokens)
        if not 1 <= self.top_logprobs <= 20:
            raise RecipeError(f"generation.top_logprobs: must be in 1..20, got {self.top_logprobs}")


@dataclass
class EvalConfig:
    n_samples: int = 4  # pass@1 is averaged over n samples (paper: 16 for AIME, 5 GPQA, ...)
    problems_per_domain: int = 50
    # Independently trained SFT bases (seeds of the base run): claims that rest on a trained model take their
    # interval over these (the protocol asks for >= 3 at small); the first is the preset's own seed.
    base_seeds: list[int] = field(default_factory=lambda: [0])
    # Paper benchmarks to evaluate (paper preset only; they are read from local copies, falcon_h1r.benchmarks),
    # each with the paper's protocol (papers/eval_protocol.csv), capped by n_samples and generation.max_new_tokens
    # (no effect at the paper's values: 16 samples, 65,536 tokens).
    benchmarks: list[str] = field(default_factory=list)
    benchmark_dir: str | None = None
    benchmark_limit: int | None = None  # the first N problems of each benchmark (None: all, as the paper)
    # LiveCodeBench's code_generation_lite release pickles its private tests: decode them (with an unpickler that
    # builds only plain data) when true; false reads JSON tests only and says how to enable it.
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        _positive("eval.n_samples", self.n_samples)
        _positive("eval.problems_per_domain", self.problems_per_domain)
        if self.benchmark_limit is not None:
            _positive("eval.benchmark_limit", self.benchmark_limit)
        if not self.base_seeds or len(set(self.base_seeds)) != len(self.base_seeds):
            raise RecipeError(f"eval.base_seeds: a non-empty list of distinct seeds, got {self.base_seeds}")


@dataclass
class Preset:
    name: str
    seed: int = 0
    device: typing.Literal["auto", "cpu", "cuda"] = "auto"
    dtype: typing.Literal["float32", "bfloat16"] = "float32"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Section blocks, validated by their modules through Preset.section().
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str, cls: type[T]) -> T:
        """Parse this preset's ``name`` block with the section's dataclass ``cls``."""
        if name not in SECTION_BLOCKS:
            raise RecipeError(f"unknown section {name!r}; sections are {', '.join(SECTION_BLOCKS)}")
        return parse(cls, self.sections.get(name, {}), name)

    def to_dict(self) -> dict[str, Any]:
        out = to_dict(self)
        out.update(out.pop("sections"))
        return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["rl_experiments.steps=200", "rl.lr=5e-5"]`` -> ``{"rl_experiments.steps": 200, "rl.lr": "5e-5"}``.

    Each value is read as YAML (numbers, ``true``/``false``, ``[a, b]`` lists); the recipe's own types
    decide the rest (``5e-5`` reads as a string in YAML and is accepted where a number is expected). A malformed
    item raises :class:`RecipeError` naming it.
    """
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"--override {item!r}: expected KEY=VALUE, e.g. rl_experiments.steps=200")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise RecipeError(f"--override {item!r}: the value is not valid YAML ({exc.__class__.__name__})") from None
    return out


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Apply ``{"train.steps": 50}`` style overrides; a key must already exist or name a known block."""
    raw = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            # A missing block is created; parse() then rejects unknown paths with the accepted keys listed.
            node.setdefault(part, {})
            if not isinstance(node[part], dict):
                raise RecipeError(f"override {dotted}: {'.'.join(parts[: i + 1])} is not a block")
            node = node[part]
        node[parts[-1]] = value
    return raw


def load_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """Read ``recipes/presets/<name>.yaml``, apply dotted overrides, and validate everything."""
    if name not in PRESETS:
        raise RecipeError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    raw = yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text()) or {}
    raw = _apply_overrides(raw, overrides)
    sections = {k: raw.pop(k) for k in list(raw) if k in SECTION_BLOCKS}
    for k, v in sections.items():
        if not isinstance(v, dict):
            raise RecipeError(f"{k}: expected a mapping, got {v!r}")
    preset = parse(Preset, raw)
    preset.sections = sections
    if preset.name != name:
        raise RecipeError(f"name: preset file {name}.yaml says name {preset.name!r}")
    return preset


def load_recipe_grid(path: str | Path) -> dict[str, Any]:
    """Read an ablation grid YAML (``recipes/<section>/*.yaml``) as plain data."""
    path = Path(path)
    if not path.is_absolute():
        path = RECIPES_DIR / path
    if not path.exists():
        available = sorted(str(p.relative_to(RECIPES_DIR)) for p in RECIPES_DIR.rglob("*.yaml"))
        raise RecipeError(f"recipe {path} not found; available: {', '.join(available)}")
    return yaml.safe_load(path.read_text()) or {}
