"""Command line: ``falcon-h1r list`` and ``falcon-h1r reproduce [--preset P] [--sections ...] [--override K=V ...]``.

``reproduce`` executes the section notebooks with papermill, one after another, each with
``preset`` (and ``overrides``, from ``--override``) injected into its ``parameters`` cell. The executed
copy of each notebook lands in ``results/<preset>/<section>/`` beside what it wrote; a failing notebook
keeps its traceback there, the run goes on to the next one, and the command exits non-zero naming what
failed. ``FALCON_H1R_RESULTS`` moves that results root (e.g. for a probe run with overrides whose records
must not replace the committed ones).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from falcon_h1r.config import PRESETS, PRESETS_DIR
from falcon_h1r.env import REPO_ROOT
from falcon_h1r.results import RESULTS_ROOT, SECTIONS

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = {
    "01_data_curation": "01_data_curation.ipynb",
    "02_sft": "02_sft_ablations.ipynb",
    "03_rl": "03_rl_curricula.ipynb",
    "04_throughput": "04_throughput.ipynb",
    "05_deepconf": "05_deepconf.ipynb",
    "06_safety": "06_safety.ipynb",
}
assert tuple(NOTEBOOKS) == SECTIONS


class UsageError(Exception):
    pass


def resolve_sections(names: list[str] | None) -> list[str]:
    """Accept full names (``02_sft``), numbers (``02``, ``2``) or stems (``sft``)."""
    if not names:
        return list(SECTIONS)
    out = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            match = [s for s in SECTIONS if part in (s, s[:2], s[1:2], s[3:])]
            if len(match) != 1:
                raise UsageError(f"unknown section {part!r}; valid sections: {', '.join(SECTIONS)}")
            out.append(match[0])
    return out


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return preset


# the dataclass that parses each section block of a preset (each notebook calls cfg.section(name, cls))
SECTION_RECIPES = {"curation": ("falcon_h1r.curation", "CurationRecipe"), "sft": ("falcon_h1r.sft", "SFTRecipe"),
                   "rl": ("falcon_h1r.grpo", "RLRecipe"), "throughput": ("falcon_h1r.throughput", "ThroughputRecipe"),
                   "deepconf": ("falcon_h1r.deepconf", "DeepConfRecipe"), "safety": ("falcon_h1r.safety", "SafetyRecipe")}


def parse_overrides(items: list[str] | None) -> dict:
    """``["rl.steps=200", "rl.curricula=[math_only]"]`` -> ``{"rl.steps": 200, "rl.curricula": ["math_only"]}``.

    Each value is read as YAML (numbers, ``true``/``false``, ``[a, b]`` lists); the recipe's own types
    decide the rest (``5e-5`` reads as a string in YAML and is accepted where a number is expected).
    """
    import yaml

    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--override {item!r}: expected KEY=VALUE, e.g. rl.steps=200")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UsageError(f"--override {item!r}: the value is not valid YAML ({exc.__class__.__name__})") from None
    return out


def check_overrides(preset: str, overrides: dict) -> None:
    """Fail before any notebook starts: the preset with the overrides must load, and every section block
    an override touches must parse with its section's recipe class."""
    import importlib

    from falcon_h1r.config import RecipeError, load_preset

    try:
        cfg = load_preset(preset, overrides)
        for block in sorted({k.split(".", 1)[0] for k in overrides} & set(SECTION_RECIPES)):
            module, cls = SECTION_RECIPES[block]
            cfg.section(block, getattr(importlib.import_module(module), cls))
    except RecipeError as exc:
        raise UsageError(f"--override: {exc}") from None


def run_notebook(section: str, preset: str, *, parameters: dict | None = None, root: Path = RESULTS_ROOT,
                 log_output: bool = False) -> Path:
    """Execute one section notebook with papermill; returns the executed copy's path."""
    import papermill as pm

    src = NOTEBOOKS_DIR / NOTEBOOKS[section]
    out_dir = Path(root) / preset / section
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / NOTEBOOKS[section]
    pm.execute_notebook(str(src), str(out), parameters={"preset": preset, **(parameters or {})},
                        cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False,
                        log_output=log_output, request_save_on_cell_execute=True)
    return out


