"""Fig. 8 on vLLM: write the ``vllm bench`` scripts, or read their JSON into one table beside the paper.

    python scripts/vllm_fig8.py commands --out-dir results/paper/04_throughput/vllm      # writes fig8_latency.sh,
                                                                                        # fig8_throughput.sh there
    bash results/paper/04_throughput/vllm/fig8_latency.sh            # on a 4-GPU node, requirements-vllm.txt env
    python scripts/vllm_fig8.py read --out-dir results/paper/04_throughput/vllm --device "4x H100"

``--models`` maps the paper's model names to local checkpoint directories (JSON), e.g.
``'{"Falcon-H1R-7B": "/ckpt/Falcon-H1R-7B", "Qwen3-8B": "/ckpt/Qwen3-8B"}'``. The last stdout line is one JSON record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from falcon_h1r.scaleout import vllm_bench as vb

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["commands", "read"])
    ap.add_argument("--out-dir", default="results/paper/04_throughput/vllm")
    ap.add_argument("--models", default=None, help="JSON: paper model name -> local checkpoint or hub id")
    ap.add_argument("--parallelism", choices=["parallelism_paper", "parallelism"], default="parallelism_paper",
                    help="the paper text's TP/DP rule (default) or the blog's tooltips")
    ap.add_argument("--device", default="", help="what ran it, for the table's source column (read)")
    args = ap.parse_args(argv)
    points = vb.fig8_points(parallelism_column=args.parallelism)
    out = Path(args.out_dir)
    if args.cmd == "commands":
        models = json.loads(args.models) if args.models else None
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for kind in vb.KINDS:
            path = out / f"fig8_{kind}.sh"
            path.write_text(vb.script(points, kind, str(out), models=models))
            path.chmod(0o755)
            written.append(str(path))
        print(json.dumps({"kind": "vllm_fig8_commands", "points": len(points), "scripts": written}))
    else:
        table = vb.read_results(out, points, device=args.device)
        if table.empty:
            print(f"no vllm bench JSON under {out}/latency or {out}/throughput yet", file=sys.stderr)
            return 2
        path = out / "fig8_vllm.csv"
        table.to_csv(path, index=False)
        print(table.to_string(index=False), file=sys.stderr)
        print(json.dumps({"kind": "vllm_fig8_table", "rows": len(table), "csv": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
