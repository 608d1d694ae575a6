"""SFT from a Hugging Face checkpoint under DeepSpeed ZeRO on CPU (DeepSpeed 0.19.8's CPU accelerator, gloo).

A tiny random Falcon-H1 checkpoint is written with the tokenizer; ``scripts/sft_ddp.py worker`` trains it with packed
rows and the balanced normalization, the global batch split by length so the two ranks hold very different token
counts. ZeRO-3 on 2 gloo processes (the checkpoint loaded partitioned) must give the loss curve of one process with
plain torch and 2 accumulation steps (the same micro-batches), and a run killed after its step-2 checkpoint and
started again must continue on that curve exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from falcon_h1r.config import RecipeError
from falcon_h1r.scaleout.zero_checkpoint import latest_engine_checkpoint
from falcon_h1r.scaleout.zero_sft import ScaleSFTRecipe

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sft_ddp.py"
TINY = ["--preset", "tiny", "--override", "model.hidden_size=32", "--override", "tokenizer.vocab_size=300"]
DATA = ["--problems-per-domain", "6", "--batch-size", "8", "--override", "sft.packing=true",
        "--override", "sft.pack_len=256", "--shard", "by_length", "--norm", "balanced"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "FALCON_H1R_RESULTS": str(tmp / "results"),
            "PYTHONPATH": str(ROOT)}


def _run(cmd: list[str], tmp: Path) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _worker(tmp: Path, n: int, out: Path, *extra: str) -> dict:
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(_port()),
          str(SCRIPT), "worker", *TINY, *DATA, "--from-checkpoint", str(tmp / "ckpt"), "--out", str(out), *extra], tmp)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zero")
    _run([sys.executable, str(SCRIPT), "make-checkpoint", "--arch", "preset", *TINY, "--out", str(tmp / "ckpt")], tmp)
    assert (tmp / "ckpt" / "config.json").exists() and (tmp / "ckpt" / "tokenizer.json").exists()
    ref = _worker(tmp, 1, tmp / "ref.json", "--engine", "ddp", "--grad-accum", "2", "--steps", "4")
    return tmp, ref


@pytest.mark.slow
def test_zero3_on_two_gloo_ranks_matches_one_process_and_resumes_exactly(tiny_checkpoint):
    tmp, ref = tiny_checkpoint
    z3 = ["--engine", "deepspeed", "--zero", "3", "--steps", "4", "--checkpoint-dir", str(tmp / "ck"),
          "--save-every", "2"]
    first = _worker(tmp, 2, tmp / "a.json", *z3, "--stop-after", "2")  # killed after its step-2 checkpoint
    assert first["steps_done"] == 2 and latest_engine_checkpoint(tmp / "ck") == "step-000002"
    again = _worker(tmp, 2, tmp / "b.json", *z3)  # the same command again: resumes
    assert again["resumed_from"] == 2 and again["steps_done"] == 4
    # the ranks held very different token counts, the model came from the checkpoint at its full size
    assert again["world"] == 2 and again["params"] == ref["params"] and again["shard"] == "by_length"
    toks = [r["tokens_per_s"] for r in again["per_rank"]]
    assert all(t > 0 for t in toks)
    held = [r["tokens_held"]["supervised_tokens_per_step"] for r in again["per_rank"]]
    assert held[0] < held[1] and again["rank_token_imbalance"] == pytest.approx(held[1] / held[0])  # short ones on 0
    assert len(ref["loss"]) == len(again["loss"]) == 4
    rel = max(abs(a - b) / abs(a) for a, b in zip(ref["loss"], again["loss"]))
    assert rel < 1e-5, f"ZeRO-3 x2 (resumed) vs one process: largest relative loss difference {rel:.2e}"
    assert again["loss"][:2] == first["loss"]
    assert ref["loss"][-1] < ref["loss"][0]  # it trains


@pytest.mark.slow
def test_zero2_with_the_paper_recipe_trains_from_the_checkpoint(tiny_checkpoint):
    tmp, _ = tiny_checkpoint
    rec = _worker(tmp, 2, tmp / "z2.json", "--engine", "deepspeed", "--zero", "2", "--recipe", "paper",
                  "--pack-len", "256", "--steps", "2")
    assert rec["zero"] == 2 and rec["recipe"] == "paper" and rec["lr_peak"] == pytest.approx(1.024e-3)
    assert rec["gradient_checkpointing"] is True and rec["pack_len"] == 256 and rec["loss_norm"] == "balanced"
    assert len(rec["loss"]) == 2 and all(0 < x < 20 for x in rec["loss"])


def test_paper_recipe_is_table1():
    t1 = yaml.safe_load((ROOT / "papers" / "table1_sft_hparams.yaml").read_text())
    r = ScaleSFTRecipe.load()
    assert (r.lr, r.warmup_frac, r.global_batch, r.epochs, r.weight_decay, r.grad_clip) == (
        t1["learning_rate"], t1["lr_warmup_fraction"], t1["effective_batch_size"], t1["epochs"], t1["weight_decay"],
        t1["grad_clip_norm"])
    assert r.lr_schedule == t1["lr_schedule"] and r.precision == t1["precision"]
    assert r.pack_len == t1["max_context_k"] * 1024 and r.max_seq_len == t1["max_context_long_samples_k"] * 1024
    assert r.steps_for(3_100_000) == -(-3 * 3_100_000 // 512)  # 3 epochs of 3.1M samples at 512 per step
    cfg, rec = r.trainer_configs(world=256, grad_accum=2, n_examples=1000, steps=5)
    assert (cfg.steps, cfg.batch_size, rec.grad_accum, rec.pack_len, rec.loss_norm) == (5, 512, 2, 36864, "balanced")
    with pytest.raises(RecipeError, match="not a multiple"):
        r.trainer_configs(world=3, grad_accum=1, n_examples=10)
    with pytest.raises(RecipeError, match="zero_stage"):
        ScaleSFTRecipe(zero_stage=1)


def test_only_complete_engine_checkpoints_are_resumed(tmp_path):
    (tmp_path / "step-000004").mkdir()  # killed mid-save: no "complete"
    (tmp_path / "step-000002").mkdir()
    (tmp_path / "step-000002" / "complete").write_text("2")
    assert latest_engine_checkpoint(tmp_path) == "step-000002"
    assert latest_engine_checkpoint(tmp_path / "none") is None
