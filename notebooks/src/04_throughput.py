# %% [markdown]
# # 04 · Hybrid vs transformer decode throughput (paper Appendix B, Fig. 8)
#
# The paper measured Falcon-H1R-7B against Qwen3-8B with vLLM on H100s (per-GPU tokens/s, with different
# tensor/data parallelism per model; see the `parallelism` column). The Falcon/Qwen ratios are
# recomputed here from the data points (`falcon_h1r.papers.throughput_ratios`), and the parameter
# counts of the two architectures from their configs (`falcon_h1r.models`).
#
# Then **ours**: the same two architectures with random weights on **one** GPU, decoded by our own engine
# (`falcon_h1r.inference.engine`: static caches, the decode step captured in a CUDA graph, our Triton SSM state
# update shaped for d_state 256, split-KV Triton attention or PyTorch SDPA), measured by `bench/throughput.py` (`falcon_h1r.sections.throughput_study.Study`, with the
# arithmetic of `falcon_h1r.throughput`) and committed under `results/small/04_throughput/`. Before any speed
# figure: the engine must decode exactly what transformers decodes, which this notebook checks on the preset's
# own base model.
#
# Where each number is computed: the paper's from `falcon_h1r.papers`; ours by `falcon_h1r.sections.throughput`
# (`architecture_params`, `engine_check`, `gpu_engine_checks`, `measure_or_load`, `config_table`, `summarize`,
# `paper_comparison`, `decode_profile`), which names the library method behind each.

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.config import load_preset
from falcon_h1r.env import REPO_ROOT
from falcon_h1r.results import SectionWriter
from falcon_h1r.sections import throughput as tp
from falcon_h1r.sections.common import run_mode

cfg = load_preset(preset, overrides)
recipe = tp.throughput_recipe(cfg)
mode = run_mode(cfg)
writer = SectionWriter(preset, "04_throughput", params=cfg.to_dict(), seed=cfg.seed,
                       mode="computed" if mode == "compute" else "rendered")
display(Markdown(f"Preset **{preset}**: the engine check is **{'computed here' if mode == 'compute' else 'rendered'}**"
                 f" ({'on ' + ('a GPU' if torch.cuda.is_available() else 'this CPU') if mode == 'compute' else 'from the committed GPU records'})."))

# %%
params = tp.architecture_params()
print(f"Falcon-H1R-7B architecture: {params['falcon_h1r_7b_params_b']:.3f} B parameters (paper Table 8: 7.59 B)")
print(f"Qwen3-8B architecture:      {params['qwen3_8b_params_b']:.3f} B parameters")
writer.summary(params)

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
    check = tp.engine_check(cfg, recipe)
    states = tp.state_dtype_check(cfg, recipe)
    writer.json("engine_check_base_model", check)
    writer.json("ssm_state_dtypes_base_model", states)
    writer.summary(tp.engine_check_summary(check, states))
    display(pd.DataFrame([{k: v for k, v in check.items() if k != "first_divergence"}]).T.rename(
        columns={0: f"ours, {preset} preset base model (synthetic tasks), {check['device']}"}))
    display(Markdown("**A bfloat16 SSM state against the float32 one** (the engine, greedy, same prompts; "
                     "`falcon_h1r.inference.engine_check.compare_state_dtypes`): token agreement, top-k log-prob gaps "
                     "while the tokens agree, and each state's top-k log-probs against transformers' full forward "
                     "over its own tokens."))
    display(pd.DataFrame([{k: v for k, v in states.items() if k != "first_divergence"}]).T.rename(
        columns={0: f"ours, {preset} preset base model, {states['device']}"}))
else:
    display(Markdown("The base-model check runs where the preset computes; the GPU checks follow."))

# %%
def shown(path):
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


