"""Past one machine: handing the package's recipes to the engines the paper used at scale.

- :mod:`~falcon_h1r.scaleout.zero_sft`: SFT from a Hugging Face checkpoint under DeepSpeed ZeRO-2/3 (the paper's
  Table 1 recipe, packing to its context, balanced token normalization), loading the checkpoint partitioned;
- :mod:`~falcon_h1r.scaleout.zero_checkpoint`: DeepSpeed engine checkpoints with the trainer's data position, for
  exact resume;
- :mod:`~falcon_h1r.scaleout.verl_export`: the GRPO recipe (Table 2) and the curated RL pool in verl's configuration
  and Parquet format, with what verl lacks named;
- :mod:`~falcon_h1r.scaleout.vllm_bench`: the Fig. 8 throughput configurations as ``vllm bench`` commands, and a
  reader of their JSON output.

DeepConf inside vLLM lives with the other generation code: :mod:`falcon_h1r.inference.vllm_deepconf`.
"""
