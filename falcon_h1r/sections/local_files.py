"""The local files a preset reads (the paper preset: a checkpoint, the benchmark copies, Llama Guard, the safety
suites), checked before anything runs, so a run with files absent stops at once with one message naming every
missing path and how to provide it, instead of rendering or failing half-way. Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from falcon_h1r.config import Preset

CHECKPOINT_HINT = ("download it on a machine with hub access (e.g. `huggingface-cli download tiiuae/Falcon-H1R-7B "
                   "--local-dir DIR`) and set model.checkpoint to DIR")


@dataclass(frozen=True)
class MissingFile:
    what: str  # e.g. "model checkpoint (model.checkpoint)"
    path: str
    problem: str  # e.g. "does not exist"
    hint: str  # how to provide it

    def line(self) -> str:
        return f"{self.what}: {self.path} {self.problem} ({self.hint})"


class LocalFilesMissing(FileNotFoundError):
    """Files a preset needs are not on disk; the message lists each one with its path and what to do."""


def _checkpoint_problems(path: Path, key: str) -> list[MissingFile]:
    what = f"model checkpoint ({key})"
    if not path.is_dir():
        return [MissingFile(what, str(path), "does not exist", CHECKPOINT_HINT)]
    out = []
    if not (path / "config.json").is_file():
        out.append(MissingFile(what, str(path / "config.json"), "does not exist",
                               "a Hugging Face model directory has config.json"))
    if not list(path.glob("*.safetensors")) + list(path.glob("*.bin")):
        out.append(MissingFile(what, str(path / "*.safetensors"), "matches no file", "the weight shards are missing"))
    return out


def _tokenizer_problems(path: Path, key: str) -> list[MissingFile]:
    if path.is_dir() and ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return []
    return [MissingFile(f"tokenizer ({key})", str(path / "tokenizer.json"), "does not exist",
                        "the checkpoint's own tokenizer files with its chat template (tokenizer.json, "
                        "tokenizer_config.json)")]


def core_missing(preset: Preset) -> list[MissingFile]:
    """What every section of a checkpoint preset reads: the checkpoint, its tokenizer and the benchmark copies."""
    if not preset.model.checkpoint:
        return []
    from falcon_h1r.benchmarks import benchmark_path

    ckpt = Path(preset.model.checkpoint).expanduser()
    out = _checkpoint_problems(ckpt, "model.checkpoint")
    tok = Path(preset.tokenizer.path).expanduser() if preset.tokenizer.path else ckpt
    if ckpt.is_dir() or tok != ckpt:
        out += _tokenizer_problems(tok, "tokenizer.path" if preset.tokenizer.path else "model.checkpoint")
    for name in preset.eval.benchmarks:
        try:
            benchmark_path(name, preset.eval.benchmark_dir)
        except FileNotFoundError as exc:
            root = preset.eval.benchmark_dir or "<eval.benchmark_dir unset>"
            out.append(MissingFile(f"benchmark {name} (eval.benchmark_dir)", str(Path(root) / name),
                                   "does not exist", "expected " + str(exc).split(": expected ", 1)[-1]))
    return out


def section_missing(preset: Preset, section: str) -> list[MissingFile]:
    """What one section reads beyond the core files (only for a checkpoint preset)."""
    if not preset.model.checkpoint:
        return []
    out: list[MissingFile] = []
    if section == "06_safety":
        from falcon_h1r.safety import BUILTIN_SUITE, suite_local_path
        from falcon_h1r.safety.recipe import SafetyRecipe

        recipe = preset.section("safety", SafetyRecipe)
        if recipe.judge != "embedded" and not (Path(recipe.judge).expanduser() / "config.json").is_file():
            out.append(MissingFile("Llama Guard checkpoint (safety.judge)", recipe.judge, "has no config.json",
                                   "`huggingface-cli download meta-llama/Llama-Guard-3-8B --local-dir DIR` (gated: "
                                   "accept Meta's licence first), or safety.judge: embedded"))
        for key in recipe.suites:
            if key == BUILTIN_SUITE:
                continue
            where = suite_local_path(key, recipe.data_dir) if recipe.data_dir else Path("<safety.data_dir unset>") / key
            if not where.exists():
                out.append(MissingFile(f"safety suite {key} (safety.data_dir)", str(where), "does not exist",
                                       "a local copy of the subset (datasets save_to_disk); see "
                                       "falcon_h1r.safety.SUITES for its source"))
    if section == "03_rl":
        from falcon_h1r.grpo import RLRecipe

        rewards = preset.section("rl", RLRecipe).rewards
        if rewards.science_judge == "llm" and not Path(rewards.science_judge_model).expanduser().is_dir():
            out.append(MissingFile("science judge model (rl.rewards.science_judge_model)",
                                   rewards.science_judge_model, "does not exist",
                                   "a local causal LM directory, or rl.rewards.science_judge: numeric"))
    return out


def require_local_files(preset: Preset, sections: Sequence[str] = ()) -> None:
    """Raise :class:`LocalFilesMissing` naming every missing file of ``preset`` (core files, and those of
    ``sections``); nothing for presets that train their own model."""
    missing = core_missing(preset) + [m for s in sections for m in section_missing(preset, s)]
    if missing:
        lines = "; ".join(m.line() for m in missing)
        raise LocalFilesMissing(f"preset {preset.name!r} needs local files that are not there -- {lines}. "
                                "Nothing is downloaded; point the preset at local copies with overrides, e.g. "
                                "--override model.checkpoint=DIR --override eval.benchmark_dir=DIR")


__all__ = ["LocalFilesMissing", "MissingFile", "core_missing", "require_local_files", "section_missing"]
