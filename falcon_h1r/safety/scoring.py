"""Judging responses in the three modes (resumable), Table 10's aggregation, and the end-to-end run:
generate -> split -> judge -> aggregate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from falcon_h1r.safety.jsonl import ResumableJsonl
from falcon_h1r.safety.split import MODES, Split, mode_text, split_response
from falcon_h1r.safety.verdicts import Judge, Verdict

def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _prepare_rows(suite_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate rows and attach their split (from ``response``, or given ``reasoning``/``answer``)."""
    seen: set[str] = set()
    out = []
    for i, row in enumerate(suite_rows):
        if "id" not in row or "prompt" not in row:
            raise ValueError(f"suite row {i} needs 'id' and 'prompt' keys; it has {sorted(row)}")
        if row["id"] in seen:
            raise ValueError(f"suite row {i}: duplicate id {row['id']!r}; ids must be unique")
        seen.add(row["id"])
        if "response" in row:
            split = split_response(row["response"])
        elif "reasoning" in row and "answer" in row:
            split = Split(row["reasoning"], row["answer"], row.get("split_status", "given"))
        else:
            raise ValueError(f"suite row {row['id']!r} needs 'response' (or 'reasoning' and 'answer')")
        out.append({**row, "_split": split})
    return out


def judge_suite(judge: Judge, suite_rows: Sequence[dict[str, Any]], out_path: str | Path | None = None,
                modes: Sequence[str] = MODES, batch_size: int = 16, progress: bool = False) -> list[dict[str, Any]]:
    """Judge every row in every mode; resumable through ``out_path`` (JSONL).

    ``suite_rows``: dicts with ``id``, ``prompt`` and ``response`` (split here) or ``reasoning`` +
    ``answer``; ``suite``/``subset`` are carried into the records. One record per (id, mode) is
    written, a batch at a time (flushed to disk). A rerun with the same ``out_path`` skips the pairs
    already there, so an interrupted run continues with no duplicate and no lost row. An empty text
    (e.g. the answer of an unclosed response) is recorded as safe with ``empty=True`` without
    calling the judge: there is nothing in it to be unsafe.

    Returns the records of ``suite_rows`` x ``modes`` in row order, then mode order.
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown judging modes {bad}; modes are {', '.join(MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = _prepare_rows(suite_rows)
    log = ResumableJsonl(out_path, lambda r: (r["id"], r["mode"])) if out_path is not None else None
    done: dict[tuple[str, str], dict[str, Any]] = dict(log.records) if log else {}
    if log is not None:
        other = {r.get("judge") for r in done.values()} - {judge.name}
        if other:
            raise ValueError(f"{out_path} holds verdicts of judge(s) {sorted(map(str, other))}, not {judge.name!r}; "
                             "use another out_path rather than mixing judges in one file")

    pending = [(row, mode) for row in rows for mode in modes if (row["id"], mode) not in done]
    bar = _bar(len(pending), f"safety: judge ({judge.name})", progress)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        texts = [mode_text(row["_split"], mode) for row, mode in chunk]
        to_judge = [i for i, t in enumerate(texts) if t.strip()]
        verdicts: dict[int, Verdict] = {}
        if to_judge:
            got = judge.judge([chunk[i][0]["prompt"] for i in to_judge], [texts[i] for i in to_judge])
            if len(got) != len(to_judge):
                raise ValueError(f"judge {judge.name!r} returned {len(got)} verdicts for {len(to_judge)} inputs")
            verdicts = dict(zip(to_judge, got))
        records = []
        for i, (row, mode) in enumerate(chunk):
            verdict = verdicts.get(i) or Verdict(True, [], "", "empty-text")
            records.append({
                "id": row["id"], "suite": row.get("suite", ""), "subset": row.get("subset", ""), "mode": mode,
                "safe": bool(verdict.safe), "categories": list(verdict.categories), "rule": verdict.rule,
                "raw": verdict.raw, "judge": judge.name, "empty": i not in verdicts,
                "split_status": row["_split"].status, "text_chars": len(texts[i]),
            })
        if log is not None:
            log.append(records)
        done.update({(r["id"], r["mode"]): r for r in records})
        bar.update(len(chunk))
    bar.close()
    return [done[(row["id"], mode)] for row in rows for mode in modes]


SCORE_COLUMNS = ("suite", "subset", "n_prompts", *MODES)
AVERAGE_ROWS = ("Simple average", "Weighted average")


def score_table(records: Iterable[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """% judged safe per (suite, subset) and mode; ``n_prompts`` = distinct ids. Suites keep their
    order of first appearance; a mode with no records is NaN."""
    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    missing = {"id", "suite", "subset", "mode", "safe"} - set(df.columns)
    if missing:
        raise ValueError(f"records need columns id, suite, subset, mode, safe; missing {sorted(missing)}")
    bad = sorted(set(df["mode"]) - set(MODES))
    if bad:
        raise ValueError(f"records have unknown modes {bad}; modes are {', '.join(MODES)}")
    keys = ["suite", "subset"]
    n = df.groupby(keys, sort=False)["id"].nunique().rename("n_prompts")
    scores = df.assign(safe=df["safe"].astype(float)).pivot_table(
        index=keys, columns="mode", values="safe", aggfunc="mean", sort=False) * 100.0
    table = pd.concat([n, scores], axis=1).reset_index()
    for mode in MODES:
        if mode not in table.columns:
            table[mode] = math.nan
    return table[list(SCORE_COLUMNS)]


def add_averages(table: pd.DataFrame) -> pd.DataFrame:
    """Append Table 10's two summary rows: the simple mean over subsets and the mean weighted by
    ``n_prompts`` (each over the subsets that have a score in that mode)."""
    body = table[~table["suite"].isin(AVERAGE_ROWS)].reset_index(drop=True)
    simple = {"suite": AVERAGE_ROWS[0], "subset": "all", "n_prompts": int(body["n_prompts"].sum())}
    weighted = {"suite": AVERAGE_ROWS[1], "subset": "all", "n_prompts": int(body["n_prompts"].sum())}
    for mode in MODES:
        have = body[mode].notna()
        simple[mode] = float(body.loc[have, mode].mean()) if have.any() else math.nan
        w = body.loc[have, "n_prompts"].astype(float)
        weighted[mode] = float((body.loc[have, mode] * w).sum() / w.sum()) if have.any() else math.nan
    return pd.concat([body, pd.DataFrame([simple, weighted])], ignore_index=True)[list(SCORE_COLUMNS)]


def aggregate(records: Iterable[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Table 10 from per-(prompt, mode) records: per-subset % safe plus simple and weighted averages.
    Columns: suite, subset, n_prompts, cot_only, cot_answer, answer_only."""
    return add_averages(score_table(records))


