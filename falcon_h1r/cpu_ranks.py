"""SFT on several CPU cores as real data-parallel ranks (torch DDP over gloo, one process per core).

Why: a ~150K-parameter model gains nothing from a second intra-op thread (measured on the 2-core CI machine:
491 s vs 495 s for the tiny base run), but two processes of one thread each run a step in parallel at full speed
each (1.08 and 1.12 s per 32x288-token step side by side, against 1.07 s alone). Splitting each global batch
over two ranks therefore halves the run's wall time. It is the trainer's own ``torchrun`` path
(:func:`falcon_h1r.sft.train_sft` with a :class:`~falcon_h1r.distributed.DistContext`): the global batch,
the data order and the loss normalization are those of one process (``balanced`` makes the reduced gradient the
exact token mean of the global batch, :mod:`falcon_h1r.distributed`), so the weights differ from a one-process
run only by the order of float sums. Processes are started with ``torch.multiprocessing`` (spawn) instead of
``torchrun`` so that a notebook or a library call can use it; rank 0 hands the trained weights back through a file.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from falcon_h1r.config import TrainConfig
from falcon_h1r.sft import Example, SFTRecipe, TrainHistory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, payload: str, out: str) -> None:
    """One rank: join the gloo group, rebuild the model from the parent's initial weights, train, and (rank 0)
    write the final weights and history to ``out``."""
    import torch.distributed as dist

    from falcon_h1r.distributed import DistContext, wrap_ddp
    from falcon_h1r.sft import train_sft

    torch.set_num_threads(1)
    job = torch.load(payload, weights_only=False)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = job["model_class"](job["config"])
        model.load_state_dict(job["state"])
        ctx = DistContext(rank, world, 0, "ddp")
        hist = train_sft(wrap_ddp(model, ctx), job["examples"], job["cfg"], pad_id=job["pad_id"], seed=job["seed"],
                         progress=job["progress"] and rank == 0, desc=job["desc"], recipe=job["recipe"],
                         checkpoint_dir=job["checkpoint_dir"], resume=job["checkpoint_dir"] is not None, dist=ctx)
        if rank == 0:
            tmp = f"{out}.tmp"
            torch.save({"state": model.state_dict(), "hist": hist}, tmp)
            os.replace(tmp, out)
    finally:
        dist.destroy_process_group()


def train_sft_on_cpu_ranks(model: torch.nn.Module, examples: Sequence[Example], cfg: TrainConfig, *, ranks: int,
                           pad_id: int, seed: int = 0, recipe: SFTRecipe | None = None,
                           checkpoint_dir: str | Path | None = None, progress: bool = True,
                           desc: str = "sft") -> TrainHistory:
    """Train ``model`` (on the CPU, in place) as :func:`falcon_h1r.sft.train_sft` does, with each global batch split
    over ``ranks`` processes of one torch thread each. ``checkpoint_dir``: rank 0 checkpoints there as the
    recipe says and a new call resumes from the newest checkpoint (a killed run loses at most ``save_every``
    steps). Returns the run's history; a rank that fails raises here with its traceback."""
    import torch.multiprocessing as mp

    recipe = recipe or SFTRecipe(packing=False)
    if ranks < 2:
        raise ValueError(f"ranks must be 2 or more for data-parallel CPU training, got {ranks}")
    if recipe.ranks != 1:
        raise ValueError(f"recipe.ranks={recipe.ranks} simulates ranks in one process; real CPU ranks replace it "
                         "(leave it at 1)")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("train_sft_on_cpu_ranks trains on the CPU; the model is on "
                         f"{next(model.parameters()).device}")
    with tempfile.TemporaryDirectory(prefix="falcon_h1r_ranks_") as tmp:
        payload, out = str(Path(tmp) / "job.pt"), str(Path(tmp) / "trained.pt")
        torch.save({"model_class": type(model), "config": model.config, "state": model.state_dict(),
                    "examples": list(examples), "cfg": cfg, "recipe": recipe, "pad_id": pad_id, "seed": seed,
                    "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
                    "progress": progress, "desc": desc}, payload)
        mp.start_processes(_rank_main, args=(ranks, _free_port(), payload, out), nprocs=ranks, join=True,
                           start_method="spawn")
        done: dict[str, Any] = torch.load(out, weights_only=False)
    model.load_state_dict(done["state"])
    model.eval()
    return done["hist"]


__all__ = ["train_sft_on_cpu_ranks"]