def check_gpu(preset: str, overrides: dict | None, require_gpu: bool) -> int | None:
    """One loud line when ``preset`` computes on a CUDA GPU (every preset but tiny, unless its ``device`` is
    cpu: the rule of ``stages.run_mode``) and none is usable here, so that rendering the committed records
    instead of computing is never silent. With ``require_gpu`` that is an error: returns the exit code 2."""
    from falcon_h1r.config import load_preset
    from falcon_h1r.kernels import cuda_status

    cfg = load_preset(preset, overrides or {})
    if cfg.name == "tiny" or cfg.device == "cpu":
        return None
    cuda = cuda_status()
    if cuda.usable:
        return None
    if require_gpu:
        print(f"falcon-h1r: --require-gpu: preset {preset!r} computes on a CUDA GPU and none is usable here: "
              f"{cuda.reason}", file=sys.stderr)
        return 2
    import torch

    then = ("will try to compute on it anyway and will likely fail" if torch.cuda.is_available() else
            "will RENDER the committed records instead of computing")
    print(f"falcon-h1r: NO USABLE CUDA GPU ({cuda.reason}): preset {preset!r} computes on one, so its notebooks "
          f"{then}; pass --require-gpu to stop instead", file=sys.stderr)
    return None


def cmd_list() -> int:
    import yaml

    print("sections (notebooks/):")
    for s, nb in NOTEBOOKS.items():
        print(f"  {s:18s} {nb}")
    print("presets (falcon_h1r/recipes/presets/):")
    for p in PRESETS:
        desc = (yaml.safe_load((PRESETS_DIR / f"{p}.yaml").read_text()) or {}).get("description", "")
        print(f"  {p:8s} {desc}")
    return 0


def cmd_reproduce(preset: str, sections: list[str], log_output: bool, overrides: dict | None = None) -> int:
    from tqdm.auto import tqdm

    failed = []
    t0 = time.time()
    params = {"overrides": overrides} if overrides else None
    if overrides:
        print(f"reproduce {preset}: overrides {overrides}; results under {RESULTS_ROOT}", file=sys.stderr)
    bar = tqdm(sections, desc=f"reproduce {preset}", unit="notebook", file=sys.stderr)
    for section in bar:
        bar.set_postfix_str(section)
        t = time.time()
        try:
            out = run_notebook(section, preset, parameters=params, log_output=log_output)
            shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
            tqdm.write(f"[ok] {section} in {time.time() - t:.0f}s -> {shown}", file=sys.stderr)
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
            failed.append(section)
            where = RESULTS_ROOT / preset / section / NOTEBOOKS[section]
            first = str(exc).strip().splitlines()
            tqdm.write(f"[FAILED] {section}: {first[-1] if first else type(exc).__name__}\n"
                       f"         the executed notebook with its traceback: {where}", file=sys.stderr)
    total = time.time() - t0
    print(f"reproduce {preset}: {len(sections) - len(failed)}/{len(sections)} notebooks ok in {total:.0f}s",
          file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="falcon-h1r", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="show sections and presets")
    rep = sub.add_parser("reproduce", help="run the section notebooks through papermill")
    rep.add_argument("--preset", default="tiny")
    rep.add_argument("--sections", nargs="*", default=None, help="e.g. 01 02_sft deepconf (default: all)")
    rep.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    rep.add_argument("--override", action="append", default=None, metavar="KEY=VALUE",
                     help="a recipe value for this run, e.g. rl.steps=200 or 'rl.curricula=[math_only]' (repeatable; "
                          "set FALCON_H1R_RESULTS to keep the committed records)")
    rep.add_argument("--require-gpu", action="store_true",
                     help="exit 2 instead of rendering the committed records when the preset computes on a CUDA "
                          "GPU and none is usable here")
    summ = sub.add_parser("summary", help="print a preset's headline figures from results/*/summary.json")
    summ.add_argument("--preset", default="tiny")
    summ.add_argument("--write-readme", action="store_true", help="update README.md's results block")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            return cmd_list()
        preset = check_preset(args.preset)
        if args.cmd == "summary":
            from falcon_h1r.report import headline_markdown, update_readme

            print(headline_markdown(preset))
            if args.write_readme:
                update_readme(preset)
            return 0
        sections = resolve_sections(args.sections)
        overrides = parse_overrides(args.override)
        if overrides:
            check_overrides(preset, overrides)
    except UsageError as exc:
        print(f"falcon-h1r: {exc}", file=sys.stderr)
        return 2
    code = check_gpu(preset, overrides, args.require_gpu)
    if code is not None:
        return code
    return cmd_reproduce(preset, sections, args.log_output, overrides)


if __name__ == "__main__":
    raise SystemExit(main())
