"""Section 02's finished ablation grid, from its work folder to the section's committed records, on any machine:
``python -m falcon_h1r.sections.sft_ablation_export --preset small`` (exit 3 while runs are missing, 2 on bad input;
``--partial`` writes the finished runs of an unfinished grid, naming the missing ones).

Why: the grid needs a GPU, but notebook 02's analysis of it (paired differences, intervals, claims, figures) does
not. A device call's minutes are better spent on runs than on the notebook, so the GPU piece
(``scripts/gpu_sft_grid.sh``) brings back the work folder and the common start, and this step writes from them the
two records the notebook renders from (``ablation_rows.jsonl``, ``ablation_start.json``), exactly as the notebook's
own compute path writes them (:func:`falcon_h1r.sections.sft.ablations`). Then
``falcon-h1r reproduce --preset small --sections 02`` renders the whole analysis on a CPU machine.

Nothing is computed here: the common start must be in the cache (it is not retrained), its evaluation and every
run of the grids must be in the work folder; otherwise it says what is missing and writes nothing. With
``--partial`` (a grid whose device time ran out) the runs that finished are written and ``ablation_start.json``
lists the missing ones under ``grid_runs``, so the notebook shows every axis it can compare and names the arms it
cannot (their claims stay "not run": their summary keys are absent); the reference rate must be known.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from falcon_h1r.config import RecipeError, load_preset, parse_overrides
from falcon_h1r.results import RESULTS_ROOT, SectionWriter, section_dir
from falcon_h1r.sections.common import cache_dir
from falcon_h1r.sections.sft_ablation_data import start_key
from falcon_h1r.sections.sft_ablation_recipes import Grid
from falcon_h1r.sections.sft_ablations import (ablation_setup, grid_rows_in_order, grid_runs, load_ablations,
                                               load_rows, load_trainer, resolve_grids, start_record)


class GridIncomplete(RuntimeError):
    """Some of the grids' runs have no row yet (run the grid again)."""


def export_grid(preset_name: str, overrides: dict[str, Any] | None = None, *,
                root: Path = RESULTS_ROOT, partial: bool = False) -> dict[str, Any]:
    """Write ``ablation_rows.jsonl`` and ``ablation_start.json`` of ``results/<preset>/02_sft/`` from the section's
    ``_work`` folder. Raises :class:`RecipeError` when the start or its evaluation is absent, and
    :class:`GridIncomplete` when runs are missing (unless ``partial``, which still needs the learning-rate grid
    that sets the reference rate); returns what was written."""
    preset = load_preset(preset_name, overrides)
    work = section_dir(preset_name, "02_sft", root) / "_work"
    key = start_key(preset, load_ablations(preset), load_trainer(preset))
    start_dir = cache_dir(preset, root) / f"sft-start-{key}"
    if not (start_dir / "falcon_h1r.json").exists():
        raise RecipeError(f"the common start sft-start-{key} is not in {start_dir.parent} (accepted: the start the "
                          f"grid ran from, e.g. unpacked from the GPU run's sft_grid_{preset_name}.tgz parts); "
                          f"nothing was written")
    ctx = ablation_setup(preset, work, root=root, progress=False)
    if not (work / f"start_eval-{ctx.run_key}.json").exists():
        raise RecipeError(f"{work}: no start_eval-{ctx.run_key}.json (the start's held-out evaluation, written by the "
                          f"grid's first piece); nothing was written")
    done = load_rows(work / "ablation_rows.jsonl", ctx.run_key)
    grids, ref = resolve_grids(preset, done)
    needed, missing = grid_runs(grids), missing_runs(grids, done)
    have = len(needed) - len(missing)
    if ref is None or (missing and not partial):
        raise GridIncomplete(f"{work}: {have} of the {len(needed)} runs "
                             f"{'of the learning-rate grid ' if ref is None else ''}have a row for run key "
                             f"{ctx.run_key}; run the grid again (scripts/gpu_sft_grid.sh {preset_name}); nothing "
                             f"was written")
    rows = grid_rows_in_order(grids, done)
    writer = SectionWriter(preset_name, "02_sft", root=root)
    start = start_record(ctx)
    if missing:
        start["grid_runs"] = {"done": have, "needed": len(needed), "missing": missing}
    write_grid_records(writer, rows, start)
    computed_on = sorted({f"{r.get('computed_on', {}).get('commit', '?')[:7]} on "
                          f"{r.get('computed_on', {}).get('device', '?')}" for r in rows})
    return {"preset": preset_name, "rows": len(rows), "reference_lr_paper": ref, "run_key": ctx.run_key,
            "start_key": key, "computed_on": computed_on, "missing_runs": len(missing), "dir": str(writer.dir)}


def missing_runs(grids: Sequence[Grid], done: Mapping[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """The grids' runs with no row in ``done``, one entry per (arm, seed) run however many grids share it: its
    grids, arm and seed."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for g in grids:
        for a, s in g.runs():
            if (a.key(), s) not in done:
                entry = out.setdefault((a.key(), s), {"grids": [], "arm": a.name, "seed": s})
                entry["grids"].append(g.name)
    return list(out.values())


def write_grid_records(writer: SectionWriter, rows: list[dict[str, Any]], start: dict[str, Any]) -> None:
    """The two records notebook 02 renders a grid from: ``ablation_rows.jsonl`` and ``ablation_start.json``."""
    writer.records("ablation_rows", rows)
    writer.json("ablation_start", start)


def main(argv: list[str] | None = None) -> int:
    """Export the preset's finished grid (see the module docstring)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m falcon_h1r.sections.sft_ablation_export",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--override", action="append", default=[], help="preset override key=value (YAML value)")
    ap.add_argument("--partial", action="store_true",
                    help="write the finished runs of an unfinished grid and list the missing ones")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.override)
        print(json.dumps(export_grid(args.preset, overrides, partial=args.partial)))
    except RecipeError as exc:
        print(f"sft_ablation_export: {exc}", file=sys.stderr)
        return 2
    except GridIncomplete as exc:
        print(f"sft_ablation_export: {exc}", file=sys.stderr)
        return 3
    return 0


__all__ = ["GridIncomplete", "export_grid", "main", "missing_runs", "write_grid_records"]


if __name__ == "__main__":
    raise SystemExit(main())
