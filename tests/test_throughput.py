"""The throughput arithmetic (``falcon_h1r.throughput``: bytes, capacity, batch plan, integration) and section 04
(``falcon_h1r.sections.throughput``: the recipe block, the headline figures, the study's runner on CPU)."""

import math

import pytest

from falcon_h1r import throughput as tp
from falcon_h1r.config import RecipeError, load_preset
from falcon_h1r.models import falcon_h1r_7b_config, qwen3_8b_config
from falcon_h1r.sections import throughput as sec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_configs():
    arch = tp.smoke_architectures()
    return arch[tp.HYBRID], arch[tp.TRANSFORMER]


# ----------------------------------------------------------------------------- recipe
def test_every_preset_has_a_valid_throughput_block_and_bad_values_are_named():
    for name in ("tiny", "small", "paper"):
        r = load_preset(name).section("throughput", sec.ThroughputRecipe)
        assert r.settings["8K->16K"] == [8192, 16384] and r.settings["512->32K"] == [512, 32768]
        assert r.batch_sizes == [2, 8, 16, 32, 64, 128]
    with pytest.raises(RecipeError, match="throughput.positions"):
        load_preset("tiny", {"throughput.positions": 1}).section("throughput", sec.ThroughputRecipe)
    with pytest.raises(RecipeError, match="unknown key throughput.batch"):
        load_preset("tiny", {"throughput.batch": 4}).section("throughput", sec.ThroughputRecipe)
    with pytest.raises(RecipeError, match="settings.bad"):
        load_preset("tiny", {"throughput.settings": {"bad": [512]}}).section("throughput", sec.ThroughputRecipe)


# ----------------------------------------------------------------------------- bytes
def test_cache_bytes_of_the_two_7b_architectures_follow_their_shapes():
    fal, qwen = falcon_h1r_7b_config(), qwen3_8b_config()
    # K and V, every layer, bf16: layers x 2 x kv_heads x head_dim x 2 bytes
    assert tp.kv_bytes_per_token(fal) == 44 * 2 * 2 * 128 * 2
    assert tp.kv_bytes_per_token(qwen) == 36 * 2 * 8 * 128 * 2
    # Mamba-2: conv window over x, B, C (3072 + 2 x 256 channels, 4 taps, bf16) and the fp32 SSM state
    assert tp.state_bytes_per_sequence(fal) == 44 * ((3072 + 512) * 4 * 2 + 24 * 128 * 256 * 4)
    assert tp.state_bytes_per_sequence(qwen) == 0
    ctx = 8192 + 16384
    f, q = tp.sequence_bytes(fal, ctx, 16384), tp.sequence_bytes(qwen, ctx, 16384)
    assert 2.5 < q / f < 3.5  # the hybrid's whole-run cache is about a third of the transformer's


def test_static_engine_allocates_what_the_byte_count_says():
    from transformers import AutoModelForCausalLM

    from falcon_h1r.inference.engine import DecodeEngine

    for cfg in tiny_configs():
        model = AutoModelForCausalLM.from_config(cfg)
        eng = DecodeEngine(model, 3, 40)
        expected = 3 * (tp.kv_bytes_per_token(cfg, 4) * 40 + tp.state_bytes_per_sequence(cfg, 4, 4))
        assert eng.cache_bytes() == expected


def test_decode_step_bytes_and_capacity_arithmetic():
    fal = falcon_h1r_7b_config()
    params = tp.param_count(fal)
    assert abs(params / 1e9 - 7.59) < 0.01  # paper Table 8
    b = tp.decode_step_bytes(fal, batch=32, context=10_000, params=params)
    assert b["weights"] == (params - 130048 * 3072) * 2
    assert b["kv"] == 32 * tp.kv_bytes_per_token(fal) * 10_000
    assert b["states"] == 32 * 2 * tp.state_bytes_per_sequence(fal)
    assert b["total"] == b["weights"] + b["kv"] + b["states"]
    assert tp.max_batch(10, 105, 4) == 10 and tp.max_batch(10, 3) == 0
    with pytest.raises(ValueError):
        tp.max_batch(0, 10)


