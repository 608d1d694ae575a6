"""One process per base seed, sharing the device, and their combined exit status.

Two GPU stages launch this way: ``python -m falcon_h1r.sections.bases`` (the SFT bases) and ``python -m
falcon_h1r.sections.deepconf --pools-only --parallel`` (the trace pools). Why processes rather than threads:
a ~10M-parameter model leaves the GPU mostly idle from one Python process (its steps are launch-bound), and
separate processes keep their CUDA streams, caches and budgets apart. Each child resumes from its own
checkpoints, so the pair of exit codes 0 (done) and 3 (stopped on its budget: run again) is the protocol.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Mapping, Sequence

SHARE_ENV = "FALCON_H1R_DEVICE_SHARE"  # how many children share the device (set for each child)


def run_per_seed(module: str, preset: str, seeds: Sequence[int], *, seed_flag: str, args: Sequence[str] = (),
                 capture: bool = False) -> dict[int, tuple[int, str]]:
    """``python -m MODULE --preset PRESET SEED_FLAG S *ARGS`` for every seed at once; per seed its exit code and
    (``capture``) its standard output, read after all have started (stderr passes through)."""
    env = {**os.environ, SHARE_ENV: str(len(seeds))}
    procs = {s: subprocess.Popen([sys.executable, "-m", module, "--preset", preset, seed_flag, str(s), *args],
                                 stdout=subprocess.PIPE if capture else None, text=True, env=env) for s in seeds}
    done = {}
    for s, p in procs.items():
        out, _ = p.communicate()
        done[s] = (p.returncode, out or "")
    return done


def claim_device_share(headroom: float = 0.95) -> float | None:
    """In a child of :func:`run_per_seed` on a CUDA device: cap this process's GPU memory at ``headroom / n`` of
    the device (n children), and return that fraction (None when alone or on the CPU).

    Why: without a cap the first child to cache large blocks (a 2,400-row evaluation engine, a trainer's
    activations) keeps them, and a sibling's next allocation fails with out-of-memory although the first child
    no longer needs them (seen on the H200: the three RL children, 93 + 19 + 27 GiB). At the cap PyTorch's
    allocator frees its own cached blocks and retries before it raises."""
    n = int(os.environ.get(SHARE_ENV, "1") or 1)
    if n <= 1:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    fraction = headroom / n
    torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction


def override_args(items: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` items as a child's command-line flags: ``--override ITEM`` for each."""
    return [a for item in items for a in ("--override", item)]


def combined_exit(codes: Mapping[int, int]) -> int:
    """The stage's exit status from its children's: the first that is neither 0 nor 3 (a failure), else 3 when
    any stopped on its budget, else 0."""
    bad = [c for c in codes.values() if c not in (0, 3)]
    return bad[0] if bad else 3 if 3 in codes.values() else 0


__all__ = ["SHARE_ENV", "run_per_seed", "claim_device_share", "override_args", "combined_exit"]