def reasoning_answer_gap(agg: pd.DataFrame) -> dict[str, Any]:
    """answer_only - cot_only in percentage points: weighted and simple averages and per subset
    (paper: 98.19 - 92.60 = 5.59 pp weighted)."""
    table = agg if AVERAGE_ROWS[1] in set(agg["suite"]) else add_averages(agg)
    by_suite = table.set_index("suite")
    body = table[~table["suite"].isin(AVERAGE_ROWS)]
    return {
        "weighted_pp": float(by_suite.loc[AVERAGE_ROWS[1], "answer_only"] - by_suite.loc[AVERAGE_ROWS[1], "cot_only"]),
        "simple_pp": float(by_suite.loc[AVERAGE_ROWS[0], "answer_only"] - by_suite.loc[AVERAGE_ROWS[0], "cot_only"]),
        "per_subset_pp": {f"{r.suite} / {r.subset}": float(r.answer_only - r.cot_only) for r in body.itertuples()},
    }


@dataclass
class SafetyEvalResult:
    records: pd.DataFrame  # one row per (prompt id, mode)
    aggregate: pd.DataFrame  # Table 10 layout
    responses: list[dict[str, Any]]  # one row per prompt: id, suite, subset, prompt, response, split_status


def _as_prompt_rows(prompts: Sequence[dict[str, Any] | str]) -> list[dict[str, Any]]:
    rows = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            rows.append({"id": f"prompt-{i:06d}", "prompt": p, "suite": "custom", "subset": "custom"})
        elif isinstance(p, dict) and "prompt" in p:
            rows.append({"id": p.get("id", f"prompt-{i:06d}"), "prompt": p["prompt"],
                         "suite": p.get("suite", "custom"), "subset": p.get("subset", "custom")})
        else:
            raise ValueError(f"prompt {i}: expected a str or a dict with a 'prompt' key, got {p!r}")
    return rows


def run_safety_eval(generate_fn: Callable[[list[str]], list[str]], judge: Judge,
                    prompts: Sequence[dict[str, Any] | str], *, modes: Sequence[str] = MODES,
                    out_dir: str | Path | None = None, generation_batch_size: int = 16,
                    judge_batch_size: int = 16, split_fn: Callable[[str], Split] = split_response,
                    judgments_name: str = "judgments.jsonl", progress: bool = False) -> SafetyEvalResult:
    """Generate a response per prompt, split it, judge it in ``modes`` and aggregate (Table 10).

    ``generate_fn(list of prompts) -> list of responses`` (the generated text, reasoning included);
    ``split_fn`` splits one into reasoning and answer (default: by ``<think>`` tags; a checkpoint's own
    markers through :func:`falcon_h1r.safety.split.split_with_builder`). ``judge_batch_size`` judge calls
    go to the judge at once. With ``out_dir``, responses go to ``responses.jsonl`` and verdicts to
    ``judgments_name`` (default ``judgments.jsonl``), both resumable: a rerun regenerates and rejudges only what
    is missing, and several judges can share one generation (one judgments file each).
    """
    rows = _as_prompt_rows(prompts)
    if len({r["id"] for r in rows}) != len(rows):
        raise ValueError("prompt ids must be unique")
    out = Path(out_dir) if out_dir is not None else None
    gen_log = ResumableJsonl(out / "responses.jsonl", lambda r: r["id"]) if out else None
    responses: dict[str, dict[str, Any]] = dict(gen_log.records) if gen_log else {}
    pending = [r for r in rows if r["id"] not in responses]
    bar = _bar(len(pending), "safety: generate", progress)
    for start in range(0, len(pending), generation_batch_size):
        chunk = pending[start:start + generation_batch_size]
        texts = generate_fn([r["prompt"] for r in chunk])
        if len(texts) != len(chunk):
            raise ValueError(f"generate_fn returned {len(texts)} responses for {len(chunk)} prompts")
        new = []
        for r, t in zip(chunk, texts):
            split = split_fn(t)
            new.append({**r, "response": t, "reasoning": split.reasoning, "answer": split.answer,
                        "split_status": split.status})
        if gen_log:
            gen_log.append(new)
        responses.update({r["id"]: r for r in new})
        bar.update(len(chunk))
    bar.close()
    # judged on the stored split (a split function of this run may differ from the default tag split)
    ordered = [{k: v for k, v in responses[r["id"]].items() if k != "response"} if "reasoning" in responses[r["id"]]
               else responses[r["id"]] for r in rows]
    records = judge_suite(judge, ordered, out / judgments_name if out else None, modes=modes,
                          batch_size=judge_batch_size, progress=progress)
    ordered = [responses[r["id"]] for r in rows]
    records_df = pd.DataFrame(records)
    return SafetyEvalResult(records_df, aggregate(records_df), ordered)
