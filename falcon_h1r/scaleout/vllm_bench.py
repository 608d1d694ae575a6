"""The Fig. 8 throughput study on vLLM: ready-to-run ``vllm bench`` commands from ``papers/fig8_throughput_setup.yaml``
and ``papers/fig8_throughput.csv`` (both models, batch 2-128, 512->32K and 8K->16K, the paper's TP/DP per point),
and a reader that brings their JSON output into the throughput section's tables beside the paper.

Two measurements per point, both with vLLM's own benchmark commands (vLLM 0.33):

- ``vllm bench latency --batch-size B/DP``: one batch of fixed size decoded ``--output-len`` tokens with
  ``ignore_eos``; tokens/s/GPU = replicas x (B/DP) x output tokens / mean batch latency / GPUs. It fixes the batch
  size, which is what Fig. 8's x axis is, so it is the number the reader compares with the paper.
- ``vllm bench throughput --num-prompts 4B/DP --max-num-seqs B/DP``: the engine's continuous batching with at most
  B/DP sequences in flight per replica; tokens/s/GPU from its elapsed time (prompt tokens counted apart).

DP replicas are independent vLLM instances on disjoint GPUs (``CUDA_VISIBLE_DEVICES``) run at the same time, as the
paper's "DP2 x TP2" describes; each writes its own JSON and the reader adds them up. "32K" is read as 32 x 1024.
What was run: nothing here (no vLLM environment, no multi-GPU machine); the commands are for
``requirements-vllm.txt``'s environment on a node with 4 GPUs.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from falcon_h1r.papers import PAPERS_DIR as PAPER_DIR

MODEL_IDS = {"Falcon-H1R-7B": "tiiuae/Falcon-H1R-7B", "Qwen3-8B": "Qwen/Qwen3-8B"}
KINDS = ("latency", "throughput")


def tokens(text: str) -> int:
    """"512" -> 512, "8K" -> 8192, "32K" -> 32768 (K read as 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", str(text))
    if not m:
        raise ValueError(f"token count {text!r} not understood; expected e.g. 512, 8K or 32K")
    return int(m.group(1)) * (1024 if m.group(2) else 1)


def parallelism(text: str) -> tuple[int, int]:
    """"tp2,dp2" -> (2, 2)."""
    parts = dict(re.findall(r"(tp|dp)(\d+)", text))
    if "tp" not in parts:
        raise ValueError(f"parallelism {text!r} not understood; expected e.g. 'tp2,dp1'")
    return int(parts["tp"]), int(parts.get("dp", 1))


@dataclass(frozen=True)
class Point:
    model: str
    setting: str
    batch_size: int
    tp: int
    dp: int
    input_len: int
    output_len: int
    paper_tok_s_per_gpu: float

    @property
    def gpus(self) -> int:
        return self.tp * self.dp

    @property
    def tag(self) -> str:
        setting = self.setting.replace("->", "to").replace(" ", "")
        return f"{self.model}_{setting}_bs{self.batch_size}_tp{self.tp}dp{self.dp}"


def fig8_points(paper_dir: Path = PAPER_DIR, parallelism_column: str = "parallelism_paper") -> list[Point]:
    """Every Fig. 8 point with the paper's parallelism (``parallelism_paper``, the text's rule; ``parallelism`` is
    the blog's tooltips, which differ at 8K->16K batch 32)."""
    import pandas as pd
    import yaml

    setup = yaml.safe_load((paper_dir / "fig8_throughput_setup.yaml").read_text())
    table = pd.read_csv(paper_dir / "fig8_throughput.csv")
    out = []
    for _, row in table.iterrows():
        s = setup["settings"][row["setting"]]
        tp, dp = parallelism(row[parallelism_column])
        if int(row["batch_size"]) % dp:
            raise ValueError(f"batch {row['batch_size']} does not split over {dp} replicas")
        out.append(Point(row["model"], row["setting"], int(row["batch_size"]), tp, dp, tokens(s["input"]),
                         tokens(s["output"]), float(row["tok_s_per_gpu"])))
    missing = set(setup["batch_sizes"]) - {p.batch_size for p in out}
    if missing:
        raise ValueError(f"fig8_throughput.csv lacks batch sizes {sorted(missing)} of the setup")
    return out


def commands(point: Point, kind: str, out_dir: str, *, models: dict[str, str] | None = None, num_iters: int = 3,
             waves: int = 4, gpu_memory_utilization: float = 0.9) -> list[str]:
    """The shell lines for one point: one ``vllm bench`` per DP replica, each on its own GPUs, run together."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} not accepted; use one of {KINDS}")
    model = (models or MODEL_IDS).get(point.model, point.model)
    per_replica = point.batch_size // point.dp
    common = ["--model", model, "--tensor-parallel-size", str(point.tp), "--input-len", str(point.input_len),
              "--output-len", str(point.output_len), "--max-model-len", str(point.input_len + point.output_len + 16),
              "--gpu-memory-utilization", str(gpu_memory_utilization), "--trust-remote-code"]
    if kind == "latency":
        args = ["--batch-size", str(per_replica), "--num-iters-warmup", "1", "--num-iters", str(num_iters)]
    else:
        args = ["--num-prompts", str(waves * per_replica), "--max-num-seqs", str(per_replica),
                "--dataset-name", "random"]
    lines = []
    for r in range(point.dp):
        gpus = ",".join(str(g) for g in range(r * point.tp, (r + 1) * point.tp))
        out = f"{out_dir}/{kind}/{point.tag}_r{r}.json"
        cmd = ["vllm", "bench", kind, *common, *args, "--output-json", out]
        lines.append(f"CUDA_VISIBLE_DEVICES={gpus} " + " ".join(shlex.quote(c) for c in cmd)
                     + (" &" if point.dp > 1 else ""))
    if point.dp > 1:
        lines.append("wait")
    return lines


def script(points: Sequence[Point], kind: str, out_dir: str = "results/paper/04_throughput/vllm", **kw: Any) -> str:
    """A bash script running every point in turn (skipping points whose JSON exists, so it resumes)."""
    lines = ["#!/usr/bin/env bash", "# Fig. 8 on vLLM (falcon_h1r.scaleout.vllm_bench); needs a node with 4 GPUs and "
             "requirements-vllm.txt's environment", "set -euo pipefail", f"mkdir -p {out_dir}/{kind}"]
    for p in points:
        done = " && ".join(f"[ -f {out_dir}/{kind}/{p.tag}_r{r}.json ]" for r in range(p.dp))
        lines.append(f"# {p.model} {p.setting} batch {p.batch_size}: TP{p.tp} x DP{p.dp} "
                     f"(paper: {p.paper_tok_s_per_gpu:g} tok/s/GPU)")
        lines.append(f"if ! {{ {done}; }}; then")
        lines += ["  " + c for c in commands(p, kind, out_dir, **kw)]
        lines.append("fi")
    return "\n".join(lines) + "\n"


def read_results(out_dir: str | Path, points: Sequence[Point] | None = None, *,
                 device: str = "") -> "Any":
    """The JSON the commands wrote, one row per point that has every replica's file: tokens/s/GPU measured beside
    the paper's, in the columns of ``papers/fig8_throughput.csv`` plus ``source``, ``kind`` and ``vs_paper``.
    Output tokens only (decode throughput, what Fig. 8 plots); latency: ``B/DP x output_len / avg_latency`` per
    replica; throughput: ``num_requests x output_len / elapsed_time`` per replica."""
    import pandas as pd

    out_dir = Path(out_dir)
    rows = []
    for p in points if points is not None else fig8_points():
        for kind in KINDS:
            files = [out_dir / kind / f"{p.tag}_r{r}.json" for r in range(p.dp)]
            if not all(f.exists() for f in files):
                continue
            recs = [json.loads(f.read_text()) for f in files]
            if kind == "latency":
                per_s = [p.batch_size // p.dp * p.output_len / float(r["avg_latency"]) for r in recs]
            else:
                per_s = [int(r["num_requests"]) * p.output_len / float(r["elapsed_time"]) for r in recs]
            tok_s_per_gpu = sum(per_s) / p.gpus
            rows.append({"batch_size": p.batch_size, "setting": p.setting, "model": p.model,
                         "tok_s_per_gpu": tok_s_per_gpu, "parallelism": f"tp{p.tp},dp{p.dp}", "kind": kind,
                         "source": f"vLLM ({device or 'measured'})", "paper_tok_s_per_gpu": p.paper_tok_s_per_gpu,
                         "vs_paper": tok_s_per_gpu / p.paper_tok_s_per_gpu})
    return pd.DataFrame(rows, columns=["batch_size", "setting", "model", "tok_s_per_gpu", "parallelism", "kind",
                                       "source", "paper_tok_s_per_gpu", "vs_paper"])


__all__ = ["KINDS", "MODEL_IDS", "Point", "commands", "fig8_points", "parallelism", "read_results", "script", "tokens"]
