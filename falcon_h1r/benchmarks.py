"""The paper's benchmarks, read from local copies in their public file formats. Nothing is downloaded.

Each benchmark lives under one root directory (``eval.benchmark_dir``) as ``<root>/<name>.<ext>`` or a
directory ``<root>/<name>/`` (or one of the local names below) holding the public files as released:
JSON Lines, JSON, Parquet or CSV files (found recursively, concatenated in path order; where a release
holds other subsets or splits only the benchmark's files are read: GPQA ``gpqa_diamond*``, MATH-500,
MMLU-Pro and HLE ``test*``, LiveCodeBench ``test*.jsonl``), or a ``datasets.save_to_disk`` directory.
Rows become the package's problem records::

    {"id", "benchmark", "domain", "difficulty", "question",   # question = the full user turn
     "problem", "answer", "answer_kind", "meta",                # problem = the statement as released
     # multiple choice: "choices" (presented order), "choice_seed"
     # code: "language", "test_type" ("stdin" | "functional"), "test_cases", "fn_name", "starter_code"}

Fields read (the first present of each alias list; others are ignored):

================  ==============================================  =============================================
benchmark         public source and files                         fields read
================  ==============================================  =============================================
aime24            HuggingFaceH4/aime_2024 (parquet/jsonl),        problem|Problem|question, answer|Answer,
                  Maxwell-Jia/AIME_2024                           id|ID (answer_kind ``integer``)
aime25            opencompass/AIME2025 (aime2025-I/II.jsonl),     question|problem|Problem, answer|Answer,
                  math-ai/aime25 (test.jsonl), yentinglin/...     id|ID (``integer``)
hmmt25            MathArena/hmmt_feb_2025 (parquet)               problem, answer, problem_idx (``math``)
amo_bench         meituan-longcat/AMO-Bench (jsonl)               prompt, answer, answer_type, question_id;
                                                                  ``description`` answers need a judge
math500           HuggingFaceH4/MATH-500 (test.jsonl)             problem, answer, subject, level, unique_id
gpqa_diamond      Idavidrein/gpqa (gpqa_diamond.csv)              Question, Correct Answer, Incorrect Answer
                                                                  1-3, Record ID, High-level domain, Subdomain
livecodebench_v6  livecodebench/code_generation_lite              question_title, question_content, platform,
                  (test*.jsonl)                                   question_id, contest_date, starter_code,
                                                                  difficulty, public_test_cases,
                                                                  private_test_cases, metadata (func_name)
mmlu_pro          TIGER-Lab/MMLU-Pro (parquet)                    question, options, answer, question_id,
                                                                  category
hle               cais/hle (parquet)                              id, question, image, answer, answer_type,
                                                                  category (text-only rows kept)
================  ==============================================  =============================================

GPQA's options are shuffled per question with a seed (``choice_seed`` and the Record ID), so the
same seed gives the same letters on every run. LiveCodeBench's ``private_test_cases`` are released
as base64 + zlib + *pickle* of a JSON string; unpickling is refused unless ``allow_pickle=True``, and
even then a restricted unpickler that resolves no global at all builds only plain strings and
containers (a crafted file cannot run code), and the decompressed size is capped.

The paper's per-benchmark sampling protocol (samples, temperature, top-p, max length) is read from
``papers/eval_protocol.csv`` by :func:`eval_protocol`. User-turn wording: math problems end with a
``\\boxed{}`` instruction; multiple-choice prompts ask for a last line ``Answer: X`` (the Artificial
Analysis protocol the paper used for GPQA/MMLU-Pro/HLE; the exact AA wording is not reproduced);
code prompts give the starter code or the stdin/stdout contract. These wordings are ours.
"""

from __future__ import annotations

import base64
import fnmatch
import io
import json
import pickle
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from falcon_h1r.verify.extract import LETTERS, extract_boxed

DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
MAX_PRIVATE_TESTS_BYTES = 256 << 20  # decompressed size cap of one row's private tests

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class BenchmarkFormatError(ValueError):
    """A local benchmark file that does not have the public format's fields."""


