"""The hybrid-vs-transformer throughput study on one GPU (notebook 04_throughput renders its records).

Run on a GPU machine from the repository root (after ``. scripts/gpu_prelude.sh``):

    python3 bench/throughput.py --out $OUT --budget-s 360

Builds the Falcon-H1R-7B and Qwen3-8B architectures with random bf16 weights, one after the other, and for each
of the paper's settings (8K->16K, 512->32K) measures the HBM bandwidth, the prefill time, the largest batch
that fits (checked by allocating), and the engine's decode step at a few context positions for the batch
sizes that fit; then transformers' ``generate`` against the engine at batch 128 (with the float32 and the bfloat16
SSM state), and the hybrid once more with a bfloat16 SSM state at its own largest batch. Every record is written to
``$OUT/throughput_records.json`` as it is measured (a configuration that fails is recorded and skipped), and
the headline figures to ``$OUT/throughput_summary.json`` (``falcon_h1r.sections.throughput_study.Study``
measures, ``falcon_h1r.sections.throughput_records.summarize`` sums up, as the notebook does). ``--smoke`` runs
the same code on two tiny architectures (works on CPU) to check the script itself.

Copy both files to ``results/small/04_throughput/`` and run the notebook at the small preset to render them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def targets(summary: dict, fig8) -> list[str]:
    """The issue's targets beside what was measured (printed, not asserted)."""
    def paper(model: str, setting: str, batch: int) -> float:
        row = fig8[(fig8["model"] == model) & (fig8["setting"] == setting) & (fig8["batch_size"] == batch)]
        return float(row["tok_s_per_gpu"].iloc[0])

    def fmt(v, spec: str) -> str:
        return "not measured" if v is None else format(v, spec)

    s = summary.get
    lines = [f"decode step / roofline at batch 32 (hybrid): {fmt(s('step_time_over_roofline_bs32'), '.2f')}; worst "
             f"batch >= 32: {fmt(s('step_time_over_roofline_worst_batch_ge32'), '.2f')} at batch "
             f"{s('step_time_over_roofline_worst_batch_ge32_batch')} (target <= 1.25)",
             f"engine / transformers generate at batch 128: {fmt(s('engine_over_hf_generate_bs128'), '.1f')}x end to "
             f"end, {fmt(s('engine_over_hf_decode_step_bs128'), '.1f')}x per decode step (target >= 8x)"]
    for who, label in (("hybrid", "float32 SSM state"), ("hybrid_bf16_state", "bfloat16 SSM state")):
        lines.append(f"Falcon-H1R-7B 8K->16K, {label}: {fmt(s(f'{who}_tok_s_per_gpu_max_batch_8k_16k'), '.0f')} tok/s "
                     f"at batch {s(f'{who}_tok_s_per_gpu_max_batch_8k_16k_batch')} (largest that fits: "
                     f"{s(f'{who}_max_batch_8k_16k')}); step / its roofline there "
                     f"{fmt(s(f'{who}_step_time_over_roofline_max_batch_8k_16k'), '.2f')} (target >= 3,300 tok/s; "
                     f"the paper: {paper('Falcon-H1R-7B', '8K->16K', 128):.0f} at bs128 with vLLM on tp2 dp2)")
    for tag, setting in (("8k_16k", "8K->16K"), ("512_32k", "512->32K")):
        p = paper("Falcon-H1R-7B", setting, 128) / paper("Qwen3-8B", setting, 128)
        lines.append(f"hybrid / transformer at each one's largest batch, {setting}: "
                     f"{fmt(s(f'hybrid_over_transformer_max_batch_{tag}'), '.2f')}x (batches "
                     f"{s(f'hybrid_tok_s_per_gpu_max_batch_{tag}_batch')} / "
                     f"{s(f'transformer_tok_s_per_gpu_max_batch_{tag}_batch')}) vs the paper's {p:.2f}x at bs128")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for throughput_records.json and throughput_summary.json")
    ap.add_argument("--budget-s", type=float, default=360.0, help="stop starting measurements after this many seconds")
    ap.add_argument("--preset", default="small", help="preset whose throughput: block is used (default small)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="two tiny architectures and tiny settings (CPU is fine)")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers' generate comparison")
    ap.add_argument("--no-variants", action="store_true", help="skip the hybrid's other SSM state dtype and greedy "
                    "probes (e.g. when another call measured them; the notebook reads every records file)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="only these architectures (Falcon-H1R-7B, Qwen3-8B), e.g. to finish a run in a second call")
    ap.add_argument("--settings", nargs="+", default=None,
                    help="only these settings of the recipe (e.g. '8K->16K'), for a shorter run")
    ap.add_argument("--batch-sizes", default="", help="comma-separated batch grid instead of the recipe's (the largest "
                    "batch that fits is always measured too), e.g. 32 for the roofline and max-batch figures only")
    ap.add_argument("--tag", default="", help="suffix of the records file (throughput_records_<tag>.json), so the "
                    "files of several calls can sit side by side; the notebook reads them all")
    args = ap.parse_args()

    import torch

    from falcon_h1r import papers
    from falcon_h1r.config import load_preset
    from falcon_h1r.results import write_json
    from falcon_h1r.sections.throughput import Study, ThroughputRecipe, load_records, summarize, throughput_recipe
    from falcon_h1r.throughput import paper_architectures, smoke_architectures

    if args.device == "cuda" and not torch.cuda.is_available():
        print("throughput: no CUDA device visible; use --smoke --device cpu to check the script on CPU")
        return 2
    out = Path(args.out)
    recipe = throughput_recipe(load_preset(args.preset))
    architectures = None
    free = None
    if args.smoke:
        recipe = ThroughputRecipe(batch_sizes=[1, 2, 4], settings={"8K->16K": [16, 32], "512->32K": [8, 40]},
                                  positions=2, warmup_steps=1, timed_steps=2, hf_batch=4, hf_prompt_tokens=8,
                                  hf_new_tokens=4, prefill_tokens=64, reserve_gib=0.0, copy_gib=0.25)
        architectures = smoke_architectures()
        if args.device != "cuda":
            free = lambda: 3 * 2**20  # noqa: E731 - a pretend GPU: a few sequences fit
    if args.settings:
        unknown = [x for x in args.settings if x not in recipe.settings]
        if unknown:
            print(f"throughput: unknown --settings {unknown}; the recipe has {list(recipe.settings)}")
            return 2
        recipe = dataclasses.replace(recipe, settings={k: v for k, v in recipe.settings.items() if k in args.settings})
    if args.batch_sizes:
        try:
            recipe = dataclasses.replace(recipe, batch_sizes=[int(b) for b in args.batch_sizes.split(",")])
        except ValueError as exc:
            print(f"throughput: --batch-sizes {args.batch_sizes!r}: {exc}; give positive integers, e.g. 32,64")
            return 2
    if args.models:
        every = architectures or paper_architectures(recipe.falcon_layers, recipe.qwen3_layers)
        unknown = [m for m in args.models if m not in every]
        if unknown:
            print(f"throughput: unknown --models {unknown}; choose from {list(every)}")
            return 2
        architectures = {m: every[m] for m in args.models}
    name = f"throughput_records_{args.tag}.json" if args.tag else "throughput_records.json"
    t0 = time.time()
    study = Study(recipe, out, device=args.device, budget_s=args.budget_s, architectures=architectures,
                  free_bytes=free, hf_compare=not args.no_hf, records_name=name, variants=not args.no_variants)
    try:
        study.run()
    except Exception as exc:  # noqa: BLE001 - keep what was measured, say what stopped it
        study.add(kind="fatal", error=repr(exc)[:1000])
        print(f"[throughput] stopped by {exc!r}", flush=True)
    summary = summarize(load_records(out), positions_needed=recipe.positions)  # every records file in --out
    summary["wall_s"] = round(time.time() - t0, 1)
    write_json(out / (f"throughput_summary_{args.tag}.json" if args.tag else "throughput_summary.json"), summary)
    print(json.dumps(summary, indent=1, sort_keys=True))
    if not args.smoke:
        for line in targets(summary, papers.load("fig8_throughput")):
            print("[target]", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
