"""Safety evaluation of a reasoning model (paper Appendix E, Table 10).

The paper generates a response for every prompt of 18 safety subsets (81,970 prompts), splits each
response into its reasoning (inside ``<think> ... </think>``) and its final answer, and has
meta-llama/Llama-Guard-3-8B judge three texts per response:

* ``cot_only``    the reasoning alone,
* ``cot_answer``  reasoning and answer together,
* ``answer_only`` the final answer alone.

A suite's score is the % of its prompts judged safe; Table 10 adds simple and prompt-weighted
averages over the 18 subsets. The paper's reading: the answer is safe (98.19 % weighted) while the
reasoning, which engages with the request, is judged unsafe more often (92.60 %), a 5.59 pp gap.

The package holds the whole pipeline, one module a concern:

* :mod:`.split`: :func:`split_response`, the reasoning/answer split, robust to missing, unclosed or repeated tags;
* :mod:`.verdicts`: :class:`Judge` and :class:`Verdict`; two judges: :mod:`.llama_guard` (:class:`LlamaGuardJudge`,
  the paper's judge, from a local checkpoint) and :mod:`.keyword_judge` (:class:`KeywordJudge`, an embedded,
  offline, transparent rule-based judge that is NOT Llama Guard and is labelled as such everywhere its numbers go);
* :mod:`.judges`: :func:`make_judge`, and :func:`evaluate_judge` against a hand-labelled set, so the rule judge's
  error rate is on record;
* :mod:`.suites`: the suite registry (:data:`SUITES`) and loaders for local copies of the 18 subsets, plus a small
  built-in prompt set for the embedded run;
* :mod:`.scoring`: :func:`judge_suite` (resumable judging into a JSONL file, one row per prompt id and mode),
  :func:`aggregate` / :func:`reasoning_answer_gap` (Table 10's arithmetic) and :func:`run_safety_eval`
  (generate -> split -> judge -> aggregate);
* :mod:`.jsonl`: the resumable logs.
"""

from __future__ import annotations

from falcon_h1r.safety.split import (MODES, SPLIT_STATUSES, Split, THINK_CLOSE, THINK_OPEN, mode_text, split_response,
                                    split_with_builder)
from falcon_h1r.safety.recipe import SafetyRecipe
from falcon_h1r.safety.verdicts import (HAZARD_CATEGORIES, Judge, Verdict, check_pairs, code_order)
from falcon_h1r.safety.llama_guard import (LlamaGuardJudge, llama_guard_missing_message, llama_guard_prompt, parse_llama_guard_output)
from falcon_h1r.safety.keyword_judge import (DIRECT_HARM, HAZARD_TERMS, INSTRUCTION_CUES, KeywordJudge, REFUSAL_PHRASES,
                                             STRONG_CUES)
from falcon_h1r.safety.judges import (DATA_DIR, LABELLED_JUDGE_SET_PATH, evaluate_judge, load_labelled_judge_set, make_judge)
from falcon_h1r.safety.jsonl import (ResumableJsonl, read_jsonl)
from falcon_h1r.safety.suites import (BUILTIN_PROMPTS_PATH, BUILTIN_SUITE, PAPER_SUITES, PAPER_TOTAL_PROMPTS, SUITES, SuiteSpec, load_builtin_prompts, load_prompts, load_suite, suite_local_path)
from falcon_h1r.safety.scoring import (AVERAGE_ROWS, SCORE_COLUMNS, SafetyEvalResult, add_averages, aggregate, judge_suite, reasoning_answer_gap, run_safety_eval, score_table)

__all__ = ['AVERAGE_ROWS', 'BUILTIN_PROMPTS_PATH', 'BUILTIN_SUITE', 'DATA_DIR', 'DIRECT_HARM', 'HAZARD_CATEGORIES', 'HAZARD_TERMS', 'INSTRUCTION_CUES', 'Judge', 'KeywordJudge', 'LABELLED_JUDGE_SET_PATH', 'LlamaGuardJudge', 'MODES', 'PAPER_SUITES', 'PAPER_TOTAL_PROMPTS', 'REFUSAL_PHRASES', 'ResumableJsonl', 'SCORE_COLUMNS', 'SPLIT_STATUSES', 'STRONG_CUES', 'SUITES', 'SafetyEvalResult', 'SafetyRecipe', 'Split', 'SuiteSpec', 'THINK_CLOSE', 'THINK_OPEN', 'Verdict', 'add_averages', 'aggregate', 'check_pairs', 'code_order', 'evaluate_judge', 'judge_suite', 'llama_guard_missing_message', 'llama_guard_prompt', 'load_builtin_prompts', 'load_labelled_judge_set', 'load_prompts', 'load_suite', 'make_judge', 'mode_text', 'parse_llama_guard_output', 'read_jsonl', 'reasoning_answer_gap', 'run_safety_eval', 'score_table', 'split_response', 'split_with_builder', 'suite_local_path']
