"""One prompt builder for every stage: evaluation, curation's pass rates, GRPO rollouts, DeepConf, safety.

Two kinds of tokenizer:

- the package's own :class:`~falcon_h1r.tokenizer.ChatTokenizer` (tiny and small presets): the prompt
  is exactly ``ChatTokenizer.prompt(question)`` (its template opens ``<think>``; its system prompt, if
  any, is the tokenizer's);
- a real Hugging Face checkpoint directory (paper preset): ``transformers.AutoTokenizer`` and the
  checkpoint's own chat template via ``apply_chat_template(..., add_generation_prompt=True)``, with the
  paper's system prompt (paper §3.4: used in RL and evaluation; we use it at every stage unless
  ``stage_system_prompts`` says otherwise).

A response is split into thinking and answer the way the template marks them: the marker pair (e.g.
``<think>`` / ``</think>``) is found in the chat template or the tokenizer's added tokens; when the
generation prompt already opens the thinking block, the response starts inside it. The answer is the
text after the *last* closing marker (as :func:`falcon_h1r.verify.final_answer_part` grades it); a
response that never closes its thinking has no answer. A template with no thinking markers is said so
once (a warning) and its responses are answers as a whole (:attr:`ResponseParts.markers` is None).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("evaluation", "curation", "rl", "deepconf", "safety")

# Paper §3.4 (paper_facts 6g): the model is Falcon, a helpful assistant made by TII, and must reason
# inside <think> </think> before answering after the closing tag. Our paraphrase: the exact wording is
# in the paper and should be pasted here when reproducing with the released checkpoint.
PAPER_SYSTEM_PROMPT = ("You are Falcon, a helpful assistant created by the Technology Innovation Institute (TII). "
                       "Think through the problem step by step inside <think> </think> tags first, then give your "
                       "final answer after the closing </think> tag.")

# End-of-turn tokens some templates close the assistant turn with (generation stops there too).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>")


@dataclass(frozen=True)
class ThinkingMarkers:
    open: str
    close: str


KNOWN_MARKERS = (ThinkingMarkers("<think>", "</think>"), ThinkingMarkers("<thinking>", "</thinking>"),
                 ThinkingMarkers("<|begin_of_thought|>", "<|end_of_thought|>"))


@dataclass(frozen=True)
class ResponseParts:
    """A response split the way the chat template marks it."""

    thinking: str | None  # None: the template marks no thinking
    answer: str  # "" when the thinking never closed (a truncated response has no answer)
    finished_thinking: bool
    markers: ThinkingMarkers | None


# The package's own chat format (falcon_h1r.tokenizer): the prompt opens <think>, the answer follows </think>.
PACKAGE_MARKERS = ThinkingMarkers("<think>", "</think>")


def split_response(response: str, markers: ThinkingMarkers | None = PACKAGE_MARKERS, *,
                   opens_thinking: bool = True) -> ResponseParts:
    """Split a generated response (the text after the prompt) into thinking and answer by ``markers``.

    ``opens_thinking``: the prompt already opened the thinking block, so the response starts inside it. The
    answer is the text after the *last* closing marker; an unclosed thinking block has no answer ("");
    a response that never opens thinking (when the prompt did not) is all answer. ``markers`` None: the
    whole response is the answer. The defaults are the package's own format."""
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    m = markers
    if m is None:
        return ResponseParts(None, response.strip(), True, None)
    body = response
    inside = opens_thinking
    if not inside and body.lstrip().startswith(m.open):
        body, inside = body.lstrip()[len(m.open):], True
    close = body.rfind(m.close)
    if close == -1:
        if inside:
            return ResponseParts(body.strip(), "", False, m)
        return ResponseParts("", body.strip(), True, m)  # the model answered without thinking
    thinking = body[:close]
    if not inside and m.open in thinking:
        thinking = thinking[thinking.find(m.open) + len(m.open):]
    return ResponseParts(thinking.strip(), body[close + len(m.close):].strip(), True, m)


