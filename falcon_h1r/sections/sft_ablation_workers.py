"""The SFT grid's worker processes: each computes every n-th missing (arm, seed) run into the shared work file
(``python -m falcon_h1r.sections.sft_ablations --shard i/n``). The runs are independent and seeded per (arm, seed),
so the rows are the same for any number of workers. Used by ``--workers`` (processes time-sharing one GPU) and by
notebook 02 when ``sft_ablations.workers`` > 1 (both cores of a 2-core CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence


def start_workers(preset_name: str, overrides: dict[str, Any] | None, shards: Sequence[int], workers: int, *,
                  budget_s: float | None = None, root: Path | None = None) -> list[Any]:
    """Start one ``--shard i/workers`` process per ``i`` in ``shards`` (each computes its share of the grid into
    the shared work file under ``root``, default the results root). The common start and the pools must exist
    (:func:`prepare`) so that the workers only read them."""
    import os
    import subprocess

    extra = [a for k, v in (overrides or {}).items() for a in ("--override", f"{k}={json.dumps(v)}")]
    budget = [] if budget_s is None else ["--budget-s", str(budget_s)]
    env = {**os.environ, **({"FALCON_H1R_RESULTS": str(root)} if root is not None else {})}
    cli = [sys.executable, "-m", "falcon_h1r.sections.sft_ablations", "--preset", preset_name]
    return [subprocess.Popen([*cli, "--shard", f"{i}/{workers}", *budget, *extra], env=env) for i in shards]


def workers_alive(procs: Sequence[Any]) -> bool:
    """No worker has failed yet (running, or exited 0 or 3)."""
    return all(p.poll() in (None, 0, 3) for p in procs)


def wait_for_workers(procs: Sequence[Any]) -> None:
    """Wait for every worker; one that failed (not 0 = all done, nor 3 = its budget reached) raises."""
    codes = [p.wait() for p in procs]
    if any(c not in (0, 3) for c in codes):
        raise RuntimeError(f"SFT ablation workers exited with codes {codes} (0: all done, 3: budget reached)")


__all__ = ["start_workers", "wait_for_workers", "workers_alive"]