gpu_dir = tp.records_dir("small")
gpu_check_path = gpu_dir / tp.ENGINE_CHECK_FILE
gpu_checks = tp.gpu_engine_checks(gpu_dir)
if gpu_checks is not None:
    gpu_check, checks = gpu_checks
    display(Markdown(f"**Engine vs transformers on {gpu_check.get('gpu_name', 'a GPU')}** (ours, random-weight "
                     f"models of the tiny/small presets and 2-layer slices of the 7B/8B architectures; "
                     f"`bench/engine_check.py`, committed in `{shown(gpu_check_path)}`): "
                     f"{gpu_check.get('passed')}/{gpu_check.get('total')} checks passed. fp32 checks require identical "
                     "tokens and log-probs within 1e-3. In bf16 every path rounds differently, and transformers' own "
                     "cached decoding already departs from its full forward (the `hf_` columns): bf16 checks require the "
                     "engine to stay as close to the full forward as that (log-probs within 1.5x of transformers' gap, "
                     "argmax share within 0.02)."))
    display(checks)
    if preset == "small":
        writer.summary({"gpu_engine_checks_passed": gpu_check.get("passed"), "gpu_engine_checks_total": gpu_check.get("total")})
else:
    display(Markdown(f"No committed GPU engine check yet (`{shown(gpu_check_path)}`): `bench/engine_check.py` "
                     "writes it on a GPU."))

# %% [markdown]
# ## Ours: throughput of the two architectures on one GPU
# **How it is measured** (`falcon_h1r.sections.throughput_study`, `falcon_h1r.throughput`). A full 8K→16K run
# is 16,384 decode steps per point, far beyond a short GPU session, so for each batch size the engine's decode step (CUDA graph; sampling at
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
# position, Mamba states read and written) over the bandwidth of a large device copy. Random bf16 weights of the
# full architectures; the Mamba-2 SSM state in float32 (what transformers keeps), and for the hybrid once more in
# bfloat16 (vLLM's default for Mamba caches: half the state bytes) at its own largest batch (variant `ssm_bf16`,
# rows of the tables below; its agreement with the float32 state is checked on the base model above and in
# `bench/engine_check.py`). The **largest batch** is where the whole run's caches (K/V for input + output, Mamba
# states, the per-token outputs) fit beside the weights, computed from the bytes and checked by allocating.
#
# **How it differs from the paper's figure.** vLLM with paged attention and continuous batching, several GPUs
# per model (Falcon tp2/dp2, Qwen3 up to tp4; per-GPU figures divide by the GPU count), and batches that do
# not fit one GPU. Here one GPU holds everything, so a batch that does not fit is reported as such, and the
# hybrid's smaller cache shows up as a larger feasible batch.

# %%
try:
    all_records, gpu_dir = tp.measure_or_load(cfg, recipe, writer.dir, mode)
except FileNotFoundError as exc:
    all_records = None
    display(Markdown(f"**No committed GPU records yet**: {exc}."))
write_gpu = all_records is not None and preset == "small"  # the records belong to the small preset's results
# figures are compared within one run only (one GPU, one engine version): the newest run gives the tables of
# this engine; the comparison with the paper's Fig. 8 uses the newest run that measured both architectures
runs = tp.split_runs(all_records) if all_records else []
records = runs[0][1] if runs else None
SRC = f"ours, {runs[0][0] if runs else 'CPU (a smoke run)'}, random weights"
compared = tp.comparison_run(all_records) if all_records else None
if len(runs) > 1:
    display(Markdown("**Runs in the committed records** (newest first): " + "; ".join(f"`{label}`" for label, _ in runs)
                     + ". Tables below are per run; no figure divides one run's numbers by another's."))

