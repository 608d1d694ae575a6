"""DeepConf (Fu et al. 2025, arXiv 2508.15260): confidence-filtered voting and confidence-based early
stopping of reasoning traces, the test-time scaling method of the paper's §5.

One concern per module:

- :mod:`~falcon_h1r.deepconf.recipe`: the constants and the method's knobs (:class:`DeepConfRecipe`);
- :mod:`~falcon_h1r.deepconf.confidence`: token confidences, sliding-window groups, trace scores, and the
  streaming twin;
- :mod:`~falcon_h1r.deepconf.traces`: :class:`Trace`, one trace as DeepConf sees it;
- :mod:`~falcon_h1r.deepconf.offline`: Alg. 1, the top-eta filter and the five votes;
- :mod:`~falcon_h1r.deepconf.online`: Alg. 2, warm-up threshold, the in-loop early stop, the consensus stop,
  live and replayed;
- :mod:`~falcon_h1r.deepconf.replay`: the DeepConf paper's evaluation over resamplings of a stored pool (plain);
- :mod:`~falcon_h1r.deepconf.sweep`: the same evaluation vectorised over resamplings (what the sections run);
- :mod:`~falcon_h1r.deepconf.overhead`: what the live stop costs per decode step.

Stored pools live in :mod:`falcon_h1r.tracestore`; the vLLM hook in :mod:`falcon_h1r.inference.vllm_deepconf`.
The answer a trace votes for, vote grouping and grading are the package's one answer equivalence
(:mod:`falcon_h1r.verify`: ``extract_final_answer``, ``AnswerClasses``, ``answers_equivalent``).
eta is the percentage of traces KEPT everywhere (DeepConf-low keeps 10 %, -high 90 %).
"""

from falcon_h1r.deepconf.confidence import (
    StreamingConfidence,
    TraceScores,
    first_stop_index,
    group_confidences,
    record_lows,
    token_confidence,
    trace_scores,
    window_means,
    window_means_reference,
)
from falcon_h1r.deepconf.offline import (
    OfflineResult,
    VoteResult,
    answer_matches,
    filter_top_eta,
    n_kept,
    offline_vote,
    percentile_cutoff,
    run_offline,
    vote,
)
from falcon_h1r.deepconf.online import (
    EarlyStopController,
    OnlineDeepConf,
    OnlineResult,
    replay_online,
    run_online,
    truncate_at_threshold,
    warmup_threshold,
)
from falcon_h1r.deepconf.overhead import measure_confidence_overhead, overhead_record, paired_overhead
from falcon_h1r.deepconf.recipe import (
    KEEP_RULES,
    SCORE_OF_METHOD,
    SCORES,
    TOP_K,
    VOTE_METHODS,
    WINDOW,
    DeepConfRecipe,
    Variant,
)
from falcon_h1r.deepconf.replay import (
    EVAL_METHODS,
    N_RESAMPLES,
    ONLINE_METHODS,
    ReplaySummary,
    replay_evaluate,
)
from falcon_h1r.deepconf.sweep import (
    OnlineOutcome,
    PoolArrays,
    Series,
    draw_orders,
    evaluate_problem,
    offline_correct,
    offline_outcome,
    online_replay,
    pool_arrays,
    standard_series,
    stop_tokens,
    vote_winners,
)
from falcon_h1r.deepconf.traces import Trace, group_by_problem, trace_from_completion

__all__ = [
    "WINDOW", "TOP_K", "SCORES", "VOTE_METHODS", "SCORE_OF_METHOD", "KEEP_RULES", "Variant", "DeepConfRecipe",
    "token_confidence", "window_means", "window_means_reference", "group_confidences", "TraceScores", "trace_scores",
    "StreamingConfidence", "record_lows", "first_stop_index", "Trace", "trace_from_completion", "group_by_problem",
    "n_kept", "percentile_cutoff", "filter_top_eta", "answer_matches", "VoteResult", "vote", "offline_vote",
    "OfflineResult", "run_offline", "warmup_threshold", "EarlyStopController", "OnlineResult", "OnlineDeepConf",
    "run_online", "truncate_at_threshold", "replay_online", "N_RESAMPLES", "ONLINE_METHODS", "EVAL_METHODS",
    "ReplaySummary", "replay_evaluate", "draw_orders", "PoolArrays", "pool_arrays", "vote_winners",
    "offline_correct", "offline_outcome", "stop_tokens", "OnlineOutcome", "online_replay", "Series", "standard_series",
    "evaluate_problem", "measure_confidence_overhead", "overhead_record", "paired_overhead",
]
