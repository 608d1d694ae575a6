"""DeepSpeed engine checkpoints that resume the SFT trainer exactly.

``engine.save_checkpoint`` writes the (partitioned) model, optimizer and scheduler states; the trainer's own state
(the data position, the history, the RNGs) goes in its ``client_state``. Every rank must call both functions
(ZeRO shards are per rank). A tag folder counts only once rank 0 has written ``complete`` in it after all ranks
finished, so a kill mid-save never leaves a checkpoint that :func:`latest_engine_checkpoint` would pick; older
complete tags beyond ``keep`` are removed.

Why not DeepSpeed's own ``latest`` file: it is written before the other ranks' shards are known to be on disk.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

COMPLETE = "complete"


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def latest_engine_checkpoint(directory: str | Path) -> str | None:
    """The newest complete tag (``step-NNNNNN``) under ``directory``, or None."""
    done = sorted(p.name for p in Path(directory).glob("step-*") if (p / COMPLETE).exists())
    return done[-1] if done else None


def save_engine_checkpoint(engine: Any, directory: str | Path, step: int, data_state: dict[str, Any],
                           history: dict[str, Any], keep: int = 2) -> str:
    """Save on every rank; returns the tag."""
    directory = Path(directory)
    tag = f"step-{step:06d}"
    client = {"step": int(step), "data": data_state, "history": history,
              "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                      "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}
    engine.save_checkpoint(str(directory), tag=tag, client_state={"falcon_h1r": client})
    _barrier()
    if _rank() == 0:
        (directory / tag / COMPLETE).write_text(str(step))
        complete = sorted(p for p in directory.glob("step-*") if (p / COMPLETE).exists())
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return tag


def restore_engine_checkpoint(engine: Any, directory: str | Path) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
    """Load the newest complete checkpoint into ``engine`` (every rank); returns (step, data state, history),
    or None when there is none."""
    tag = latest_engine_checkpoint(directory)
    if tag is None:
        return None
    path, client = engine.load_checkpoint(str(directory), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None or not client or "falcon_h1r" not in client:
        raise RuntimeError(f"DeepSpeed checkpoint {Path(directory) / tag} has no trainer state; it was not written "
                           "by falcon_h1r's trainer. Remove it or point --checkpoint-dir elsewhere.")
    state = client["falcon_h1r"]
    rs = state["rng"]
    random.setstate((rs["python"][0], tuple(rs["python"][1]), rs["python"][2]))
    torch.set_rng_state(rs["torch"])
    if rs["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rs["cuda"])
    return int(state["step"]), state["data"], state["history"]


__all__ = ["latest_engine_checkpoint", "restore_engine_checkpoint", "save_engine_checkpoint"]
