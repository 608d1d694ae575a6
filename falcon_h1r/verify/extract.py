"""Finding the final answer in a response: the boxed expression, a multiple-choice letter, a code block.

Responses are ``<think> reasoning </think> answer``; only the part after the last ``</think>`` is
graded, so an answer written while thinking does not count. Extraction is ours (regular expressions
and a brace matcher), not math-verify's: math-verify *compares* expressions, but what counts as "the
final answer" (the last box, the ``Answer: C`` line that multiple-choice prompts ask for, the last
fenced block) is a protocol choice of the benchmark, written down here once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
LETTERS = "ABCDEFGHIJ"  # GPQA uses A-D, MMLU-Pro up to J


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (brace-matched), or None."""
    found = _last_boxed(text)
    return found[1] if found else None


def _last_boxed(text: str, end: int | None = None) -> tuple[int, str] | None:
    """(position, content) of the last balanced ``\\boxed{...}`` starting before ``end``."""
    if not isinstance(text, str):
        return None
    start = text.rfind("\\boxed", 0, len(text) if end is None else end)
    while start != -1:
        i = text.find("{", start)
        if i == -1:
            return None
        depth, j = 0, i
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return start, text[i + 1 : j].strip()
            j += 1
        start = text.rfind("\\boxed", 0, start)  # unbalanced: try an earlier one
    return None


def final_answer_part(text: str) -> str:
    """The text after the last ``</think>`` (the whole text when there is none)."""
    idx = text.rfind(THINK_CLOSE)
    return text[idx + len(THINK_CLOSE):] if idx != -1 else text


# ----------------------------------------------------------------------------- code
_CODE_BLOCK = re.compile(r"```([A-Za-z0-9_+#-]*)[ \t]*\n(.*?)```", re.DOTALL)
_LANG_ALIASES = {"py": "python", "python3": "python", "c++": "cpp", "cxx": "cpp", "js": "javascript",
                 "sh": "bash", "shell": "bash", "golang": "go"}


def detect_language(code: str) -> str:
    """Best-effort language of an untagged code block (the paper's reward detects it the same way)."""
    if re.search(r"#include\s*<", code):
        return "cpp" if re.search(r"\bstd::|\bcout\b|\bclass\b|\bnamespace\b", code) else "c"
    if re.search(r"\bpublic\s+(static\s+)?class\b|System\.out\.print", code):
        return "java"
    if re.search(r"^\s*package\s+main|\bfunc\s+\w+\(", code, re.MULTILINE):
        return "go"
    if re.search(r"\bfunction\s+\w+\s*\(|\bconst\s+\w+\s*=|console\.log", code):
        return "javascript"
    if re.search(r"^#!/bin/(ba)?sh|^\s*echo\s", code, re.MULTILINE):
        return "bash"
    return "python"


def extract_code(text: str) -> tuple[str | None, str | None]:
    """(language, code) of the last fenced block in the answer part, or (None, None)."""
    blocks = _CODE_BLOCK.findall(final_answer_part(text))
    if not blocks:
        return None, None
    tag, code = blocks[-1]
    lang = _LANG_ALIASES.get(tag.lower(), tag.lower()) if tag else detect_language(code)
    return lang, code


# ----------------------------------------------------------------------------- multiple choice
# LaTeX wrappers a model puts around a letter or a word: \text{(C)}, \textbf{C}, \mathrm{C}, ...
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|textsf|texttt|mathrm|mathbf|mathit|mathsf|mbox|operatorname)"
                      r"\s*\{([^{}]*)\}")


def unwrap_text_macros(s: str) -> str:
    """``\\text{...}``-like wrappers replaced by their content (nested ones too)."""
    prev = None
    while prev != s:
        prev, s = s, _WRAPPER.sub(lambda m: m.group(1), s)
    return s


def _valid_letters(n_choices: int | None) -> str:
    if n_choices is None:
        return LETTERS
    if not 2 <= n_choices <= len(LETTERS):
        raise ValueError(f"n_choices must be in 2..{len(LETTERS)}, got {n_choices}")
    return LETTERS[:n_choices]


def _clean_choice_text(s: str) -> str:
    s = unwrap_text_macros(s).replace("$", "").replace("*", "").replace("\\(", "(").replace("\\)", ")")
    return re.sub(r"\s+", " ", s).strip().strip(".").strip()


def _norm_option(s: str) -> str:
    s = _clean_choice_text(s).lower()
    return re.sub(r"[\s\\{}]+", "", s).rstrip(".")


