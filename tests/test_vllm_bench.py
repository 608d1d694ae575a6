"""Fig. 8 on vLLM: the commands generated from the paper's setup, and the reader of vLLM's JSON (vLLM 0.33's
``vllm bench latency`` / ``throughput`` output keys; their flags were checked against vLLM 0.33.0's CLI source)."""

from __future__ import annotations

import json
import shlex

import pytest

from falcon_h1r.scaleout import vllm_bench as vb


def test_every_fig8_point_with_the_papers_parallelism():
    points = vb.fig8_points()
    assert len(points) == 24  # 2 models x 2 settings x 6 batch sizes
    assert {p.batch_size for p in points} == {2, 8, 16, 32, 64, 128}
    assert {(p.input_len, p.output_len) for p in points} == {(512, 32768), (8192, 16384)}
    by = {(p.model, p.setting, p.batch_size): p for p in points}
    assert (by["Falcon-H1R-7B", "8K->16K", 64].tp, by["Falcon-H1R-7B", "8K->16K", 64].dp) == (2, 2)
    assert (by["Qwen3-8B", "512->32K", 128].tp, by["Qwen3-8B", "512->32K", 128].dp) == (4, 1)
    assert (by["Falcon-H1R-7B", "512->32K", 2].tp, by["Falcon-H1R-7B", "512->32K", 2].dp) == (1, 1)
    # the paper's text (DP2 x TP2 from batch 32) and the blog's tooltips differ at 8K->16K batch 32
    blog = {(p.model, p.setting, p.batch_size): p for p in vb.fig8_points(parallelism_column="parallelism")}
    assert blog["Falcon-H1R-7B", "8K->16K", 32].dp == 1 and by["Falcon-H1R-7B", "8K->16K", 32].dp == 2
    assert vb.tokens("32K") == 32768 and vb.parallelism("tp2,dp2") == (2, 2)
    with pytest.raises(ValueError, match="not understood"):
        vb.tokens("32 thousand")


def _flags(words: list[str]) -> dict[str, str | None]:
    out, i = {}, 0
    while i < len(words):
        value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else None
        out[words[i]] = value
        i += 1 if value is None else 2
    return out


def test_commands_split_replicas_over_disjoint_gpus():
    p = next(p for p in vb.fig8_points() if p.model == "Falcon-H1R-7B" and p.batch_size == 128
             and p.setting == "8K->16K")
    lines = vb.commands(p, "latency", "out", models={"Falcon-H1R-7B": "/ckpt/fh1r"})
    assert lines[-1] == "wait" and len(lines) == 3
    args = [shlex.split(line.rstrip(" &")) for line in lines[:2]]
    assert [a[0] for a in args] == ["CUDA_VISIBLE_DEVICES=0,1", "CUDA_VISIBLE_DEVICES=2,3"]
    for a in args:
        assert a[1:4] == ["vllm", "bench", "latency"]
        flags = _flags(a[4:])
        assert flags["--model"] == "/ckpt/fh1r" and flags["--batch-size"] == "64"
        assert flags["--tensor-parallel-size"] == "2" and flags["--input-len"] == "8192"
        assert flags["--output-len"] == "16384" and int(flags["--max-model-len"]) >= 8192 + 16384
        assert "--trust-remote-code" in flags and flags["--output-json"].startswith("out/latency/")
    t = vb.commands(p, "throughput", "out")
    flags = _flags(shlex.split(t[0].rstrip(" &"))[4:])
    assert flags["--max-num-seqs"] == "64" and flags["--num-prompts"] == "256" and flags["--dataset-name"] == "random"
    script = vb.script(vb.fig8_points(), "latency", "out")
    assert script.count("vllm bench latency") == sum(p.dp for p in vb.fig8_points())


def test_reader_brings_vllm_json_beside_the_paper(tmp_path):
    points = vb.fig8_points()
    p = next(p for p in points if p.model == "Falcon-H1R-7B" and p.batch_size == 64 and p.setting == "8K->16K")
    q = next(p for p in points if p.model == "Qwen3-8B" and p.batch_size == 64 and p.setting == "8K->16K")
    (tmp_path / "latency").mkdir()
    (tmp_path / "throughput").mkdir()
    for r in range(p.dp):  # each replica decodes 32 x 16384 tokens in 300 s
        (tmp_path / "latency" / f"{p.tag}_r{r}.json").write_text(json.dumps(
            {"avg_latency": 300.0, "latencies": [299.0, 301.0], "percentiles": {"50": 300.0}}))
    (tmp_path / "throughput" / f"{q.tag}_r0.json").write_text(json.dumps(
        {"model_id": "Qwen/Qwen3-8B", "elapsed_time": 1000.0, "num_requests": 256, "total_num_tokens": 6291456,
         "requests_per_second": 0.256, "tokens_per_second": 6291.456}))
    (tmp_path / "latency" / f"{q.tag}_r0.json").parent.mkdir(exist_ok=True)
    table = vb.read_results(tmp_path, points, device="4x H200")
    assert len(table) == 2  # only points with every replica's file
    fal = table[(table.model == "Falcon-H1R-7B")].iloc[0]
    assert fal.kind == "latency" and fal.tok_s_per_gpu == pytest.approx(2 * 32 * 16384 / 300.0 / 4)
    assert fal.vs_paper == pytest.approx(fal.tok_s_per_gpu / 1523.0) and fal.source == "vLLM (4x H200)"
    qw = table[(table.model == "Qwen3-8B")].iloc[0]
    assert qw.kind == "throughput" and qw.tok_s_per_gpu == pytest.approx(256 * 16384 / 1000.0 / 4)
    assert list(table.columns[:5]) == ["batch_size", "setting", "model", "tok_s_per_gpu", "parallelism"]
