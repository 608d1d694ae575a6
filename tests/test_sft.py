"""The SFT trainer: assistant-only loss, packing without cross-contamination (Mamba-2 state and conv reset
per sample), difficulty weights, loss normalizations, schedule, µP multipliers, exact resume, the
recipe. The §2 ablation grids and their statistics: tests/test_sft_ablations.py."""

import os
import random
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from falcon_h1r.config import ModelConfig, RecipeError, TrainConfig, load_preset
from falcon_h1r.sft import (Example, SFTRecipe, collate, collate_packed, latest_checkpoint, linear_warmup_schedule,
                            make_batch, pack_rows, per_sample_losses, token_losses, train_sft)
from falcon_h1r.packed_mamba import segmented_causal_conv1d, segmented_chunk_scan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
SMALL = ModelConfig(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=16, intermediate_size=64,
                    mamba_d_ssm=32, mamba_n_heads=2, mamba_d_state=8, mamba_chunk_size=8)


def _model(family="falcon_h1", seed=0, **mup):
    from falcon_h1r.models import build_model

    m = build_model(SMALL, 64, family=family, seed=seed)
    if mup:
        from transformers import FalconH1ForCausalLM

        from falcon_h1r.models import falcon_config

        cfg = falcon_config(SMALL, 64)
        for k, v in mup.items():
            setattr(cfg, k, v)
        torch.manual_seed(seed)
        m = FalconH1ForCausalLM(cfg)
    return m


