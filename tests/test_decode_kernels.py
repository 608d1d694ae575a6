"""The engine's fast paths against their plain twins, on the CPU.

* The split-KV Triton attention runs under Triton's interpreter (``TRITON_INTERPRET=1``), so its indexing,
  masking and split merging are checked here; the GPU check (bench/engine_check.py) compiles it for real.
* The torch.compile'd layer glue is traced with the ``aot_eager`` backend (Dynamo + AOTAutograd, no code
  generation): that checks it compiles as one graph per function, serves every layer without recompiling,
  keeps the in-place conv-state update, and gives the plain glue's output.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from falcon_h1r.inference import decode_kernels, engine, engine_ops

triton = pytest.importorskip("triton", reason="Triton (installed with the dev extra) runs the kernel's interpreter")


@pytest.fixture
def interpret():
    """The kernels run under Triton's interpreter here (tests/conftest.py sets TRITON_INTERPRET before any
    import of triton on a machine without a GPU)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("a GPU machine: bench/engine_check.py runs the compiled kernel")


@pytest.mark.parametrize("B,KV,G,D,T,S,block_n,sms", [
    (3, 2, 6, 32, 200, 256, 16, 4),   # Falcon-H1R's 6 query heads per KV head, several splits, a short last split
    (2, 1, 4, 16, 70, 80, 16, 64),    # one split per tile (more programs wanted than tiles)
    (4, 2, 3, 32, 33, 64, 16, 1),     # one split: no merge
])
def test_split_kv_attention_equals_sdpa_on_a_masked_cache_slice(interpret, B, KV, G, D, T, S, block_n, sms):
    g = torch.Generator().manual_seed(T)
    cache_k, cache_v = torch.randn(B, KV, S, D, generator=g), torch.randn(B, KV, S, D, generator=g)
    q = torch.randn(B, KV, G, D, generator=g)
    valid = torch.rand(B, S, generator=g) > 0.3
    valid[:, T - 1] = True  # the column being decoded is always valid
    valid[0, : T - 1] = False  # a row that sees only its newest token (left padding taken to the extreme)
    k, v = cache_k[:, :, :T], cache_v[:, :, :T]  # strided slices of a longer cache, as the engine passes
    n_splits, _ = decode_kernels.plan_splits(B * KV, T, block_n, sms)
    out = decode_kernels.split_kv_attention(q, k, v, valid, 0.17, block_n=block_n, sm_count=sms)
    ref = decode_kernels.attention_ref(q, k, v, valid[:, :T], 0.17)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert (n_splits > 1) == (T > block_n and sms * decode_kernels.PROGRAMS_PER_SM > B * KV)


