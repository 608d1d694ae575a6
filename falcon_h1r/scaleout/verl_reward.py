"""The reward verl calls (``reward.custom_reward_function``): the package's own rewards for one response.

verl's reward manager calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` per response;
``ground_truth`` is the grading record :func:`falcon_h1r.scaleout.verl_export.pool_rows` wrote (answer, tests,
tolerance, ...), ``extra_info["response_prefix"]`` what the chat template's generation prompt opened (``<think>``),
put back so the format check sees the whole assistant turn. Returns the reward and ``acc`` (correctness), which the
exported configuration's group filter reads.

The reward knobs are :class:`falcon_h1r.rewards.RewardRecipe`'s defaults, or the JSON object in the environment
variable ``FALCON_H1R_RL_REWARDS`` (e.g. ``{"format_penalty": 0.5, "code_tests_sampled": 8}``).
Caveat: verl's naive reward manager decodes the response with ``skip_special_tokens=True``; a tokenizer that
declares ``<think>``/``</think>`` special (the package's own do) loses them there, and the format check then
penalizes every response: use a reward manager that keeps special tokens, or a tokenizer where they are ordinary.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _recipe() -> Any:
    from falcon_h1r.config import parse
    from falcon_h1r.rewards import RewardRecipe

    return parse(RewardRecipe, json.loads(os.environ.get("FALCON_H1R_RL_REWARDS", "{}")), "rl.rewards")


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None,
                  **_: Any) -> dict[str, float]:
    from falcon_h1r.rewards import score_response

    problem = json.loads(ground_truth) if isinstance(ground_truth, str) else dict(ground_truth)
    prefix = (extra_info or {}).get("response_prefix") or ""
    text = solution_str if not prefix or solution_str.lstrip().startswith(prefix.strip()) else prefix + solution_str
    result = score_response(problem, text, _recipe())
    return {"score": float(result.reward), "acc": float(result.correct)}


__all__ = ["compute_score"]
