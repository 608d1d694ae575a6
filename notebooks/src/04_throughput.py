# %% [markdown]
# # 04 · Hybrid vs transformer decode throughput (paper Appendix B, Fig. 8)
#
# The paper measured Falcon-H1R-7B against Qwen3-8B with vLLM on H100s (per-GPU tokens/s, with different
# tensor/data parallelism per model; see the `parallelism` column). The Falcon/Qwen ratios are
# recomputed here from the data points (`falcon_h1r.papers.throughput_ratios`), and the parameter
# counts of the two architectures from their configs (`falcon_h1r.models`).
#
# Then **ours**: the same two architectures with random weights on **one** GPU, decoded by our own engine
# (`falcon_h1r.inference.engine`: static caches, the decode step captured in a CUDA graph, mamba-ssm's Triton state
# update, PyTorch SDPA), measured by `bench/throughput.py` (`falcon_h1r.throughput`) and committed under
# `results/small/04_throughput/`. Before any speed figure: the engine must decode exactly what transformers
# decodes, which this notebook checks on the preset's own base model.

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display
from transformers import AutoModelForCausalLM

from falcon_h1r import papers
from falcon_h1r import throughput as tp
from falcon_h1r.config import load_preset
from falcon_h1r.inference.engine_check import compare_with_hf
from falcon_h1r.env import REPO_ROOT
from falcon_h1r.models import count_params, falcon_h1r_7b_config, qwen3_8b_config
from falcon_h1r.results import SectionWriter, read_json
from falcon_h1r.sections.common import get_base_model, held_out, run_mode

cfg = load_preset(preset, overrides)
recipe = cfg.section("throughput", tp.ThroughputRecipe)
mode = run_mode(cfg)
writer = SectionWriter(preset, "04_throughput", params=cfg.to_dict(), seed=cfg.seed,
                       mode="computed" if mode == "compute" else "rendered")
display(Markdown(f"Preset **{preset}**: the engine check is **{'computed here' if mode == 'compute' else 'rendered'}**"
                 f" ({'on ' + ('a GPU' if torch.cuda.is_available() else 'this CPU') if mode == 'compute' else 'from the committed GPU records'})."))

# %%
with torch.device("meta"):
    n_falcon = count_params(AutoModelForCausalLM.from_config(falcon_h1r_7b_config()))
    n_qwen = count_params(AutoModelForCausalLM.from_config(qwen3_8b_config()))
print(f"Falcon-H1R-7B architecture: {n_falcon / 1e9:.3f} B parameters (paper Table 8: 7.59 B)")
print(f"Qwen3-8B architecture:      {n_qwen / 1e9:.3f} B parameters")
writer.summary({"falcon_h1r_7b_params_b": n_falcon / 1e9, "qwen3_8b_params_b": n_qwen / 1e9})

# %% [markdown]
# ## The paper's Fig. 8 (vLLM on H100; the paper's numbers, from `papers/`)

# %%
fig8 = papers.load("fig8_throughput")
ratios = papers.throughput_ratios(fig8).reset_index()
writer.table("paper_fig8_ratios", ratios, caption="The paper's Fig. 8 (vLLM, H100): Falcon-H1R-7B / Qwen3-8B "
             "tokens/s/GPU ratios, recomputed from the data points")
display(ratios)

# %%
g = sns.relplot(data=fig8, x="batch_size", y="tok_s_per_gpu", hue="model", col="setting", kind="line", marker="o",
                height=3.2, aspect=1.2)
g.set(xscale="log", xlabel="batch size", ylabel="tokens/s per GPU")
g.figure.suptitle("The paper's Fig. 8 data (vLLM on H100)", y=1.05)
writer.figure("paper_fig8", g.figure)
plt.show()

# %% [markdown]
# ## Does the engine decode what transformers decodes?
# Greedy decoding of held-out prompts with the preset's base model, once through transformers' cached loop
# (`falcon_h1r.inference.hf_loop.generate_ids`) and once through the engine's static-cache step (on CPU it runs
# eagerly; on a GPU as a CUDA graph). Besides token equality, the engine's top-20 log-probs are compared with
# transformers' full forward over the engine's own tokens, a check that stays meaningful even if the two
# paths diverge after a near-tie.

