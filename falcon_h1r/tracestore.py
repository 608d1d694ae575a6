"""Stored reasoning traces with per-token confidences: the Parquet store, and the importers that turn
our engine's completions or vLLM's outputs into graded :class:`~falcon_h1r.deepconf.Trace` objects.

The DeepConf paper generated a large pool of complete traces per problem once and computed every
number from it (:func:`falcon_h1r.deepconf.replay_evaluate`). This module keeps such pools compactly so
that generation (here, or with vLLM elsewhere) and analysis are apart.

File format: one Parquet file (zstd), one row per trace:

=============  ==================  ==========================================================
column         type                meaning
=============  ==================  ==========================================================
problem_id     string              problem the trace answers
trace_idx      int32               index of the trace within its problem's pool
answer         string (nullable)   extracted answer (:func:`falcon_h1r.verify.extract_final_answer`)
correct        bool (nullable)     answer graded against the problem's ground truth
num_tokens     int32               generated tokens (the stopping token included)
finish_reason  string              "eos" | "length" | "early_stop"
confidences    large_list<float32> per-token confidence, -mean of the raw top-k log-probs
token_ids      list<int32> (null)  generated token ids, when kept
text           string (nullable)   generated text, when kept
=============  ==================  ==========================================================

Schema metadata records the format version and the confidence definition. Confidences are kept as
float32, not rounded to 3 decimals as the official code does: a 30k-token trace costs about
120 kB (zstd gains little on float noise). They are a *large* list (int64 offsets): a paper-scale
pool (4,096 traces x 30 problems x ~26k tokens, about 3e9 values) overflows Arrow's int32 list
offsets. Version 1 files (int32 offsets) still load.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from falcon_h1r.deepconf.confidence import first_stop_index
from falcon_h1r.deepconf.traces import Trace, trace_from_completion
from falcon_h1r.verify import (
    AnswerClasses,
    answer_kind,
    answers_equivalent,
    extract_final_answer,
)

FORMAT_VERSION = "2"  # 2: confidences as large_list (int64 offsets)
REQUIRED_COLUMNS = ("problem_id", "trace_idx", "answer", "correct", "num_tokens", "finish_reason", "confidences")
FINISH_REASONS = ("eos", "length", "early_stop")


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("problem_id", pa.string()), ("trace_idx", pa.int32()), ("answer", pa.string()), ("correct", pa.bool_()),
        ("num_tokens", pa.int32()), ("finish_reason", pa.string()), ("confidences", pa.large_list(pa.float32())),
        ("token_ids", pa.list_(pa.int32())), ("text", pa.string()),
    ], metadata={"falcon_h1r.tracestore.version": FORMAT_VERSION,
                 "confidence": "per token: -mean of the raw (untempered) top-k log-probs, k = 20"})


# ============================================================================== save / load
def save_traces(traces: Sequence[Trace], path: str | Path, *, with_token_ids: bool = True,
                with_text: bool = False) -> Path:
    """Write ``traces`` to one Parquet file (atomically: temporary file, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for t in traces:
        if t.finish_reason not in FINISH_REASONS:
            raise ValueError(f"trace {t.problem_id}/{t.trace_idx}: finish_reason {t.finish_reason!r} not accepted; "
                             f"use one of {list(FINISH_REASONS)}")
    lengths = np.array([t.confidences.size for t in traces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # int32 would wrap past 2^31 values
    values = (np.concatenate([t.confidences for t in traces]) if traces else np.empty(0)).astype(np.float32)
    confidences = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()),
                                                pa.array(values, type=pa.float32()))
    token_ids = pa.array([list(map(int, t.token_ids)) if with_token_ids and t.token_ids is not None else None
                          for t in traces], type=pa.list_(pa.int32()))
    table = pa.Table.from_arrays([
        pa.array([str(t.problem_id) for t in traces], type=pa.string()),
        pa.array([int(t.trace_idx) for t in traces], type=pa.int32()),
        pa.array([t.answer for t in traces], type=pa.string()),
        pa.array([t.correct for t in traces], type=pa.bool_()),
        pa.array([int(t.num_tokens) for t in traces], type=pa.int32()),
        pa.array([t.finish_reason for t in traces], type=pa.string()),
        confidences,
        token_ids,
        pa.array([t.text if with_text else None for t in traces], type=pa.string()),
    ], schema=_schema())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_traces(path: str | Path) -> list[Trace]:
    """Read a file written by :func:`save_traces` back into :class:`Trace` objects."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace store {path} does not exist")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a trace store: missing columns {missing}; a store has {list(REQUIRED_COLUMNS)}")
    conf = table.column("confidences").combine_chunks()
    offsets = conf.offsets.to_numpy()
    values = conf.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    cols = {c: table.column(c).to_pylist() for c in table.column_names if c != "confidences"}
    none = [None] * table.num_rows
    token_ids, texts = cols.get("token_ids", none), cols.get("text", none)
    return [Trace(confidences=values[offsets[i]:offsets[i + 1]], answer=cols["answer"][i], correct=cols["correct"][i],
                  finish_reason=cols["finish_reason"][i], num_tokens=cols["num_tokens"][i],
                  problem_id=cols["problem_id"][i], trace_idx=cols["trace_idx"][i], token_ids=token_ids[i],
                  text=texts[i]) for i in range(table.num_rows)]


# ============================================================================== importers
def vote_kind(problem: dict[str, Any] | None) -> str:
    """The answer kind a problem's traces are extracted, grouped and graded by
    (:func:`falcon_h1r.verify.answer_kind`: math -> ``math``, science -> ``numeric``, or the record's own
    ``answer_kind``); ``math`` without a problem. Code and judge answers cannot be voted on."""
    if problem is None:
        return "math"
    if problem.get("answer_kind") is None and problem.get("domain") is None:
        return "math"
    kind = answer_kind(problem)
    if kind in ("code", "judge"):
        raise ValueError(f"DeepConf votes on final answers; {kind} answers (graded by tests or a judge) are not "
                         "supported")
    return kind


def answer_classes(problem: dict[str, Any] | None) -> AnswerClasses:
    """The vote grouping of one problem's traces: :class:`falcon_h1r.verify.AnswerClasses` for its answer
    kind, option texts and numeric tolerance (the equivalence grading uses)."""
    p = problem or {}
    return AnswerClasses(kind=vote_kind(problem), choices=p.get("choices"), rel_tol=float(p.get("tolerance", 1e-2)))


def grade_answer(answer: str | None, problem: dict[str, Any]) -> bool | None:
    """Grade an extracted answer against ``problem["answer"]`` (None when there is no ground truth) with the
    package's one equivalence (:func:`falcon_h1r.verify.answers_equivalent`): math by tier 1 then math-verify,
    science (``numeric``) by relative tolerance (``problem["tolerance"]``), letters for multiple choice."""
    if problem.get("answer") is None:
        return None
    kind = vote_kind(problem)
    if answer is None:
        return False
    return answers_equivalent(answer, str(problem["answer"]), kind, choices=problem.get("choices"),
                              rel_tol=float(problem.get("tolerance", 1e-2)))


def _problem_id(problem: dict[str, Any] | None, fallback: str) -> str:
    if problem is None:
        return fallback
    return str(problem.get("id", problem.get("problem_id", fallback)))


def from_completions(completions: Sequence[Any], problem: dict[str, Any], *, start: int = 0) -> list[Trace]:
    """Our engine's :class:`falcon_h1r.inference.Completion` for one problem -> graded traces (indexed from
    ``start``). Each distinct answer string is graded once (a pool repeats a few answers many times)."""
    pid = _problem_id(problem, "")
    kind = vote_kind(problem)
    grades: dict[str | None, bool | None] = {}
    traces = []
    for i, c in enumerate(completions):
        t = trace_from_completion(c, trace_idx=start + i, problem_id=pid, kind=kind, choices=problem.get("choices"))
        if t.answer not in grades:
            grades[t.answer] = grade_answer(t.answer, problem)
        t.correct = grades[t.answer]
        traces.append(t)
    return traces


def vllm_token_confidences(step_logprobs: Sequence[dict[Any, Any]], top_k: int | None = None) -> np.ndarray:
    """Per-token confidence from vLLM ``CompletionOutput.logprobs`` (a dict token id -> Logprob per step).

    With ``logprobs=20`` vLLM returns the top 20 plus the sampled token when it is outside them, so 20
    or 21 entries. ``top_k=None`` averages all of them, as the official post-hoc code does;
    ``top_k=20`` averages the 20 largest only, which is what our engine and the in-engine stop see.
    """
    out = np.empty(len(step_logprobs), dtype=np.float32)
    for i, step in enumerate(step_logprobs):
        if not step:
            raise ValueError(f"step {i} has no log-probs; generate with SamplingParams(logprobs=20)")
        vals = np.array([float(getattr(v, "logprob", v)) for v in step.values()], dtype=np.float64)
        if top_k is not None:
            vals = np.sort(vals)[::-1][:top_k]
        out[i] = -vals.mean()
    return out


def _finish_reason(completion: Any) -> str:
    reason = getattr(completion, "finish_reason", None)
    stop_reason = getattr(completion, "stop_reason", None)
    if reason == "stop":
        tagged = isinstance(stop_reason, str) and ("conf" in stop_reason or "threshold" in stop_reason)
        return "early_stop" if tagged else "eos"
    if reason == "length":
        return "length"
    if reason == "abort":
        return "early_stop"
    raise ValueError(f"vLLM finish_reason {reason!r} not understood; expected 'stop', 'length' or 'abort'")


def from_vllm_outputs(outputs: Iterable[Any], problems: Sequence[dict[str, Any]] | None = None, *,
                      top_k: int | None = None, threshold: float | None = None, window: int = 2048,
                      keep_text: bool = False) -> list[Trace]:
    """Import vLLM ``RequestOutput``-like objects generated with ``logprobs=20`` (duck-typed:
    ``.outputs[i].text``, ``.token_ids``, ``.logprobs``, ``.finish_reason``, ``.stop_reason``).

    ``problems`` (aligned with ``outputs``) gives ids and ground truth; without it the id is the
    request id and ``correct`` is None. A stop tagged by the Appendix-G vLLM patch (stop reason
    mentioning the confidence threshold) or an abort becomes ``early_stop``. The official pip package
    ends stopped traces with a forced EOS, indistinguishable from a normal end: pass its ``threshold``
    (and ``window``) to label ``stop`` traces whose lowest window is below it, as its post-hoc check does.
    """
    outputs = list(outputs)
    if problems is not None and len(problems) != len(outputs):
        raise ValueError(f"problems has {len(problems)} entries for {len(outputs)} request outputs; align them")
    traces = []
    for r, request in enumerate(outputs):
        problem = problems[r] if problems is not None else None
        pid = _problem_id(problem, str(getattr(request, "request_id", r)))
        for j, comp in enumerate(request.outputs):
            if comp.logprobs is None:
                raise ValueError(f"request {pid} output {j} has no log-probs; generate with SamplingParams(logprobs=20)")
            conf = vllm_token_confidences(comp.logprobs, top_k)
            reason = _finish_reason(comp)
            if (reason == "eos" and threshold is not None
                    and first_stop_index(conf, threshold, window) is not None):
                reason = "early_stop"
            answer = None if reason == "early_stop" else extract_final_answer(comp.text, vote_kind(problem),
                                                                               choices=(problem or {}).get("choices"))
            answer = answer if answer and answer.strip() else None
            traces.append(Trace(confidences=conf, answer=answer,
                                correct=grade_answer(answer, problem) if problem is not None else None,
                                finish_reason=reason, num_tokens=len(comp.token_ids), problem_id=pid, trace_idx=j,
                                token_ids=list(comp.token_ids), text=comp.text if keep_text else None))
    return traces


__all__ = ["FORMAT_VERSION", "save_traces", "load_traces", "vote_kind", "answer_classes", "grade_answer", "from_completions",
           "vllm_token_confidences", "from_vllm_outputs"]
