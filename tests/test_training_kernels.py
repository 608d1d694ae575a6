"""The trainers' kernel switch (``sft.kernels`` / ``rl.kernels``: auto | plain).

On CPU: which kernels each mode selects for each model family and machine, that the plain path (and ``auto`` on
a CPU) computes exactly what the trainers computed before the switch, that the hidden-state loss path the fused
cross-entropy uses equals the logits path when it runs the plain twin, how the Mamba-2 dispatchers count their
paths, and Liger put in place and taken out per model (Liger's real patch functions, no kernel run). On a CUDA GPU
(tests marked ``gpu``): the fused path against the plain one on small shapes, losses and gradients within bf16
tolerance, for the SFT loss and the GRPO log-probs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from falcon_h1r import kernels
from falcon_h1r.config import RecipeError
from falcon_h1r.packed_mamba import kernel_calls
from falcon_h1r.sft import Example, SFTRecipe, collate, collate_packed, token_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def status(name: str, usable: bool) -> kernels.KernelStatus:
    return kernels.KernelStatus(name, name, "", "1.0" if usable else None, usable, usable,
                                "active" if usable else "not installed")


def report(**usable: bool) -> dict[str, kernels.KernelStatus]:
    return {n: status(n, usable.get(n, False)) for n in kernels.KERNELS}


ALL = report(causal_conv1d=True, mamba_ssm=True, liger_kernel=True, flash_attn=True)


@pytest.fixture(autouse=True)
def _no_patch_leaks():
    yield
    for model in list(kernels._TRAINING):
        kernels.release_training_kernels(model)


def model_of(family: str, *, width: int = 32, seed: int = 0) -> torch.nn.Module:
    """A small Falcon-H1 (with a non-trivial lm_head multiplier, so the loss paths must apply it) or Qwen3."""
    from transformers import FalconH1Config, FalconH1ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=width, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=width // 4, intermediate_size=48, max_position_embeddings=128, attn_implementation="sdpa")
    if family == "falcon_h1":
        cfg = FalconH1Config(**common, mamba_d_ssm=width, mamba_n_heads=4, mamba_d_head=width // 4,
                             mamba_d_state=max(8, width // 4), mamba_d_conv=4, mamba_n_groups=1,
                             mamba_chunk_size=8 if width < 64 else 16,  # the Triton scan tiles by 16
                             lm_head_multiplier=0.5)
        return FalconH1ForCausalLM(cfg)
    return Qwen3ForCausalLM(Qwen3Config(**common))


def batch_of(packed: bool, n: int = 4, seed: int = 1, vocab: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    exs = []
    for i in range(n):
        length = 6 + 5 * i
        ids = torch.randint(2, vocab, (length,), generator=g).tolist()
        exs.append(Example(ids, [0] * 2 + [1] * (length - 2), weight=1.0 + 0.5 * (i % 2)))
    return collate_packed(exs, 0, 40) if packed else collate(exs, 0)


def logits_path_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What token_losses computed before the kernel switch: the model's logits, then F.cross_entropy."""
    from falcon_h1r.packed_mamba import enable_packed_mamba

    if model.config.model_type == "falcon_h1":
        enable_packed_mamba()
    if "position_ids" in batch:
        kw = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        if model.config.model_type == "falcon_h1":
            kw["seq_idx"] = batch["seq_idx"]
    else:
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logits = model(**kw, use_cache=False).logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                           reduction="none").view(target.shape)


# ============================================================================================ selection