# %%
if mode == "compute":
    base = get_base_model(cfg, progress=False)
    tok = base.tokenizer
    problems = held_out(base.sets, cfg)[: recipe.check_prompts]
    prompt_ids = [tok.encode(tok.prompt(p["question"])) for p in problems]
    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # a tiny model decodes faster on one thread than on two shared cores
    try:
        check = compare_with_hf(base.model, prompt_ids, max_new_tokens=recipe.check_new_tokens, eos_id=tok.eos_id,
                                pad_id=tok.pad_id)
    finally:
        torch.set_num_threads(threads)
    writer.json("engine_check_base_model", check)
    writer.summary({"engine_greedy_identical": int(check["tokens_identical"]),
                    "engine_max_abs_logprob_diff": check["max_abs_logprob_diff_prefix"],
                    "engine_max_abs_top_logprob_diff_teacher_forced": check["max_abs_top_logprob_diff_teacher_forced"]})
    display(pd.DataFrame([{k: v for k, v in check.items() if k != "first_divergence"}]).T.rename(
        columns={0: f"ours, {preset} preset base model (synthetic tasks), {check['device']}"}))
else:
    display(Markdown("The base-model check runs where the preset computes; the GPU checks follow."))

# %%
def shown(path):
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


gpu_dir = tp.records_dir("small")
gpu_check_path = gpu_dir / tp.ENGINE_CHECK_FILE
if gpu_check_path.exists():
    gpu_check = read_json(gpu_check_path)
    cols = ["name", "status", "tokens_identical", "rows_identical_frac", "max_abs_logprob_diff_prefix",
            "max_abs_top_logprob_diff_teacher_forced", "hf_max_abs_top_logprob_diff_teacher_forced",
            "engine_tokens_are_hf_argmax_frac", "hf_tokens_are_full_forward_argmax_frac", "wall_s"]
    checks = pd.DataFrame(gpu_check["checks"])
    display(Markdown(f"**Engine vs transformers on {gpu_check.get('gpu_name', 'a GPU')}** (ours, random-weight "
                     f"models of the tiny/small presets and 2-layer slices of the 7B/8B architectures; "
                     f"`bench/engine_check.py`, committed in `{shown(gpu_check_path)}`): "
                     f"{gpu_check.get('passed')}/{gpu_check.get('total')} checks passed. fp32 checks require identical "
                     "tokens and log-probs within 1e-3. In bf16 every path rounds differently, and transformers' own "
                     "cached decoding already departs from its full forward (the `hf_` columns): bf16 checks require the "
                     "engine to stay as close to the full forward as that (log-probs within 1.5x of transformers' gap, "
                     "argmax share within 0.02)."))
    display(checks[[c for c in cols if c in checks]])
    if preset == "small":
        writer.summary({"gpu_engine_checks_passed": gpu_check.get("passed"), "gpu_engine_checks_total": gpu_check.get("total")})
else:
    display(Markdown(f"No committed GPU engine check yet (`{gpu_check_path}`); see the command below."))

# %% [markdown]
# ## Ours: throughput of the two architectures on one GPU
# **How it is measured** (`falcon_h1r.throughput`). A full 8K→16K run is 16,384 decode steps per point, far
# beyond a lent GPU's minutes, so for each batch size the engine's decode step (CUDA graph; sampling at
# temperature 0.6 / top-p 0.95 with top-20 log-probs, as in the paper's evaluation) is timed at five context
# positions spread from the first to the last output token, with the caches filled with random values (a
# step's cost does not depend on them). The output's decode time is the step time **integrated over the
# output length** (linear between the measured positions: attention grows linearly with the context, the
# Mamba part is constant), plus the batch's prefill time (transformers' forward with mamba-ssm's Triton scan,
# timed per sequence on ~8K-token forwards and scaled by the batch); tokens/s = batch × output length / that
# total. At each position the attention kernel is the fastest on the live cache of SDPA, batched matmuls and the
# split-KV Triton kernel of `falcon_h1r.inference.decode_kernels` (timed inside a CUDA graph, as the step runs it), and
# with the recipe's `compile: true` the layers' element-wise glue runs torch.compile'd (the plain functions
# are its reference; `bench/engine_check.py` checks both fast paths against the plain engine). The **roofline** is the bytes a step must move (weights but the embedding table, K/V up to the
# position, Mamba states read and written) over the bandwidth of a large device copy. Random bf16 weights of the full architectures; the Mamba-2 SSM state in float32 (what
# transformers keeps). The **largest batch** is where the whole run's caches (K/V for input + output, Mamba
# states, the per-token outputs) fit beside the weights, computed from the bytes and checked by allocating.
#
# **How it differs from the paper's figure.** vLLM with paged attention and continuous batching, several GPUs
# per model (Falcon tp2/dp2, Qwen3 up to tp4; per-GPU figures divide by the GPU count), and batches that do
# not fit one GPU. Here one GPU holds everything, so a batch that does not fit is reported as such, and the
# hybrid's smaller cache shows up as a larger feasible batch.

