"""One writer for every section's outputs: tables (CSV + Markdown), figures (PNG + PDF), raw records
(JSONL), ``summary.json`` (flat name -> number: the headline figures the README is built from) and
``provenance.json`` (git commit, versions, device, seed, preset, parameters, wall time).

Every write is atomic (temporary file, then rename), so an interrupted run never leaves half a file
and never loses what an earlier run wrote. A run of a whole section goes further (``falcon-h1r
reproduce``): it writes into a staging copy of the section's folder (``FALCON_H1R_STAGE``, see
:func:`section_dir`) that replaces the folder only when the notebook succeeds.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from falcon_h1r.env import REPO_ROOT, env_snapshot

# FALCON_H1R_RESULTS redirects every write (tests use it to keep results/ untouched).
RESULTS_ROOT = Path(os.environ.get("FALCON_H1R_RESULTS", REPO_ROOT / "results"))
SECTIONS = ("01_data_curation", "02_sft", "03_rl", "04_throughput", "05_deepconf", "06_safety")
# "<preset>/<section>=<folder>": that section's writes go to <folder> (the CLI's staging copy).
STAGE_ENV = "FALCON_H1R_STAGE"


class ResultsFileError(ValueError):
    """A results or cache file that cannot be read; the message names it and how to restore or rebuild it."""


def _temp_prefix(name: str) -> str:
    # The writer's pid is in every temporary name, so a later writer can tell a dead run's leftovers apart.
    return f".{name}.{os.getpid()}."


def atomic_write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    """Numpy/torch scalars and paths -> plain JSON; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file, or :class:`ResultsFileError` naming it (and how to get it back) when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); restore the committed "
                               f"copy with `git checkout -- {path}`, or delete it and rerun its section "
                               "(`falcon-h1r reproduce --preset P --sections S`) to rebuild it") from None


def staged_dir(preset: str, section: str) -> Path | None:
    """The staging folder the CLI gave this section's run (``FALCON_H1R_STAGE``), if any."""
    target, sep, folder = os.environ.get(STAGE_ENV, "").partition("=")
    return Path(folder) if sep and target == f"{preset}/{section}" else None


def section_dir(preset: str, section: str, root: Path = RESULTS_ROOT) -> Path:
    """``<root>/<preset>/<section>``, or the staging copy while the CLI runs that section."""
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; sections are {', '.join(SECTIONS)}")
    return staged_dir(preset, section) or Path(root) / preset / section


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_folders(folder: str | Path, pattern: str) -> list[Path]:
    """Remove the folders matching ``pattern`` under ``folder`` whose name ends in ``-<pid>`` of a process that
    is gone (what a killed writer left); a live writer's folder stays."""
    removed = []
    for p in sorted(Path(folder).glob(pattern)):
        pid = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            import shutil

            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.(?:tmp|png|pdf)$")  # _temp_prefix + mkstemp's part