def test_capacity_and_batch_plan():
    fal = falcon_h1r_7b_config()
    free = 60 * 2**30
    cap = tp.capacity(fal, 8192, 16384, free, reserve_bytes=2 * 2**30)
    per_seq = tp.sequence_bytes(fal, 8192 + 16384, 16384)
    cache = tp.kv_bytes_per_token(fal) * (8192 + 16384) + tp.state_bytes_per_sequence(fal)
    assert cap["context"] == 8192 + 16384 and cap["per_sequence_bytes"] == per_seq
    assert cap["cache_bytes_per_sequence"] == cache < per_seq  # outputs and sampling temporaries on top
    assert cap["max_batch"] == (free - 2 * 2**30) // per_seq and cap["alloc_limit"] == free // cache
    grid = [2, 8, 16, 32, 64, 128]
    # 32 first, then the other core batches from the largest down, plus the largest batch that fits
    assert tp.batch_plan(grid, 100, core=True) == [32, 100, 64]
    assert tp.batch_plan(grid, 100, core=False) == [16, 8, 2]
    assert tp.batch_plan(grid, 128, core=True) == [32, 128, 64]
    assert tp.batch_plan(grid, 20, core=True) == [20] and tp.batch_plan(grid, 20, core=False) == [16, 8, 2]
    assert tp.batch_plan(grid, 0, core=True) == [] and tp.batch_plan(grid, 0, core=False) == []


def test_positions_integration_and_tokens_per_second():
    assert tp.sample_positions(8192, 16384, 5) == [8192, 12288, 16384, 20479, 24575]
    pos = tp.sample_positions(100, 50, 3)
    assert pos[0] == 100 and pos[-1] == 149
    # a step time linear in the position is integrated exactly: sum over p of (a + b p)
    a, bb = 0.01, 1e-5
    got = tp.integrate_steps(pos, [a + bb * p for p in pos], 100, 150)
    assert got == pytest.approx(sum(a + bb * p for p in range(100, 150)), rel=1e-12)
    assert tp.integrate_steps([5], [0.2], 0, 10) == pytest.approx(2.0)  # constant beyond the measured points
    assert tp.tokens_per_s(4, 100, 2.0) == 200
    assert tp.tokens_per_s(4, 100, 2.0, prefill_s_per_seq=0.5) == 100


# ----------------------------------------------------------------------------- headline figures
def _records(step_hybrid: float, step_transformer: float) -> list[dict]:
    """A hand-made study: constant step times, so every headline figure has a closed form. The hybrid fits 50
    rows with its float32 SSM state and 56 with a bfloat16 one; the transformer 17."""
    recs = [{"kind": "device", "gpu_name": "Test GPU"}, {"kind": "bandwidth", "bytes_per_s": 2e12},
            {"kind": "model", "model": tp.HYBRID, "family": "falcon_h1", "ssm_state_dtype": "float32"},
            {"kind": "model", "model": tp.TRANSFORMER, "family": "qwen3", "ssm_state_dtype": "float32"},
            {"kind": "capacity", "model": tp.HYBRID, "setting": "8K->16K", "max_batch": 50, "per_sequence_bytes": 1},
            {"kind": "capacity", "model": tp.TRANSFORMER, "setting": "8K->16K", "max_batch": 17, "per_sequence_bytes": 3},
            {"kind": "capacity", "model": tp.HYBRID, "setting": "8K->16K", "ssm_state_dtype": "bfloat16",
             "max_batch": 56, "per_sequence_bytes": 0.9},
            {"kind": "prefill", "model": tp.HYBRID, "setting": "8K->16K", "status": "ok", "s_per_sequence": 0.25},
            {"kind": "hf_generate", "status": "ok", "batch": 128, "end_to_end_ratio": 12.0, "step_ratio": 20.0,
             "end_to_end_ratio_bf16_state": 14.0}]
    for model, batch, step, variant, top in ((tp.HYBRID, 16, step_hybrid * 0.8, "sample", False),
                                             (tp.HYBRID, 32, step_hybrid, "sample", False),
                                             (tp.HYBRID, 50, step_hybrid * 1.4, "sample", True),
                                             (tp.HYBRID, 56, step_hybrid * 1.3, "ssm_bf16", True),
                                             (tp.TRANSFORMER, 16, step_transformer * 0.9, "sample", False),
                                             (tp.TRANSFORMER, 17, step_transformer, "sample", True)):
        for p in tp.sample_positions(8192, 16384, 3):
            recs.append({"kind": "step", "status": "ok", "model": model, "setting": "8K->16K", "batch": batch,
                         "variant": variant, "position": p, "step_s": step, "roofline_s": step / (1.25 + batch / 1000),
                         "input_len": 8192, "output_len": 16384, "is_max_batch": top})
    recs.append({"kind": "step", "status": "does_not_fit", "model": tp.HYBRID, "setting": "8K->16K", "batch": 64,
                 "variant": "sample"})
    return recs