def test_split_plan_covers_the_cache_with_few_compiled_variants():
    for rows, kv_len in [(64, 24640), (106, 8256), (2, 256), (256, 64), (8, 100_000)]:
        n, split_len = decode_kernels.plan_splits(rows, kv_len, 64, 132)
        assert n * split_len >= kv_len > (n - 1) * split_len  # every column in exactly one split, none empty
        tiles = split_len // 64
        assert split_len % 64 == 0 and tiles & (tiles - 1) == 0  # a power of two of tiles: few kernel variants
        assert n <= max(1, -(-decode_kernels.PROGRAMS_PER_SM * 132 // rows)) or tiles == 1


def test_split_kv_attention_rejects_bad_shapes_clearly():
    q = torch.randn(1, 2, 3, 24)
    k = torch.randn(1, 2, 5, 24)
    with pytest.raises(ValueError, match="power of two"):
        decode_kernels.split_kv_attention(q, k, k, torch.ones(1, 5, dtype=torch.bool), 1.0)
    q, k = torch.randn(1, 2, 3, 16), torch.randn(1, 2, 5, 16)
    with pytest.raises(ValueError, match="bool"):
        decode_kernels.split_kv_attention(q, k, k, torch.ones(1, 5), 1.0)
    with pytest.raises(ValueError, match="keys/values"):
        decode_kernels.split_kv_attention(q, k, k[:, :1], torch.ones(1, 5, dtype=torch.bool), 1.0)


def test_triton_attention_mode_is_refused_without_cuda():
    from tests.test_engine import tiny_falcon

    with pytest.raises(ValueError, match="triton"):
        engine.DecodeEngine(tiny_falcon(), 2, 32, attention="triton")
    with pytest.raises(ValueError, match="one of"):
        engine.DecodeEngine(tiny_falcon(), 2, 32, attention="flash")


@pytest.mark.parametrize("family", ["falcon", "qwen3"])
def test_compiled_glue_traces_once_and_equals_the_plain_glue(family):
    import torch._dynamo
    from torch._dynamo.utils import counters

    from tests.test_engine import PROMPTS, tiny_falcon, tiny_qwen3

    model = tiny_falcon() if family == "falcon" else tiny_qwen3()
    kw = dict(eos_id=-1, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=6)
    plain = engine.DecodeEngine(model, len(PROMPTS), 32).generate(PROMPTS, **kw)
    torch._dynamo.reset()
    counters.clear()
    eng = engine.DecodeEngine(model, len(PROMPTS), 32)
    eng.set_compiled(True, backend="aot_eager")
    compiled = eng.generate(PROMPTS, **kw)
    assert eng.info["compiled"]
    for a, b in zip(plain, compiled):
        assert a["token_ids"] == b["token_ids"]
        np.testing.assert_allclose(a["top_logprobs"], b["top_logprobs"], rtol=1e-5, atol=1e-5)
    # one graph per glue function for both layers and every step: no graph break, no per-layer recompile
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    with pytest.raises(ValueError, match="CUDA"):
        eng.set_compiled(True)  # Inductor on CPU is refused: the fused path is for the GPU
    torch._dynamo.reset()


def test_compiled_engine_on_cpu_is_refused_clearly():
    from tests.test_engine import tiny_falcon

    with pytest.raises(ValueError, match="compile=True needs a CUDA model"):
        engine.DecodeEngine(tiny_falcon(), 2, 32, compile=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["falcon", "qwen3"])
def test_inductor_compiled_glue_equals_the_plain_glue(family):
    """Inductor's own code generation (C++ on the CPU; Triton on the GPU runs the same graph passes). The
    aot_eager test above cannot see a miscompile: this one caught Inductor turning
    ``torch.add(x, F.linear(h, W), alpha=a)`` into wrong numbers (23.7 off at the Falcon-H1R-7B shapes)."""
    import torch._dynamo

    from tests.test_engine import PROMPTS, tiny_falcon, tiny_qwen3

    model = tiny_falcon() if family == "falcon" else tiny_qwen3()
    kw = dict(eos_id=-1, pad_id=0, temperature=0.0, top_p=1.0, max_new_tokens=5)
    plain = engine.DecodeEngine(model, len(PROMPTS), 32).generate(PROMPTS, **kw)
    torch._dynamo.reset()
    eng = engine.DecodeEngine(model, len(PROMPTS), 32)
    eng.compiled, eng._glue = True, engine_ops.compiled_glue("inductor")  # set_compiled refuses Inductor on CPU
    fast = eng.generate(PROMPTS, **kw)
    for a, b in zip(plain, fast):
        assert a["token_ids"] == b["token_ids"]
        np.testing.assert_allclose(a["top_logprobs"], b["top_logprobs"], rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_add_alpha_pattern_is_still_avoided():
    """The pattern the glue avoids, kept visible: if a torch upgrade fixes it this test says so."""
    import torch._dynamo

    torch.manual_seed(0)
    x, w = torch.randn(4, 64), torch.randn(64, 64)

    def with_alpha(x):
        return torch.add(x, torch.nn.functional.linear(x, w), alpha=0.03)

    def as_glue(x):
        return x + torch.nn.functional.linear(x, w) * 0.03

    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(as_glue)(x), as_glue(x), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    wrong = float((torch.compile(with_alpha)(x) - with_alpha(x)).abs().max())
    if wrong < 1e-4:
        pytest.skip(f"this torch compiles torch.add(..., alpha=) correctly ({wrong:.1e}): the workaround may go")
    assert wrong > 1e-2


# ----------------------------------------------------------------------------- the Mamba-2 state update kernel
def _state_update_inputs(Bsz, H, P, N, G, seed=0, device="cpu"):
    """Mamba-2 decode-step inputs as the engine passes them: bf16 activations, per-head dt, A, D, dt_bias given as
    expanded views (stride 0 along the head's rows), dt large enough to cross softplus's threshold of 20. The views
    are expanded on ``device`` (moving an expanded view copies it into a contiguous tensor, which is not what the
    engine passes)."""
    g = torch.Generator().manual_seed(seed)
    bf = dict(generator=g, dtype=torch.bfloat16)
    x, dt, A = torch.randn(Bsz, H, P, **bf), torch.randn(Bsz, H, **bf) * 8, -torch.rand(H, generator=g) - 0.5
    B, C = torch.randn(Bsz, G, N, **bf) * 2, torch.randn(Bsz, G, N, **bf) * 2
    D, dt_bias = torch.randn(H, **bf), torch.randn(H, **bf)
    z, state = torch.randn(Bsz, H, P, **bf), torch.randn(Bsz, H, P, N, generator=g)
    x, dt, A, B, C, D, dt_bias, z, state = (t.to(device) for t in (x, dt, A, B, C, D, dt_bias, z, state))
    return dict(x=x, dt=dt[:, :, None].expand(Bsz, H, P), A=A[:, None, None].expand(H, P, N), B=B, C=C,
                D=D[:, None].expand(H, P), dt_bias=dt_bias[:, None].expand(H, P), z=z, state=state)


def _float32_twin(state, inp, gate):
    """ssm_update_ref on float32 copies: mamba-ssm's (and our kernel's) arithmetic, all in float32."""
    f = {k: v.float() for k, v in inp.items() if k not in ("state", "z", "A")}
    return engine_ops.ssm_update_ref(state, f["x"], f["dt"], inp["A"], f["B"], f["C"], D=f["D"],
                                     z=None if gate is None else gate.float(), dt_bias=f["dt_bias"])


@pytest.mark.parametrize("Bsz,H,P,N,G,block_p,state_dtype,gated", [
    (3, 4, 16, 32, 2, 8, torch.float32, False),   # two P blocks per head, two groups of heads
    (2, 6, 12, 24, 3, 8, torch.float32, True),    # P not a multiple of the block, N padded to 32, the z gate
    (2, 2, 8, 256, 1, 16, torch.bfloat16, False),  # Falcon-H1R-7B's d_state 256, a bfloat16 state (vLLM's default)
    (1, 3, 16, 6, 1, 4, torch.bfloat16, True),    # N padded to the kernel's 16 minimum
])
def test_ssm_state_update_kernel_equals_its_float32_twin(interpret, Bsz, H, P, N, G, block_p, state_dtype, gated):
    inp = _state_update_inputs(Bsz, H, P, N, G, seed=P + N)
    gate = inp["z"] if gated else None
    s_kernel = (inp["state"] * 0.3).to(state_dtype)
    s_twin = s_kernel.float().clone()  # a copy even when the state is already float32
    y = decode_kernels.ssm_state_update(s_kernel, inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], D=inp["D"], z=gate,
                                        dt_bias=inp["dt_bias"], block_p=block_p, num_warps=2)
    y_twin = _float32_twin(s_twin, inp, gate)
    assert y.dtype == inp["x"].dtype and s_kernel.dtype == state_dtype
    # the state: float32 arithmetic in both, rounded once to the state's dtype (one bf16 ulp apart at most: Triton's
    # CPU interpreter truncates float32 -> bfloat16 where the GPU rounds to nearest)
    ulp = 2 ** -7 if state_dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(s_kernel, s_twin.to(state_dtype), rtol=ulp, atol=1e-5)
    # y: C.h on the unrounded float32 state in both, rounded once to bf16 (one ulp apart at most)
    torch.testing.assert_close(y.float(), y_twin.to(y.dtype).float(), rtol=2 ** -7, atol=1e-3)


def test_ssm_state_update_kernel_takes_per_head_tensors_as_given_or_expanded(interpret):
    Bsz, H, P, N = 2, 4, 8, 16
    inp = _state_update_inputs(Bsz, H, P, N, 2, seed=9)
    s1, s2 = inp["state"].clone(), inp["state"].clone()
    y1 = decode_kernels.ssm_state_update(s1, inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], D=inp["D"],
                                         dt_bias=inp["dt_bias"])
    y2 = decode_kernels.ssm_state_update(s2, inp["x"], inp["dt"][:, :, 0].contiguous(), inp["A"][:, 0, 0].contiguous(),
                                         inp["B"], inp["C"], D=inp["D"][:, 0].contiguous(),
                                         dt_bias=inp["dt_bias"][:, 0].contiguous())
    assert torch.equal(y1, y2) and torch.equal(s1, s2)
    # no D, no dt_bias, no softplus: the plain recurrence h <- exp(dt A) h + dt B x ; y = C.h
    s3, s4 = inp["state"].clone(), inp["state"].clone()
    dt = (inp["dt"][:, :, :1].abs() * 0.1).expand(Bsz, H, P)
    y3 = decode_kernels.ssm_state_update(s3, inp["x"], dt, inp["A"], inp["B"], inp["C"], dt_softplus=False)
    y4 = engine_ops.ssm_update_ref(s4, inp["x"].float(), dt.float(), inp["A"], inp["B"].float(), inp["C"].float(),
                                   dt_softplus=False)
    torch.testing.assert_close(s3, s4, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y3.float(), y4.to(torch.bfloat16).float(), rtol=2 ** -7, atol=1e-3)


def test_ssm_state_update_kernel_refuses_what_it_does_not_implement():
    inp = _state_update_inputs(1, 2, 4, 8, 1)
    args = (inp["state"], inp["x"], inp["dt"])
    untied_a = -torch.rand(2, 4, 8)  # a different A per head row: not Mamba-2
    with pytest.raises(ValueError, match="A must be per head"):
        decode_kernels.ssm_state_update(*args, untied_a, inp["B"], inp["C"])
    with pytest.raises(ValueError, match="dt must be"):
        decode_kernels.ssm_state_update(inp["state"], inp["x"], torch.randn(1, 2, 4), inp["A"], inp["B"], inp["C"])
    with pytest.raises(ValueError, match="shapes"):
        decode_kernels.ssm_state_update(*args, inp["A"], inp["B"][:, :, :4], inp["C"])
    with pytest.raises(ValueError, match="contiguous last dimension"):
        decode_kernels.ssm_state_update(inp["state"].transpose(2, 3), inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the compiled kernel")
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_gpu_ssm_state_update_kernel_at_falcon_h1r_7b_shapes(state_dtype):
    """The compiled kernel (tuned on first use) at Falcon-H1R-7B's heads (24 x 128, d_state 256), batch 8, against
    its float32 twin: the state to its dtype's rounding, y to one bf16 ulp."""
    inp = _state_update_inputs(8, 24, 128, 256, 1, seed=3, device="cuda")
    s_kernel = (inp["state"] * 0.3).to(state_dtype)
    s_twin = s_kernel.float().clone()
    y = decode_kernels.ssm_state_update(s_kernel, inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], D=inp["D"],
                                        dt_bias=inp["dt_bias"])
    y_twin = _float32_twin(s_twin, inp, None)
    ulp = 2 ** -7 if state_dtype == torch.bfloat16 else 1e-5  # one bf16 ulp anywhere in a binade (8 bits: 2^-7 at its bottom)
    torch.testing.assert_close(s_kernel.float(), s_twin.to(state_dtype).float(), rtol=ulp, atol=1e-5)
    torch.testing.assert_close(y.float(), y_twin.to(y.dtype).float(), rtol=2 ** -7, atol=1e-3)
    assert decode_kernels.tuned_state_update_configs()  # the tuning ran and was recorded