# %%
if records:
    cap_view = tp.capacity_view(records)
    display(Markdown(f"**Largest batch per GPU** ({SRC}): `verified` is what allocating the caches of one "
                     "sequence more than the byte count allows did (`oom` = the count is right)."))
    display(cap_view)
    table = tp.config_table(records, positions_needed=recipe.positions)
    display(table)
    fig, ax = plt.subplots(figsize=(5.5, 3))
    bars = cap_view.assign(which=[m if m == tp.TRANSFORMER else f"{m}, {st} SSM state"
                                  for m, st in zip(cap_view["model"], cap_view["ssm_state_dtype"])])
    sns.barplot(data=bars, x="setting", y="max_batch", hue="which", ax=ax)
    ax.set(ylabel="largest batch on one GPU", title=f"Caches of a whole run beside the weights ({SRC})")
    ax.title.set_fontsize(9)
    if write_gpu:
        writer.table("gpu_capacity", cap_view, caption=f"Largest batch per GPU, {SRC}")
        writer.table("gpu_throughput", table, caption=f"Decode step, integrated decode time and tokens/s per GPU, {SRC}")
        writer.figure("max_batch", fig)
    plt.show()

# %%
if compared:
    CMP = f"ours, {compared[0]}, random weights"
    if compared[1] is not records:
        display(Markdown(f"The newest run ({SRC}) did not measure both architectures; the comparison with the "
                         f"paper's Fig. 8 below is the run that did ({CMP})."))
    comp = tp.paper_comparison(compared[1], fig8, positions_needed=recipe.positions)
    display(comp)
    long = tp.paper_and_ours(fig8, tp.config_table(compared[1], positions_needed=recipe.positions))
    g = sns.relplot(data=long.dropna(subset=["tok_s"]), x="batch_size", y="tok_s", hue="model", style="source",
                    col="setting", kind="line", marker="o", height=3.4, aspect=1.2)
    g.set(xscale="log", xlabel="batch size", ylabel="tokens/s per GPU")
    g.figure.suptitle(f"Decode throughput per GPU: the paper's Fig. 8 (vLLM) and {CMP}; missing = does not fit",
                      y=1.05)
    if write_gpu:
        writer.table("paper_vs_ours", comp, caption=f"The paper's vLLM tokens/s/GPU beside {CMP}")
        writer.figure("throughput_vs_paper", g.figure)
    plt.show()

# %%
if records:
    sub = tp.step_times(records)
    if len(sub):
        # one colour per measured batch size (discrete), one line style per model and SSM state; the roofline of
        # batch 32 and of each line's largest batch dotted in the same colour, each named in the legend
        batches = sorted(int(b) for b in sub["batch"].unique())
        colour = dict(zip(batches, sns.color_palette("tab10", len(batches))))
        lines = list(dict.fromkeys(sub["line"]))
        style = dict(zip(lines, [("-", "o"), ("--", "s"), ("-.", "^"), (":", "D")]))
        settings = list(dict.fromkeys(sub["setting"]))
        fig, axes = plt.subplots(1, len(settings), figsize=(6.2 * len(settings), 6.4), squeeze=False)
        for ax, setting in zip(axes[0], settings):
            part = sub[sub["setting"] == setting]
            for (name, batch), pts in part.groupby(["line", "batch"]):
                pts = pts.sort_values("position")
                ls, mk = style[name]
                ax.plot(pts["position"], pts["step_ms"], ls=ls, marker=mk, ms=4, c=colour[int(batch)],
                        label=f"{name}, batch {batch}")
                if batch == 32 or batch == part.loc[part["line"] == name, "batch"].max():
                    ax.plot(pts["position"], pts["roofline_ms"], ls=(0, (1, 2)), lw=1.5, c=colour[int(batch)],
                            label=f"roofline: {name}, batch {batch}")
            ax.set(title=setting, xlabel="context position (tokens)", ylabel="decode step (ms)")
            ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                      title="measured step (one colour per batch size); dotted: its roofline", title_fontsize=7)
        fig.suptitle(f"Decode step vs context; roofline = bytes a step must move / copy bandwidth ({SRC})",
                     fontsize=9)
        fig.tight_layout()
        if write_gpu:
            writer.figure("step_time_vs_roofline", fig)
        plt.show()
    hf = [r for r in records if r.get("kind") == "hf_generate"]
    if hf:
        display(Markdown(f"**Engine vs transformers `generate`** ({SRC}; greedy, same prompts, exactly "
                         f"{hf[0].get('new_tokens')} new tokens, batch {hf[0].get('batch')}):"))
        display(tp.hf_generate_table(records))

