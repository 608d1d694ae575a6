"""Online DeepConf (paper §5, DeepConf Alg. 2) with vLLM generating: warm-up, threshold, the live stop inside
vLLM (:mod:`falcon_h1r.inference.vllm_deepconf`), the consensus check between batches, the vote.

Only the generation moves to vLLM: the warm-up threshold, the voters and the consensus share are
:class:`falcon_h1r.deepconf.OnlineDeepConf`, the same state as :func:`falcon_h1r.deepconf.run_online` (our engine)
and :func:`falcon_h1r.deepconf.replay_online` (stored traces). Each call to vLLM is one request with ``n``
parallel samples of the problem's prompt; its outputs are imported with
:func:`falcon_h1r.tracestore.from_vllm_outputs` (top-20 confidences, traces that vLLM ended at the forced EOS
labelled ``early_stop``), so the traces can be saved with :func:`falcon_h1r.tracestore.save_traces` and
analysed offline as any pool.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from falcon_h1r.verify import AnswerClasses
from falcon_h1r.deepconf.online import OnlineDeepConf, OnlineResult
from falcon_h1r.deepconf.recipe import DeepConfRecipe, Variant
from falcon_h1r.deepconf.traces import Trace
from falcon_h1r.inference.vllm_deepconf import sampling_params
from falcon_h1r.tracestore import from_vllm_outputs


def run_online_vllm(llm: Any, prompt: str, *, eos_token_id: int, variant: Variant = "low",
                    recipe: DeepConfRecipe | None = None, budget: int | None = None, batch_size: int | None = None,
                    adaptive: bool = True, problem: dict[str, Any] | None = None,
                    sampling: dict[str, Any] | None = None, params_cls: Any = None,
                    classes: AnswerClasses | None = None, keep: list[Trace] | None = None) -> OnlineResult:
    """Online DeepConf on one problem with ``llm`` (a ``vllm.LLM`` built by
    :func:`falcon_h1r.inference.vllm_deepconf.make_llm`, or anything with the same ``generate``).

    ``prompt``: the rendered chat prompt; ``sampling``: the model's own sampling settings (e.g.
    ``{"temperature": 0.6, "top_p": 0.95, "max_tokens": 65536}``, paper §5.1); ``problem`` (``id``, ``answer``,
    ``domain``) grades every trace; ``keep`` collects every trace generated (warm-up and stopped ones too), for
    the trace store. ``params_cls`` stands in for ``vllm.SamplingParams`` (tests).
    """
    state = OnlineDeepConf(variant, recipe, budget=budget, adaptive=adaptive, classes=classes)
    rec = state.recipe
    batch_size = rec.online_batch_size if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sampling = dict(sampling or {})
    if "n" in sampling or "logprobs" in sampling:
        raise ValueError("sampling: leave out 'n' and 'logprobs' (the run sets them: n per batch, logprobs = top_k)")

    def sample(n: int, threshold: float | None) -> list[Trace]:
        params = sampling_params(threshold, eos_token_id, window=rec.window, top_k=rec.top_k, params_cls=params_cls,
                                 n=n, **sampling)
        outputs = list(llm.generate([prompt], params, use_tqdm=False))
        traces = from_vllm_outputs(outputs, [problem] if problem is not None else None, top_k=rec.top_k,
                                   threshold=threshold, window=rec.window)
        if len(traces) != n:
            raise ValueError(f"vLLM returned {len(traces)} outputs for n={n}")
        start = state.launched
        for i, t in enumerate(traces):
            t.trace_idx = start + i
        if keep is not None:
            keep.extend(traces)
        return traces

    state.add_warmup(sample(rec.n_init, None))
    while state.should_launch():
        state.add(sample(min(batch_size, state.budget - state.launched), state.threshold))
    return state.result()  # correctness: the winning trace's flag, graded on import (math and science alike)


def run_online_vllm_many(llm: Any, prompts: Sequence[str], problems: Sequence[dict[str, Any]], *,
                         eos_token_id: int, progress: Callable[[int], None] | None = None,
                         **kwargs: Any) -> list[OnlineResult]:
    """:func:`run_online_vllm` over several problems, in order (each problem's batches depend on its own
    consensus, so problems run one after the other; vLLM batches the ``n`` samples of each call)."""
    if len(prompts) != len(problems):
        raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems; align them")
    out = []
    for i, (prompt, problem) in enumerate(zip(prompts, problems)):
        out.append(run_online_vllm(llm, prompt, eos_token_id=eos_token_id, problem=problem, **kwargs))
        if progress is not None:
            progress(i + 1)
    return out


__all__ = ["run_online_vllm", "run_online_vllm_many"]
