"""The README's results tables, built from each section's ``summary.json`` (never typed by hand).

``falcon-h1r summary --preset small`` prints them; ``--write-readme`` replaces the block between the
``<!-- results:<preset>:begin -->`` and ``<!-- results:<preset>:end -->`` markers in README.md.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from falcon_h1r.env import REPO_ROOT
from falcon_h1r.results import RESULTS_ROOT, SECTIONS, read_json

# (section, summary key, label, format) in the order the README shows them.
HEADLINES: list[tuple[str, str, str, str]] = [
    ("02_sft", "base_params", "base model parameters (Falcon-H1 hybrid)", "{:,.0f}"),
    ("02_sft", "base_seeds", "independently trained bases", "{:.0f}"),
    ("02_sft", "base_pass1_math", "bases' sampled pass@1, held-out math (T 0.6, top-p 0.95)", "{:.3f}"),
    ("02_sft", "base_pass1_code", "bases' sampled pass@1, held-out code", "{:.3f}"),
    ("02_sft", "base_pass1_science", "bases' sampled pass@1, held-out science", "{:.3f}"),
    ("02_sft", "sft_trace_tokens_median", "SFT teacher trace, median tokens", "{:.0f}"),
    ("02_sft", "base_train_wall_s", "one base's SFT wall time (s)", "{:.0f}"),
    ("01_data_curation", "problems_in", "curation: problems in", "{:,.0f}"),
    ("01_data_curation", "kept_sft", "curation: SFT traces kept", "{:,.0f}"),
    ("01_data_curation", "kept_rl", "curation: RL problems kept", "{:,.0f}"),
    ("01_data_curation", "contamination_pct", "contamination vs held-out sets (%)", "{:.3f}"),
    ("01_data_curation", "contamination_planted_found_fraction", "contamination check: planted copies found", "{:.2f}"),
    ("02_sft", "ablation_seeds", "SFT ablations: seeds per arm", "{:.0f}"),
    ("02_sft", "ablation_runs_missing", "SFT ablations: grid runs not yet run", "{:.0f}"),
    ("02_sft", "larger_minus_smaller_lr_acc", "SFT: largest minus smallest learning rate (acc)", "{:+.3f}"),
    ("02_sft", "balanced_minus_per_rank_heldout_acc", "SFT: balanced minus per-rank normalization (acc)", "{:+.3f}"),
    ("02_sft", "dp_tokens_per_rank_max_over_min", "SFT: supervised tokens per rank, max / min", "{:.1f}"),
    ("02_sft", "hybrid_train_mfu", "SFT: hybrid training MFU (1B-class, one GPU)", "{:.3f}"),
    ("02_sft", "baseline_train_mfu", "SFT: Qwen3 baseline training MFU", "{:.3f}"),
    ("03_rl", "rl_seeds", "RL: seeds (each from its own base)", "{:.0f}"),
    ("03_rl", "sft_heldout_pass1_math", "RL: held-out math pass@1 of the SFT bases", "{:.3f}"),
    ("03_rl", "math_only_minus_sft_math", "RL: math-only minus SFT, held-out math (paired)", "{:+.3f}"),
    ("03_rl", "backfill_gen_call_saving_vs_nocache", "RL: backfill's generation-call saving, cache vs no cache",
     "{:+.3f}"),
    ("03_rl", "rl_pool_pass_rate_inside_fraction_code", "RL: kept code problems strictly inside 0/8..8/8", "{:.2f}"),
    ("03_rl", "sandbox_attacks_tried", "RL: sandbox attacks tried through the code reward", "{:.0f}"),
    ("03_rl", "sandbox_escapes", "RL: sandbox escapes", "{:.0f}"),
    ("04_throughput", "hybrid_tok_s_per_gpu_max_batch_8k_16k", "Falcon-H1R-7B arch. tok/s/GPU, 8K->16K, largest batch",
     "{:,.0f}"),
    ("04_throughput", "hybrid_bf16_state_tok_s_per_gpu_max_batch_8k_16k",
     "the same with a bfloat16 SSM state, at its largest batch", "{:,.0f}"),
    ("04_throughput", "hybrid_over_transformer_max_batch_8k_16k",
     "hybrid / Qwen3-8B arch. tok/s per GPU, 8K->16K, each at its largest batch", "{:.2f}"),
    ("04_throughput", "hybrid_max_batch_8k_16k", "largest batch, Falcon-H1R-7B arch., 8K->16K", "{:.0f}"),
    ("04_throughput", "transformer_max_batch_8k_16k", "largest batch, Qwen3-8B arch., 8K->16K", "{:.0f}"),
    ("04_throughput", "step_time_over_roofline_bs32", "engine decode step / roofline, batch 32", "{:.2f}"),
    ("04_throughput", "engine_over_hf_generate_bs128", "engine / transformers generate, batch 128", "{:.2f}"),
    ("05_deepconf", "n_problems", "DeepConf: problems (0 < pass rate < 1)", "{:.0f}"),
    ("05_deepconf", "trace_tokens_median", "DeepConf: median trace tokens", "{:.0f}"),
    ("05_deepconf", "max_budget", "DeepConf: largest trace budget K", "{:.0f}"),
    ("05_deepconf", "majority_acc_at_max_k", "majority@K accuracy (largest K)", "{:.3f}"),
    ("05_deepconf", "majority_minus_pass1", "majority@K minus pass@1 (the premise)", "{:+.3f}"),
    ("05_deepconf", "deepconf_low_acc", "DeepConf-low accuracy", "{:.3f}"),
    ("05_deepconf", "deepconf_high_acc", "DeepConf-high accuracy", "{:.3f}"),
    ("05_deepconf", "deepconf_low_minus_majority_acc", "DeepConf-low minus majority@K, accuracy", "{:+.3f}"),
    ("05_deepconf", "deepconf_low_token_saving_vs_majority", "DeepConf-low token saving vs majority@K", "{:.3f}"),
    ("05_deepconf", "confidence_overhead_fraction", "confidence tracking cost / decode step", "{:.3f}"),
    ("06_safety", "cot_only_safe_pct", "safety: % safe, reasoning only", "{:.1f}"),
    ("06_safety", "answer_only_safe_pct", "safety: % safe, answer only", "{:.1f}"),
    ("06_safety", "cot_answer_safe_pct", "safety: % safe, reasoning + answer", "{:.1f}"),
    ("06_safety", "embedded_judge_precision", "embedded judge precision (unsafe = positive)", "{:.3f}"),
]


def _summaries(preset: str, root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for section in SECTIONS:
        path = Path(root) / preset / section / "summary.json"
        out[section] = read_json(path) if path.exists() else {}
    majority = {k: v for k, v in out["05_deepconf"].items() if re.fullmatch(r"majority_acc_k\d+", k)}
    if majority:  # the largest K that was run
        key = max(majority, key=lambda k: int(k.rsplit("k", 1)[1]))
        out["05_deepconf"]["majority_acc_at_max_k"] = majority[key]
    return out


def headline_markdown(preset: str, root: Path = RESULTS_ROOT) -> str:
    """A Markdown table of the preset's headline figures; missing ones say 'not run'. An estimate of the
    statistical protocol shows its 95 % interval, and one the protocol marks not informative says so (it is
    never a headline on its own)."""
    sums = _summaries(preset, root)
    lines = [f"| figure (ours, `{preset}` preset) | value | from |", "|---|---|---|"]
    for section, key, label, fmt in HEADLINES:
        summary = sums[section]
        value = summary.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            shown = "not run"
        else:
            shown = fmt.format(value) if isinstance(value, (int, float)) else str(value)
            ci = summary.get(f"{key}_ci95")
            if isinstance(ci, (int, float)) and math.isfinite(ci):
                shown += f" ± {ci:.3f}"
            if summary.get(f"{key}_informative") is False:
                shown += " (not informative)"
        lines.append(f"| {label} | {shown} | `results/{preset}/{section}/summary.json` `{key}` |")
    return "\n".join(lines)


def claims_markdown(preset: str, root: Path = RESULTS_ROOT) -> str:
    """The preset's claims scoreboard for the README: the counts, then one row per claim (status computed by
    rule from the summaries on disk, never typed)."""
    from falcon_h1r.claims import counts
    from falcon_h1r.sections.scoreboard import scoreboard_rows

    rows = scoreboard_rows(preset, root)
    c = counts(rows)
    lines = [f"{c['claims_total']} claims: **{c['claims_reproduced']} reproduced**, {c['claims_partly']} partly, "
             f"{c['claims_not_reproduced']} not reproduced, {c['claims_not_testable']} not testable here, "
             f"{c['claims_not_run']} not run yet (`results/{preset}/claims.md` has the reasons).", "",
             "| claim | section | status | ours | paper |", "|---|---|---|---|---|"]
    for r in rows:
        ours = str(r.get("ours", "")).replace("|", "/")
        lines.append(f"| `{r['id']}` | {r['section'][:2]} | {r['status']} | {ours} | {str(r.get('paper_value', ''))} |")
    return "\n".join(lines)


def _replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"README.md has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def update_readme(preset: str, readme: Path = REPO_ROOT / "README.md", root: Path = RESULTS_ROOT) -> bool:
    """Replace the preset's marked blocks in README.md (headline figures; the claims scoreboard where the README
    has a ``claims:<preset>`` block); returns whether the file changed."""
    text = readme.read_text()
    new = _replace_block(text, f"results:{preset}", headline_markdown(preset, root))
    if f"<!-- claims:{preset}:begin -->" in new:
        new = _replace_block(new, f"claims:{preset}", claims_markdown(preset, root))
    if new != text:
        readme.write_text(new)
    return new != text
