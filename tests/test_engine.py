"""The fast decode engine against transformers on the same weights (CPU: its static-cache step runs eagerly)."""

import math

import numpy as np
import pytest
import torch

from falcon_h1r import inference
from falcon_h1r.inference import engine, engine_check, engine_ops, engine_pool
from falcon_h1r.inference.architecture import EngineUnsupported
from falcon_h1r.config import GenerationConfig
from falcon_h1r.inference.hf_loop import generate_ids as hf_generate_ids
from falcon_h1r.models import FALCON_H1R_7B_MUP

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [20, 21, 22, 23, 24], [30]]


def spread(model: torch.nn.Module) -> torch.nn.Module:
    """Weights scaled so every sub-block moves the logits and the distributions are peaked: a 1 % error in
    any branch then shows up far above the 1e-3 tolerance (see test_a_wrong_gate_is_caught)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 3.0 / math.sqrt(p.shape[1]))
            elif p.ndim == 1 and "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        mult = getattr(model.config, "lm_head_multiplier", 1.0)
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=gen)
                                   * 3.0 / (mult * math.sqrt(model.config.hidden_size)))
    return model.eval()


def tiny_falcon(rms_norm: bool = True, groups: int = 1, dtype=torch.float32):
    from transformers import FalconH1Config, FalconH1ForCausalLM

    cfg = FalconH1Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, mamba_d_ssm=64, mamba_n_heads=4,
                         mamba_d_head=16, mamba_d_state=8, mamba_d_conv=4, mamba_n_groups=groups,
                         mamba_chunk_size=8, mamba_rms_norm=rms_norm, attention_in_multiplier=0.7,
                         max_position_embeddings=512, rope_theta=1000.0, pad_token_id=0, eos_token_id=1,
                         **FALCON_H1R_7B_MUP)
    torch.manual_seed(0)
    return spread(FalconH1ForCausalLM(cfg)).to(dtype)


def tiny_qwen3(dtype=torch.float32):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      rope_theta=1000.0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    return spread(Qwen3ForCausalLM(cfg)).to(dtype)


@pytest.fixture(autouse=True)
def _fresh_engines():
    """No engine leaks between tests."""
    engine_pool.free_engines()
    yield
    engine_pool.free_engines()


# ----------------------------------------------------------------------------- reference twins
def test_conv_update_ref_matches_transformers_conv_update():
    from transformers.models.falcon_h1.modeling_falcon_h1 import causal_conv1d_update

    g = torch.Generator().manual_seed(0)
    x, state = torch.randn(3, 10, generator=g), torch.randn(3, 10, 4, generator=g)
    w, b = torch.randn(10, 4, generator=g), torch.randn(10, generator=g)
    s_ref = state.clone()
    ref = causal_conv1d_update(x[:, :, None], s_ref, w, b, "silu")[:, :, 0]
    out = engine_ops.conv_update_ref(x, state, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, s_ref)


def test_ssm_update_ref_matches_transformers_step_and_the_chunked_scan():
    from transformers.models.falcon_h1.modeling_falcon_h1 import mamba2_chunk_scan, mamba2_selective_state_update

    g = torch.Generator().manual_seed(0)
    Bsz, H, P, N, G, T = 2, 4, 8, 6, 2, 11
    A = -torch.rand(H, generator=g) - 0.5
    D, dt_bias = torch.randn(H, generator=g), torch.randn(H, generator=g)
    xs, dts = torch.randn(Bsz, T, H, P, generator=g), torch.randn(Bsz, T, H, generator=g)
    Bs, Cs = torch.randn(Bsz, T, G, N, generator=g), torch.randn(Bsz, T, G, N, generator=g)
    exp = dict(A=A[:, None, None].expand(H, P, N), D=D[:, None].expand(H, P), dt_bias=dt_bias[:, None].expand(H, P))
    # one step, against transformers' torch fallback of the same update
    s1, s2 = torch.randn(Bsz, H, P, N, generator=g), None
    s2 = s1.clone()
    args = (xs[:, 0], dts[:, 0, :, None].expand(Bsz, H, P), exp["A"], Bs[:, 0], Cs[:, 0])
    y_ref = mamba2_selective_state_update(s2, *args, exp["D"], dt_bias=exp["dt_bias"], dt_softplus=True)
    y = engine_ops.ssm_update_ref(s1, *args, D=exp["D"], dt_bias=exp["dt_bias"])
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(s1, s2)
    # T steps from a zero state = the chunked (parallel) scan over the sequence: the recurrence itself is right
    state = torch.zeros(Bsz, H, P, N)
    ys = torch.stack([engine_ops.ssm_update_ref(state, xs[:, t], dts[:, t, :, None].expand(Bsz, H, P), exp["A"],
                                            Bs[:, t], Cs[:, t], D=exp["D"], dt_bias=exp["dt_bias"])
                      for t in range(T)], dim=1)
    y_chunk, final = mamba2_chunk_scan(xs, dts, A, Bs, Cs, chunk_size=4, D=D, dt_bias=dt_bias, dt_softplus=True,
                                       return_final_states=True)
    torch.testing.assert_close(ys, y_chunk, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state, final, rtol=1e-4, atol=1e-4)


def _kernel_arithmetic(state, x, dt, A, B, C, D, z, dt_bias):
    """mamba-ssm's Triton ``_selective_scan_update_kernel`` body in torch: every input upcast, all float32."""
    x, dt, B, C, D = x.float(), dt.float() + dt_bias.float(), B.float(), C.float(), D.float()
    dt = torch.where(dt <= 20.0, torch.log1p(torch.exp(dt)), dt)
    heads, groups = x.shape[1], B.shape[1]
    B, C = B.repeat_interleave(heads // groups, 1), C.repeat_interleave(heads // groups, 1)
    state.copy_(state * torch.exp(A.float() * dt[..., None]) + B[:, :, None, :] * dt[..., None] * x[..., None])
    out = (state * C[:, :, None, :]).sum(-1) + x * D
    if z is not None:
        out = out * z.float() * torch.sigmoid(z.float())
    return out


def test_ssm_update_ref_on_float32_copies_is_the_triton_kernels_arithmetic():
    """The twin bench/engine_check.py compares the GPU kernel with: the kernel computes in float32 from bf16
    inputs, so its twin is ssm_update_ref on float32 copies, not on the bf16 tensors (transformers' fallback
    arithmetic, which rounds dt*B*x and the state fed to C.h: the first GPU check compared with that)."""
    g = torch.Generator().manual_seed(4)
    Bsz, H, P, N, G = 3, 4, 16, 32, 2
    bf = dict(generator=g, dtype=torch.bfloat16)
    x, z = torch.randn(Bsz, H, P, **bf), torch.randn(Bsz, H, P, **bf)
    dt = (torch.randn(Bsz, H, **bf) * 8)[:, :, None].expand(Bsz, H, P)  # some past softplus's threshold of 20
    A = (-torch.rand(H, generator=g) - 0.5)[:, None, None].expand(H, P, N)
    Bm, Cm = torch.randn(Bsz, G, N, **bf) * 4, torch.randn(Bsz, G, N, **bf) * 4
    D, dtb = torch.randn(H, **bf)[:, None].expand(H, P), torch.randn(H, **bf)[:, None].expand(H, P)
    s0 = torch.randn(Bsz, H, P, N, generator=g) * 0.1
    for gate in (None, z):
        s_kernel, s_twin, s_fallback = s0.clone(), s0.clone(), s0.clone()
        y_kernel = _kernel_arithmetic(s_kernel, x, dt, A, Bm, Cm, D, gate, dtb)
        y_twin = engine_ops.ssm_update_ref(s_twin, x.float(), dt.float(), A, Bm.float(), Cm.float(), D=D.float(),
                                       z=None if gate is None else gate.float(), dt_bias=dtb.float())
        torch.testing.assert_close(s_twin, s_kernel, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y_twin, y_kernel, rtol=1e-5, atol=1e-4)
        engine_ops.ssm_update_ref(s_fallback, x, dt, A, Bm, Cm, D=D, z=gate, dt_bias=dtb)
        # the bf16 fallback arithmetic is further from the kernel than the check's float32 state tolerance
        assert float((s_fallback - s_kernel).abs().max()) > 1e-4 * float(s_kernel.abs().max())


def test_ssm_update_uses_the_reference_without_cuda():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(1, 2, 4, 3, generator=g)
    args = (torch.randn(1, 2, 4, generator=g), torch.randn(1, 2, 4, generator=g), -torch.rand(2, 4, 3, generator=g),
            torch.randn(1, 1, 3, generator=g), torch.randn(1, 1, 3, generator=g))
    s2 = s.clone()
    torch.testing.assert_close(engine_ops.ssm_update(s, *args), engine_ops.ssm_update_ref(s2, *args))


def test_matmul_attention_equals_sdpa_on_a_cache_slice():
    g = torch.Generator().manual_seed(3)
    B, KV, G, T, D = 3, 2, 3, 40, 16
    q = torch.randn(B, KV, G, D, generator=g)
    # a slice of a longer cache, as the engine attends over its first T columns
    k, v = torch.randn(B, KV, 64, D, generator=g)[:, :, :T], torch.randn(B, KV, 64, D, generator=g)[:, :, :T]
    valid = torch.rand(B, T, generator=g) < 0.7
    valid[:, -1] = True
    bias = torch.zeros(B, 1, 1, T).masked_fill_(~valid[:, None, None, :], float("-inf"))
    ref = engine.DecodeEngine._attend(q, k, v, bias, 0.25, "sdpa", valid)
    torch.testing.assert_close(engine.DecodeEngine._attend(q, k, v, bias, 0.25, "matmul", valid), ref, rtol=1e-5, atol=1e-5)
    # and the layout: query head h reads KV head h // G (what transformers' repeat_kv does)
    expanded = torch.softmax((q.reshape(B, KV * G, 1, D) @ k.repeat_interleave(G, 1).transpose(-1, -2)) * 0.25
                             + bias, -1) @ v.repeat_interleave(G, 1)
    torch.testing.assert_close(ref.reshape(B, KV * G, D), expanded[:, :, 0], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- greedy equality
def _eos_that_stops_row0(model):
    """A token row 0 emits at step 4 (and not before): using it as EOS makes row 0 stop early."""
    rows = hf_generate_ids(model, PROMPTS, eos_id=-1, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=12)
    toks = rows[0]["token_ids"]
    for j in range(3, len(toks)):
        if toks[j] not in toks[:j]:
            return toks[j]
    return toks[-1]


@pytest.mark.parametrize("build,attention", [(lambda: tiny_falcon(), "sdpa"),
                                            (lambda: tiny_falcon(rms_norm=False, groups=2), "matmul"),
                                            (tiny_qwen3, "sdpa")],
                         ids=["falcon_gated_norm", "falcon_z_gate_2groups_matmul", "qwen3"])
def test_greedy_matches_transformers_fp32(build, attention, monkeypatch):
    model = build()
    monkeypatch.setattr(engine_pool, "DEFAULT_ATTENTION", attention)
    eos = _eos_that_stops_row0(model)
    res = engine_check.compare_with_hf(model, PROMPTS, max_new_tokens=12, eos_id=eos, pad_id=0)
    assert res["tokens_identical"], res
    assert res["max_abs_logprob_diff_prefix"] < 1e-3
    assert res["max_abs_top_logprob_diff_prefix"] < 1e-3
    assert res["max_abs_top_logprob_diff_teacher_forced"] < 1e-3
    fast = inference.generate_ids(model, PROMPTS, eos_id=eos, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=12,
                               engine="fast")
    ref = hf_generate_ids(model, PROMPTS, eos_id=eos, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=12)
    assert fast[0]["finish_reason"] == "eos" and fast[0]["token_ids"][-1] == eos
    for a, b in zip(fast, ref):
        assert a["finish_reason"] == b["finish_reason"] and a["prompt_tokens"] == b["prompt_tokens"]
        np.testing.assert_array_equal(a["top_ids"][:, :3], b["top_ids"][:, :3])
        assert a["top_logprobs"].dtype == np.float32 and a["top_ids"].dtype == np.int32


def test_a_wrong_gate_is_caught(monkeypatch):
    """The comparison has teeth: flipping where Falcon's gated norm applies its gate breaks it."""
    model = tiny_falcon()
    real = engine_ops.gated_rms_norm
    monkeypatch.setattr(engine_ops, "gated_rms_norm", lambda x, g, w, eps, n, before: real(x, g, w, eps, n, not before))
    res = engine_check.compare_with_hf(model, PROMPTS, max_new_tokens=6, eos_id=-1, pad_id=0)
    assert res["max_abs_top_logprob_diff_teacher_forced"] > 1e-2


def test_bf16_engine_stays_close_to_transformers():
    model = tiny_falcon(dtype=torch.bfloat16)
    res = engine_check.compare_with_hf(model, PROMPTS, max_new_tokens=6, eos_id=-1, pad_id=0, greedy_tol=0.1)
    # bf16 rounds differently along every path: transformers' own cached decoding is the yardstick
    assert res["max_abs_top_logprob_diff_teacher_forced"] <= max(0.15, 1.5 * res["hf_max_abs_top_logprob_diff_teacher_forced"]), res
    assert res["engine_tokens_are_hf_argmax_frac"] >= res["hf_tokens_are_full_forward_argmax_frac"] - 0.02
    assert res["rows_identical_frac"] >= 0.5
    # against exact arithmetic on the same bf16-valued weights (the GPU check's yardstick), both paths alike
    truth = engine_check.compare_with_hf(model, PROMPTS, max_new_tokens=6, eos_id=-1, pad_id=0, greedy_tol=0.1,
                                   truth_model=tiny_falcon(dtype=torch.bfloat16).float())
    assert 0 < truth["engine_mean_abs_top_logprob_err_vs_fp32"] <= 1.2 * truth["hf_mean_abs_top_logprob_err_vs_fp32"], truth
    assert truth["engine_max_abs_top_logprob_err_vs_fp32"] >= truth["engine_mean_abs_top_logprob_err_vs_fp32"]
    assert truth["engine_tokens_are_fp32_argmax_frac"] >= truth["hf_tokens_are_fp32_argmax_frac"] - 0.02


def test_bfloat16_ssm_state_halves_its_bytes_and_stays_close_to_the_float32_state():
    """vLLM's default for Mamba caches, measured against the float32 state on the same float32 weights: the state
    is rounded to bf16 at every step, an error that decays with the state instead of growing."""
    model = tiny_falcon()
    with torch.no_grad():  # a state that matters: slow decay (exp(dt A) ~ 0.97), no skip term, a loud mixer
        for layer in model.model.layers:
            layer.mamba.A_log.fill_(math.log(0.05))
            layer.mamba.dt_bias.zero_()
            layer.mamba.D.zero_()
            layer.ssm_out_multiplier = 20.0
    f32, bf16 = engine.DecodeEngine(model, 2, 16), engine.DecodeEngine(model, 2, 16, ssm_state_dtype=torch.bfloat16)
    assert f32.ssm_state.nbytes == 2 * bf16.ssm_state.nbytes and bf16.info["ssm_state_dtype"] == "bfloat16"
    assert f32.cache_bytes() - bf16.cache_bytes() == bf16.ssm_state.nbytes
    with pytest.raises(ValueError, match="ssm_state_dtype"):
        engine.DecodeEngine(model, 2, 16, ssm_state_dtype=torch.float16)
    res = engine_check.compare_state_dtypes(model, PROMPTS, max_new_tokens=12, eos_id=-1, pad_id=0)
    assert res["ssm_update"] == "torch" and res["rows"] == len(PROMPTS)
    assert 1e-6 < res["mean_abs_top_logprob_diff_prefix"] <= res["max_abs_top_logprob_diff_prefix"] < 0.05, res
    assert res["greedy_prefix_agreement_frac"] >= 0.75 and 0 <= res["rows_identical_frac"] <= 1
    # each path against transformers' full forward over its own tokens: the float32 state is exact here (fp32
    # weights), the bf16 one is off by its rounding only
    assert res["float32_state_max_abs_top_logprob_err_vs_full_forward"] < 1e-5
    assert 10 * res["float32_state_max_abs_top_logprob_err_vs_full_forward"] < \
        res["bfloat16_state_max_abs_top_logprob_err_vs_full_forward"] < 0.05
    with pytest.raises(ValueError, match="only a Falcon-H1"):
        engine_check.compare_state_dtypes(tiny_qwen3(), PROMPTS, max_new_tokens=2, eos_id=-1, pad_id=0)


def test_state_update_path_is_resolved_for_the_device_and_refused_where_it_cannot_run():
    assert engine_ops.resolve_state_update("auto", "cpu") == "torch"
    assert engine.DecodeEngine(tiny_falcon(), 1, 8).info["ssm_update"] == "torch"
    for path in ("triton", "mamba_ssm"):
        with pytest.raises(ValueError, match=f"state_update '{path}' needs a CUDA model"):
            engine.DecodeEngine(tiny_falcon(), 1, 8, state_update=path)
    with pytest.raises(ValueError, match="not accepted"):
        engine_ops.resolve_state_update("cuda_graph", "cpu")


# ----------------------------------------------------------------------------- early stop, sampling
def test_early_stop_matches_transformers():
    from falcon_h1r.deepconf import EarlyStopController

    model = tiny_falcon()
    free = hf_generate_ids(model, PROMPTS, eos_id=-1, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=12)
    window = 3
    lowest = []
    for r in free:
        conf = -r["top_logprobs"].astype(np.float64).mean(-1)
        lowest.append(min(np.convolve(conf, np.ones(window) / window, mode="valid")))
    threshold = float(np.median(lowest)) + 1e-9  # about half of the rows cross it somewhere
    kw = dict(eos_id=-1, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=12)
    ref = hf_generate_ids(model, PROMPTS, early_stop=EarlyStopController(threshold, window), **kw)
    fast = inference.generate_ids(model, PROMPTS, early_stop=EarlyStopController(threshold, window), **kw)
    reasons = [r["finish_reason"] for r in ref]
    assert "early_stop" in reasons and "length" in reasons
    assert [r["finish_reason"] for r in fast] == reasons
    assert [r["token_ids"] for r in fast] == [r["token_ids"] for r in ref]


def test_sampled_logprobs_are_the_processed_distribution_and_seeded():
    from falcon_h1r.inference.sampling import top_p_filter

    model = tiny_falcon()
    kw = dict(eos_id=-1, pad_id=0, temperature=0.7, top_p=0.8, max_new_tokens=8, engine="fast")
    a = inference.generate_ids(model, PROMPTS, seed=3, **kw)
    b = inference.generate_ids(model, PROMPTS, seed=3, **kw)
    c = inference.generate_ids(model, PROMPTS, seed=4, **kw)
    assert [r["token_ids"] for r in a] == [r["token_ids"] for r in b]
    assert [r["token_ids"] for r in a] != [r["token_ids"] for r in c]
    raw = engine_check.teacher_forced_logprobs(model, PROMPTS, [r["token_ids"] for r in a], pad_id=0)
    for row, lp in zip(a, raw):
        proc = torch.log_softmax(top_p_filter(lp / 0.7, 0.8), dim=-1)  # log_softmax(raw/T) = log_softmax(logits/T)
        chosen = proc.gather(-1, torch.as_tensor(row["token_ids"])[:, None])[:, 0]
        assert torch.isfinite(chosen).all()  # every draw is inside the nucleus
        np.testing.assert_allclose(row["logprobs"], chosen.numpy(), atol=1e-4)
        np.testing.assert_allclose(row["top_logprobs"], lp.topk(20, dim=-1).values.numpy(), atol=1e-4)


def test_exponential_race_draws_from_the_softmax():
    model = tiny_falcon()
    n = 400
    rows = inference.generate_ids(model, [[5, 6, 7]] * n, eos_id=-1, pad_id=0, temperature=1.0, top_p=1.0,
                               max_new_tokens=1, engine="fast", seed=11)
    first = np.array([r["token_ids"][0] for r in rows])
    lp = engine_check.teacher_forced_logprobs(model, [[5, 6, 7]], [[0]], pad_id=0)[0][0]
    probs = torch.softmax(lp, -1).numpy().astype(np.float64)
    np.testing.assert_allclose([r["logprobs"][0] for r in rows], np.log(probs[first]), atol=1e-4)
    # chi-square over the 5 likeliest tokens and the rest: 5 degrees of freedom, 20.5 is the 0.1 % tail
    top = np.argsort(-probs)[:5]
    expected = np.append(probs[top], 1 - probs[top].sum()) * n
    observed = np.append([np.sum(first == t) for t in top], n - np.isin(first, top).sum())
    assert ((observed - expected) ** 2 / expected).sum() < 20.5, (observed, expected.round(1))


# ----------------------------------------------------------------------------- the interface
def test_generate_honours_the_engine_setting():
    from falcon_h1r.inference import generate as hf_generate

    class Tok:
        eos_id, pad_id = -1, 0

        def encode(self, s):
            return [5 + (ord(ch) % 80) for ch in s]

        def decode(self, ids):
            return " ".join(map(str, ids))

    model, tok = tiny_qwen3(), Tok()
    prompts = ["abc", "de", "fghij"]
    cfg = GenerationConfig(temperature=0.0, max_new_tokens=6, batch_size=2, engine="hf")
    ref = hf_generate(model, tok, prompts, cfg, progress=False)
    via_hf = inference.generate(model, tok, prompts, cfg, progress=False)
    assert [c.token_ids for c in via_hf] == [c.token_ids for c in ref]
    auto = inference.generate(model, tok, prompts, GenerationConfig(temperature=0.0, max_new_tokens=6, batch_size=2,
                                                                  engine="auto"), progress=False)
    assert all(c.meta.get("engine") != "fast" for c in auto)  # CPU: auto keeps transformers' loop
    fast = inference.generate(model, tok, prompts, GenerationConfig(temperature=0.0, max_new_tokens=6, batch_size=2,
                                                                  engine="fast"), progress=False)
    assert [c.token_ids for c in fast] == [c.token_ids for c in ref]
    assert [c.text for c in fast] == [c.text for c in ref] and [c.prompt_index for c in fast] == [0, 1, 2]
    assert all(c.meta["engine"] == "fast" and c.finish_reason == "length" for c in fast)


def test_bad_engine_name_and_unsupported_models_are_clear_errors():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tiny_qwen3()
    with pytest.raises(ValueError, match="'auto', 'hf', 'fast'"):
        inference.resolve_engine("vllm", model)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(EngineUnsupported, match="FalconH1ForCausalLM and Qwen3ForCausalLM"):
        inference.resolve_engine("fast", llama)
    assert inference.resolve_engine("auto", llama) == "hf"
    eng = engine.DecodeEngine(model, 2, 8)
    with pytest.raises(ValueError, match="exceed"):
        eng.prefill([[5] * 6, [6]], pad_id=0, max_new_tokens=4)
    with pytest.raises(ValueError, match="at least one token"):
        eng.prefill([[5], []], pad_id=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="holds 2 rows"):
        eng.prefill([[5]], pad_id=0, max_new_tokens=2)


def test_engine_is_reused_across_calls_with_the_same_shape():
    model = tiny_falcon()
    kw = dict(eos_id=-1, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=5, engine="fast")
    first = inference.generate_ids(model, PROMPTS, **kw)
    eng = engine_pool._ENGINES[model][1]
    again = inference.generate_ids(model, PROMPTS[::-1], **kw)
    assert engine_pool._ENGINES[model][1] is eng
    assert [r["token_ids"] for r in again] == [r["token_ids"] for r in first][::-1]
    inference.generate_ids(model, PROMPTS[:2], **kw)
    assert engine_pool._ENGINES[model][1] is not eng
    assert eng.cache_bytes() == sum(t.numel() * t.element_size()
                                    for t in (eng.k_cache, eng.v_cache, eng.conv_state, eng.ssm_state))


# ----------------------------------------------------------------------------- the graph path's bookkeeping
class _RecordedStep:
    """Stands in for a CUDA graph on CPU: capturing records the step without running it, replay runs it."""

    def __init__(self, body):
        self.body = body
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.body()


@pytest.mark.parametrize("stop", [None, "in_graph", "between_replays"])
def test_graph_path_bookkeeping_matches_the_eager_path(stop, monkeypatch):
    """Capture-before-prefill, warm-up scribbles, KV buckets, replays, EOS and early stop inside or between
    graph replays: the replayed path must give the eager path's outputs exactly."""
    from falcon_h1r.deepconf import EarlyStopController

    class BetweenReplays(EarlyStopController):
        graph_safe = False

    monkeypatch.setattr(engine.DecodeEngine, "_capture", lambda self, body: _RecordedStep(body))
    monkeypatch.setattr(engine.DecodeEngine, "_warmup", lambda self, body: self._run_warm(body))
    model = tiny_falcon()
    eos = _eos_that_stops_row0(model)

    def run(graphs: bool, temperature: float):
        early = {None: None, "in_graph": EarlyStopController(8.0, 2),
                 "between_replays": BetweenReplays(8.0, 2)}[stop]
        eng = engine.DecodeEngine(model, len(PROMPTS), 24, cuda_graph=False, bucket=4)
        eng.cuda_graph = graphs
        rows = eng.generate(PROMPTS, eos_id=eos, pad_id=0, temperature=temperature, top_p=0.9, max_new_tokens=12,
                            seed=7, early_stop=early, check_every=3)
        return rows, eng

    for temperature in (0.0, 0.8):
        ref, _ = run(False, temperature)
        got, eng = run(True, temperature)
        assert [r["token_ids"] for r in got] == [r["token_ids"] for r in ref]
        assert [r["finish_reason"] for r in got] == [r["finish_reason"] for r in ref]
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-5)
            np.testing.assert_allclose(a["top_logprobs"], b["top_logprobs"], atol=1e-5)
        assert len({k[0] for k in eng._graphs}) > 1 or stop == "in_graph"  # several KV buckets were used
    reasons = {r["finish_reason"] for r in ref}
    assert ("early_stop" in reasons) if stop else ("eos" in reasons)


def test_engine_check_merges_partial_runs_keeping_each_checks_latest_result():
    """bench/engine_check.py --merge: a short device session runs some checks; the record is their union,
    each check from the latest run that got to it, with that run's GPU."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("engine_check", Path(__file__).parents[1] / "bench" / "engine_check.py")
    ec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ec)
    first = {"started": "2026-01-01T00:00:00Z", "gpu_name": "H100", "wall_s": 10.0,
             "checks": [{"name": "a", "status": "failed"}, {"name": "b", "status": "skipped_budget"}]}
    second = {"started": "2026-01-02T00:00:00Z", "gpu_name": "H200", "wall_s": 5.0,
              "checks": [{"name": "b", "status": "passed"}, {"name": "a", "status": "skipped_budget"}]}
    third = {"started": "2026-01-03T00:00:00Z", "gpu_name": "H100", "wall_s": 1.0, "checks": [{"name": "a", "status": "passed"}]}
    merged = ec.merge_runs([second, third, first])
    assert [c["name"] for c in merged["checks"]] == ["a", "b"]
    assert [(c["status"], c["run_gpu_name"]) for c in merged["checks"]] == [("passed", "H100"), ("passed", "H200")]
    assert (merged["passed"], merged["total"], merged["gpu_name"]) == (2, 2, "H100 + H200")
    only_failed = ec.merge_runs([first])
    assert only_failed["passed"] == 0 and only_failed["checks"][1]["status"] == "skipped_budget"
