"""The paper's numbers as data, and the arithmetic the paper (or our reading of it) does on them.

Every table and number set of Falcon-H1R (arXiv 2601.02346) lives as one file under the repo-root
``papers/`` directory, described in ``papers/index.yaml`` (name, file, source tag, title, notes).
Notebooks compare their own results against :func:`load`; the helpers below *recompute* every
derived figure (averages, ratios, savings, parameter count) from the stored rows, so no derived
number is ever copied by hand. ``papers/derived_checks.yaml`` holds the hand-computed values that
the tests check these helpers against.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

PAPERS_DIR = Path(__file__).resolve().parent.parent / "papers"
INDEX_FILE = PAPERS_DIR / "index.yaml"
# Files in papers/ that are about the data rather than data themselves.
UNINDEXED_FILES = ("index.yaml", "README.md", "claims.yaml")  # claims.yaml: our rules, not the paper's data

SAFETY_MODES = ("cot_only", "cot_answer", "answer_only")
DEEPCONF_BENCHMARKS = ("aime24", "aime25", "gpqa_d", "amo_bench")
THROUGHPUT_SETTINGS = ("512->32K", "8K->16K")
# [B] bar-chart categories -> the table columns they average (tau2-Telecom is not part of Code & Agentic).
BLOG_CATEGORIES = {
    "math": ("aime24", "aime25", "hmmt25", "amo_bench", "math500"),
    "code_agentic": ("lcb_v6", "scicode_sub", "tb_hard"),
    "general": ("gpqa_d", "mmlu_pro", "hle", "ifbench"),
}
RL_CURRICULUM_BENCHMARKS = ("aime25", "lcb_v6", "gpqa_d")


class UnknownTableError(LookupError):
    """A paper table name that ``papers/index.yaml`` does not list."""


# ----------------------------------------------------------------------------- index and loading
@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    entries = yaml.safe_load(INDEX_FILE.read_text())["tables"]
    return {entry["name"]: entry for entry in entries}


def list_tables() -> list[str]:
    """Names of every indexed paper table, in index order."""
    return list(_index())


def meta(name: str) -> dict[str, Any]:
    """The index entry of ``name``: file, source tag, title, notes."""
    index = _index()
    if name not in index:
        raise UnknownTableError(
            f"no paper table named {name!r}; available tables: {', '.join(index)}"
        )
    return dict(index[name])


def load(name: str) -> pd.DataFrame | dict[str, Any]:
    """A CSV table as a DataFrame, or a YAML number set as a dict."""
    path = PAPERS_DIR / meta(name)["file"]
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in (".yaml", ".yml"):
        return yaml.safe_load(path.read_text())
    raise ValueError(f"{path.name}: unsupported paper data format {path.suffix!r}; use .csv or .yaml")


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; got {list(df.columns)}")


# ----------------------------------------------------------------------------- safety (Table 10)
def safety_averages(df: pd.DataFrame) -> dict[str, Any]:
    """Simple (mean over subsets) and prompt-weighted averages per judging mode, plus prompt totals.

    The paper prints both averages; recomputing them from the 18 rows shows which printed
    values are consistent with the rows.
    """
    _require_columns(df, ("n_prompts", *SAFETY_MODES), "safety table")
    weights = df["n_prompts"].astype(float)
    return {
        "n_prompts": int(df["n_prompts"].sum()),
        "n_subsets": int(len(df)),
        "simple": {mode: float(df[mode].mean()) for mode in SAFETY_MODES},
        "weighted": {
            mode: float((df[mode] * weights).sum() / weights.sum()) for mode in SAFETY_MODES
        },
    }


def safety_rounding_flags(
    df: pd.DataFrame, printed: pd.DataFrame, threshold: float = 0.02
) -> pd.DataFrame:
    """Printed averages vs averages recomputed from the rows; ``flag`` marks |difference| > threshold."""
    _require_columns(printed, ("average", *SAFETY_MODES), "printed safety averages")
    recomputed = safety_averages(df)
    rows = []
    for _, row in printed.iterrows():
        kind = row["average"]
        if kind not in ("simple", "weighted"):
            raise ValueError(f"printed safety averages: average {kind!r} is not 'simple' or 'weighted'")
        for mode in SAFETY_MODES:
            value = float(recomputed[kind][mode])
            diff = float(row[mode]) - value
            rows.append(
                {
                    "average": kind,
                    "mode": mode,
                    "printed": float(row[mode]),
                    "recomputed": value,
                    "difference": diff,
                    "flag": abs(diff) > threshold,
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- DeepConf (Table 7)
def _deepconf_cell(df: pd.DataFrame, model: str, benchmark: str, column: str) -> float:
    hit = df[(df["model"] == model) & (df["benchmark"] == benchmark)]
    if len(hit) != 1:
        raise ValueError(
            f"DeepConf table: expected one row for model={model!r}, benchmark={benchmark!r}, "
            f"found {len(hit)}; models: {sorted(df['model'].unique())}, "
            f"benchmarks: {sorted(df['benchmark'].unique())}"
        )
    return float(hit[column].iloc[0])


def deepconf_token_savings(df: pd.DataFrame, model_a: str, model_b: str, benchmark: str) -> float:
    """Fraction of generated tokens ``model_a`` saves against ``model_b`` on ``benchmark``: 1 - a/b."""
    _require_columns(df, ("model", "benchmark", "tokens_m"), "DeepConf table")
    tokens_a = _deepconf_cell(df, model_a, benchmark, "tokens_m")
    tokens_b = _deepconf_cell(df, model_b, benchmark, "tokens_m")
    return 1.0 - tokens_a / tokens_b


def deepconf_averages(df: pd.DataFrame) -> pd.DataFrame:
    """Per-model mean accuracy and mean token total over the 4 TTS benchmarks (the Fig. 1 points)."""
    _require_columns(df, ("model", "benchmark", "acc", "tokens_m"), "DeepConf table")
    counts = df.groupby("model")["benchmark"].nunique()
    incomplete = counts[counts != len(DEEPCONF_BENCHMARKS)]
    if len(incomplete):
        raise ValueError(f"DeepConf table: models without all of {DEEPCONF_BENCHMARKS}: {dict(incomplete)}")
    means = df.groupby("model", sort=False)[["acc", "tokens_m"]].mean()
    return means.sort_values("acc", ascending=False)


# ----------------------------------------------------------------------------- throughput (Fig. 8)
def throughput_ratios(
    df: pd.DataFrame, model: str = "Falcon-H1R-7B", baseline: str = "Qwen3-8B"
) -> pd.DataFrame:
    """``model``/``baseline`` tokens/s/GPU per batch size, one column per setting, plus ``mean``.

    ``mean`` is the ratio of the two settings' *mean throughputs* (Fig. 8 in the paper averages the
    settings before comparing), which is not the mean of the two ratios.
    """
    _require_columns(df, ("batch_size", "setting", "model", "tok_s_per_gpu"), "throughput table")
    wide = df.pivot_table(index="batch_size", columns=["model", "setting"], values="tok_s_per_gpu")
    out = pd.DataFrame(index=wide.index)
    for setting in THROUGHPUT_SETTINGS:
        out[setting] = wide[(model, setting)] / wide[(baseline, setting)]
    mean_model = wide[model][list(THROUGHPUT_SETTINGS)].mean(axis=1)
    mean_baseline = wide[baseline][list(THROUGHPUT_SETTINGS)].mean(axis=1)
    out["mean"] = mean_model / mean_baseline
    return out


# ----------------------------------------------------------------------------- blog averages ([B])
def blog_category_average(
    math: pd.DataFrame,
    code: pd.DataFrame,
    general: pd.DataFrame,
    blog_values: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The blog's category averages, rebuilt from Tables 4-6.

    Math = mean of the 5 math benchmarks; Code & Agentic = mean of LCB v6, SciCode-sub and TB Hard
    (tau2-Telecom left out); General = mean of the 4 general benchmarks. ``blog_values`` (the
    ``blog_benchmark_values`` table) swaps in the extra digits the blog uses for a few cells
    (Falcon TB Hard 4.96 and HLE 11.13, Nemotron-47B TB Hard 1.42); without them Falcon's
    Code & Agentic lands 0.02 below the printed value.
    """
    merged = math.merge(code, on="model").merge(general, on="model")
    if blog_values is not None:
        _require_columns(blog_values, ("model", "benchmark", "blog_value"), "blog benchmark values")
        merged = merged.set_index("model")
        for _, row in blog_values.iterrows():
            merged.loc[row["model"], row["benchmark"]] = float(row["blog_value"])
        merged = merged.reset_index()
    out = pd.DataFrame({"model": merged["model"]})
    for category, columns in BLOG_CATEGORIES.items():
        _require_columns(merged, columns, f"blog category {category!r}")
        out[category] = merged[list(columns)].mean(axis=1)
    return out


