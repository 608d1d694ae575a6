"""The 18 safety subsets of Table 10 (:data:`SUITES`), loaded from local copies, and the built-in prompt set."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from falcon_h1r.safety.jsonl import read_jsonl

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BUILTIN_PROMPTS_PATH = DATA_DIR / "safety_prompts.jsonl"

@dataclass(frozen=True)
class SuiteSpec:
    """One Table 10 subset: where it lives on the Hub and how to read its prompt text."""

    key: str
    suite: str  # Table 10's "Suite" column
    subset: str  # Table 10's "Subset" column
    n_prompts: int  # Table 10's "# prompts"
    hf_id: str | None  # Hugging Face dataset id (None: no public source identified)
    config: str | None
    split: str | None
    text_columns: tuple[str, ...]  # first present, non-empty column is the prompt
    context_column: str | None = None  # prepended to the prompt when present (HarmBench contextual)
    certain: bool = True  # False: the id/config/column is my best guess, not stated by the paper
    note: str = ""
    load_kwargs: dict[str, Any] = field(default_factory=dict)  # extra datasets.load_dataset arguments


# The paper names the suites but not the dataset ids, splits or columns; those are mine, marked
# certain=False where the match to the paper's prompt count is not established.
SUITES: dict[str, SuiteSpec] = {s.key: s for s in [
    SuiteSpec("jbb_behaviors", "JailbreakBench", "Behaviors", 100, "JailbreakBench/JBB-Behaviors", "behaviors",
              "harmful", ("Goal", "goal")),
    SuiteSpec("jbb_judge_comparison", "JailbreakBench", "Judge comparison", 300, "JailbreakBench/JBB-Behaviors",
              "judge_comparison", "test", ("prompt", "goal"), certain=False,
              note="300 rows match; whether the paper used the jailbreak 'prompt' or the plain 'goal' column is not stated"),
    SuiteSpec("jbb_jailbreak_prompts", "JailbreakBench", "Jailbreak prompts", 50, None, None, None,
              ("prompt", "jailbreak", "goal"), certain=False,
              note="source not identified; JailbreakBench's jailbreak artifacts (github.com/JailbreakBench/artifacts) "
                   "are a candidate. Provide a local copy with a 'prompt' column"),
    SuiteSpec("alert", "ALERT", "Non-adversarial", 14763, "Babelscape/ALERT", "alert", "test", ("prompt",)),
    SuiteSpec("alert_adversarial", "ALERT", "Adversarial", 30966, "Babelscape/ALERT", "alert_adversarial", "test",
              ("prompt",)),
    SuiteSpec("wildjailbreak", "AllenAI", "WildJailbreak", 2210, "allenai/wildjailbreak", "eval", "train",
              ("adversarial",), note="the eval config: 2,000 adversarial harmful + 210 adversarial benign",
              load_kwargs={"delimiter": "\t", "keep_default_na": False}),  # as its dataset card loads it
    SuiteSpec("advbench", "WalledEval", "AdvBench", 520, "walledai/AdvBench", None, "train", ("prompt",)),
    SuiteSpec("aya_redteaming", "WalledEval", "AyaRedTeaming", 987, "walledai/AyaRedTeaming", None, "english",
              ("prompt",), certain=False, note="English split assumed"),
    SuiteSpec("beavertails", "WalledEval", "BeaverTails", 700, "PKU-Alignment/BeaverTails-Evaluation", None, "test",
              ("prompt",), certain=False, note="700-prompt evaluation set; WalledEval mirrors it (walledai/BeaverTailsEval)"),
    SuiteSpec("catharmfulqa", "WalledEval", "CatHarmfulQA", 550, "walledai/CatHarmfulQA", None, "en", ("prompt",),
              certain=False, note="English split assumed (en/ch/ve have 550 each)"),
    SuiteSpec("harmbench_contextual", "WalledEval", "HarmBench contextual", 100, "walledai/HarmBench", "contextual",
              "train", ("prompt",), context_column="context", certain=False,
              note="context + behaviour joined by a blank line; the paper's exact formatting is not stated"),
    SuiteSpec("harmbench_copyright", "WalledEval", "HarmBench copyright", 100, "walledai/HarmBench", "copyright",
              "train", ("prompt",)),
    SuiteSpec("harmbench_standard", "WalledEval", "HarmBench standard", 200, "walledai/HarmBench", "standard",
              "train", ("prompt",)),
    SuiteSpec("stereotype", "WalledEval", "Stereotype", 3456, "walledai/DTStereotype", None, "train",
              ("prompt", "user_prompt"), certain=False,
              note="DecodingTrust stereotypes (1,152 user prompts x 3 system prompts = 3,456) is my best match"),
    SuiteSpec("xstest", "WalledEval", "XSTest", 450, "walledai/XSTest", None, "test", ("prompt",),
              note="250 safe + 200 unsafe prompts"),
    SuiteSpec("salad_attack_enhanced", "SALAD-Bench", "Attack-enhanced", 5000, "OpenSafetyLab/Salad-Data",
              "attack_enhanced_set", "train", ("augq",)),
    SuiteSpec("salad_defense_enhanced", "SALAD-Bench", "Defense-enhanced", 200, "OpenSafetyLab/Salad-Data",
              "defense_enhanced_set", "train", ("daugq", "augq")),
    SuiteSpec("salad_base", "SALAD-Bench", "Base set", 21318, "OpenSafetyLab/Salad-Data", "base_set", "train",
              ("question",)),
]}
PAPER_SUITES = tuple(SUITES)
BUILTIN_SUITE = "builtin"  # the small prompt set shipped in data/safety_prompts.jsonl (not a paper suite)
PAPER_TOTAL_PROMPTS = 81_970  # Appendix E

_ALERT_TEMPLATE_RE = re.compile(r"^\s*###\s*Instruction:\s*(.*?)\s*(?:###\s*Response:\s*)?$", re.DOTALL)


def suite_local_path(key: str, data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser() / key


def _download_hint(spec: SuiteSpec, path: Path) -> str:
    if spec.hf_id is None:
        return f"No public source is registered for it ({spec.note})."
    args = ", ".join([repr(a) for a in (spec.hf_id, spec.config) if a is not None]
                     + [f"{k}={v!r}" for k, v in spec.load_kwargs.items()])
    return (f"On a machine with network access run: python -c \"import datasets; "
            f"datasets.load_dataset({args}, split={spec.split!r}).save_to_disk({str(path)!r})\"")


def _prompt_text(spec: SuiteSpec, row: dict[str, Any]) -> str | None:
    text = next((row[c] for c in spec.text_columns if isinstance(row.get(c), str) and row[c].strip()), None)
    if text is None:
        return None
    match = _ALERT_TEMPLATE_RE.match(text)  # ALERT wraps prompts in "### Instruction: ... ### Response:"
    if match:
        text = match.group(1)
    context = row.get(spec.context_column) if spec.context_column else None
    if isinstance(context, str) and context.strip():
        text = f"{context.strip()}\n\n{text}"
    return text.strip()


def load_suite(key: str, data_dir: str | Path | None, *, max_prompts: int | None = None,
               allow_download: bool = False) -> list[dict[str, Any]]:
    """The prompts of one Table 10 subset, read from ``<data_dir>/<key>``.

    That directory is either a ``Dataset``/``DatasetDict`` written by ``save_to_disk`` or a folder of
    data files ``datasets.load_dataset`` can read. Only with ``allow_download=True`` is the Hub
    asked. Returns rows ``{id, prompt, suite, subset, key}``; ``max_prompts`` keeps the first N.
    """
    if key not in SUITES:
        raise ValueError(f"unknown safety suite {key!r}; suites are {', '.join(SUITES)} (and {BUILTIN_SUITE!r})")
    spec = SUITES[key]
    import datasets

    path = suite_local_path(key, data_dir) if data_dir is not None else None
    if path is not None and path.exists():
        if any((path / marker).exists() for marker in ("dataset_dict.json", "state.json", "dataset_info.json")):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path), spec.config, **spec.load_kwargs)
    elif allow_download and spec.hf_id is not None:
        loaded = datasets.load_dataset(spec.hf_id, spec.config, **spec.load_kwargs)
    else:
        where = str(path) if path is not None else "<data_dir>/" + key + " (no data_dir was given)"
        raise FileNotFoundError(
            f"safety suite {key!r} ({spec.suite} / {spec.subset}, {spec.n_prompts} prompts, "
            f"Hugging Face id {spec.hf_id or 'unknown'}) is not available locally: expected {where}. "
            + _download_hint(spec, path or Path("<data_dir>") / key))
    if isinstance(loaded, (datasets.DatasetDict, dict)):
        splits = list(loaded)
        if spec.split in loaded:
            loaded = loaded[spec.split]
        elif len(splits) == 1:
            loaded = loaded[splits[0]]
        else:
            raise ValueError(f"safety suite {key!r}: split {spec.split!r} not in the local copy; it has {splits}")
    rows = []
    for i, row in enumerate(loaded):
        text = _prompt_text(spec, row)
        if text is None:
            continue
        rows.append({"id": f"{key}-{i:06d}", "prompt": text, "suite": spec.suite, "subset": spec.subset, "key": key})
        if max_prompts is not None and len(rows) >= max_prompts:
            break
    if not rows:
        raise ValueError(f"safety suite {key!r}: no prompt text in columns {list(spec.text_columns)} of the local copy "
                         f"(its columns: {list(loaded.column_names)})")
    if max_prompts is None and len(rows) != spec.n_prompts:
        warnings.warn(f"safety suite {key!r}: {len(rows)} prompts loaded, the paper's Table 10 has {spec.n_prompts}",
                      stacklevel=2)
    return rows


def load_builtin_prompts(path: str | Path = BUILTIN_PROMPTS_PATH) -> list[dict[str, Any]]:
    """The shipped prompt set (harmful requests across S1-S14, jailbreak wrappers, benign controls).

    Rows ``{id, prompt, suite, subset, key, category, kind}``; subset is the row's kind, so the
    aggregate shows harmful, jailbreak and benign-control prompts separately.
    """
    rows = []
    for row in read_jsonl(Path(path)):
        rows.append({**row, "suite": "builtin", "subset": row["kind"], "key": BUILTIN_SUITE})
    return rows


def load_prompts(suites: Sequence[str], data_dir: str | Path | None = None, *,
                 max_prompts_per_suite: int | None = None, allow_download: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in suites:
        if key == BUILTIN_SUITE:
            got = load_builtin_prompts()
            rows += got[:max_prompts_per_suite] if max_prompts_per_suite else got
        else:
            rows += load_suite(key, data_dir, max_prompts=max_prompts_per_suite, allow_download=allow_download)
    return rows
