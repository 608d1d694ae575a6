"""Trace store: Parquet round trip, importers (our Completion, vLLM-like outputs)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from falcon_h1r import deepconf as dc
from falcon_h1r import tracestore as ts
from falcon_h1r.inference import Completion


def _traces() -> list[dc.Trace]:
    rng = np.random.default_rng(0)
    return [
        dc.Trace(confidences=rng.uniform(5, 20, 300).astype(np.float32), answer="\\frac{1}{2}", correct=True,
                 finish_reason="eos", problem_id="p1", trace_idx=0, token_ids=list(range(300)), text="abc"),
        dc.Trace(confidences=rng.uniform(5, 20, 7).astype(np.float32), answer=None, correct=None,
                 finish_reason="early_stop", problem_id="p1", trace_idx=1, token_ids=None),
        dc.Trace(confidences=np.zeros(0, np.float32), answer=None, correct=False, finish_reason="length",
                 num_tokens=0, problem_id="p2", trace_idx=0, token_ids=[]),
        dc.Trace(confidences=rng.uniform(5, 20, 40).astype(np.float32), answer="7", correct=False,
                 finish_reason="eos", problem_id="p2", trace_idx=1, token_ids=list(range(40)), text="é∑"),
    ]


def test_round_trip(tmp_path):
    traces = _traces()
    path = ts.save_traces(traces, tmp_path / "sub" / "pool.parquet", with_text=True)
    back = ts.load_traces(path)
    assert len(back) == len(traces)
    for a, b in zip(traces, back):
        for name in ("answer", "correct", "finish_reason", "num_tokens", "problem_id", "trace_idx", "token_ids", "text"):
            assert getattr(a, name) == getattr(b, name), name
        assert b.confidences.dtype == np.float32
        np.testing.assert_array_equal(a.confidences, b.confidences)  # bit-exact float32
    no_extras = ts.load_traces(ts.save_traces(traces, tmp_path / "lean.parquet", with_token_ids=False))
    assert all(t.token_ids is None and t.text is None for t in no_extras)
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata
    assert meta[b"falcon_h1r.tracestore.version"] == ts.FORMAT_VERSION.encode()
    assert ts.load_traces(ts.save_traces([], tmp_path / "empty.parquet")) == []


def test_store_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(FileNotFoundError, match="does not exist"):
        ts.load_traces(tmp_path / "nope.parquet")
    pq.write_table(pa.table({"problem_id": ["a"], "x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match=r"not a trace store: missing columns \['trace_idx'"):
        ts.load_traces(tmp_path / "other.parquet")
    bad = dc.Trace(confidences=[1.0], finish_reason="stop")
    with pytest.raises(ValueError, match="finish_reason 'stop' not accepted"):
        ts.save_traces([bad], tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def _completion(text: str, conf: float, n: int, reason: str = "eos") -> Completion:
    return Completion(prompt_index=0, text=text, token_ids=list(range(n)), logprobs=np.zeros(n, np.float32),
                      top_logprobs=np.full((n, 20), -conf, np.float32), top_ids=np.zeros((n, 20), np.int32),
                      finish_reason=reason)


def test_from_completions_grades():
    problem = {"id": "math-test-1", "domain": "math", "answer": "1/2"}
    comps = [_completion("<think>x</think>\\boxed{0.5}", 12, 5), _completion("<think>x</think>\\boxed{3}", 11, 4),
             _completion("<think>x</think>\\boxed{0.5}", 9, 6, "early_stop"), _completion("<think>no box", 9, 3, "length")]
    traces = ts.from_completions(comps, problem)
    assert [t.trace_idx for t in traces] == [0, 1, 2, 3] and {t.problem_id for t in traces} == {"math-test-1"}
    assert [t.answer for t in traces] == ["0.5", "3", None, None]  # the boxed answer; stopped traces do not vote
    assert [t.correct for t in traces] == [True, False, False, False]
    assert [t.num_tokens for t in traces] == [5, 4, 6, 3]
    np.testing.assert_allclose(traces[0].confidences, 12.0)
    # the vote grouping is the grading equivalence of the problem's answer kind
    assert ts.answer_classes(problem)("0.5") == ts.answer_classes(problem)("\\frac{1}{2}")
    assert ts.answer_classes({"domain": "science", "tolerance": 0.01}).kind == "numeric"
    science = {"id": "s", "domain": "science", "answer": "3.00", "tolerance": 0.01}
    assert ts.from_completions([_completion("\\boxed{3.02}", 5, 2)], science)[0].correct is True
    assert ts.from_completions([_completion("\\boxed{3}", 5, 2)], {"id": "u"})[0].correct is None
    with pytest.raises(ValueError, match="code answers"):
        ts.from_completions([_completion("x", 5, 2)], {"id": "c", "domain": "code", "answer": "x"})


def _vllm_step(values: list[float]) -> dict:
    return {tid: SimpleNamespace(logprob=v, rank=r + 1) for r, (tid, v) in enumerate(zip(range(100, 200), values))}


def test_from_vllm_outputs():
    top20 = [-0.1] + [-5.0] * 19
    steps_a = [_vllm_step(top20) for _ in range(4)]
    steps_a[2] = _vllm_step(top20 + [-12.0])  # sampled token outside the top 20: 21 entries
    out_a = SimpleNamespace(text="<think>..</think>\\boxed{\\dfrac{1}{2}}", token_ids=[1, 2, 3, 4], logprobs=steps_a,
                            finish_reason="stop", stop_reason=None)
    out_b = SimpleNamespace(text="<think>...", token_ids=[5, 6], logprobs=[_vllm_step(top20)] * 2,
                            finish_reason="stop", stop_reason="gconf_threshold_17.0")
    out_c = SimpleNamespace(text="<think>....", token_ids=[7, 8, 9], logprobs=[_vllm_step(top20)] * 3,
                            finish_reason="length", stop_reason=None)
    req = SimpleNamespace(request_id="42", outputs=[out_a, out_b, out_c])
    traces = ts.from_vllm_outputs([req])
    base = -np.mean(top20)  # 4.755
    with21 = -np.mean(top20 + [-12.0])  # official post-hoc: mean of all returned entries
    np.testing.assert_allclose(traces[0].confidences, [base, base, with21, base], rtol=1e-6)
    np.testing.assert_allclose(ts.from_vllm_outputs([req], top_k=20)[0].confidences, base, rtol=1e-6)
    assert [t.finish_reason for t in traces] == ["eos", "early_stop", "length"]
    assert [t.problem_id for t in traces] == ["42"] * 3 and [t.trace_idx for t in traces] == [0, 1, 2]
    assert traces[0].answer == "\\dfrac{1}{2}" and traces[1].answer is None and traces[0].correct is None
    graded = ts.from_vllm_outputs([req], [{"id": "q", "answer": "0.5"}])
    assert [t.correct for t in graded] == [True, False, False] and graded[0].problem_id == "q"
    # the pip package's forced EOS looks like a normal stop: label it with its threshold, post hoc
    labelled = ts.from_vllm_outputs([req], threshold=5.0, window=2)
    assert labelled[0].finish_reason == "early_stop" and labelled[0].answer is None
    with pytest.raises(ValueError, match="logprobs=20"):
        ts.from_vllm_outputs([SimpleNamespace(request_id="x", outputs=[SimpleNamespace(
            text="", token_ids=[], logprobs=None, finish_reason="stop", stop_reason=None)])])
    with pytest.raises(ValueError, match="align"):
        ts.from_vllm_outputs([req], [{"id": "a"}, {"id": "b"}])


def test_confidences_use_64_bit_offsets_and_version_1_files_still_load(tmp_path):
    """A paper-scale pool (~3e9 confidences) overflows Arrow's int32 list offsets, so the store writes a
    large_list; files written with the int32 list type (format version 1) must still load."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    traces = _traces()
    path = ts.save_traces(traces, tmp_path / "pool.parquet")
    schema = pq.read_schema(path)
    assert schema.field("confidences").type == pa.large_list(pa.float32())
    old = pq.read_table(path)
    old = old.set_column(old.schema.get_field_index("confidences"), pa.field("confidences", pa.list_(pa.float32())),
                         old.column("confidences").cast(pa.list_(pa.float32())))
    pq.write_table(old, tmp_path / "v1.parquet")
    for a, b in zip(traces, ts.load_traces(tmp_path / "v1.parquet")):
        np.testing.assert_array_equal(a.confidences, b.confidences)
        assert (a.num_tokens, a.answer) == (b.num_tokens, b.answer)