def sweep_temporary_files(folder: Path) -> list[Path]:
    """Remove the temporary files (``.<name>.<pid>.<random>.<ext>``) that a killed writer left in ``folder``;
    a live writer's files stay."""
    removed = []
    for p in sorted(Path(folder).glob(".*")):
        m = _TEMP_NAME.match(p.name)
        if m and p.is_file() and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class SectionWriter:
    """Writes one section's outputs under ``results/<preset>/<section>/``.

    ``params`` are the resolved recipe values the section ran with; they go to provenance.json.
    """

    def __init__(self, preset: str, section: str, *, params: dict[str, Any] | None = None,
                 seed: int | None = None, root: Path = RESULTS_ROOT, mode: str = "computed"):
        self.preset = preset
        self.section = section
        self.dir = section_dir(preset, section, root)
        self.dir.mkdir(parents=True, exist_ok=True)
        sweep_temporary_files(self.dir)
        self.params = params or {}
        self.seed = seed
        self.mode = mode  # "computed" here, or "rendered" from committed records
        self.started = time.time()
        self.outputs: list[str] = []

    # -- tables ---------------------------------------------------------------------------------
    def table(self, name: str, df: "Any", *, caption: str = "", float_format: str = "%.4g") -> Path:
        """``name.csv`` plus ``name.md`` (with the caption on top, so a reader knows whose numbers)."""
        csv_path = atomic_write_text(self.dir / f"{name}.csv", df.to_csv(index=False, float_format=float_format))
        md = (f"{caption}\n\n" if caption else "") + _markdown(df, float_format) + "\n"
        atomic_write_text(self.dir / f"{name}.md", md)
        self.outputs += [f"{name}.csv", f"{name}.md"]
        return csv_path

    # -- figures --------------------------------------------------------------------------------
    def figure(self, name: str, fig: "Any") -> Path:
        """Save a matplotlib figure as PNG and PDF (each written atomically)."""
        paths = []
        for ext in ("png", "pdf"):
            path = self.dir / f"{name}.{ext}"
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=_temp_prefix(name), suffix=f".{ext}")
            os.close(fd)
            try:
                fig.savefig(tmp, format=ext, bbox_inches="tight", dpi=150 if ext == "png" else None)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            paths.append(path)
            self.outputs.append(path.name)
        return paths[0]

    # -- records --------------------------------------------------------------------------------
    def records(self, name: str, rows: Iterable[dict[str, Any]]) -> Path:
        text = "".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in rows)
        self.outputs.append(f"{name}.jsonl")
        return atomic_write_text(self.dir / f"{name}.jsonl", text)

    def json(self, name: str, obj: Any) -> Path:
        self.outputs.append(f"{name}.json")
        return write_json(self.dir / f"{name}.json", obj)

    # -- summary and provenance -----------------------------------------------------------------
    def summary(self, values: dict[str, Any]) -> Path:
        """Merge flat ``name -> number`` headline figures into summary.json."""
        path = self.dir / "summary.json"
        try:
            current = read_json(path) if path.exists() else {}
        except ResultsFileError:
            if self.mode != "computed":
                raise  # a render reads what was committed: say which file is broken and how to restore it
            # A run that computes writes every figure anew: a damaged summary must not block it. Keep the
            # damaged file beside it for inspection and start a fresh one.
            os.replace(path, path.with_name("summary.json.corrupt"))
            import warnings

            warnings.warn(f"{path} was not valid JSON; kept as summary.json.corrupt, a fresh one is written")
            current = {}
        for key, value in values.items():
            if isinstance(value, (dict, list)):
                raise TypeError(f"summary value {key!r} must be a number or string, got {type(value).__name__}")
        current.update(values)
        return write_json(path, current)

    def provenance(self, extra: dict[str, Any] | None = None) -> Path:
        record = {
            "preset": self.preset,
            "section": self.section,
            "mode": self.mode,
            "seed": self.seed,
            "parameters": self.params,
            "wall_time_s": round(time.time() - self.started, 3),
            "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "outputs": sorted(set(self.outputs)),
            **env_snapshot(),
        }
        if extra:
            record.update(extra)
        path = self.dir / "provenance.json"
        if self.mode == "rendered" and path.exists():
            # Rendering from committed records must not erase where those records were computed (a GPU run).
            before = read_json(path)
            computed = before if before.get("mode") == "computed" else before.get("computed_run")
            if computed:
                record["computed_run"] = computed
        return write_json(path, record)


def _markdown(df: "Any", float_format: str) -> str:
    cols = [str(c) for c in df.columns]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else float_format % v
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def load_summary(preset: str, section: str, root: Path = RESULTS_ROOT) -> dict[str, Any]:
    """Read a section's committed summary.json (e.g. small-preset GPU results on a CPU machine)."""
    path = section_dir(preset, section, root) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"no committed results at {path}; run the {section} notebook at preset "
                                f"{preset!r} first (see README)")
    return read_json(path)
