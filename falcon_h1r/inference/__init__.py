"""Inference: sampling primitives, transformers' decode loop, the fast decode engine and its kernels, and the
vLLM hook. Everyone generates through :func:`generate` (or :func:`generate_ids` for token ids).

- :mod:`~falcon_h1r.inference.sampling`: :class:`Completion`, :class:`EarlyStop`, one sampling step, ``greedy``;
- :mod:`~falcon_h1r.inference.hf_loop`: transformers' cached decoding (the plain reference path);
- :mod:`~falcon_h1r.inference.engine`, :mod:`~falcon_h1r.inference.engine_ops`,
  :mod:`~falcon_h1r.inference.decode_kernels`: the static-cache CUDA-graph engine, its arithmetic and its Triton
  attention, each with a plain twin; :mod:`~falcon_h1r.inference.architecture` (which models it runs) and
  :mod:`~falcon_h1r.inference.engine_pool` (one cached engine per model, its defaults);
- :mod:`~falcon_h1r.inference.engine_check`: the engine against transformers;
- :mod:`~falcon_h1r.inference.dispatch`: the one batching loop and the choice between the two paths;
- :mod:`~falcon_h1r.inference.vllm_deepconf`: DeepConf's online stop inside vLLM (its V2 and V1 runner interfaces;
  needs vLLM's own environment, requirements-vllm.txt); :mod:`~falcon_h1r.inference.vllm_online`: online DeepConf
  with vLLM generating (warm-up, threshold, consensus, traces to the store).
"""

from falcon_h1r.inference.dispatch import ENGINES, generate, generate_ids, resolve_engine
from falcon_h1r.inference.sampling import Completion, EarlyStop, greedy, sample_step

__all__ = ["ENGINES", "Completion", "EarlyStop", "generate", "generate_ids", "greedy", "resolve_engine", "sample_step"]