# %%
if records:
    summary, sources = tp.summarize_runs(all_records, positions_needed=recipe.positions)
    display(Markdown("Each headline figure comes from the newest run that measured it, computed within that run "
                     "(`falcon_h1r.sections.throughput_records.summarize_runs`); the run of each:"))
    display(sources)
    p = tp.paper_fig8_points(fig8)
    display(Markdown(
        f"Beside the paper (8K→16K, vLLM): Falcon-H1R-7B {p['paper_hybrid_tok_s_per_gpu_bs64_8k_16k']:.0f} tok/s/GPU "
        f"at bs64 and {p['paper_hybrid_tok_s_per_gpu_bs128_8k_16k']:.0f} at bs128; Falcon/Qwen3 at bs128 "
        f"{p['paper_hybrid_over_transformer_bs128_8k_16k']:.2f}x (512→32K: "
        f"{p['paper_hybrid_over_transformer_bs128_512_32k']:.2f}x). Ours: `..._bs<N>_...` at batch N exactly; "
        "`..._max_batch_...` at the largest batch that fits one GPU (`..._max_batch_<setting>`, the batch measured "
        "beside it as `..._batch`), for the float32 SSM state and (`hybrid_bf16_state_...`) the bfloat16 one."))
    if write_gpu:
        writer.table("headline_sources", sources, caption="Which study run (GPU, commit, date) each headline "
                     "figure of summary.json comes from")
        writer.summary(summary)

# %% [markdown]
# ## Where a decode step's time goes
# `bench/decode_profile.py` on the same GPU, Falcon-H1R-7B: one eager step under `torch.profiler` (kernel time
# per category, at batch 32 and an 8K context, plain engine), and the captured step of every combination of
# the engine's paths: attention by SDPA or the split-KV Triton kernel, the layer glue plain or compiled, and
# the SSM state in float32 or bfloat16 (vLLM's default keeps it in the model dtype), and the SSM state update
# alone: our Triton kernel shaped for d_state 256 (`falcon_h1r.inference.decode_kernels.ssm_state_update`, the
# engine's default) against mamba-ssm's `selective_state_update`, in microseconds per layer and bandwidth.

# %%
prof = tp.decode_profile(gpu_dir)
if prof is not None:
    k = prof["kernels"]
    if prof["categories"] is not None:
        graph_ms = f"{1e3 * k['graph_step_s']:.2f} ms" if k.get("graph_step_s") else "(not measured)"
        display(Markdown(f"**One eager step** (batch {k['batch']}, context {k['context']}, {prof['gpu']}): "
                         f"{k['kernels']} kernels, {1e3 * k['kernel_s_total']:.2f} ms of kernel time; the same step "
                         f"captured in a CUDA graph takes {graph_ms}: the gap between the two is launch overhead."))
        display(prof["categories"])
    else:
        display(Markdown(f"The kernel profile did not run: {k.get('error', 'not in the record')}."))
    display(Markdown(f"Captured decode step (ms) per path ({prof['gpu']}, Falcon-H1R-7B, random weights):"))
    display(prof["step_ms"].round(2))
    display(Markdown("Step time over its roofline (bytes to move / copy bandwidth):"))
    display(prof["over_roofline"].round(2))
    if prof.get("ssm_update") is not None:
        display(Markdown("The SSM state update alone (one layer, Falcon-H1R-7B's 24 heads x 128 x 256 state; bytes = "
                         "the state read and written):"))
        display(prof["ssm_update"])
    if write_gpu:
        writer.table("decode_step_paths", prof["step_ms"].reset_index(),
                     caption=f"Decode step (ms) per engine path, {prof['gpu']}")
else:
    display(Markdown(f"No decode profile committed (`{shown(gpu_dir / tp.DECODE_PROFILE_FILE)}`): "
                     "`bench/decode_profile.py` writes it on a GPU."))

# %%
writer.provenance({"gpu_records": str(shown(gpu_dir)) if records else None})