# ----------------------------------------------------------------------------- RL curricula (Table 3)
def rl_curriculum_means(df: pd.DataFrame) -> pd.Series:
    """Mean of AIME25, LCB v6 and GPQA-D per RL curriculum run, indexed by run."""
    _require_columns(df, ("run", *RL_CURRICULUM_BENCHMARKS), "RL curricula table")
    return df.set_index("run")[list(RL_CURRICULUM_BENCHMARKS)].mean(axis=1).rename("mean_of_3")


# ----------------------------------------------------------------------------- SFT data mix (Fig. 3)
def data_mixture_stats(df: pd.DataFrame, epochs: int = 3, batch_size: int = 512) -> dict[str, Any]:
    """Totals and tokens-per-sample of the SFT mix, and the optimizer steps they imply.

    Steps assume the batch of 512 counts samples (the paper does not say).
    """
    _require_columns(df, ("domain", "samples", "tokens"), "data mixture table")
    samples = float(df["samples"].sum())
    tokens = float(df["tokens"].sum())
    per_domain = dict(zip(df["domain"], df["tokens"] / df["samples"]))
    return {
        "samples_total": samples,
        "tokens_per_epoch": tokens,
        "tokens_all_epochs": tokens * epochs,
        "avg_tokens_per_sample": {**per_domain, "all": tokens / samples},
        "optimizer_steps": epochs * samples / batch_size,
    }