# A letter alone, parenthesised or not, optionally followed by ")", "." or ":"; or a letter that
# opens an option line ("(C) 42 J", "C. 42 J", "C) 42 J"). A bare "A metal ..." is NOT a letter.
_LETTER_ALONE = re.compile(r"^\(?\s*([A-J])\s*\)?\s*[.:)]?$")
_LOWER_IN_PARENS = re.compile(r"^\(\s*([a-j])\s*\)\s*[.:]?$")  # "(c)" is an option; a bare "c" is a variable
_LETTER_OPENS_OPTION = re.compile(r"^(?:\(\s*([A-J])\s*\)|([A-J])\s*[.:)])\s*\S")
_LETTER_NAMED = re.compile(r"(?:^|\b)(?:[Aa]nswer(?:\s+is)?|[Oo]ption|[Cc]hoice)\s*[:\-]?\s*\(?\s*([A-J])\s*\)?(?![A-Za-z0-9])")


def choice_letter(answer: str | None, *, choices: Sequence[str] | None = None,
                  n_choices: int | None = None) -> str | None:
    """The option letter an extracted answer names, or None.

    Accepts ``C``, ``(C)``, ``\\text{(C)}``, ``\\textbf{C}``, ``C.``, ``(C) <option text>``, ``Option C``,
    ``The answer is C``, and -- when ``choices`` (the option texts in presented order) are given -- the
    text of one option. A bare lower-case letter is not accepted (``a`` is a word or a variable), a
    parenthesised one is (``(c)``).
    """
    if answer is None:
        return None
    valid = _valid_letters(len(choices) if choices else n_choices)
    s = _clean_choice_text(str(answer))
    if not s:
        return None
    if choices:
        norm = _norm_option(s)
        hits = [LETTERS[i] for i, c in enumerate(choices) if norm and _norm_option(str(c)) == norm]
        if len(hits) == 1:
            return hits[0]
    for pattern in (_LETTER_ALONE, _LOWER_IN_PARENS, _LETTER_OPENS_OPTION):
        m = pattern.match(s)
        if m:
            letter = next(g for g in m.groups() if g).upper()
            return letter if letter in valid else None
    named = [m.group(1) for m in _LETTER_NAMED.finditer(s)]
    if named:
        return named[-1] if named[-1] in valid else None
    return None


# "Answer: C", "**Answer:** (C)", "The final answer is C": the format that multiple-choice prompts ask
# for (the Artificial Analysis GPQA / MMLU-Pro protocol the paper used).
_ANSWER_INTRO = re.compile(r"(?:[Ff]inal\s+)?(?:[Aa]nswer|ANSWER)(?:\s+is)?[\s*_]*[:\uff1a]?[\s*_]*")
_LEADING_LETTER = re.compile(r"^\(?\s*([A-J])\s*\)?(?![A-Za-z0-9])")


def _letter_on_answer_line(rest: str, choices: Sequence[str] | None, n_choices: int | None) -> str | None:
    line = rest.split("\n", 1)[0].replace("$", "").strip()
    boxed = _last_boxed(line)
    if boxed is not None and boxed[0] == 0:
        line = boxed[1]
    letter = choice_letter(line, choices=choices, n_choices=n_choices)
    if letter is not None:
        return letter
    m = _LEADING_LETTER.match(_clean_choice_text(line))  # "Answer: C because ..." names C
    valid = _valid_letters(len(choices) if choices else n_choices)
    return m.group(1) if m and m.group(1) in valid else None


def extract_choice(response: str, *, choices: Sequence[str] | None = None,
                   n_choices: int | None = None) -> str | None:
    """The option letter a response ends on: the last ``Answer: X`` line or last boxed letter/option text,
    whichever comes later in the answer part. None when neither names a valid option."""
    if not isinstance(response, str):
        return None
    part = final_answer_part(response)
    candidates: list[tuple[int, str]] = []
    for m in _ANSWER_INTRO.finditer(part):
        letter = _letter_on_answer_line(part[m.end():], choices, n_choices)
        if letter is not None:
            candidates.append((m.start(), letter))
    boxed = _last_boxed(part)
    if boxed is not None:
        letter = choice_letter(boxed[1], choices=choices, n_choices=n_choices)
        if letter is not None:
            candidates.append((boxed[0], letter))
    if not candidates:
        return None
    return max(candidates)[1]