def test_summary_headline_figures_have_their_closed_forms():
    recs = _records(0.020, 0.018)
    s = sec.summarize(recs, positions_needed=3)
    out = 16384

    def tok_s(batch: int, step: float, prefill: float | None = 0.25) -> float:
        return batch * out / (out * step + batch * (prefill or 0.0))

    hybrid50, hybrid16 = tok_s(50, 0.028), tok_s(16, 0.016)
    transformer17, transformer16 = tok_s(17, 0.018, None), tok_s(16, 0.018 * 0.9, None)  # no transformer prefill
    assert s["gpu_name"] == "Test GPU" and s["hbm_copy_bandwidth_gb_s"] == 2000
    assert s["engine_over_hf_generate_bs128"] == 12.0 and s["engine_over_hf_decode_step_bs128"] == 20.0
    assert s["engine_bf16_state_over_hf_generate_bs128"] == 14.0
    # at the largest batch that fits, with that batch beside the figure; no bsN name for a max-batch figure
    assert s["hybrid_max_batch_8k_16k"] == 50 and s["transformer_max_batch_8k_16k"] == 17
    assert s["hybrid_tok_s_per_gpu_max_batch_8k_16k"] == pytest.approx(hybrid50)
    assert s["hybrid_tok_s_per_gpu_max_batch_8k_16k_batch"] == 50
    assert s["hybrid_bf16_state_max_batch_8k_16k"] == 56
    assert s["hybrid_bf16_state_tok_s_per_gpu_max_batch_8k_16k"] == pytest.approx(tok_s(56, 0.026))
    assert s["hybrid_bf16_state_step_time_over_roofline_max_batch_8k_16k"] == pytest.approx(1.25 + 0.056)
    assert s["hybrid_over_transformer_max_batch_8k_16k"] == pytest.approx(hybrid50 / transformer17)
    assert not any("bs64" in k or "bs128_8k" in k for k in s), [k for k in s if "bs64" in k or "bs128_8k" in k]
    # at exactly batch N where both were measured there
    assert s["hybrid_tok_s_per_gpu_bs16_8k_16k"] == pytest.approx(hybrid16)
    assert s["hybrid_over_transformer_bs16_8k_16k"] == pytest.approx(hybrid16 / transformer16)
    assert "hybrid_over_transformer_bs32_8k_16k" not in s  # the transformer was not measured at 32
    assert s["step_time_over_roofline_bs32"] == pytest.approx(1.25 + 0.032)
    assert s["step_time_over_roofline_worst_batch_ge32"] == pytest.approx(1.25 + 0.050)
    assert s["step_time_over_roofline_worst_batch_ge32_batch"] == 50
    assert "hybrid_tok_s_per_gpu_max_batch_512_32k" not in s  # nothing measured there, nothing claimed


def test_incomplete_configurations_get_no_throughput_and_headlines_stay_present():
    recs = _records(0.02, 0.02)
    s = sec.summarize(recs, positions_needed=5)  # only 3 positions were measured
    assert all(k in s for k in sec.HEADLINE)
    assert s["hybrid_tok_s_per_gpu_max_batch_8k_16k"] is None and s["hybrid_over_transformer_max_batch_8k_16k"] is None
    table = sec.config_table(recs, positions_needed=5)
    assert table.loc[table["batch"] == 64, "status"].item() == "does_not_fit"


