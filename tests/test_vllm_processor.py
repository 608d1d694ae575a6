"""DeepConf's stop inside vLLM, on CPU without vLLM: the processors' arithmetic against the package's own online
stop (``first_stop_index`` and ``EarlyStopController``), on log-probs recorded from the package's engine, through
stand-ins for vLLM's two runner interfaces; and the online driver (warm-up, threshold, consensus) against
``replay_online`` on the same traces.

The V2 stand-in does what vLLM's Model Runner V2 does around a custom processor, as far as the processor can see:
slots recycled through a free list (``add_request`` on admission), ``apply_staged_writes`` once per step, rows in a
new order every step, chunked-prefill rows whose sample is thrown away (``pos + 1 < prefill_len``), requests
without the stop in the same batch, and ``apply`` skipped when no request in the batch needs processing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from falcon_h1r.deepconf import DeepConfRecipe, EarlyStopController, replay_online
from falcon_h1r.verify import extract_final_answer as extract_answer
from falcon_h1r.deepconf.confidence import first_stop_index, window_means
from falcon_h1r.deepconf.traces import Trace
from falcon_h1r.inference import vllm_deepconf as vd
from falcon_h1r.inference.vllm_online import run_online_vllm

EOS = 1


# ============================================================================== recorded log-probs
@pytest.fixture(scope="module")
def recorded():
    """Top-20 log-probs and ids of 8 traces sampled by the package's own engine from a small random Falcon-H1
    (temperature 1.3 so that the confidence moves along a trace)."""
    from falcon_h1r.config import ModelConfig
    from falcon_h1r.inference import generate_ids
    from falcon_h1r.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                    intermediate_size=64, mamba_d_ssm=32, mamba_n_heads=2, mamba_d_state=8,
                                    mamba_chunk_size=8, num_hidden_layers=2), 96, seed=5)
    with torch.no_grad():
        for p in model.parameters():  # sharper, context-dependent distributions than a fresh init
            p.mul_(6.0)
    prompts = [[random.Random(i).randrange(2, 96) for _ in range(3 + i)] for i in range(8)]
    rows = generate_ids(model, prompts, eos_id=EOS, pad_id=0, temperature=1.3, top_p=1.0, max_new_tokens=40,
                        top_k=20, seed=3, engine="hf")
    out = [(np.asarray(r["top_logprobs"], np.float32), np.asarray(r["top_ids"], np.int64)) for r in rows]
    assert all(len(t) >= 12 for t, _ in out), [len(t) for t, _ in out]
    return out, 96


def logits_from_top(top_lp: np.ndarray, top_ids: np.ndarray, vocab: int) -> torch.Tensor:
    """A full logits row whose top-20 log-probs are exactly the recorded ones: the rest of the mass is spread
    evenly over the other tokens (each stays below the 20th, as the real ones were)."""
    rest = max(1.0 - float(np.exp(top_lp.astype(np.float64)).sum()), 1e-30)
    row = np.full(vocab, np.log(rest / (vocab - len(top_lp))), dtype=np.float64)
    row[top_ids] = top_lp
    return torch.tensor(row, dtype=torch.float32)


def confidences(top_lp: np.ndarray) -> np.ndarray:
    return -top_lp.astype(np.float64).mean(-1)


# ============================================================================== the V2 runner stand-in
@dataclass(eq=False)  # identity: running.remove must not compare the tensors
class Req:
    params: Any
    prompt_len: int
    rows: list[torch.Tensor]  # the logits of each output step
    texts: list[str] = field(default_factory=list)
    slot: int = -1
    prefilled: int = 0
    out: int = 0
    forced_at: int | None = None
    untouched: bool = True


class V2RunnerStandIn:
    def __init__(self, vocab: int, max_slots: int = 4, chunk: int = 3, seed: int = 0):
        self.vocab, self.chunk, self.rng = vocab, chunk, random.Random(seed)
        self.req_states = SimpleNamespace(device=torch.device("cpu"), max_num_reqs=max_slots, vocab_size=vocab,
                                          prefill_len=SimpleNamespace(gpu=torch.zeros(max_slots, dtype=torch.int32)))
        self.proc = vd.DeepConfV2LogitsProcessor(SimpleNamespace(speculative_config=None), self.req_states)
        self.free = list(range(max_slots))
        self.needs = np.zeros(max_slots, dtype=bool)

    def run(self, reqs: list[Req]) -> list[Req]:
        waiting, running = list(reqs), []
        while waiting or running:
            while waiting and self.free:
                r = waiting.pop(0)
                r.slot = self.free.pop(self.rng.randrange(len(self.free)))
                self.req_states.prefill_len.gpu[r.slot] = r.prompt_len
                type(self.proc).validate_params(r.params)
                self.needs[r.slot] = self.proc.add_request(r.slot, r.params)
                running.append(r)
            self.proc.apply_staged_writes()
            order = running[:]
            self.rng.shuffle(order)
            logits, pos = [], []
            for r in order:
                if r.prefilled < r.prompt_len:  # a prefill chunk: its sample is thrown away unless it is the last
                    r.prefilled = min(r.prompt_len, r.prefilled + self.chunk)
                    pos.append(r.prefilled - 1)
                    last = r.prefilled == r.prompt_len
                    logits.append(r.rows[0].clone() if last else torch.randn(self.vocab) * 5)
                else:
                    pos.append(r.prompt_len + r.out - 1)
                    logits.append(r.rows[r.out].clone())
            batch = torch.stack(logits)
            before = batch.clone()
            slots = np.array([r.slot for r in order])
            if self.needs[slots].any():
                ctx = SimpleNamespace(expanded_idx_mapping=torch.tensor(slots, dtype=torch.int32),
                                      idx_mapping=torch.tensor(slots, dtype=torch.int32), idx_mapping_np=slots,
                                      expanded_local_pos=torch.zeros(len(order), dtype=torch.int32),
                                      input_ids=torch.zeros(len(order), dtype=torch.int32),
                                      pos=torch.tensor(pos, dtype=torch.int64),
                                      seq_lens_upper_bound_np=np.array(pos) + 1)
                batch = self.proc.apply(batch, ctx)
            for i, r in enumerate(order):
                if pos[i] + 1 < r.prompt_len:
                    continue
                if not torch.equal(batch[i], before[i]):
                    r.untouched = False
                forced = bool(torch.isinf(batch[i]).sum() == self.vocab - 1 and batch[i, EOS] == 0)
                if forced:
                    r.forced_at = r.out
                r.out += 1
                if forced or r.out == len(r.rows):
                    running.remove(r)
                    self.free.append(r.slot)
        return reqs


def _params(threshold: float | None, window: int) -> SimpleNamespace:
    extra = vd.deepconf_extra_args(threshold, EOS, window) if threshold is not None else None
    return SimpleNamespace(extra_args=extra)


def _thresholds(traces: list[np.ndarray], window: int) -> list[float]:
    """Thresholds half-way between the traces' lowest window means (every one stops some traces, not all), and
    half-way between their first full windows (some stop at the very first step the window is full)."""
    out = []
    for pick in (np.min, lambda wm: wm[0]):
        vals = sorted({float(pick(window_means(confidences(t), window))) for t in traces})
        out += [(a + b) / 2 for a, b in zip(vals, vals[1:])]
    return out


# ============================================================================== tests
@pytest.mark.parametrize("window", [1, 4, 9])
def test_v2_processor_stops_where_the_package_reference_does(recorded, window):
    traces, vocab = recorded
    tops = [t for t, _ in traces]
    thresholds = _thresholds(tops, window)
    assert len(thresholds) >= 3
    at_first_window = never = 0
    for threshold in thresholds:
        reqs = [Req(_params(threshold, window), prompt_len=2 + 3 * i,
                    rows=[logits_from_top(t[s], ids[s], vocab) for s in range(len(t))])
                for i, (t, ids) in enumerate(traces)]
        bystanders = [Req(_params(None, window), prompt_len=4, rows=[logits_from_top(t[s], ids[s], vocab)
                                                                    for s in range(len(t))]) for t, ids in traces[:2]]
        done = V2RunnerStandIn(vocab, max_slots=3, chunk=3, seed=int(threshold * 1000)).run(reqs + bystanders)
        stops = []
        for (top, _), r in zip(traces, done[:len(traces)]):
            ref = first_stop_index(confidences(top).astype(np.float32), threshold, window)
            ctl = EarlyStopController(threshold, window)
            ctl.reset(1, "cpu")
            live = next((s for s in range(len(top))
                         if ctl(torch.tensor(top[s:s + 1]), torch.tensor([True]))[0]), None)
            assert r.forced_at == ref == live, (threshold, r.forced_at, ref, live)
            stops.append(r.forced_at)
        assert any(s is not None for s in stops)
        never += sum(s is None for s in stops)
        at_first_window += sum(s == window - 1 for s in stops)
        assert all(b.forced_at is None and b.untouched for b in done[len(traces):])
    assert at_first_window > 0 and never > 0  # the boundary case (stop as the window fills), and traces never cut


def test_v1_request_stop_matches_the_reference_and_ignores_repeated_prefill_calls(recorded):
    traces, vocab = recorded
    window = 5
    threshold = _thresholds([t for t, _ in traces], window)[len(traces) // 2]
    for top, ids in traces:
        stop = vd.RequestConfidenceStop(threshold, EOS, window)
        forced, output = None, []
        for _ in range(3):  # the chunks of a chunked prefill, output still empty: one position, not three
            stop(output, torch.randn(vocab) * 5)
        for s in range(len(top)):
            row = stop(output, logits_from_top(top[s], ids[s], vocab))
            if torch.isinf(row).sum() == vocab - 1:
                forced = s
                break
            output.append(int(ids[s, 0]))
        assert forced == first_stop_index(confidences(top).astype(np.float32), threshold, window)


def test_request_arguments_are_checked_with_one_clear_error():
    ok = vd.request_args(_params(3.5, 8), vocab_size=96)
    assert ok == {"threshold": 3.5, "eos_token_id": EOS, "window": 8}
    assert vd.request_args(SimpleNamespace(extra_args=None)) is None
    bad = [({"threshold": float("nan"), "eos_token_id": 1}, "finite"),
           ({"threshold": 1.0, "eos_token_id": 500}, "eos_token_id must be in"),
           ({"threshold": 1.0, "eos_token_id": 1, "window": 10 ** 6}, "window must be in"),
           ({"threshold": 1.0, "eos_token_id": 1, "top_k": 5}, "top_k must be 20"),
           ({"threshold": 1.0, "eos_token_id": 1, "windw": 3}, "unknown keys")]
    for args, msg in bad:
        with pytest.raises(ValueError, match=msg):
            vd.DeepConfV2LogitsProcessor.validate_params(SimpleNamespace(extra_args={vd.EXTRA_ARGS_KEY: args}))
            vd.request_args(SimpleNamespace(extra_args={vd.EXTRA_ARGS_KEY: args}), vocab_size=96)
    with pytest.raises(ValueError, match="speculative decoding"):
        vd.DeepConfV2LogitsProcessor(SimpleNamespace(speculative_config=object()),
                                     SimpleNamespace(device="cpu", max_num_reqs=2, vocab_size=8))


def test_processor_is_chosen_by_what_the_installed_vllm_provides(monkeypatch):
    monkeypatch.setattr(vd, "HAVE_V2", True)
    monkeypatch.setattr(vd, "HAVE_V1", True)
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    assert vd.processor_class().endswith(":DeepConfV2LogitsProcessor")
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER")  # vLLM's own default: V2 where Triton is there
    import importlib.util

    has_triton = importlib.util.find_spec("triton") is not None
    assert vd.processor_class().endswith(":DeepConfV2LogitsProcessor" if has_triton else ":DeepConfLogitsProcessor")
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    assert vd.processor_class().endswith(":DeepConfLogitsProcessor")
    monkeypatch.setattr(vd, "HAVE_V2", False)
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER")
    assert vd.processor_class().endswith(":DeepConfLogitsProcessor")
    monkeypatch.setattr(vd, "HAVE_V1", False)
    with pytest.raises(ImportError, match="requirements-vllm.txt"):
        vd.processor_class()
    if not vd.HAVE_VLLM:
        with pytest.raises(ImportError, match="vLLM is not installed"):
            vd.sampling_params(10.0, eos_token_id=2)
        with pytest.raises(ImportError, match="vLLM is not installed"):
            vd.DeepConfLogitsProcessor(None, torch.device("cpu"), False)
    # both processor classes are importable by the name vLLM's loader resolves
    import importlib

    for name in ("DeepConfV2LogitsProcessor", "DeepConfLogitsProcessor"):
        module, attr = f"{vd.__name__}:{name}".split(":")
        assert getattr(importlib.import_module(module), attr).__qualname__ == name


# ============================================================================== the online driver
class FakeSamplingParams(SimpleNamespace):
    pass


class FakeLLM:
    """``vllm.LLM.generate`` for one prompt with ``n`` samples: hands out the pool's traces in order and decodes
    each through the V2 stand-in with the request's DeepConf arguments (confidence c -> 20 log-probs of -c)."""

    VOCAB = 1024

    def __init__(self, pool: list[tuple[np.ndarray, str]]):
        self.pool, self.next, self.calls = pool, 0, []

    def generate(self, prompts, params, use_tqdm=False):
        assert len(prompts) == 1 and params.logprobs == 20
        self.calls.append(params)
        reqs, texts = [], []
        for _ in range(params.n):
            conf, text = self.pool[self.next]
            self.next += 1
            rows = []
            for c in conf:
                row = torch.full((self.VOCAB,), float(np.log((1 - 20 * np.exp(-c)) / (self.VOCAB - 20))))
                row[2:22] = -float(c)
                rows.append(row)
            reqs.append(Req(FakeSamplingParams(extra_args=params.extra_args), prompt_len=5, rows=rows))
            texts.append(text)
        V2RunnerStandIn(self.VOCAB, max_slots=3, chunk=2).run(reqs)
        outs = []
        for r, text in zip(reqs, texts):
            n = len(r.rows) if r.forced_at is None else r.forced_at + 1
            outs.append(SimpleNamespace(text=text if r.forced_at is None else text[:n], token_ids=list(range(n)),
                                        logprobs=[{j: -float(c) for j in range(2, 22)} for c in
                                                  [-float(r.rows[s][2]) for s in range(n)]],
                                        finish_reason="stop", stop_reason=None))
        return [SimpleNamespace(request_id="0", outputs=outs)]