@pytest.mark.parametrize("mode,family,device,rep,want", [
    ("auto", "falcon_h1", "cuda", ALL, (True, True, ("rope", "rms_norm", "swiglu"), True)),
    ("auto", "qwen3", "cuda", ALL, (False, False, ("rope", "rms_norm", "swiglu"), True)),  # no Mamba in Qwen3
    ("auto", "falcon_h1", "cpu", ALL, (False, False, (), False)),                # the kernels run on CUDA only
    ("plain", "falcon_h1", "cuda", ALL, (False, False, (), False)),              # the reference path
    ("auto", "falcon_h1", "cuda", report(mamba_ssm=True), (False, True, (), False)),  # only what is installed
    ("auto", "llama", "cuda", ALL, (False, False, (), True)),                    # no Liger patch for the family
    ("no_liger", "falcon_h1", "cuda", ALL, (True, True, (), False)),             # Fig. 7's baseline: Liger off
])
def test_select_training_kernels(mode, family, device, rep, want):
    got = kernels.select_training_kernels(mode, family, device, rep)
    assert (got.causal_conv1d, got.mamba_ssm, got.liger, got.fused_linear_cross_entropy) == want
    assert got.reason and got.mode == mode
    assert set(got.record()) == {"mode", "causal_conv1d", "mamba_ssm", "liger", "fused_linear_cross_entropy", "attention",
                                 "reason"}


def test_selection_names_what_is_missing_and_refuses_unknown_modes():
    got = kernels.select_training_kernels("auto", "falcon_h1", "cuda", report(liger_kernel=True))
    assert "causal_conv1d: not installed" in got.reason and "mamba_ssm: not installed" in got.reason
    # a ZeRO-3 partitioned LM head cannot be read outside its forward: no fused cross-entropy, said why
    got = kernels.select_training_kernels("auto", "qwen3", "cuda", ALL, lm_head_partitioned=True)
    assert not got.fused_linear_cross_entropy and "ZeRO-3" in got.reason and got.liger
    with pytest.raises(ValueError, match="auto, plain, no_liger"):
        kernels.select_training_kernels("fast", "qwen3", "cuda", ALL)
    with pytest.raises(RecipeError, match="sft.kernels"):
        SFTRecipe(kernels="fast")
    from falcon_h1r.grpo import RLRecipe

    with pytest.raises(RecipeError, match="rl.kernels"):
        RLRecipe(kernels="liger")


def test_attention_is_flash_attn_where_usable_and_sdpa_otherwise(monkeypatch):
    assert kernels.select_training_kernels("auto", "qwen3", "cuda", ALL).attention == "flash_attention_2"
    assert kernels.select_training_kernels("auto", "qwen3", "cuda", report(liger_kernel=True)).attention == "sdpa"
    assert kernels.select_training_kernels("auto", "qwen3", "cpu", ALL).attention == "sdpa"
    assert kernels.select_training_kernels("plain", "qwen3", "cuda", ALL).attention == "sdpa"
    # where models are built and loaded: the device decides, a GPU computing in bf16 under autocast
    from falcon_h1r import models
    from falcon_h1r.config import load_preset

    m = load_preset("tiny").model
    assert models.build_model(m, 50, device="cpu").config._attn_implementation == "sdpa"
    asked = []
    monkeypatch.setattr(kernels, "choose_attn_implementation", lambda d, t, **_: asked.append((str(d), t)) or "eager")
    assert models.build_model(m, 50, device="cuda").config._attn_implementation == "eager"
    assert asked == [("cuda", torch.bfloat16)]


# ============================================================================== the plain path, unchanged


@pytest.mark.parametrize("family,packed", [("falcon_h1", True), ("falcon_h1", False), ("qwen3", True)])
def test_plain_and_cpu_auto_compute_what_the_trainer_computed_before(family, packed):
    model = model_of(family)
    batch = batch_of(packed)
    before = logits_path_losses(model, batch)
    kernel_calls(reset=True)
    for mode in ("plain", "auto"):
        loss, w = token_losses(model, batch, mode)
        assert torch.equal(loss, before), mode
        assert torch.equal(w, batch["weights"][:, 1:])
    chosen = kernels.training_kernels(model, "auto")
    assert not (chosen.causal_conv1d or chosen.mamba_ssm or chosen.liger or chosen.fused_linear_cross_entropy)
    assert "cpu" in chosen.reason
    calls = kernel_calls(reset=True)
    if family == "falcon_h1":  # every conv and scan took PyTorch's path, two layers, two modes
        assert calls == {"torch_conv": 4, "torch_scan": 4}, calls
    else:
        assert calls == {}
    with pytest.raises(ValueError, match="auto, plain"):
        token_losses(model, batch, "fused")