def test_paper_comparison_puts_ours_beside_the_papers_points():
    from falcon_h1r import papers

    fig8 = papers.load("fig8_throughput")
    comp = sec.paper_comparison(_records(0.02, 0.02), fig8, positions_needed=3)
    assert len(comp) == len(fig8)
    row = comp[(comp["model"] == tp.HYBRID) & (comp["setting"] == "8K->16K") & (comp["batch_size"] == 32)].iloc[0]
    assert row["paper_tok_s_per_gpu"] == 1045.5 and row["ours_tok_s_per_gpu_1xGPU"] == pytest.approx(
        32 * 16384 / (16384 * 0.02 + 32 * 0.25))
    assert comp.loc[(comp["model"] == tp.HYBRID) & (comp["setting"] == "8K->16K") & (comp["batch_size"] == 64),
                    "ours_status"].item() == "does_not_fit"


def test_paper_points_and_record_views():
    from falcon_h1r import papers

    fig8 = papers.load("fig8_throughput")
    p = fig8.set_index(["model", "setting", "batch_size"])["tok_s_per_gpu"]
    pts = sec.paper_fig8_points(fig8)
    assert pts["paper_hybrid_tok_s_per_gpu_bs64_8k_16k"] == p[(tp.HYBRID, "8K->16K", 64)]
    assert pts["paper_hybrid_over_transformer_bs128_512_32k"] == pytest.approx(
        p[(tp.HYBRID, "512->32K", 128)] / p[(tp.TRANSFORMER, "512->32K", 128)])
    recs = _records(0.02, 0.018)
    view = sec.capacity_view(recs).set_index(["model", "ssm_state_dtype"])
    assert view.loc[(tp.HYBRID, "float32"), "max_batch"] == 50
    assert view.loc[(tp.HYBRID, "float32"), "GiB_per_sequence"] == 1 / 2**30
    steps = sec.step_times(recs)
    assert len(steps) == 18 and (steps["step_ms"] == 1e3 * steps["step_s"]).all()
    assert steps["roofline_ms"].to_numpy() == pytest.approx(
        steps["step_ms"].to_numpy() / (1.25 + steps["batch"].to_numpy() / 1000))
    assert set(steps["line"]) == {tp.HYBRID, tp.TRANSFORMER, f"{tp.HYBRID}, bfloat16 SSM state"}
    long = sec.paper_and_ours(fig8, sec.config_table(recs, positions_needed=3))
    assert set(long["source"]) == {"paper (vLLM, multi-GPU)", "ours (1 GPU, engine)"} and long["tok_s"].notna().any()
    assert sec.hf_generate_table(recs).loc["end_to_end_ratio"].item() == 12.0


def test_runs_on_two_gpus_are_never_mixed_in_one_figure(tmp_path):
    """An older run measured both architectures, a newer one only the hybrid (another GPU, a faster engine): the
    newer run's figures win, the cross-architecture ratio comes whole from the older run (never the newer
    hybrid over the older transformer), and the sources table names the run of each figure."""
    import json

    old = _records(0.02, 0.018)
    old[0] = {"kind": "device", "gpu_name": "Old GPU", "utc": "2026-11-01T00:00:00Z", "git": {"commit": "a" * 40}}
    new = [r for r in _records(0.01, 0.018) if r.get("model") != tp.TRANSFORMER]
    new[0] = {"kind": "device", "gpu_name": "New GPU", "utc": "2026-12-01T00:00:00Z", "git": {"commit": "b" * 40}}
    (tmp_path / "throughput_records_a.json").write_text(json.dumps({"records": new}))  # name order != time order
    (tmp_path / "throughput_records_b.json").write_text(json.dumps({"records": old}))
    recs = sec.load_records(tmp_path)
    runs = sec.split_runs(recs)
    assert [label for label, _ in runs] == ["New GPU, commit bbbbbbb, 2026-12-01", "Old GPU, commit aaaaaaa, 2026-11-01"]
    assert sec.comparison_run(recs)[0].startswith("Old GPU")
    merged, sources = sec.summarize_runs(recs, positions_needed=3)
    alone_old, alone_new = sec.summarize(old, positions_needed=3), sec.summarize(new, positions_needed=3)
    assert merged["gpu_name"] == "New GPU"
    assert merged["hybrid_tok_s_per_gpu_max_batch_8k_16k"] == alone_new["hybrid_tok_s_per_gpu_max_batch_8k_16k"]
    assert merged["hybrid_over_transformer_max_batch_8k_16k"] == alone_old["hybrid_over_transformer_max_batch_8k_16k"]
    by_figure = sources.set_index("figure")["run"]
    assert by_figure["hybrid_tok_s_per_gpu_max_batch_8k_16k"].startswith("New GPU")
    assert by_figure["hybrid_over_transformer_max_batch_8k_16k"].startswith("Old GPU")
    assert "gpu_name" not in by_figure and merged["throughput_runs"].startswith("New GPU")


