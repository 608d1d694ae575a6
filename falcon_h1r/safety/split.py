"""The reasoning/answer split of a response and the three texts a judge reads (paper Appendix E, Table 10).

``cot_only`` is the reasoning alone (inside ``<think> ... </think>``), ``answer_only`` the final answer alone,
``cot_answer`` both; :func:`split_response` is robust to missing, unclosed or repeated tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

# Paper Table 10's three judging modes, in the paper's column order.
MODES = ("cot_only", "cot_answer", "answer_only")

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_OPEN_RE = re.compile(r"<think>", re.IGNORECASE)
_CLOSE_RE = re.compile(r"</think>", re.IGNORECASE)
_ANY_TAG_RE = re.compile(r"</?think>", re.IGNORECASE)
SPLIT_STATUSES = ("ok", "no_think", "unclosed", "no_open", "repeated", "empty")


@dataclass(frozen=True)
class Split:
    reasoning: str
    answer: str
    status: str  # one of SPLIT_STATUSES


def split_response(text: str) -> Split:
    """Split a response into (reasoning, answer) by its ``<think> ... </think>`` structure.

    Tags are matched case-insensitively; both parts are whitespace-stripped. The cases:

    * ``"ok"``: exactly one ``<think>`` before exactly one ``</think>``. Reasoning is everything
      before ``</think>`` with the tag removed (text before ``<think>`` counts as reasoning too),
      answer is everything after it.
    * ``"no_think"``: no tag at all. Everything is answer; reasoning is empty.
    * ``"unclosed"``: ``<think>`` but no ``</think>`` (typically cut off by the token limit).
      Everything is reasoning (tags removed); the answer is empty.
    * ``"no_open"``: a single ``</think>`` and no ``<think>`` (chat templates that put ``<think>``
      in the prompt, so the generation starts inside it). Reasoning is the text before it, answer the
      text after it.
    * ``"repeated"``: more than one tag of either kind, or tags out of order. Reasoning is everything
      up to the LAST ``</think>`` with all tags stripped, answer is everything after it (tags
      stripped too); with no ``</think>`` at all the case is ``"unclosed"``.
    * ``"empty"``: blank text; both parts empty.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_response expects a str response, got {type(text).__name__}")
    if not text.strip():
        return Split("", "", "empty")
    opens = [m.start() for m in _OPEN_RE.finditer(text)]
    closes = list(_CLOSE_RE.finditer(text))
    if not opens and not closes:
        return Split("", text.strip(), "no_think")
    if not closes:
        return Split(_ANY_TAG_RE.sub("", text).strip(), "", "unclosed")
    last_close = closes[-1]
    reasoning = _ANY_TAG_RE.sub("", text[: last_close.start()]).strip()
    answer = _ANY_TAG_RE.sub("", text[last_close.end():]).strip()
    if len(closes) == 1 and not opens:
        status = "no_open"
    elif len(closes) == 1 and len(opens) == 1 and opens[0] < last_close.start():
        status = "ok"
    else:
        status = "repeated"
    return Split(reasoning, answer, status)


def mode_text(split: Split, mode: str) -> str:
    """The text a judge sees in ``mode``. ``cot_answer`` joins the two parts with a blank line: the
    think tags are format tokens, not content, so they are left out of every mode."""
    if mode == "cot_only":
        return split.reasoning
    if mode == "answer_only":
        return split.answer
    if mode == "cot_answer":
        return "\n\n".join(part for part in (split.reasoning, split.answer) if part)
    raise ValueError(f"unknown judging mode {mode!r}; modes are {', '.join(MODES)}")


def split_with_builder(builder: Any) -> Callable[[str], Split]:
    """A split function for generated text that follows ``builder``'s chat template (a
    :class:`falcon_h1r.prompts.PromptBuilder`: its own thinking markers, and a response that starts inside
    the thinking when the prompt opened it), returning the judge's :class:`Split`."""

    def split(text: str) -> Split:
        if not isinstance(text, str):
            raise TypeError(f"a response must be a str, got {type(text).__name__}")
        if not text.strip():
            return Split("", "", "empty")
        parts, m = builder.split(text), builder.markers
        if m is None or (not builder.opens_thinking and m.open not in text and m.close not in text):
            return Split("", parts.answer, "no_think")

        def bare(part: str | None) -> str:  # the markers are format tokens, not content (as in mode_text)
            return (part or "").replace(m.open, "").replace(m.close, "").strip()

        if not parts.finished_thinking:
            return Split(bare(parts.thinking), "", "unclosed")
        repeated = text.count(m.close) > 1 or text.count(m.open) > 1
        return Split(bare(parts.thinking), bare(parts.answer), "repeated" if repeated else "ok")

    return split