# %%
if mode == "compute" and preset != "tiny" and torch.cuda.is_available():
    study = tp.Study(recipe, writer.dir, device="cuda")
    records = study.run()
    gpu_dir = writer.dir
else:
    try:
        records = tp.load_records(gpu_dir)
    except FileNotFoundError as exc:
        records = None
        display(Markdown(f"**No committed GPU records yet.** {exc}. With network, once: `bash scripts/gpu_setup.sh` "
                         "(the wheels the GPU image lacks, into `.whl/`); then on the GPU, from the repository root:\n\n"
                         "```\n. scripts/gpu_prelude.sh && { python3 bench/engine_check.py --out $OUT --budget-s 150; "
                         "python3 bench/throughput.py --out $OUT --budget-s 330; }\n```\n\nand copy `$OUT/*.json` to "
                         "`results/small/04_throughput/`."))
write_gpu = records is not None and preset == "small"  # the records belong to the small preset's results
gpu_name = next((r.get("gpu_name") for r in records or [] if r.get("kind") == "device"), None)
SRC = f"ours, one {gpu_name or 'CPU (a smoke run)'}, random weights"

# %%
if records:
    caps = tp.capacities(records)
    caps["GiB_per_sequence"] = caps["per_sequence_bytes"] / 2**30
    caps["free_GiB_after_weights"] = caps["free_bytes"] / 2**30
    cap_view = caps[["model", "setting", "context", "GiB_per_sequence", "free_GiB_after_weights", "max_batch",
                     "tried_batch", "verified"]]
    display(Markdown(f"**Largest batch per GPU** ({SRC}): `verified` is what allocating the caches of one "
                     "sequence more than the byte count allows did (`oom` = the count is right)."))
    display(cap_view)
    table = tp.config_table(records, positions_needed=recipe.positions)
    display(table)
    fig, ax = plt.subplots(figsize=(5.5, 3))
    sns.barplot(data=caps, x="setting", y="max_batch", hue="model", ax=ax)
    ax.set(ylabel="largest batch on one GPU", title=f"Caches of a whole run beside the weights ({SRC})")
    ax.title.set_fontsize(9)
    if write_gpu:
        writer.table("gpu_capacity", cap_view, caption=f"Largest batch per GPU, {SRC}")
        writer.table("gpu_throughput", table, caption=f"Decode step, integrated decode time and tokens/s per GPU, {SRC}")
        writer.figure("max_batch", fig)
    plt.show()

# %%
if records:
    comp = tp.paper_comparison(records, fig8, positions_needed=recipe.positions)
    display(comp)
    ours = table[(table["variant"] == "sample")] if "tok_s_per_gpu" in table else table.iloc[:0]
    long = pd.concat([fig8.assign(source="paper (vLLM, multi-GPU)", tok_s=fig8["tok_s_per_gpu"]),
                      ours.rename(columns={"batch": "batch_size"}).assign(source="ours (1 GPU, engine)",
                                                                         tok_s=ours.get("tok_s_per_gpu"))])
    g = sns.relplot(data=long.dropna(subset=["tok_s"]), x="batch_size", y="tok_s", hue="model", style="source",
                    col="setting", kind="line", marker="o", height=3.4, aspect=1.2)
    g.set(xscale="log", xlabel="batch size", ylabel="tokens/s per GPU")
    g.figure.suptitle(f"Decode throughput per GPU: the paper's Fig. 8 (vLLM) and {SRC}; missing = does not fit",
                      y=1.05)
    if write_gpu:
        writer.table("paper_vs_ours", comp, caption=f"The paper's vLLM tokens/s/GPU beside {SRC}")
        writer.figure("throughput_vs_paper", g.figure)
    plt.show()

# %%
if records:
    steps = tp.step_table(records)
    sub = steps[steps["variant"] == "sample"].copy()
    if len(sub):
        sub["step_ms"] = 1e3 * sub["step_s"]
        sub["roofline_ms"] = 1e3 * sub["roofline_s"]
        g = sns.relplot(data=sub, x="position", y="step_ms", hue="batch", style="model", col="setting",
                        kind="line", marker="o", height=3.4, aspect=1.2, facet_kws={"sharex": False})
        for ax, (setting, part) in zip(g.axes.flat, sub.groupby("setting", sort=False)):
            for (model, batch), line in part.groupby(["model", "batch"]):
                if batch == 32 or batch == part[part["model"] == model]["batch"].max():
                    ax.plot(line["position"], line["roofline_ms"], ls=":", c="grey")
        g.set(xlabel="context position (tokens)", ylabel="decode step (ms)")
        g.figure.suptitle(f"Decode step vs context; dotted: roofline (bytes / copy bandwidth) at batch 32 and the "
                          f"largest batch; {SRC}", y=1.05)
        if write_gpu:
            writer.figure("step_time_vs_roofline", g.figure)
        plt.show()
    hf = [r for r in records if r.get("kind") == "hf_generate"]
    if hf:
        display(Markdown(f"**Engine vs transformers `generate`** ({SRC}; greedy, same prompts, exactly "
                         f"{hf[0].get('new_tokens')} new tokens, batch {hf[0].get('batch')}):"))
        display(pd.DataFrame(hf).drop(columns=["engine_timing"], errors="ignore").T)