def test_load_records_says_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench/throughput.py"):
        sec.load_records(tmp_path)


# ----------------------------------------------------------------------------- the runner, end to end on CPU
def test_study_runs_end_to_end_on_cpu_and_records_every_outcome(tmp_path):
    fal, qwen = tiny_configs()
    recipe = sec.ThroughputRecipe(batch_sizes=[1, 2, 4], settings={"8K->16K": [8, 16]}, positions=2, warmup_steps=0,
                                 timed_steps=1, hf_batch=2, hf_prompt_tokens=4, hf_new_tokens=3, prefill_tokens=16,
                                 reserve_gib=0.0)
    per_q = tp.sequence_bytes(qwen, 24, 16, dtype_bytes=4, ssm_state_bytes=4)
    study = sec.Study(recipe, tmp_path, device="cpu", architectures={tp.HYBRID: fal, tp.TRANSFORMER: qwen},
                     free_bytes=lambda: 2 * per_q + 1, log=lambda _: None)
    recs = study.run()
    assert sec.load_records(tmp_path) == recs  # written as it went
    caps = sec.capacities(recs).query("ssm_state_dtype == 'float32'").set_index("model")["max_batch"]
    assert caps[tp.TRANSFORMER] == 2
    assert caps[tp.HYBRID] == (2 * per_q + 1) // tp.sequence_bytes(fal, 24, 16, dtype_bytes=4, ssm_state_bytes=4)
    table = sec.config_table(recs, positions_needed=2)
    q = table[table["model"] == tp.TRANSFORMER].set_index("batch")
    assert q.loc[4, "status"] == "does_not_fit" and q.loc[2, "status"] == "ok" and q.loc[1, "status"] == "ok"
    assert math.isfinite(q.loc[2, "tok_s_per_gpu"]) and bool(q.loc[2, "prefill_included"])
    hf = next(r for r in recs if r["kind"] == "hf_generate")
    assert hf["status"] == "ok" and hf["token_agreement"] == 1.0  # greedy, fp32: the engine decodes what HF does
    s = sec.summarize(recs, positions_needed=2)
    assert s["transformer_max_batch_8k_16k"] == 2 and s["hybrid_over_transformer_max_batch_8k_16k"] > 0
    # the hybrid once more with a bfloat16 SSM state, at its own largest batch (counted with 2-byte states)
    bf16_caps = sec.capacities(recs).query("ssm_state_dtype == 'bfloat16'")
    assert len(bf16_caps) == 1 and bf16_caps["model"].item() == tp.HYBRID
    assert s["hybrid_bf16_state_max_batch_8k_16k"] >= s["hybrid_max_batch_8k_16k"]
    assert s["hybrid_bf16_state_tok_s_per_gpu_max_batch_8k_16k"] > 0
    assert any(r["kind"] == "state_update_configs" for r in recs)


def test_a_position_timed_by_two_calls_counts_once_with_the_later_record():
    recs = _records(0.02, 0.018)
    again = [dict(r, step_s=r["step_s"] * 2) for r in recs if r.get("kind") == "step" and r.get("batch") == 32]
    steps = sec.step_table(recs + again)
    at32 = steps[(steps["model"] == tp.HYBRID) & (steps["batch"] == 32)]
    assert len(at32) == 3 and (at32["step_s"] == 0.04).all()