def _examples(lengths=(7, 13, 21, 5, 30, 11, 26, 9), seed=0, weights=None):
    rng = random.Random(seed)
    out = []
    for i, n in enumerate(lengths):
        k = max(1, n // 3)
        out.append(Example([rng.randrange(2, 64) for _ in range(n)], [0] * k + [1] * (n - k),
                           (weights or {}).get(i, 1.0)))
    return out


CFG = TrainConfig(steps=6, batch_size=4, lr=3e-3, max_seq_len=40, log_every=1)


# ----------------------------------------------------------------------------- packed Mamba-2 kernels
def _scan_inputs(b=2, L=37, h=4, p=8, g=1, n=16):
    torch.manual_seed(0)
    return (torch.randn(b, L, h, p), torch.randn(b, L, h), -torch.rand(h) - 0.5, torch.randn(b, L, g, n),
            torch.randn(b, L, g, n)), {"D": torch.randn(h), "dt_bias": torch.randn(h), "dt_softplus": True}


def test_segmented_scan_is_transformers_scan_without_segments_and_per_sample_with_them():
    from transformers.models.falcon_h1 import modeling_falcon_h1 as mf

    enable = __import__("falcon_h1r.packed_mamba", fromlist=["enable_packed_mamba"]).enable_packed_mamba
    enable()
    lib = mf._falcon_h1r_library["chunk_scan"]
    args, kw = _scan_inputs()
    x, dt, A, B, C = args
    same = segmented_chunk_scan(*args, 8, **kw, seq_idx=torch.zeros(2, 37, dtype=torch.int32))
    assert torch.equal(same, lib(*args, 8, **kw))
    cuts = [0, 5, 13, 14, 30, 37]  # boundaries inside chunks, on a chunk edge, a 1-token sample
    seq = torch.zeros(2, 37, dtype=torch.int32)
    for i in range(len(cuts) - 1):
        seq[:, cuts[i]:cuts[i + 1]] = i
    out, final = segmented_chunk_scan(*args, 8, **kw, seq_idx=seq, return_final_states=True)
    for s, e in zip(cuts, cuts[1:]):
        ref, ref_final = lib(x[:, s:e], dt[:, s:e], A, B[:, s:e], C[:, s:e], 8, **kw, return_final_states=True)
        assert torch.allclose(out[:, s:e], ref, atol=2e-5)
    assert torch.allclose(final, ref_final, atol=2e-5)  # the last sample's state, as if it ran alone


def test_segmented_conv_never_reaches_into_the_previous_sample():
    torch.manual_seed(0)
    x, w, bias = torch.randn(2, 6, 20), torch.randn(6, 4), torch.randn(6)
    seq = torch.tensor([[0] * 7 + [1] * 13, [0] * 3 + [1] * 2 + [2] * 15], dtype=torch.int32)
    out = segmented_causal_conv1d(x, w, bias, "silu", seq)
    for row in range(2):
        for s in seq[row].unique():
            idx = (seq[row] == s).nonzero().flatten()
            seg = x[row:row + 1, :, idx]
            ref = F.silu(F.conv1d(seg, w[:, None], bias, padding=3, groups=6)[..., :seg.shape[-1]])
            assert torch.allclose(out[row:row + 1, :, idx], ref, atol=1e-6)


def test_transformers_alone_refuses_or_leaks_packed_mamba_state_on_cpu():
    """What the library does by itself (why enable_packed_mamba exists): seq_idx is refused by its torch
    fallback, and position ids alone separate attention but leak Mamba-2 state across samples."""
    from transformers.models.falcon_h1 import modeling_falcon_h1 as mf

    from falcon_h1r.packed_mamba import enable_packed_mamba

    enable_packed_mamba()
    args, kw = _scan_inputs()
    with pytest.raises(ValueError, match="packed sequences"):
        mf._falcon_h1r_library["chunk_scan"](*args, 8, **kw, seq_idx=torch.zeros(2, 37, dtype=torch.int32))
    m = _model().eval()
    exs = _examples()
    alone = per_sample_losses(m, exs, 0, packing=False)
    b = collate_packed(exs, 0, 64)
    with torch.no_grad():
        logits = m(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
    tok = F.cross_entropy(logits[:, :-1].transpose(1, 2), b["labels"][:, 1:], reduction="none", ignore_index=-100)
    on, seq = b["labels"][:, 1:] != -100, b["seq_ids"][:, 1:]
    leaky = [float(tok[(seq == i) & on].mean()) for i in range(len(exs))]
    assert max(abs(x - y) for x, y in zip(leaky, alone)) > 1e-4


@pytest.mark.parametrize("family", ["falcon_h1", "qwen3"])
def test_packed_batch_gives_the_same_per_sample_losses_as_unpacked(family):
    m = _model(family).eval()
    exs = _examples()
    alone = [per_sample_losses(m, [e], 0, packing=False)[0] for e in exs]
    padded = per_sample_losses(m, exs, 0, packing=False)
    packed = per_sample_losses(m, exs, 0, packing=True, pack_len=64)
    assert len(pack_rows([len(e.input_ids) for e in exs], 64)) < len(exs)  # really packed
    assert padded == pytest.approx(alone, abs=1e-5)
    assert packed == pytest.approx(alone, abs=1e-5)


def test_packed_and_padded_training_give_the_same_gradients():
    exs = _examples(weights={1: 1.5})
    grads = []
    for packing in (False, True):
        m = _model()
        loss, w = token_losses(m, make_batch(exs, 0, packing=packing, pack_len=64))
        ((loss * w).sum() / w.sum()).backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0]) < 1e-6


# ----------------------------------------------------------------------------- batches and losses
def test_loss_is_on_the_assistant_turn_only_and_weighted(tiny_preset):
    from falcon_h1r.sft import examples_from_traces
    from falcon_h1r.tasks import teacher_records
    from falcon_h1r.sections.common import get_tokenizer
    from falcon_h1r.tasks import generate_split

    probs = generate_split(["math"], [1], 2, "t", 0)
    recs = [{**r, "weight": 1.75} for r in teacher_records(probs, "stepwise", 0)]
    tok = get_tokenizer(tiny_preset, {"train": probs, "test": []}, root=Path(os.environ.get("TMPDIR", "/tmp")) / "tok")
    exs = examples_from_traces(recs, tok, 4000)  # untrimmed: the EOS must stay
    for packing in (False, True):
        b = make_batch(exs, tok.pad_id, packing=packing, pack_len=8000)
        sup = b["labels"] != -100
        assert torch.equal(sup, b["weights"] > 0)
        assert set(b["weights"][sup].tolist()) == {1.75}
        for i, e in enumerate(exs):  # the supervised tokens are exactly the response + EOS
            got = b["input_ids"][sup & (b["seq_ids"] == i)].tolist()
            assert got == [t for t, m in zip(e.input_ids, e.loss_mask) if m]
            assert tok.decode(got).startswith(recs[i]["reasoning"][:10]) and got[-1] == tok.eos_id