@dataclass(frozen=True)
class EvalProtocol:
    """The paper's sampling for one benchmark (paper §4.1, ``papers/eval_protocol.csv``)."""

    benchmark: str
    n_samples: int
    max_response_len: int
    temperature: float
    top_p: float
    notes: str


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    protocol_key: str  # the row of papers/eval_protocol.csv
    domain: str
    public_source: str
    local_names: tuple[str, ...]  # accepted <root>/<local name>[.ext] besides <root>/<name>
    reader: Callable[..., list[dict[str, Any]]]
    file_patterns: tuple[str, ...] = ("*",)  # which files of a release directory hold the benchmark


# ----------------------------------------------------------------------------- reading files
def read_rows(path: str | Path, patterns: tuple[str, ...] = ("*",)) -> list[dict[str, Any]]:
    """Rows of one local file or directory in a public format (see the module docstring). In a directory,
    only data files whose name matches one of ``patterns`` are read (GPQA's release holds four subsets,
    MMLU-Pro's a validation split next to the test split)."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            from datasets import load_from_disk

            ds = load_from_disk(str(path))
            if hasattr(ds, "keys"):  # a DatasetDict: the test split if there is one, else every split
                ds = ds["test"] if "test" in ds else [r for split in ds.values() for r in split]
            return [dict(r) for r in ds]
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES
                       and not p.name.startswith(".") and p.name not in ("dataset_info.json", "state.json"))
        files = [p for p in found if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
        if not files:
            raise FileNotFoundError(f"{path}: no data file named like {' or '.join(patterns)} "
                                    f"({', '.join(DATA_SUFFIXES)}) inside; found: "
                                    f"{', '.join(str(p.relative_to(path)) for p in found[:8]) or 'nothing'}")
        return [row for f in files for row in read_rows(f)]
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BenchmarkFormatError(f"{path}: line {i + 1} is not JSON ({exc.msg})") from None
        return rows
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data.get("data", data.get("rows")) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise BenchmarkFormatError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
        return rows
    if path.suffix == ".parquet":
        import pandas as pd

        return [_plain(r) for r in pd.read_parquet(path).to_dict(orient="records")]
    if path.suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict(orient="records")
    raise BenchmarkFormatError(f"{path}: unsupported file type {path.suffix!r}; accepted: {', '.join(DATA_SUFFIXES)}")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """numpy arrays from parquet (MMLU-Pro's options) as lists."""
    return {k: (v.tolist() if hasattr(v, "tolist") and not isinstance(v, (str, bytes)) else v) for k, v in row.items()}


def benchmark_path(name: str, root: str | Path | None) -> Path:
    """Where the local copy of ``name`` is, or one clear FileNotFoundError naming what was expected."""
    spec = get_spec(name)
    expected = _expected_text(spec, root)
    if root is None:
        raise FileNotFoundError(f"benchmark {spec.name!r}: no benchmark directory set (eval.benchmark_dir); "
                                f"expected {expected}. Nothing is downloaded.")
    root = Path(root).expanduser()
    for local in (spec.name, *spec.local_names):
        if (root / local).is_dir():
            return root / local
        for suffix in DATA_SUFFIXES:
            if (root / f"{local}{suffix}").is_file():
                return root / f"{local}{suffix}"
    raise FileNotFoundError(f"benchmark {spec.name!r} not found under {root}: expected {expected}. "
                            "Nothing is downloaded.")


def _expected_text(spec: BenchmarkSpec, root: str | Path | None) -> str:
    base = Path(root).expanduser() if root is not None else Path("<benchmark_dir>")
    names = " or ".join(str(base / n) for n in (spec.name, *spec.local_names))
    return (f"{names} as a directory or a {'/'.join(DATA_SUFFIXES)} file holding the public release "
            f"({spec.public_source})")


# ----------------------------------------------------------------------------- row helpers
def _field(row: dict[str, Any], names: tuple[str, ...], where: str, *, required: bool = True) -> Any:
    for n in names:
        if n in row and row[n] is not None and not (isinstance(row[n], float) and row[n] != row[n]):
            return row[n]
    if required:
        raise BenchmarkFormatError(f"{where}: needs one of the fields {list(names)}; the row has {sorted(row)}")
    return None


def _clean_answer(ans: Any) -> str:
    """A reference answer as a string: ``$...$`` and an outer ``\\boxed{}`` removed."""
    s = str(ans).strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$").strip()
    boxed = extract_boxed(s) if s.startswith("\\boxed") else None
    return boxed if boxed is not None else s


def _math_question(problem: str) -> str:
    return f"{problem.strip()}\n\n{MATH_INSTRUCTION}"


def multiple_choice_question(question: str, choices: list[str]) -> str:
    """A multiple-choice user turn asking for a last line ``Answer: X``."""
    letters = LETTERS[:len(choices)]
    options = "\n".join(f"{letter}) {text}" for letter, text in zip(letters, choices))
    return (f"Answer the following multiple-choice question. End your response with a line of the form "
            f"'Answer: X', where X is one of {', '.join(letters)}.\n\n{question.strip()}\n\n{options}")


def _record(name: str, spec: BenchmarkSpec, source_id: Any, problem: str, question: str, answer: str,
            kind: str, *, difficulty: Any = 0, meta: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": f"{name}-{source_id}", "benchmark": name, "domain": spec.domain, "difficulty": difficulty,
            "question": question, "problem": problem, "answer": answer, "answer_kind": kind,
            "meta": {k: v for k, v in (meta or {}).items() if v is not None}, **extra}


# ----------------------------------------------------------------------------- math readers
def _read_integer_math(rows: list[dict], spec: BenchmarkSpec, where: str, **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        problem = str(_field(r, ("problem", "Problem", "question", "Question"), at))
        answer = _clean_answer(_field(r, ("answer", "Answer"), at))
        rid = _field(r, ("id", "ID", "problem_idx", "unique_id"), at, required=False)
        out.append(_record(spec.name, spec, rid if rid is not None else i, problem, _math_question(problem), answer,
                           "integer", meta={"year": r.get("year"), "url": r.get("url")}))
    return out


def _read_hmmt(rows: list[dict], spec: BenchmarkSpec, where: str, **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        problem = str(_field(r, ("problem", "Problem", "question"), at))
        answer = _clean_answer(_field(r, ("answer", "Answer"), at))
        rid = _field(r, ("problem_idx", "id", "ID"), at, required=False)
        out.append(_record(spec.name, spec, rid if rid is not None else i, problem, _math_question(problem), answer,
                           "math", meta={"problem_type": r.get("problem_type")}))
    return out


AMO_PARSER_TYPES = ("number", "set", "variable")


def _read_amo(rows: list[dict], spec: BenchmarkSpec, where: str, *, parser_only: bool = True,
              **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        problem = str(_field(r, ("prompt", "question", "problem"), at))
        answer_type = str(_field(r, ("answer_type",), at, required=False) or "number")
        if answer_type not in (*AMO_PARSER_TYPES, "description"):
            raise BenchmarkFormatError(f"{at}: answer_type {answer_type!r}; AMO-Bench uses "
                                       f"{', '.join(AMO_PARSER_TYPES)}, description")
        if parser_only and answer_type == "description":
            continue
        kind = "judge" if answer_type == "description" else "math"
        rid = _field(r, ("question_id", "id"), at, required=False)
        out.append(_record(spec.name, spec, rid if rid is not None else i, problem, _math_question(problem),
                           _clean_answer(_field(r, ("answer",), at)), kind, meta={"answer_type": answer_type}))
    return out


def _read_math500(rows: list[dict], spec: BenchmarkSpec, where: str, **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        problem = str(_field(r, ("problem",), at))
        rid = _field(r, ("unique_id", "id"), at, required=False)
        level = r.get("level")
        out.append(_record(spec.name, spec, rid if rid is not None else i, problem, _math_question(problem),
                           _clean_answer(_field(r, ("answer",), at)), "math",
                           difficulty=int(level) if str(level).isdigit() else 0,
                           meta={"subject": r.get("subject"), "level": level}))
    return out


# ----------------------------------------------------------------------------- multiple choice readers
def _read_gpqa(rows: list[dict], spec: BenchmarkSpec, where: str, *, choice_seed: int = 0,
               **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        question = str(_field(r, ("Question",), at)).strip()
        options = [str(_field(r, (col,), at)).strip()
                   for col in ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")]
        rid = str(_field(r, ("Record ID",), at, required=False) or i)
        order = list(range(4))
        random.Random(f"gpqa:{choice_seed}:{rid}").shuffle(order)  # str seeds hash with sha512: stable
        choices = [options[j] for j in order]
        answer = LETTERS[order.index(0)]
        out.append(_record(spec.name, spec, rid, question, multiple_choice_question(question, choices), answer,
                           "multiple_choice", choices=choices, choice_seed=choice_seed,
                           meta={"domain": r.get("High-level domain"), "subdomain": r.get("Subdomain")}))
    return out


def _read_mmlu_pro(rows: list[dict], spec: BenchmarkSpec, where: str, **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        question = str(_field(r, ("question",), at))
        choices = [str(c) for c in _field(r, ("options",), at) if str(c).strip() and str(c) != "N/A"]
        answer = str(_field(r, ("answer",), at)).strip()
        if not 2 <= len(choices) <= len(LETTERS) or answer not in LETTERS[:len(choices)]:
            raise BenchmarkFormatError(f"{at}: answer {answer!r} must be a letter among {len(choices)} options")
        rid = _field(r, ("question_id", "id"), at, required=False)
        out.append(_record(spec.name, spec, rid if rid is not None else i, question,
                           multiple_choice_question(question, choices), answer, "multiple_choice", choices=choices,
                           meta={"category": r.get("category"), "src": r.get("src")}))
    return out


def _read_hle(rows: list[dict], spec: BenchmarkSpec, where: str, **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        if str(r.get("image") or "").strip():
            continue  # the paper ran the 2,158 text-only questions
        question = str(_field(r, ("question",), at))
        answer_type = str(_field(r, ("answer_type",), at))
        answer = str(_field(r, ("answer",), at)).strip()
        if answer_type == "multipleChoice":  # options are written inside the question
            kind, text = "multiple_choice", (f"{question.strip()}\n\nEnd your response with a line of the form "
                                             "'Answer: X', where X is the letter of the correct option.")
        elif answer_type == "exactMatch":
            kind, text = "math", _math_question(question)
        else:
            raise BenchmarkFormatError(f"{at}: answer_type {answer_type!r}; HLE uses exactMatch, multipleChoice")
        out.append(_record(spec.name, spec, _field(r, ("id",), at, required=False) or i, question, text, answer, kind,
                           meta={"category": r.get("category"), "answer_type": answer_type,
                                 "grader": "rule-based; the paper used GPT-4o as the equality checker"}))
    return out


# ----------------------------------------------------------------------------- LiveCodeBench
class _NoGlobalsUnpickler(pickle.Unpickler):
    """Builds only plain strings, numbers and containers: every class or function lookup is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain data may be unpickled")


def decode_private_tests(raw: Any, *, allow_pickle: bool = False, where: str = "") -> list[dict[str, Any]]:
    """LiveCodeBench ``private_test_cases``: a JSON list, or the lite release's base64+zlib+pickle of one.

    The pickled form is decoded only with ``allow_pickle=True``, by an unpickler that resolves no global
    (so a crafted file cannot call anything) after a size-capped decompression."""
    if isinstance(raw, list):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return []
    try:
        cases = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        if not allow_pickle:
            raise BenchmarkFormatError(
                f"{where}: private_test_cases are base64+zlib+pickle (the code_generation_lite release). "
                "Unpickling is off by default: pass allow_pickle=True to decode them with a restricted unpickler "
                "that builds only plain data, or convert them to JSON beforehand") from None
        try:
            d = zlib.decompressobj()
            data = d.decompress(base64.b64decode(str(raw).encode("utf-8"), validate=True), MAX_PRIVATE_TESTS_BYTES)
            if d.unconsumed_tail:
                raise BenchmarkFormatError(f"{where}: private tests larger than {MAX_PRIVATE_TESTS_BYTES} bytes")
            payload = _NoGlobalsUnpickler(io.BytesIO(data)).load()
        except BenchmarkFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - one clear error for any malformed or hostile payload
            raise BenchmarkFormatError(f"{where}: private_test_cases could not be decoded safely: "
                                       f"{type(exc).__name__}: {exc}") from None
        if not isinstance(payload, (str, bytes)):
            raise BenchmarkFormatError(f"{where}: private tests unpickled to {type(payload).__name__}, expected "
                                       "a JSON string")
        cases = json.loads(payload)
    if not isinstance(cases, list):
        raise BenchmarkFormatError(f"{where}: test cases must be a JSON list, got {type(cases).__name__}")
    return cases


def _lcb_question(content: str, starter: str) -> str:
    if starter.strip():
        fmt = ("Complete the starter code below; keep its class and method signature. Put your whole solution "
               f"in one ```python code block.\n\n```python\n{starter.rstrip()}\n```")
    else:
        fmt = ("Write a complete Python program that reads the input from standard input and writes the answer "
               "to standard output. Put it in one ```python code block.")
    return f"Solve the following programming problem.\n\n{content.strip()}\n\n{fmt}"


def _read_lcb(rows: list[dict], spec: BenchmarkSpec, where: str, *, allow_pickle: bool = False,
              public_tests_only: bool = False, date_from: str | None = None, date_to: str | None = None,
              **_: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"
        date = str(_field(r, ("contest_date",), at, required=False) or "")[:10]
        if (date_from and date and date < date_from) or (date_to and date and date >= date_to):
            continue
        content = str(_field(r, ("question_content",), at))
        starter = str(_field(r, ("starter_code",), at, required=False) or "")
        public = decode_private_tests(_field(r, ("public_test_cases",), at), where=f"{at} public_test_cases")
        private = [] if public_tests_only else decode_private_tests(
            _field(r, ("private_test_cases",), at, required=False), allow_pickle=allow_pickle, where=at)
        cases = public + private
        if not cases:
            raise BenchmarkFormatError(f"{at}: no test cases")
        types = {str(c.get("testtype", "stdin")) for c in cases}
        if len(types) != 1 or not types <= {"stdin", "functional"}:
            raise BenchmarkFormatError(f"{at}: testtype must be all 'stdin' or all 'functional', got {sorted(types)}")
        test_type = types.pop()
        meta = _field(r, ("metadata",), at, required=False) or {}
        meta = json.loads(meta) if isinstance(meta, str) and meta.strip() else (meta if isinstance(meta, dict) else {})
        fn_name = meta.get("func_name")
        if test_type == "functional" and not fn_name:
            raise BenchmarkFormatError(f"{at}: functional tests need metadata.func_name")
        rid = _field(r, ("question_id", "id"), at, required=False)
        out.append(_record(
            spec.name, spec, rid if rid is not None else i, content, _lcb_question(content, starter), "", "code",
            difficulty=r.get("difficulty") or 0, language="python", test_type=test_type,
            test_cases=[{"input": str(c["input"]), "output": str(c["output"])} for c in cases],
            fn_name=fn_name, starter_code=starter,
            meta={"platform": r.get("platform"), "contest_date": date or None, "title": r.get("question_title"),
                  "n_private_tests": len(private)}))
    return out


# ----------------------------------------------------------------------------- the registry
def _spec(name: str, key: str, domain: str, source: str, local: tuple[str, ...], reader: Callable,
          patterns: tuple[str, ...] = ("*",)) -> BenchmarkSpec:
    return BenchmarkSpec(name, key, domain, source, local, reader, patterns)


BENCHMARKS: dict[str, BenchmarkSpec] = {s.name: s for s in (
    _spec("aime24", "aime24", "math", "HuggingFaceH4/aime_2024", ("aime_2024", "AIME_2024"), _read_integer_math),
    _spec("aime25", "aime25", "math", "opencompass/AIME2025, math-ai/aime25", ("aime_2025", "AIME2025"),
          _read_integer_math),
    _spec("hmmt25", "hmmt25", "math", "MathArena/hmmt_feb_2025", ("hmmt_feb_2025",), _read_hmmt),
    _spec("amo_bench", "amo_bench", "math", "meituan-longcat/AMO-Bench", ("AMO-Bench", "amo-bench"), _read_amo),
    _spec("math500", "math500", "math", "HuggingFaceH4/MATH-500", ("MATH-500", "math-500"), _read_math500,
          ("test*",)),
    _spec("gpqa_diamond", "gpqa_d", "science", "Idavidrein/gpqa gpqa_diamond.csv", ("gpqa", "gpqa_d"), _read_gpqa,
          ("gpqa_diamond*",)),
    _spec("livecodebench_v6", "lcb_v6", "code", "livecodebench/code_generation_lite",
          ("code_generation_lite", "lcb_v6"), _read_lcb, ("test*.jsonl",)),
    _spec("mmlu_pro", "mmlu_pro", "general", "TIGER-Lab/MMLU-Pro", ("MMLU-Pro",), _read_mmlu_pro, ("test*",)),
    _spec("hle", "hle", "general", "cais/hle", ("HLE",), _read_hle, ("test*",)),
)}
ALIASES = {"gpqa_d": "gpqa_diamond", "lcb_v6": "livecodebench_v6", "math_500": "math500", "amo-bench": "amo_bench"}
# Which verifier domain grades each benchmark (the evaluation harness groups pass@1 by it).
BENCHMARK_DOMAIN = {name: spec.domain for name, spec in BENCHMARKS.items()}
# Benchmarks of the paper that need their own harness, not a local file plus this package's checker.
UNSUPPORTED = {
    "ifbench": "graded by IFBench's own instruction checkers, which this package does not include",
    "scicode": "graded per sub-problem by the InspectAI SciCode harness",
    "tau2_telecom": "an agentic benchmark with a simulated user (tau2-bench harness)",
    "tb_hard": "an agentic benchmark run by the Terminus 2 agent in terminal-bench",
}


def get_spec(name: str) -> BenchmarkSpec:
    key = ALIASES.get(name, name)
    if key in BENCHMARKS:
        return BENCHMARKS[key]
    if key in UNSUPPORTED:
        raise ValueError(f"benchmark {name!r} is not loaded here: {UNSUPPORTED[key]}")
    raise ValueError(f"unknown benchmark {name!r}; accepted: {', '.join(BENCHMARKS)} (aliases: {', '.join(ALIASES)})")


def eval_protocol(name: str) -> EvalProtocol:
    """The paper's samples per query, temperature, top-p and max response length for ``name``."""
    from falcon_h1r import papers

    spec_key = ALIASES.get(name, name)
    key = BENCHMARKS[spec_key].protocol_key if spec_key in BENCHMARKS else spec_key
    table = papers.load("eval_protocol")
    rows = table[table["benchmark"] == key]
    if rows.empty:
        raise ValueError(f"no paper protocol for benchmark {name!r}; papers/eval_protocol.csv lists "
                         f"{', '.join(table['benchmark'])}")
    r = rows.iloc[0]
    return EvalProtocol(benchmark=str(key), n_samples=int(r["n_samples"]), max_response_len=int(r["max_response_len"]),
                        temperature=float(r["temperature"]), top_p=float(r["top_p"]),
                        notes="" if str(r["notes"]) == "nan" else str(r["notes"]))


def load_benchmark(name: str, root: str | Path | None, *, limit: int | None = None, choice_seed: int = 0,
                   parser_only: bool = True, allow_pickle: bool = False, public_tests_only: bool = False,
                   date_from: str | None = None, date_to: str | None = None) -> list[dict[str, Any]]:
    """Problem records of benchmark ``name`` from its local copy under ``root`` (module docstring).

    ``choice_seed`` fixes GPQA's option shuffle; ``parser_only`` keeps AMO-Bench's 39 parser-gradable
    problems (False adds the 11 ``description`` ones as answer_kind ``judge``); ``allow_pickle``,
    ``public_tests_only``, ``date_from``/``date_to`` (ISO dates, ``[from, to)`` on contest_date) apply to
    LiveCodeBench; ``limit`` keeps the first rows. Rows without required fields raise
    :class:`BenchmarkFormatError` naming the file, the row and the fields it has.
    """
    spec = get_spec(name)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of problems or None, got {limit}")
    path = benchmark_path(spec.name, root)
    rows = read_rows(path, spec.file_patterns)
    records = spec.reader(rows, spec, str(path), choice_seed=choice_seed, parser_only=parser_only,
                          allow_pickle=allow_pickle, public_tests_only=public_tests_only,
                          date_from=date_from, date_to=date_to)
    if not records:
        raise BenchmarkFormatError(f"{path}: no problems left to load (after filters)")
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise BenchmarkFormatError(f"{path}: problem id {dup!r} appears more than once")
    return records[:limit] if limit else records