# %%
if records:
    summary = tp.summarize(records, positions_needed=recipe.positions)
    display(pd.Series(summary, name=SRC).to_frame())
    p128 = fig8.set_index(["model", "setting", "batch_size"])["tok_s_per_gpu"]
    display(Markdown(
        "Beside the paper (8K→16K, vLLM): Falcon-H1R-7B "
        f"{p128[('Falcon-H1R-7B', '8K->16K', 64)]:.0f} tok/s/GPU at bs64 and {p128[('Falcon-H1R-7B', '8K->16K', 128)]:.0f} "
        f"at bs128; Falcon/Qwen3 at bs128 {p128[('Falcon-H1R-7B', '8K->16K', 128)] / p128[('Qwen3-8B', '8K->16K', 128)]:.2f}x "
        f"(512→32K: {p128[('Falcon-H1R-7B', '512->32K', 128)] / p128[('Qwen3-8B', '512->32K', 128)]:.2f}x). Ours are taken at the "
        "largest batch that fits one GPU when 64 or 128 do not (the `_batch` entries)."))
    if write_gpu:
        writer.summary(summary)

# %% [markdown]
# ## Where a decode step's time goes
# `bench/decode_profile.py` on the same GPU, Falcon-H1R-7B: one eager step under `torch.profiler` (kernel time
# per category, at batch 32 and an 8K context, plain engine), and the captured step of every combination of
# the engine's paths: attention by SDPA or the split-KV Triton kernel, the layer glue plain or compiled, and
# the SSM state in float32 or bfloat16 (vLLM's default keeps it in the model dtype). The profile's GPU time was
# measured before the compiled glue's last numerical fix (`torch.add(..., alpha=)` replaced by multiplies,
# the same kernels).

# %%
profile_path = gpu_dir / "decode_profile.json"
if profile_path.exists():
    prof = read_json(profile_path)
    k = prof["kernels"]
    cats = pd.DataFrame({"ms": {c: 1e3 * v for c, v in k["per_category_s"].items()},
                         "kernels": k["per_category_count"]}).sort_values("ms", ascending=False)
    display(Markdown(f"**One eager step** (batch {k['batch']}, context {k['context']}, {prof['gpu']}): "
                     f"{k['kernels']} kernels, {1e3 * k['kernel_s_total']:.2f} ms of kernel time; the same step "
                     f"captured in a CUDA graph takes {1e3 * k['graph_step_s']:.2f} ms, so launch gaps are not "
                     "where the time goes: the kernels are."))
    display(cats)
    prof_steps = pd.DataFrame([r for r in prof["steps"] if "step_s" in r])
    prof_steps["ssm_state"] = prof_steps.get("ssm_state_dtype", pd.Series(dtype=object)).fillna("float32")
    prof_steps["step_ms"] = 1e3 * prof_steps["step_s"]
    path_name = lambda cols: [f"{a}, {'compiled' if c else 'plain'} glue, {st} state" for a, c, st in cols]  # noqa: E731
    view = prof_steps.pivot_table(index=["batch", "context"], columns=["attention", "compiled", "ssm_state"],
                                  values="step_ms")
    view.columns = path_name(view.columns)
    display(Markdown(f"Captured decode step (ms) per path ({prof['gpu']}, Falcon-H1R-7B, random weights):"))
    display(view.round(2))
    ratio = prof_steps.pivot_table(index=["batch", "context"], columns=["attention", "compiled", "ssm_state"],
                                   values="step_over_roofline")
    ratio.columns = path_name(ratio.columns)
    display(Markdown("Step time over its roofline (bytes to move / copy bandwidth):"))
    display(ratio.round(2))
    if write_gpu:
        writer.table("decode_step_paths", view.reset_index(), caption=f"Decode step (ms) per engine path, {prof['gpu']}")
else:
    display(Markdown(f"No decode profile committed (`{profile_path}`)."))

# %%
writer.provenance({"gpu_records": str(gpu_dir) if records else None})
