"""One process per base seed, sharing the device, and their combined exit status.

Two GPU stages launch this way: ``python -m falcon_h1r.sections.bases`` (the SFT bases) and ``python -m
falcon_h1r.sections.deepconf --pools-only --parallel`` (the trace pools). Why processes rather than threads:
a ~10M-parameter model leaves the GPU mostly idle from one Python process (its steps are launch-bound), and
separate processes keep their CUDA streams, caches and budgets apart. Each child resumes from its own
checkpoints, so the pair of exit codes 0 (done) and 3 (stopped on its budget: run again) is the protocol.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Mapping, Sequence


def run_per_seed(module: str, preset: str, seeds: Sequence[int], *, seed_flag: str, args: Sequence[str] = (),
                 capture: bool = False) -> dict[int, tuple[int, str]]:
    """``python -m MODULE --preset PRESET SEED_FLAG S *ARGS`` for every seed at once; per seed its exit code and
    (``capture``) its standard output, read after all have started (stderr passes through)."""
    procs = {s: subprocess.Popen([sys.executable, "-m", module, "--preset", preset, seed_flag, str(s), *args],
                                 stdout=subprocess.PIPE if capture else None, text=True) for s in seeds}
    done = {}
    for s, p in procs.items():
        out, _ = p.communicate()
        done[s] = (p.returncode, out or "")
    return done


def override_args(items: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` items as a child's command-line flags: ``--override ITEM`` for each."""
    return [a for item in items for a in ("--override", item)]


def combined_exit(codes: Mapping[int, int]) -> int:
    """The stage's exit status from its children's: the first that is neither 0 nor 3 (a failure), else 3 when
    any stopped on its budget, else 0."""
    bad = [c for c in codes.values() if c not in (0, 3)]
    return bad[0] if bad else 3 if 3 in codes.values() else 0


__all__ = ["run_per_seed", "override_args", "combined_exit"]
