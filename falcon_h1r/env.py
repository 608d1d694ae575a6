"""Where code runs and what it runs with: device choice, seeding, and the environment snapshot
written beside every result (git commit, package versions, device)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

TRACKED_PACKAGES = (
    "torch", "transformers", "tokenizers", "datasets", "math-verify", "numpy", "pandas",
    "papermill", "deepspeed", "mamba-ssm", "vllm", "trl",
)


def pick_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. Asking for cuda without one is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is visible; use device='cpu' or 'auto'")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"device {requested!r} not accepted; use 'auto', 'cpu' or 'cuda'")
    return requested


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the code that ran.

    ``FALCON_H1R_COMMIT`` (a full 40-hex hash) wins when set: a copy of the working tree on another machine
    (a GPU) may carry no ``.git`` or a stale one, so the launcher passes the real commit. Otherwise ``git``
    answers; anything that is not a full hash (``git rev-parse`` prints the literal ``HEAD`` in a repository
    without commits) is recorded as ``unknown``, never as a commit.
    """
    def full_hash(text: str) -> str | None:
        text = text.strip().lower()
        return text if len(text) == 40 and all(c in "0123456789abcdef" for c in text) else None

    given = full_hash(os.environ.get("FALCON_H1R_COMMIT", ""))
    if given:
        return {"commit": given, "dirty": os.environ.get("FALCON_H1R_DIRTY", "unknown"), "source": "FALCON_H1R_COMMIT"}
    commit, dirty = None, None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        commit = full_hash(out.stdout) if out.returncode == 0 else None
        if commit:
            # the code's state, not the results': a run rewrites results/ as it goes (notebook 01's records
            # would otherwise mark every later notebook of the same run dirty)
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     ":(exclude)results"], cwd=root, capture_output=True, text=True,
                                    timeout=10).stdout
            dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"commit": commit or "unknown", "dirty": dirty, "source": "git" if commit else None}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "cpu_model": cpu_model()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = "cuda"
            info["gpu_name"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["cuda"] = torch.version.cuda
        else:
            info["device"] = "cpu"
            info["gpu_name"] = None
    except ImportError:  # pragma: no cover
        info["device"] = "unknown"
    return info


def env_snapshot() -> dict[str, Any]:
    """Everything a reader needs to know about where a number came from."""
    return {"git": git_state(), "packages": package_versions(), "device": device_info()}
