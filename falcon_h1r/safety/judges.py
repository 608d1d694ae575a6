"""Choosing a judge, and measuring one against a hand-labelled set (precision and recall, "unsafe" positive)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from falcon_h1r.safety.jsonl import read_jsonl
from falcon_h1r.safety.keyword_judge import KeywordJudge
from falcon_h1r.safety.llama_guard import LlamaGuardJudge
from falcon_h1r.safety.verdicts import Judge, Verdict

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
LABELLED_JUDGE_SET_PATH = DATA_DIR / "safety_judge_labelled.jsonl"


def make_judge(spec: str, device: str = "auto", batch_size: int = 8, max_batch_tokens: int = 65536) -> Judge:
    """``"embedded"`` -> :class:`KeywordJudge`; anything else is a Llama Guard checkpoint directory (batched by
    at most ``batch_size`` texts and ``max_batch_tokens`` padded tokens per forward pass)."""
    if spec == "embedded":
        return KeywordJudge()
    return LlamaGuardJudge(spec, device=device, batch_size=batch_size, max_batch_tokens=max_batch_tokens)


def load_labelled_judge_set(path: str | Path = LABELLED_JUDGE_SET_PATH) -> list[dict[str, Any]]:
    """Hand-labelled (prompt, response, label, category, kind) rows for measuring a judge.

    Caveat that goes with every number computed on it: the set and the KeywordJudge rules were
    written by the same person, so the rule judge's scores on it are optimistic.
    """
    return read_jsonl(Path(path))


def evaluate_judge(judge: Judge, rows: Sequence[dict[str, Any]], batch_size: int = 64) -> dict[str, Any]:
    """Precision, recall, F1 and accuracy of ``judge`` on labelled rows; the positive class is "unsafe".

    Rows need ``prompt``, ``response`` and ``label`` in {"safe", "unsafe"}. Precision (recall) is 0.0
    when nothing is predicted (labelled) unsafe. Also returns the confusion counts and the ids of the
    rows it got wrong (by index when a row has no ``id``).
    """
    if not rows:
        raise ValueError("evaluate_judge needs at least one labelled row")
    for i, row in enumerate(rows):
        if row.get("label") not in ("safe", "unsafe"):
            raise ValueError(f"row {i}: label {row.get('label')!r} not accepted; use 'safe' or 'unsafe'")
    verdicts: list[Verdict] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        verdicts += judge.judge([r["prompt"] for r in chunk], [r["response"] for r in chunk])
    tp = fp = fn = tn = 0
    wrong = []
    for i, (row, verdict) in enumerate(zip(rows, verdicts)):
        truth_unsafe, pred_unsafe = row["label"] == "unsafe", not verdict.safe
        tp += truth_unsafe and pred_unsafe
        fp += pred_unsafe and not truth_unsafe
        fn += truth_unsafe and not pred_unsafe
        tn += not truth_unsafe and not pred_unsafe
        if truth_unsafe != pred_unsafe:
            wrong.append(row.get("id", i))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": (tp + tn) / len(rows),
            "n": len(rows), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "judge": judge.name, "wrong": wrong}
