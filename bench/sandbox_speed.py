"""How fast the sandbox grades code: programs per second with one sandbox per program, and what the
tiny preset's curation asks of it.

- grading: ``sandbox.grade_programs`` on procedurally generated code problems (half the answers
  right, half wrong) at several worker counts;
- latency: one program at a time, end to end, and the sandbox server's start-up;
- curation load: how many programs the preset's curation sends to the sandbox (its SFT traces'
  code answers and the pass-rate rollouts of its RL code problems), and the time that takes at the
  measured rate;
- the attack suite's wall time (``--attacks``).

Prints a few readable lines; the last line is one JSON record.

    python bench/sandbox_speed.py                       # ~30 s on 2 CPU cores
    python bench/sandbox_speed.py --programs 512 --workers 1,2,4,8 --attacks
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from falcon_h1r import sandbox
from falcon_h1r.sandbox.pool import Server
from falcon_h1r.tasks import make_problem


def _items(n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = make_problem("code", rng.choice([1, 2, 3]), rng)
        code = p["answer"] if i % 2 == 0 else p["answer"].replace("return", "return 1 +", 1)
        out.append((code, p["tests"]))
    return out


def _curation_programs(preset_name: str) -> dict[str, int]:
    from falcon_h1r import curation as C
    from falcon_h1r.config import load_preset
    from falcon_h1r.sections.common import task_sets

    preset = load_preset(preset_name, {"device": "cpu"})
    recipe = C.load_recipe(preset)
    sets = task_sets(preset)
    traces = sum(1 for r in C.sft_pool(preset, recipe, sets["train"]) if r.get("domain") == "code")
    rl_code = sum(1 for p in C.rl_candidates(preset, recipe, sets) if p.get("domain") == "code")
    return {"sft_code_traces": traces, "rl_code_rollouts": rl_code * recipe.pass_rate_k}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=256, help="programs graded per worker count")
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    ap.add_argument("--latency-runs", type=int, default=50)
    ap.add_argument("--preset", default="tiny", help="whose curation load to count ('' to skip)")
    ap.add_argument("--attacks", action="store_true", help="also time the attack suite")
    args = ap.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",")]
        if not workers or min(workers) < 1:
            raise ValueError
    except ValueError:
        print(f"--workers must be comma-separated positive ints, got {args.workers!r}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    Server().close()
    start_s = time.perf_counter() - t0
    report = sandbox.isolation_report()
    print(f"isolation: missing layers {report['missing'] or 'none'}; server start {start_s * 1000:.0f} ms")

    items = _items(args.programs, 0)
    rates = {}
    for w in workers:
        t0 = time.perf_counter()
        results = sandbox.grade_programs(items, timeout_s=2.0, workers=w)
        rates[w] = len(items) / (time.perf_counter() - t0)
        passed = sum(r.passed for r in results)
        print(f"grade_programs: {len(items)} programs, {w} worker(s): {rates[w]:.0f} programs/s "
              f"({passed} passed, {len(items) - passed} failed)")
    lat = []
    for code, tests in items[: args.latency_runs]:
        t0 = time.perf_counter()
        sandbox.run_python_tests(code, tests, timeout_s=2.0)
        lat.append(time.perf_counter() - t0)
    median_ms = statistics.median(lat) * 1000
    print(f"one program end to end: median {median_ms:.1f} ms over {len(lat)} runs")

    record = {"bench": "sandbox_speed", "programs": len(items), "programs_per_s": {str(w): r for w, r in rates.items()},
              "latency_median_ms": median_ms, "server_start_ms": start_s * 1000,
              "missing_layers": report["missing"]}
    if args.preset:
        load = _curation_programs(args.preset)
        total = sum(load.values())
        best = max(rates.values())
        print(f"{args.preset} curation: {total} programs ({load}) = {total / best:.1f} s at {best:.0f} programs/s")
        record.update({"preset": args.preset, "curation_programs": load,
                       "curation_sandbox_s_at_best_rate": total / best})
    if args.attacks:
        t0 = time.perf_counter()
        rows = sandbox.run_attack_suite()
        summary = sandbox.summarize(rows)
        record.update({"attack_suite_s": time.perf_counter() - t0, "attacks_tried": summary["tried"],
                       "attacks_contained": summary["contained"]})
        print(f"attack suite: {summary['contained']}/{summary['tried']} contained in {record['attack_suite_s']:.1f} s")
        for r in rows:
            if not r["contained"]:
                print(f"  not contained: {r['name']}: reason {r['reason']!r}, failed "
                      f"{[k for k, ok in r['host_ok'].items() if not ok]}")
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