def _pool(n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(10, 30))
        base = rng.uniform(3.5, 6.0)
        conf = np.clip(base + rng.normal(0, 0.6, length).cumsum() * 0.2, 3.2, 6.8).astype(np.float32)
        answer = "7" if rng.random() < 0.6 else str(int(rng.integers(1, 5)))
        out.append((conf, f"<think>{'x' * length}</think> \\boxed{{{answer}}}"))
    return out


@pytest.mark.parametrize("variant,batch,adaptive", [("low", 1, False), ("high", 3, True)])
def test_online_driver_through_the_stand_in_equals_the_package_replay(variant, batch, adaptive):
    recipe = DeepConfRecipe(window=6, tail_tokens=6, n_init=5, budget=24, online_batch_size=batch)
    pool = _pool(40, seed=11 if variant == "low" else 4)
    llm = FakeLLM(pool)
    kept: list[Trace] = []
    live = run_online_vllm(llm, "prompt", eos_token_id=EOS, variant=variant, recipe=recipe, adaptive=adaptive,
                           problem={"id": "p", "answer": "7"}, params_cls=FakeSamplingParams,
                           sampling={"temperature": 0.6, "top_p": 0.95, "max_tokens": 64}, keep=kept)
    stored = [Trace(confidences=c, answer=extract_answer(t), problem_id="p", trace_idx=i) for i, (c, t) in
              enumerate(pool)]
    for t in stored:
        t.correct = t.answer == "7"
    ref = replay_online(stored, variant, recipe, batch_size=batch, adaptive=adaptive)
    assert (live.tokens, live.traces_used, live.stopped, live.voters, live.answer, live.correct, live.stop_reason) == (
        ref.tokens, ref.traces_used, ref.stopped, ref.voters, ref.answer, ref.correct, ref.stop_reason)
    assert live.threshold == pytest.approx(ref.threshold, rel=1e-6)
    assert live.stopped > 0 and len(kept) == live.traces_used
    # the warm-up runs without the stop; every later call carries the threshold
    assert llm.calls[0].extra_args is None and llm.calls[0].n == recipe.n_init
    assert all(c.extra_args[vd.EXTRA_ARGS_KEY]["threshold"] == live.threshold for c in llm.calls[1:])
    with pytest.raises(ValueError, match="leave out 'n'"):
        run_online_vllm(llm, "p", eos_token_id=EOS, recipe=recipe, sampling={"n": 4}, params_cls=FakeSamplingParams)
