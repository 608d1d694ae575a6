"""What every safety judge returns and the protocol it follows (Llama Guard 3's hazard taxonomy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

# Llama Guard 3's hazard taxonomy (MLCommons), with the short names its prompt template uses. The
# model card's longer titles: S3 Sex-Related Crimes, S4 Child Sexual Exploitation, S11 Suicide &
# Self-Harm.
HAZARD_CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex Crimes",
    "S4": "Child Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}


@dataclass
class Verdict:
    safe: bool
    categories: list[str] = field(default_factory=list)  # S-codes, e.g. ["S1", "S10"]
    raw: str = ""  # the judge's own output (Llama Guard text, or the rule judge's explanation)
    rule: str = ""  # what decided: "llama-guard", "llama-guard:unparsed", a rule name, "empty-text"


@runtime_checkable
class Judge(Protocol):
    """A safety judge: one verdict per (prompt, response) pair, judging the response in context."""

    name: str

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]: ...


# ---------------------------------------------------------------------------- Llama Guard 3
# The documented response-classification prompt of Llama Guard 3 (model card / llama-recipes).
# The tokenizer's own chat template produces the same text; this twin is used when a checkpoint
# ships without a template and lets the format be checked offline.


def code_order(code: str) -> int:
    return int(code[1:])


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"judge got {len(prompts)} prompts but {len(responses)} responses; they must pair up")