@pytest.mark.parametrize("family,packed", [("falcon_h1", True), ("qwen3", False)])
def test_hidden_state_path_equals_the_logits_path(family, packed):
    """The fused cross-entropy's path (last hidden states from a hook, LM head times its multiplier, one CE per
    scale) run with the plain twin: equal to the model's logits path, at temperature 1 and at 1/T."""
    from falcon_h1r.packed_mamba import enable_packed_mamba

    enable_packed_mamba()  # as token_losses does before any Falcon-H1 training forward
    model = model_of(family)
    batch = batch_of(packed)
    kw = ({"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]} if packed else
          {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    if packed and family == "falcon_h1":
        kw["seq_idx"] = batch["seq_idx"]
    target = batch["labels"][:, 1:].clone()
    losses, hidden, mult = kernels.hidden_state_losses(model, kw, target, scales=(1.0, 1 / 0.7), fused=False,
                                                       return_hidden=True)
    torch.testing.assert_close(losses[0], logits_path_losses(model, batch), rtol=1e-5, atol=1e-5)
    logits = model(**kw, use_cache=False).logits[:, :-1].float()
    at_t = -torch.log_softmax(logits / 0.7, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(losses[1], torch.where(target == -100, 0.0, at_t), rtol=1e-5, atol=1e-5)
    assert hidden.shape == (*target.shape, model.config.hidden_size) and not hidden.requires_grad
    assert mult == (0.5 if family == "falcon_h1" else 1.0)


# ==================================================================================== Liger, per model


def test_liger_is_put_in_place_per_model_and_plain_takes_it_out(monkeypatch):
    """Liger's real patch functions on CPU models, pretending a GPU (no Liger kernel runs here)."""
    pytest.importorskip("liger_kernel.transformers", reason="liger-kernel (dev extra, Linux) applies the patch")
    from transformers.models.falcon_h1 import modeling_falcon_h1 as mf

    monkeypatch.setattr(kernels, "cuda_status", lambda: kernels.CudaStatus(True, "Test GPU", "Test GPU", (9, 0), "13.0"))
    monkeypatch.setattr(kernels, "_model_device", lambda m: torch.device("cuda"))
    # flash-attn is not installed here: a report that says it is would switch the CPU model to it
    monkeypatch.setattr(kernels, "_cached_report", lambda: report(causal_conv1d=True, mamba_ssm=True, liger_kernel=True))
    plain_rope = mf.apply_rotary_pos_emb
    a, b = model_of("falcon_h1", seed=1), model_of("falcon_h1", seed=2)
    got = kernels.training_kernels(a, "auto")
    assert got.liger == ("rope", "rms_norm", "swiglu") and got.fused_linear_cross_entropy and got.mamba_kernels
    assert mf.apply_rotary_pos_emb is not plain_rope
    assert kernels.training_kernels(a, "auto") is got  # cached: nothing is patched twice
    with pytest.raises(RuntimeError, match="Liger is applied to another falcon_h1 model"):
        kernels.training_kernels(b, "plain")  # its "plain" would run Liger's RoPE
    assert kernels.training_kernels(b, "auto").liger  # b takes the family's patch over (a's is undone)
    with pytest.raises(RuntimeError, match="another falcon_h1 model"):
        kernels.training_kernels(a, "plain")
    assert kernels.training_kernels(b, "plain").liger == ()  # plain on the patched model takes its patch out
    assert mf.apply_rotary_pos_emb is plain_rope
    assert kernels.training_kernels(a, "plain").mode == "plain"
    assert all(type(m).forward is m.forward.__func__ for m in b.modules() if "forward" in vars(m))


# ============================================================================================ on a GPU

needs_cuda = pytest.mark.skipif(not kernels.cuda_status().usable, reason="needs a usable CUDA GPU")


def _gpu_loss_and_grads(family: str, mode: str, packed: bool, loss_fn: str = "sft"):
    from falcon_h1r.grpo import SeqBatch, token_logprobs

    model = model_of(family, width=64, seed=3).cuda().train()
    batch = {k: v.cuda() for k, v in batch_of(packed, n=6).items()}
    kernel_calls(reset=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if loss_fn == "sft":
            loss, w = token_losses(model, batch, mode)
            total = (loss * w).sum() / w.sum()
        else:
            ids = batch["input_ids"]
            sb = SeqBatch(ids, batch["attention_mask"], (batch["labels"][:, 1:] != -100).float(), None, None, None)
            logp, ce, ent = token_logprobs(model, sb, 0.85, with_ce=True, with_entropy=True, kernels=mode)
            m = sb.mask
            total = -((logp + 0.1 * ce) * m).sum() / m.sum()
            loss = torch.stack([logp.detach(), ent])
    total.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    chosen = kernels.training_kernels(model, mode).record()
    calls = kernel_calls(reset=True)
    kernels.release_training_kernels(model)
    return loss.detach().float(), grads, chosen, calls


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("family,packed,loss_fn", [("falcon_h1", True, "sft"), ("qwen3", True, "sft"),
                                                   ("falcon_h1", False, "grpo"), ("qwen3", False, "grpo")])
def test_gpu_kernels_match_the_plain_path_in_losses_and_gradients(family, packed, loss_fn):
    plain, plain_g, plain_k, plain_calls = _gpu_loss_and_grads(family, "plain", packed, loss_fn)
    fused, fused_g, fused_k, fused_calls = _gpu_loss_and_grads(family, "auto", packed, loss_fn)
    assert not plain_k["liger"] and not plain_k["fused_linear_cross_entropy"]
    assert "causal_conv1d" not in plain_calls and "mamba_ssm" not in plain_calls
    if family == "falcon_h1":
        for name in ("causal_conv1d", "mamba_ssm"):  # what is installed ran
            assert (fused_calls.get(name, 0) > 0) == fused_k[name], (fused_calls, fused_k)
    # bf16 tolerance: losses to 2e-2, each gradient to 5 % of its largest entry
    torch.testing.assert_close(fused, plain, rtol=2e-2, atol=2e-2)
    assert fused_g.keys() == plain_g.keys()
    for name, g in plain_g.items():
        assert torch.allclose(fused_g[name], g, rtol=5e-2, atol=5e-2 * g.abs().max().item() + 1e-4), name


def test_grpo_log_probs_through_the_hidden_state_path_equal_the_logits_path():
    """kernels.fused_token_logprobs (what GRPO's token_logprobs uses with the fused cross-entropy) with the plain
    twin in place of Liger's kernel: log p at T and at 1 and the entropy, as the logits path computes them."""
    from falcon_h1r.grpo import SeqBatch, token_logprobs

    model = model_of("qwen3")
    batch = batch_of(False)
    sb = SeqBatch(batch["input_ids"], batch["attention_mask"], (batch["labels"][:, 1:] != -100).float(), None, None,
                  None)
    plain = token_logprobs(model, sb, 0.85, with_ce=True, with_entropy=True, kernels="plain")
    real = kernels.linear_cross_entropy
    twin = lambda *a, **k: real(*a, **{**k, "fused": False})  # noqa: E731
    kw = {"input_ids": sb.ids, "attention_mask": sb.attn}
    import unittest.mock as mock

    with mock.patch.object(kernels, "linear_cross_entropy", twin):
        fused = kernels.fused_token_logprobs(model, kw, sb.ids[:, 1:], 0.85, with_ce=True, with_entropy=True, chunk=7)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
