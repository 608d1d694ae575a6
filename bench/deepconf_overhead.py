"""What DeepConf's live early stop costs per decode step, as a fraction of the step.

Decodes the same batch with and without an ``EarlyStopController`` (its threshold set so that it never
fires, EOS disabled, so both decode the same steps) through the engine ``--engine`` resolves to: on a
GPU the fast engine of ``falcon_h1r/inference/engine.py`` (static caches, the controller captured in the step's
CUDA graph), else transformers' loop; ``falcon_h1r.deepconf.measure_confidence_overhead`` does the timing.
Prints one JSON line; ``--write`` also stores it as ``results/<preset>/05_deepconf/overhead.json`` (what
notebook 05 renders when it does not measure).
Target on GPU: at most 3 % of a decode step.

    python bench/deepconf_overhead.py --preset small            # on a GPU
    python bench/deepconf_overhead.py --preset tiny --repeats 3 # CPU, a few seconds

The model has the preset's shapes with random weights (a step's cost does not depend on the values);
``--model base`` uses the preset's cached SFT base model instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from falcon_h1r.config import load_preset  # noqa: E402
from falcon_h1r.deepconf import measure_confidence_overhead  # noqa: E402
from falcon_h1r.sections.common import model_device, torch_threads  # noqa: E402
from falcon_h1r.sections.deepconf import SECTION, recipes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--engine", default="auto", choices=["auto", "hf", "fast"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: generation.batch_size")
    ap.add_argument("--new-tokens", type=int, default=None, help="default: generation.max_new_tokens")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="random", choices=["random", "base"])
    ap.add_argument("--write", action="store_true", help="store the record under results/<preset>/05_deepconf/")
    args = ap.parse_args(argv)

    import torch

    from falcon_h1r.env import device_info, pick_device
    from falcon_h1r.sections.common import torch_dtype

    preset = load_preset(args.preset)
    recipe, _ = recipes(preset)
    gen = preset.generation
    if args.model == "base":
        from falcon_h1r.sections.common import get_base_model

        base = get_base_model(preset, progress=False)
        model, vocab = base.model, base.tokenizer.vocab_size
    else:
        from falcon_h1r.models import build_model

        vocab = preset.tokenizer.vocab_size
        model = build_model(preset.model, vocab, seed=preset.seed, dtype=torch_dtype(preset))
        model = model.to(pick_device(preset.device)).eval()
    with torch.no_grad(), torch_threads(1, model_device(model)):  # decode as the section's driver does
        record = measure_confidence_overhead(
            model, vocab_size=vocab, batch_size=args.batch_size or gen.batch_size,
            new_tokens=args.new_tokens or gen.max_new_tokens, window=recipe.window, top_k=recipe.top_k,
            prompt_len=args.prompt_len, repeats=args.repeats, temperature=gen.temperature, top_p=gen.top_p,
            seed=preset.seed, engine=args.engine if args.engine != "auto" else gen.engine)
    record.update(preset=preset.name, model=args.model, dtype=preset.dtype, machine=device_info(),
                  target_fraction=0.03)
    print(json.dumps(record, sort_keys=True))
    if args.write:
        from falcon_h1r.results import section_dir, write_json

        path = section_dir(preset.name, SECTION) / "overhead.json"
        write_json(path, record)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
