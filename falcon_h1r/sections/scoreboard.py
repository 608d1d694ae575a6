"""The claims scoreboard of one preset: reads ``results/<preset>/*/summary.json``, computes every claim's
status with :mod:`falcon_h1r.claims` (rules in ``papers/claims.yaml``) and writes
``results/<preset>/claims.csv``, ``claims.md`` and ``claims_summary.json`` (atomic writes).

``falcon-h1r reproduce`` calls :func:`write_scoreboard` after the sections; each notebook ends with
:func:`section_rows` (its own claims, computed from the summary it has just written). From a shell:
``python -m falcon_h1r.sections.scoreboard --preset small``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from falcon_h1r import claims as claims_lib
from falcon_h1r.env import git_state
from falcon_h1r.results import RESULTS_ROOT, SECTIONS, atomic_write_text, read_json, section_dir, write_json

CSV_NAME, MD_NAME, SUMMARY_NAME = "claims.csv", "claims.md", "claims_summary.json"
MD_COLUMNS = ("id", "section", "status", "statement", "paper_value", "ours", "rule", "reason", "where")
SECTION_COLUMNS = ("id", "status", "statement", "paper_value", "ours", "rule", "reason", "where")


def load_summaries(preset: str, root: Path = RESULTS_ROOT) -> dict[str, dict[str, Any]]:
    """``{section: summary dict}`` for every section of ``preset`` that has a summary.json; a section that
    ``falcon-h1r reproduce`` is running now is read from its staging copy (:func:`section_dir`), so the rows a
    notebook ends with reflect the summary it has just written, not the folder it will replace."""
    out = {}
    for section in SECTIONS:
        path = section_dir(preset, section, root) / "summary.json"
        if path.exists():
            out[section] = read_json(path)
    return out


def scoreboard_rows(preset: str, root: Path = RESULTS_ROOT,
                    claims_file: Path = claims_lib.CLAIMS_FILE) -> list[dict[str, Any]]:
    """Every claim's row for ``preset`` (reads results, writes nothing)."""
    return claims_lib.evaluate(claims_lib.load_claims(claims_file), load_summaries(preset, root))


def write_scoreboard(preset: str, root: Path = RESULTS_ROOT,
                     claims_file: Path = claims_lib.CLAIMS_FILE) -> dict[str, Any]:
    """Compute and write ``claims.csv``, ``claims.md`` and ``claims_summary.json`` under
    ``results/<preset>/``; returns the counts written to claims_summary.json."""
    preset_dir = Path(root) / preset
    if not preset_dir.is_dir():
        have = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if Path(root).is_dir() else []
        raise FileNotFoundError(f"no results folder for preset {preset!r} at {preset_dir}; "
                                f"presets with results: {', '.join(have) or 'none'}")
    summaries = load_summaries(preset, root)
    rows = claims_lib.evaluate(claims_lib.load_claims(claims_file), summaries)
    counts = claims_lib.counts(rows)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(claims_lib.ROW_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: r.get(c, "") for c in claims_lib.ROW_COLUMNS} for r in rows)
    atomic_write_text(preset_dir / CSV_NAME, buf.getvalue())
    atomic_write_text(preset_dir / MD_NAME, _markdown(preset, rows, counts))

    by_section = {s: {st: sum(r["status"] == st and r["section"] == s for r in rows) for st in claims_lib.STATUSES}
                  for s in SECTIONS}
    record = {**counts, "preset": preset, "sections_read": sorted(summaries), "by_section": by_section,
              "claims_file": "papers/claims.yaml", "git": git_state(),
              "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(preset_dir / SUMMARY_NAME, record)
    return counts


def section_rows(preset: str, section: str, root: Path = RESULTS_ROOT,
                 claims_file: Path = claims_lib.CLAIMS_FILE) -> "Any":
    """One section's claims as a pandas DataFrame (for the end of its notebook), computed now from the
    summaries on disk, so it reflects what the notebook has just written."""
    import pandas as pd

    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; sections are {', '.join(SECTIONS)}")
    rows = [r for r in scoreboard_rows(preset, root, claims_file) if r["section"] == section]
    return pd.DataFrame([{c: r[c] for c in SECTION_COLUMNS} for r in rows], columns=list(SECTION_COLUMNS))


def _markdown(preset: str, rows: Sequence[dict[str, Any]], counts: dict[str, int]) -> str:
    tally = ", ".join(f"{counts[f'claims_{s}']} {s.replace('_', ' ')}" for s in claims_lib.STATUSES)
    head = (f"Claims scoreboard, preset `{preset}`: {counts['claims_total']} claims of the paper - {tally}.\n\n"
            f"Statuses are computed by `falcon_h1r.claims` from `results/{preset}/*/summary.json` with the rules in "
            f"`papers/claims.yaml`; none is typed by hand. 'ours' are this package's numbers on its own synthetic "
            f"testbed (not the paper's model), except rows of topic paper_arithmetic, which recompute the paper's "
            f"own tables. 'not run' means a key the claim needs is not in the section's summary yet.\n\n")
    return head + claims_lib.rows_markdown(rows, MD_COLUMNS) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m falcon_h1r.sections.scoreboard",
                                     description="Compute the claims scoreboard of one preset's results.")
    parser.add_argument("--preset", required=True, help="results/<preset>/ to read and write (tiny, small, paper)")
    parser.add_argument("--root", type=Path, default=RESULTS_ROOT, help="results root (default: the repo's results/)")
    args = parser.parse_args(argv)
    try:
        counts = write_scoreboard(args.preset, args.root)
    except (FileNotFoundError, claims_lib.ClaimsError) as exc:
        print(f"scoreboard: {exc}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