def _question_text(question_or_problem: str | Mapping[str, Any]) -> str:
    if isinstance(question_or_problem, str):
        return question_or_problem
    if isinstance(question_or_problem, Mapping) and isinstance(question_or_problem.get("question"), str):
        return question_or_problem["question"]
    raise TypeError(f"a prompt needs a question string or a problem dict with a 'question' string, "
                    f"got {type(question_or_problem).__name__}")


class PromptBuilder:
    """Chat prompts and response splitting for one tokenizer; build with :func:`load_prompt_builder`.

    It also offers the tokenizer calls generation needs (``encode``, ``decode``, ``eos_id``, ``pad_id``,
    ``stop_token_ids``), so it can stand where a :class:`~falcon_h1r.tokenizer.ChatTokenizer` stands.
    """

    def __init__(self, hf_tokenizer: Any, *, system_prompt: str | None, stage_system_prompts:
                 Mapping[str, str | None] | None = None, package_tokenizer: Any = None, source: str = ""):
        self.hf = hf_tokenizer
        self.source = source or getattr(hf_tokenizer, "name_or_path", "") or "tokenizer"
        self.package_tokenizer = package_tokenizer
        self.system_prompt = system_prompt
        self.stage_system_prompts = dict(stage_system_prompts or {})
        for stage in self.stage_system_prompts:
            self._check_stage(stage)
        if getattr(hf_tokenizer, "chat_template", None) is None:
            raise ValueError(f"{self.source}: the tokenizer has no chat template; a checkpoint must bring its own "
                             "(tokenizer_config.json 'chat_template' or chat_template.jinja)")
        self.markers = self._find_markers()
        self.opens_thinking = self._generation_prompt_opens_thinking()
        if self.markers is None:
            warnings.warn(f"{self.source}: the chat template marks no thinking (none of "
                          f"{', '.join(m.open for m in KNOWN_MARKERS)}); responses are graded as a whole",
                          stacklevel=2)

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def _check_stage(stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; accepted: {', '.join(STAGES)}")

    def system_prompt_for(self, stage: str = "evaluation") -> str | None:
        self._check_stage(stage)
        if self.package_tokenizer is not None:
            return self.package_tokenizer.system_prompt
        return self.stage_system_prompts.get(stage, self.system_prompt)

    def messages(self, question: str | Mapping[str, Any], *, stage: str = "evaluation") -> list[dict[str, str]]:
        system = self.system_prompt_for(stage)
        msgs = [{"role": "user", "content": _question_text(question)}]
        return ([{"role": "system", "content": system}] if system else []) + msgs

    def prompt(self, question: str | Mapping[str, Any], *, stage: str = "evaluation") -> str:
        """The prompt text up to the assistant turn (and the opened thinking block, if the template opens it)."""
        if self.package_tokenizer is not None:
            self._check_stage(stage)
            return self.package_tokenizer.prompt(_question_text(question))
        return self._render(self.messages(question, stage=stage))

    def prompts(self, problems: Sequence[str | Mapping[str, Any]], n: int = 1, *,
                stage: str = "evaluation") -> list[str]:
        """Each problem's prompt ``n`` times, problem-major (the order the graders expect)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return [p for q in problems for p in [self.prompt(q, stage=stage)] * n]

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # templates without a system role raise: fold it into the user turn once
            if messages[0]["role"] != "system":
                raise
            merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]
            try:
                return self.hf.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
            except Exception:
                raise exc from None

    # ------------------------------------------------------------------ thinking markers
    def _find_markers(self) -> ThinkingMarkers | None:
        template = str(self.hf.chat_template)
        vocab = set(self.hf.get_added_vocab()) if hasattr(self.hf, "get_added_vocab") else set()
        for m in KNOWN_MARKERS:
            if (m.open in template or m.open in vocab) and (m.close in template or m.close in vocab):
                return m
        return None

    def _generation_prompt_opens_thinking(self) -> bool:
        if self.markers is None:
            return False
        probe = self.prompt("2+2?")
        return probe.rfind(self.markers.open) > probe.rfind(self.markers.close)

    def split(self, response: str) -> ResponseParts:
        """Thinking and answer of a generated response (the text after the prompt)."""
        return split_response(response, self.markers, opens_thinking=self.opens_thinking)

    def full_response(self, response: str) -> str:
        """The response with the thinking opener the prompt already wrote put back in front (``<think>\\n`` +
        text for a template that opens thinking): the whole assistant turn, as rewards read it."""
        if not isinstance(response, str):
            raise TypeError(f"response must be a str, got {type(response).__name__}")
        return f"{self.markers.open}\n{response}" if self.opens_thinking and self.markers else response

    def answer_part(self, response: str) -> str:
        """The text graders read: what follows the thinking ("" when the thinking never closed)."""
        return self.split(response).answer

    # ------------------------------------------------------------------ tokenizer calls
    @property
    def eos_id(self) -> int:
        if self.package_tokenizer is not None:
            return self.package_tokenizer.eos_id
        return self.stop_token_ids[0]

    @property
    def pad_id(self) -> int:
        if self.package_tokenizer is not None:
            return self.package_tokenizer.pad_id
        pad = self.hf.pad_token_id
        return pad if pad is not None else self.eos_id

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end a response: the template's end-of-turn token (first) and the tokenizer's EOS."""
        if self.package_tokenizer is not None:
            return [self.package_tokenizer.eos_id]
        template, ids = str(self.hf.chat_template), []
        for tok in END_OF_TURN_TOKENS:
            tid = self.hf.convert_tokens_to_ids(tok)
            if tok in template and isinstance(tid, int) and tid != self.hf.unk_token_id:
                ids.append(tid)
        if self.hf.eos_token_id is not None and self.hf.eos_token_id not in ids:
            ids.append(self.hf.eos_token_id)
        if not ids:
            raise ValueError(f"{self.source}: no EOS or end-of-turn token; generation could not stop")
        return ids

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        if self.package_tokenizer is not None:
            return self.package_tokenizer.decode(ids)
        return self.hf.decode(list(ids), skip_special_tokens=False)


def load_prompt_builder(source: Any, *, system_prompt: str | None = PAPER_SYSTEM_PROMPT,
                        stage_system_prompts: Mapping[str, str | None] | None = None) -> PromptBuilder:
    """A :class:`PromptBuilder` for the package's ``ChatTokenizer``, a Hugging Face tokenizer object, or a
    checkpoint directory (its ``AutoTokenizer`` and chat template). ``system_prompt`` applies to
    Hugging Face tokenizers only (the package's tokenizer keeps its own); None = no system turn."""
    from falcon_h1r.tokenizer import ChatTokenizer

    if isinstance(source, PromptBuilder):
        return source
    if isinstance(source, ChatTokenizer):
        return PromptBuilder(source.hf, system_prompt=source.system_prompt, package_tokenizer=source,
                             source="package tokenizer")
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory {path} does not exist; expected a Hugging Face "
                                    "checkpoint with tokenizer.json / tokenizer_config.json and a chat template")
        if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
            raise FileNotFoundError(f"no tokenizer in {path}: expected tokenizer.json / tokenizer_config.json "
                                    "(a Hugging Face tokenizer directory)")
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path))
        return PromptBuilder(hf, system_prompt=system_prompt, stage_system_prompts=stage_system_prompts,
                             source=str(path))
    if hasattr(source, "apply_chat_template"):
        return PromptBuilder(source, system_prompt=system_prompt, stage_system_prompts=stage_system_prompts)
    raise TypeError(f"cannot build prompts from {type(source).__name__}; accepted: ChatTokenizer, a Hugging Face "
                    "tokenizer, or a checkpoint directory path")


def as_prompt_builder(tokenizer: Any) -> PromptBuilder | None:
    """The :class:`PromptBuilder` of ``tokenizer`` (a builder, the package's ChatTokenizer, or a Hugging Face
    tokenizer with a chat template); None for other objects (tests' stand-ins with their own ``prompt``),
    which callers then use as they are, with the package's chat format."""
    try:
        return load_prompt_builder(tokenizer)
    except (TypeError, ValueError):
        return None