# ----------------------------------------------------------------------------- architecture (Table 8)
def architecture_config(arch: dict[str, Any]) -> dict[str, Any]:
    """Flatten the ``table8_architecture`` data into one config.json-style dict of field -> value."""
    if "paper" not in arch or "config_json" not in arch:
        raise ValueError(
            "architecture_config: expected the table8_architecture dict (keys 'paper', 'config_json'), "
            f"got keys {sorted(arch)}"
        )
    flat = {k: v for k, v in arch["paper"].items() if k not in ("source", "total_params_b", "context_k")}
    flat.update({k: entry["value"] for k, entry in arch["config_json"].items()})
    return flat


_PARAM_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "mamba_d_ssm", "mamba_n_heads", "mamba_n_groups",
    "mamba_d_state", "mamba_d_conv", "tie_word_embeddings",
)


def _flat_arch(arch: dict[str, Any]) -> dict[str, Any]:
    flat = architecture_config(arch) if "paper" in arch else dict(arch)
    missing = [f for f in _PARAM_FIELDS if f not in flat]
    if missing:
        raise ValueError(f"falcon architecture: missing fields {missing}; required: {list(_PARAM_FIELDS)}")
    return flat


def falcon_param_count(arch: dict[str, Any]) -> int:
    """Parameter count of a Falcon-H1 model from its config fields (every layer hybrid).

    Written out by hand (not by instantiating the model) so the 7.6 B model never has to be built;
    the tests check it against a small transformers ``FalconH1ForCausalLM``. Accepts a flat
    config.json-style dict or the ``table8_architecture`` data.
    """
    a = _flat_arch(arch)
    d, ssm = a["hidden_size"], a["mamba_d_ssm"]
    heads, kv, hd = a["num_attention_heads"], a["num_key_value_heads"], a["head_dim"]
    bc = 2 * a["mamba_n_groups"] * a["mamba_d_state"]  # B and C projections
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d + (
        (heads * hd + 2 * kv * hd + d) if a.get("attention_bias", False) else 0
    )
    conv_dim = ssm + bc
    in_proj_out = ssm + conv_dim + a["mamba_n_heads"]  # z, (x, B, C), dt
    mamba = (
        d * in_proj_out
        + (in_proj_out if a.get("mamba_proj_bias", False) else 0)
        + conv_dim * a["mamba_d_conv"]
        + (conv_dim if a.get("mamba_conv_bias", True) else 0)
        + 3 * a["mamba_n_heads"]  # dt_bias, A_log, D
        + (ssm if a.get("mamba_rms_norm", True) else 0)
        + ssm * d
        + (d if a.get("projectors_bias", False) else 0)
    )
    mlp = 3 * d * a["intermediate_size"] + (
        (2 * a["intermediate_size"] + d) if a.get("mlp_bias", False) else 0
    )
    norms = 2 * d  # input_layernorm, pre_ff_layernorm
    per_layer = attention + mamba + mlp + norms
    embeddings = a["vocab_size"] * d * (1 if a["tie_word_embeddings"] else 2)
    return int(a["num_hidden_layers"] * per_layer + embeddings + d)  # + final_layernorm


def falcon_tensor_count(arch: dict[str, Any]) -> int:
    """Number of named weight tensors (checked against the 751 of the released safetensors index)."""
    a = _flat_arch(arch)
    attention = 4 * (2 if a.get("attention_bias", False) else 1)
    mamba = 4 + 2  # in_proj, out_proj, dt_bias, A_log, D, conv1d.weight
    mamba += int(a.get("mamba_conv_bias", True)) + int(a.get("mamba_rms_norm", True))
    mamba += int(a.get("mamba_proj_bias", False)) + int(a.get("projectors_bias", False))
    mlp = 3 * (2 if a.get("mlp_bias", False) else 1)
    per_layer = attention + mamba + mlp + 2
    return int(a["num_hidden_layers"] * per_layer + (1 if a["tie_word_embeddings"] else 2) + 1)