def test_a_sample_weight_of_two_counts_like_the_sample_twice():
    m = _model()
    a = _examples((12, 20), weights={0: 2.0})
    b = _examples((12, 20))
    b = [b[0], b[0], b[1]]

    def mean_loss(exs):
        with torch.no_grad():
            loss, w = token_losses(m, collate(exs, 0))
        return float((loss * w).sum() / w.sum())

    assert mean_loss(a) == pytest.approx(mean_loss(b), abs=1e-6)


def test_sequence_normalization_is_the_mean_of_per_sequence_means():
    from falcon_h1r.distributed import batch_units, normalized_loss

    m = _model()
    exs = _examples()
    per = per_sample_losses(m, exs, 0, packing=False)
    for packing in (False, True):
        b = make_batch(exs, 0, packing=packing, pack_len=64)
        with torch.no_grad():
            loss, _ = token_losses(m, b)
        got = normalized_loss(loss, b, "sequence", rank_units=batch_units(b, "sequence"), global_units=0, world=1)
        assert got.item() == pytest.approx(sum(per) / len(per), abs=1e-5)


def test_schedule_is_linear_with_four_percent_warmup():
    lrs = [linear_warmup_schedule(s, 100, 0.04) for s in range(100)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(96 / 96) and lrs[52] == pytest.approx(48 / 96) and lrs[99] == pytest.approx(1 / 96)
    hist = train_sft(_model(), _examples(), replace(CFG, steps=25), pad_id=0, progress=False)
    assert hist.lr[0] == pytest.approx(CFG.lr * 1.0)  # 4 % of 25 steps rounds to one warm-up step
    assert hist.lr[-1] == pytest.approx(0.0) and len(hist.grad_norm) == 25
    flat = [linear_warmup_schedule(s, 100, 0.04, "constant") for s in range(100)]
    assert flat[:4] == [0.25, 0.5, 0.75, 1.0] and set(flat[4:]) == {1.0}  # a mid-run checkpoint: no annealing
    hist = train_sft(_model(), _examples(), replace(CFG, steps=10), pad_id=0, progress=False, lr_decay="constant")
    assert hist.lr[-1] == pytest.approx(CFG.lr)
    with pytest.raises(ValueError, match="lr decay 'cosine' not accepted; use one of linear, constant"):
        linear_warmup_schedule(5, 100, 0.04, "cosine")


def test_mup_multipliers_come_from_the_config_and_are_in_the_loss():
    from falcon_h1r.models import FALCON_H1R_7B_MUP

    exs = _examples()
    b = collate(exs, 0)
    plain, mup = _model(), _model(**FALCON_H1R_7B_MUP)
    with torch.no_grad():
        l1, w = token_losses(plain, b)
        l2, _ = token_losses(mup, b)
    assert abs(float((l1 * w).sum() - (l2 * w).sum())) > 1e-3  # the multipliers change the function
    # our loss is the model's own (its logits carry lm_head_multiplier etc.)
    labels = b["labels"]
    with torch.no_grad():
        hf = mup(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels, use_cache=False).loss
    assert float((l2 * w).sum() / w.sum()) == pytest.approx(float(hf), abs=1e-5)
    assert mup.config.lm_head_multiplier == FALCON_H1R_7B_MUP["lm_head_multiplier"]


# ----------------------------------------------------------------------------- checkpoints and resume
def _train(ckpt=None, resume=False, stop_after=None, mup=True):
    from falcon_h1r.models import FALCON_H1R_7B_MUP

    m = _model(**(FALCON_H1R_7B_MUP if mup else {}))
    rec = SFTRecipe(packing=True, pack_len=48, loss_norm="balanced", ranks=2, grad_accum=2, save_every=2)
    hist = train_sft(m, _examples(), replace(CFG, steps=7), pad_id=0, seed=5, progress=False, recipe=rec,
                     checkpoint_dir=ckpt, resume=resume, stop_after=stop_after)
    return m, hist


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_after_stopping_gives_the_uninterrupted_weights(tmp_path):
    full, hist_full = _train()
    _, hist_a = _train(tmp_path, stop_after=5)  # saved at steps 2 and 4, then stopped after step 5
    assert latest_checkpoint(tmp_path).name == "step-000004"
    resumed, hist_b = _train(tmp_path, resume=True)
    assert hist_b.resumed_from == 4
    assert _same(full, resumed)
    assert hist_b.loss == hist_full.loss


@pytest.mark.slow
def test_resume_after_a_sigkill_gives_the_uninterrupted_weights(tmp_path):
    """A real kill: the child trains, saves every 2 steps, and is SIGKILLed right after step 5."""
    code = textwrap.dedent(f"""
        import os, signal, sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        import test_sft as T
        from falcon_h1r import sft
        real = sft.train_sft
        def killing(*a, **k):
            k["on_step"] = lambda step, h: os.kill(os.getpid(), signal.SIGKILL) if step == 5 else None
            return real(*a, **k)
        T.train_sft = killing
        T._train({str(tmp_path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert latest_checkpoint(tmp_path).name == "step-000004"
    resumed, _ = _train(tmp_path, resume=True)
    full, _ = _train()
    assert _same(full, resumed)


# ----------------------------------------------------------------------------- recipe and bad input
def test_presets_parse_their_sft_block_and_bad_keys_are_named():
    from falcon_h1r.sections.sft import load_recipe

    for name in ("tiny", "small", "paper"):
        r = load_recipe(load_preset(name))
        assert r.loss_norm == "balanced"
    with pytest.raises(RecipeError, match="sft.pakcing"):
        load_recipe(load_preset("tiny", {"sft.pakcing": True}))
    with pytest.raises(RecipeError, match="loss_norm"):
        load_recipe(load_preset("tiny", {"sft.loss_norm": "global"}))


def test_bad_training_input_is_one_clear_error():
    with pytest.raises(ValueError, match="no training examples"):
        train_sft(_model(), [], CFG, pad_id=0, progress=False)
    with pytest.raises(ValueError, match="ranks x grad_accum"):
        train_sft(_model(), _examples(), replace(CFG, batch_size=2), pad_id=0, progress=False,
                  recipe=SFTRecipe(ranks=2, grad_accum=2))
    with pytest.raises(ValueError, match="loss normalization"):
        train_sft(_model(), _examples(), CFG, pad_id=0, progress=False,
                  recipe=replace(SFTRecipe(), loss_norm="global"))


# ----------------------------------------------------------------------------- the §2 ablations' trainer needs
def test_rank_token_skew_is_recorded_per_step_for_simulated_ranks():
    """By-length shards put the short samples on rank 0 and the long ones on the last rank: the recorded
    largest-over-smallest supervised tokens per rank is the ratio of the two shards' supervised tokens."""
    ex = _examples(lengths=(6, 6, 6, 6, 30, 30, 30, 30))
    cfg = replace(CFG, steps=2, batch_size=8)
    hist = train_sft(_model(), ex, cfg, pad_id=0, progress=False,
                     recipe=SFTRecipe(packing=False, ranks=2, shard="by_length", loss_norm="rank_token"))
    short, long_ = sum(sum(e.loss_mask) for e in ex[:4]), sum(sum(e.loss_mask) for e in ex[4:])
    assert hist.rank_tokens_max_over_min == pytest.approx([long_ / short] * 2)
    one = train_sft(_model(), ex, cfg, pad_id=0, progress=False, recipe=SFTRecipe(packing=False))
    assert one.rank_tokens_max_over_min == []  # one rank: no ratio


def test_text_examples_put_the_loss_on_every_token_and_end_with_eos():
    from falcon_h1r.sft import examples_from_text

    class Tok:
        eos_id = 1

        def encode(self, text):
            return [2 + ord(c) % 50 for c in text]

    ex = examples_from_text(["ab\ncd", "xyz" * 10], Tok(), max_seq_len=12)
    assert ex[0].input_ids[-1] == 1 and ex[0].loss_mask == [1] * 6
    assert len(ex[1].input_ids) == 12 and ex[1].input_ids[-1] != 1  # right-trimmed like traces
