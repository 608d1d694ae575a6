"""Command line: ``falcon-h1r list`` and ``falcon-h1r reproduce [--preset P] [--sections ...] [--override K=V ...]``.

``reproduce`` first checks the whole preset with every override (each section block parsed by its recipe
class: a bad key or value exits 2 with one line naming it), then executes the section notebooks with papermill,
one after another, each with ``preset`` (and ``overrides``) injected into its ``parameters`` cell.

A section runs into a staging copy of ``results/<preset>/<section>/`` that replaces the folder only when its
notebook succeeds; a failing notebook is kept beside the last good results as ``<notebook>.failed.ipynb``
(with its traceback), those results stay untouched, the run goes on to the next section, and the command
exits 1 naming what failed. ``FALCON_H1R_RESULTS`` moves the results root (e.g. for a probe run with
overrides whose records must not replace the committed ones).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from falcon_h1r.config import PRESETS, PRESETS_DIR
from falcon_h1r.env import REPO_ROOT
from falcon_h1r.results import RESULTS_ROOT, SECTIONS, STAGE_ENV, sweep_dead_folders

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
    if names is None:
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
    if not out:
        raise UsageError(f"--sections names no section; valid sections: {', '.join(SECTIONS)} (omit --sections for all)")
    return out


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return preset


def parse_overrides(items: list[str] | None) -> dict:
    """The ``--override`` items as a dict (:func:`falcon_h1r.config.parse_overrides`); a malformed one is a
    :class:`UsageError`."""
    from falcon_h1r.config import RecipeError, parse_overrides as parse_items

    try:
        return parse_items(items)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None


def check_preset_and_overrides(preset: str, overrides: dict) -> None:
    """Fail before any notebook starts: the preset with the overrides must load and every section block must
    parse with its recipe class (a typo in a preset file is caught here too, not only an override's)."""
    from falcon_h1r.config import RecipeError
    from falcon_h1r.sections.recipes import validate_preset

    try:
        validate_preset(preset, overrides)
    except RecipeError as exc:
        where = "--override" if overrides else f"preset {preset}"
        raise UsageError(f"{where}: {exc}") from None


def check_local_files(preset: str, overrides: dict, sections: list[str]) -> None:
    """Fail before any notebook starts when a checkpoint preset's local files (checkpoint, benchmark copies, and
    what the chosen sections read: Llama Guard, the safety suites, the science judge) are absent: one message
    naming every missing path. Nothing for presets that train their own model."""
    from falcon_h1r.config import load_preset
    from falcon_h1r.sections.local_files import LocalFilesMissing, require_local_files

    try:
        require_local_files(load_preset(preset, overrides), sections)
    except LocalFilesMissing as exc:
        raise UsageError(str(exc)) from None


def sweep_stale_runs(preset_root: Path) -> list[Path]:
    """Remove staging and swap folders that a killed ``reproduce`` left (their pid is gone)."""
    return sweep_dead_folders(preset_root, ".*-run-*")


def _stage(final: Path) -> Path:
    """A copy of the section folder to run in; its ``_work`` (resumable work files) is shared, not copied."""
    staging = final.parent / f".{final.name}.staging-run-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    if final.exists():
        shutil.copytree(final, staging, ignore=shutil.ignore_patterns("_work", "*.failed.ipynb"))
    staging.mkdir(parents=True, exist_ok=True)
    if (final / "_work").exists():
        (staging / "_work").symlink_to((final / "_work").resolve(), target_is_directory=True)
    return staging


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging`` (two renames), keeping the real ``_work`` folder and no failure notes."""
    work = staging / "_work"
    if work.is_symlink():
        work.unlink()
    old = final.parent / f".{final.name}.old-run-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        if (old / "_work").exists() and not (final / "_work").exists():
            os.replace(old / "_work", final / "_work")
        shutil.rmtree(old, ignore_errors=True)
    for note in final.glob("*.failed.ipynb"):
        note.unlink()


def run_notebook(section: str, preset: str, *, parameters: dict | None = None, root: Path = RESULTS_ROOT,
                 log_output: bool = False) -> Path:
    """Execute one section notebook with papermill in a staging copy of its results folder; the copy replaces
    the folder when the notebook succeeds. On failure the executed notebook is kept as
    ``<section folder>/<notebook>.failed.ipynb``, the folder's results are untouched, and the error is raised.
    Returns the executed copy's final path."""
    import papermill as pm

    src = NOTEBOOKS_DIR / NOTEBOOKS[section]
    final = Path(root) / preset / section
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = _stage(final)
    out = staging / NOTEBOOKS[section]
    env_before = os.environ.get(STAGE_ENV)
    os.environ[STAGE_ENV] = f"{preset}/{section}={staging}"  # the kernel inherits it: its writer goes there
    try:
        pm.execute_notebook(str(src), str(out), parameters={"preset": preset, **(parameters or {})},
                            cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False,
                            log_output=log_output, request_save_on_cell_execute=True)
    except BaseException:
        if out.exists():
            final.mkdir(parents=True, exist_ok=True)
            os.replace(out, final / f"{NOTEBOOKS[section].removesuffix('.ipynb')}.failed.ipynb")
        work = staging / "_work"
        if work.is_symlink():
            work.unlink()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if env_before is None:
            os.environ.pop(STAGE_ENV, None)
        else:
            os.environ[STAGE_ENV] = env_before
    _swap_in(staging, final)
    return final / NOTEBOOKS[section]


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


def scoreboard(preset: str) -> int:
    """Rewrite the preset's claims scoreboard from every section's summary on disk (statuses by rule) and say
    its counts in one line; 2 when the claims file is bad, 0 otherwise (also when no results folder exists)."""
    from falcon_h1r.claims import ClaimsError
    from falcon_h1r.sections.scoreboard import write_scoreboard

    if not (RESULTS_ROOT / preset).is_dir():
        print(f"reproduce {preset}: no results folder at {RESULTS_ROOT / preset}, so no claims scoreboard",
              file=sys.stderr)
        return 0
    try:
        counts = write_scoreboard(preset, RESULTS_ROOT)
    except (ClaimsError, FileNotFoundError) as exc:
        print(f"falcon-h1r: claims scoreboard: {exc}", file=sys.stderr)
        return 2
    print(f"reproduce {preset}: claims {counts['claims_reproduced']} reproduced, {counts['claims_partly']} partly, "
          f"{counts['claims_not_reproduced']} not reproduced, {counts['claims_not_testable']} not testable, "
          f"{counts['claims_not_run']} not run (of {counts['claims_total']}): "
          f"{RESULTS_ROOT / preset / 'claims.md'}", file=sys.stderr)
    return 0


def _notebook_outcome(section: str, preset: str, params: dict | None, log_output: bool) -> tuple[bool, str, float]:
    """:func:`run_notebook`'s outcome as plain values (ok, the executed notebook's path or the error, seconds), so
    that it comes back from a worker process (``--jobs``) even when the error does not pickle."""
    t = time.time()
    try:
        out = run_notebook(section, preset, parameters=params, log_output=log_output)
        return True, str(out), time.time() - t
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        return False, str(exc) or type(exc).__name__, time.time() - t


def cmd_reproduce(preset: str, sections: list[str], log_output: bool, overrides: dict | None = None,
                  jobs: int = 1) -> int:
    """Run the notebooks in order; with ``jobs`` > 1 the first one alone (01 trains the SFT base every later
    notebook loads) and then the rest ``jobs`` at a time in worker processes. Why: most tiny notebooks keep one
    core busy (a ~150K model gains nothing from a second thread), so a 2-core machine runs two side by side."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    failed = []
    t0 = time.time()
    params = {"overrides": overrides} if overrides else None
    if overrides:
        print(f"reproduce {preset}: overrides {overrides}; results under {RESULTS_ROOT}", file=sys.stderr)
    sweep_stale_runs(RESULTS_ROOT / preset)
    bar = tqdm(total=len(sections), desc=f"reproduce {preset}", unit="notebook", file=sys.stderr)

    def report(section: str, ok: bool, what: str, seconds: float) -> None:
        bar.update(1)
        if ok:
            out = Path(what)
            shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
            tqdm.write(f"[ok] {section} in {seconds:.0f}s -> {shown}", file=sys.stderr)
            return
        failed.append(section)
        where = RESULTS_ROOT / preset / section / f"{NOTEBOOKS[section].removesuffix('.ipynb')}.failed.ipynb"
        first = what.strip().splitlines()
        tqdm.write(f"[FAILED] {section}: {first[-1] if first else 'error'}\n"
                   f"         the executed notebook with its traceback: {where}\n"
                   f"         the last good results in {where.parent} are untouched", file=sys.stderr)

    alone, together = (sections[:1], sections[1:]) if jobs > 1 else (sections, [])
    for section in alone:
        bar.set_postfix_str(section)
        report(section, *_notebook_outcome(section, preset, params, log_output))
    if together:
        bar.set_postfix_str(f"{', '.join(together)}, {jobs} at a time")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            running = {pool.submit(_notebook_outcome, s, preset, params, log_output): s for s in together}
            for fut in as_completed(running):
                report(running[fut], *fut.result())
    bar.close()
    total = time.time() - t0
    print(f"reproduce {preset}: {len(sections) - len(failed)}/{len(sections)} notebooks ok in {total:.0f}s",
          file=sys.stderr)
    code = scoreboard(preset)
    if code:
        return code
    if failed:
        print(f"failed: {', '.join(sorted(failed))}", file=sys.stderr)
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
                     help="a recipe value for this run, e.g. rl_experiments.steps=200 or "
                          "'rl_experiments.curricula=[math_only]' (repeatable; "
                          "set FALCON_H1R_RESULTS to keep the committed records)")
    rep.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="after the first notebook, run N at a time in worker processes (make reproduce: 2)")
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
            from falcon_h1r.sections.report import headline_markdown, update_readme

            print(headline_markdown(preset))
            if args.write_readme:
                update_readme(preset)
            return 0
        sections = resolve_sections(args.sections)
        if args.cmd == "reproduce" and args.jobs < 1:
            raise UsageError(f"--jobs {args.jobs}: expected a count of 1 or more")
        overrides = parse_overrides(args.override)
        check_preset_and_overrides(preset, overrides)
        check_local_files(preset, overrides, sections)
    except UsageError as exc:
        print(f"falcon-h1r: {exc}", file=sys.stderr)
        return 2
    code = check_gpu(preset, overrides, args.require_gpu)
    if code is not None:
        return code
    return cmd_reproduce(preset, sections, args.log_output, overrides, jobs=args.jobs)


if __name__ == "__main__":
    raise SystemExit(main())
