"""Where a decode step's time goes, and what the engine's alternative paths change (GPU).

    python3 bench/decode_profile.py --out $OUT [--layers 44] [--batches 32,64,104] [--contexts 160,16384]

For the Falcon-H1R-7B architecture (random bf16 weights) it writes ``$OUT/decode_profile.json`` with:

* ``kernels``: one eager decode step under ``torch.profiler``, kernel time summed per category (matmuls,
  attention, SSM update, sampling, small element-wise kernels) and the number of kernels, with the captured
  graph's step time beside it (the gap is launch overhead). It runs first, on an engine that has captured no graph
  and compiled nothing: the profiler beside graph pools and compiled steps hit a ``CUDACachingAllocator`` internal
  assert on the H200 (2026-12), and a failure here is recorded, not fatal;
* ``ssm_update``: the SSM state update alone, one layer, float32 and bfloat16 states: our Triton kernel
  (:func:`falcon_h1r.inference.decode_kernels.ssm_state_update`, tuned) and mamba-ssm's, time and bandwidth
  (the state read and written), and ``ssm_update_sweep``: our kernel's tile configurations at the first batch;
* ``attention``: SDPA, the eager matmul formula and the split-KV Triton kernel on one layer's live cache;
* ``steps``: the captured step for every (batch, context, path) with its roofline ratio, a path being
  ``attention:glue:state_update:state_dtype`` (e.g. ``triton:compiled:triton:bfloat16``).

Figures print as they come; nothing here is a test. The last stdout line is one JSON record of the headline
figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PATHS = ("triton:compiled:triton:float32,triton:compiled:mamba_ssm:float32,"
                 "triton:compiled:triton:bfloat16,sdpa:plain:mamba_ssm:float32")


def _time_cuda(fn: Any, reps: int = 20, warm: int = 3) -> float:
    import torch

    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3 / reps


CATEGORIES = (("attention", ("attn_partial", "attn_combine", "fmha", "flash", "efficient_attention", "cutlass")),
              ("ssm_update", ("selective_state", "_selective_scan_update", "_ssm_state_update")),
              ("matmul", ("gemm", "gemv", "sm90_xmma", "cublas", "nvjet", "splitk", "matmul")),
              ("sampling", ("sort", "topk", "radix", "cumsum", "scan", "softmax", "argmax", "exponential")),
              ("reduction", ("reduce", "norm")),
              ("copy_index", ("copy", "index", "cat", "fill")))


def parse_path(path: str) -> dict[str, Any]:
    """``attention:glue:state_update:state_dtype`` -> the engine's keyword arguments."""
    import torch

    parts = path.split(":")
    if len(parts) != 4 or parts[1] not in ("plain", "compiled") or parts[3] not in ("float32", "bfloat16"):
        raise ValueError(f"--paths: {path!r} is not attention:plain|compiled:state_update:float32|bfloat16 "
                         "(e.g. triton:compiled:triton:bfloat16)")
    return {"attention": parts[0], "compile": parts[1] == "compiled", "state_update": parts[2],
            "ssm_state_dtype": getattr(torch, parts[3])}


def build_engine(model: Any, batch: int, context: int, **kw: Any) -> Any:
    """An engine for ``batch`` rows up to ``context`` (+64) tokens, caches filled with random values and
    sampling noise drawn (a step's cost does not depend on either)."""
    import torch

    from falcon_h1r.inference.engine import DecodeEngine

    eng = DecodeEngine(model, batch, context + 64, **kw)
    eng.prepare_outputs(64, 20)
    eng.noise = torch.empty(batch, eng.arch["vocab"], dtype=torch.float32, device="cuda").exponential_()
    eng.fill_random(0)
    return eng


def time_captured_step(eng: Any, kv_len: int, sampling: tuple, context: int) -> float:
    """Seconds per replay of the step captured for ``kv_len`` columns, every row at ``context`` tokens."""
    g = eng.graph(kv_len, sampling, None, True)
    eng.set_position(context, 1)
    return _time_cuda(g.replay, reps=10, warm=2)


def categorize(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "elementwise_other"


def kernel_profile(eng: Any, kv_len: int, sampling: tuple) -> dict[str, Any]:
    """One eager step under torch.profiler (after one untimed step), kernel time per category."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    eng._step_body(kv_len, sampling, None, True)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        eng._step_body(kv_len, sampling, None, True)
        torch.cuda.synchronize()
    per_cat: dict[str, float] = {}
    counts: dict[str, int] = {}
    top: dict[str, float] = {}
    n = 0
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        dur = ev.device_time_total / 1e6 if hasattr(ev, "device_time_total") else ev.cuda_time_total / 1e6
        cat = categorize(ev.name)
        per_cat[cat] = per_cat.get(cat, 0.0) + dur
        counts[cat] = counts.get(cat, 0) + 1
        top[ev.name[:90]] = top.get(ev.name[:90], 0.0) + dur
        n += 1
    return {"kernels": n, "kernel_s_total": sum(per_cat.values()), "per_category_s": per_cat,
            "per_category_count": counts,
            "top_kernels_s": dict(sorted(top.items(), key=lambda kv: -kv[1])[:25])}


def state_update_inputs(arch: dict[str, Any], batch: int, state_dtype: Any) -> tuple:
    """One layer's decode-step inputs at Falcon-H1R-7B's shapes, laid out as the engine passes them."""
    import torch

    NH, HD, N, G = arch["m_heads"], arch["m_head_dim"], arch["d_state"], arch["n_groups"]
    bf = dict(device="cuda", dtype=torch.bfloat16)
    st = (torch.randn(batch, NH, HD, N, device="cuda") * 0.1).to(state_dtype)
    x = torch.randn(batch, NH, HD, **bf)
    dt = torch.randn(batch, NH, **bf)[:, :, None].expand(batch, NH, HD)
    # negate before expanding: -t.expand(...) would materialise the view, which the kernel rightly refuses
    A = (-torch.rand(NH, device="cuda"))[:, None, None].expand(NH, HD, N)
    Bm, Cm = torch.randn(batch, G, N, **bf), torch.randn(batch, G, N, **bf)
    D = torch.randn(NH, device="cuda")[:, None].expand(NH, HD)
    dtb = torch.randn(NH, device="cuda")[:, None].expand(NH, HD)
    return st, x, dt, A, Bm, Cm, D, dtb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=44)
    ap.add_argument("--batches", default="32,64,104")
    ap.add_argument("--contexts", default="160,16384")
    ap.add_argument("--paths", default=DEFAULT_PATHS, help="comma-separated attention:glue:state_update:state_dtype")
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler kernel breakdown")
    ap.add_argument("--budget-s", type=float, default=300)
    args = ap.parse_args()

    import torch

    from falcon_h1r.inference import decode_kernels
    from falcon_h1r.inference.engine import DecodeEngine
    from falcon_h1r.inference.engine_ops import ssm_update, triton_state_update
    from falcon_h1r.models import falcon_h1r_7b_config
    from falcon_h1r.results import write_json
    from falcon_h1r.throughput import copy_seconds, decode_step_bytes, param_count

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    contexts = [int(c) for c in args.contexts.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    try:
        kwargs = {p: parse_path(p) for p in paths}
    except ValueError as exc:
        ap.error(str(exc))
    rec: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "layers": args.layers,
                           "paths": paths, "steps": [], "attention": [], "ssm_update": [], "ssm_update_sweep": []}
    path = out / "decode_profile.json"

    def save() -> None:
        write_json(path, rec)

    def left() -> float:
        return args.budget_s - (time.time() - t_start)

    n = 1 << 30
    bw = 2 * n / copy_seconds("cuda", n)  # the study's measurement (a copy reads and writes every byte)
    rec["hbm_copy_bytes_per_s"] = bw
    print(f"HBM copy {bw / 1e9:.0f} GB/s", flush=True)

    config = falcon_h1r_7b_config(args.layers)
    params = param_count(config)
    torch.manual_seed(0)
    with torch.device("cuda"):
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    sampling = (0.6, 0.95, 20, -1, 0)
    a = DecodeEngine(model, 1, 64, cuda_graph=False).arch

    # --- 1. the kernel profile, first: a fresh eager engine, no graph captured and nothing compiled yet
    B0, C0 = batches[0], contexts[len(contexts) // 2]
    if not args.no_profile:
        eng = None
        try:
            eng = build_engine(model, B0, C0, cuda_graph=False)
            eng.set_position(C0, 1)
            kp = kernel_profile(eng, eng.kv_len_for(C0 + 12), sampling)
            kp.update(batch=B0, context=C0, engine=dict(eng.info), graph_step_s=None)
            rec["kernels"] = kp
            print(f"profile B={B0} ctx={C0}: {kp['kernels']} kernels, {kp['kernel_s_total'] * 1e3:.2f} ms of kernel "
                  "time; " + ", ".join(f"{k} {v * 1e3:.2f} ms/{kp['per_category_count'][k]}"
                                       for k, v in sorted(kp["per_category_s"].items(), key=lambda kv: -kv[1])),
                  flush=True)
        except Exception as exc:  # noqa: BLE001 - recorded; the rest of the profile runs
            rec["kernels"] = {"batch": B0, "context": C0, "error": repr(exc)[:400],
                              "traceback": traceback.format_exc()[-1500:]}
            print(f"profile failed: {exc!r}"[:300], flush=True)
        del eng
        torch.cuda.empty_cache()
        save()

    # --- 2. the SSM state update alone: ours (tuned) and mamba-ssm's, float32 and bfloat16 states
    updates = ["triton"] + (["mamba_ssm"] if triton_state_update() is not None else [])
    for B in batches:
        for sd in (torch.float32, torch.bfloat16):
            st, x, dt, A, Bm, Cm, D, dtb = state_update_inputs(a, B, sd)
            nbytes = 2 * st.numel() * st.element_size()
            row: dict[str, Any] = {"batch": B, "state_dtype": str(sd).replace("torch.", ""), "state_bytes_rw": nbytes,
                                   "roofline_s": nbytes / bw}
            for upd in updates:
                try:
                    t = _time_cuda(lambda: ssm_update(st, x, dt, A, Bm, Cm, D=D, dt_bias=dtb, path=upd))
                    row[upd] = {"s_per_layer": t, "bytes_per_s": nbytes / t, "s_all_layers": t * args.layers,
                                "over_roofline": t / row["roofline_s"]}
                except Exception as exc:  # noqa: BLE001
                    row[upd] = {"error": repr(exc)[:300]}
            if B == batches[0]:
                for block_p, warps in decode_kernels.STATE_UPDATE_CONFIGS:
                    try:
                        t = _time_cuda(lambda: decode_kernels.ssm_state_update(
                            st, x, dt, A, Bm, Cm, D=D, dt_bias=dtb, block_p=block_p, num_warps=warps))
                        rec["ssm_update_sweep"].append({"batch": B, "state_dtype": row["state_dtype"], "block_p": block_p,
                                                        "num_warps": warps, "s": t, "bytes_per_s": nbytes / t})
                    except Exception as exc:  # noqa: BLE001
                        rec["ssm_update_sweep"].append({"batch": B, "state_dtype": row["state_dtype"],
                                                        "block_p": block_p, "num_warps": warps, "error": repr(exc)[:200]})
            rec["ssm_update"].append(row)
            print(f"ssm update B={B} {row['state_dtype']} (roofline {row['roofline_s'] * 1e6:.0f} us): " + ", ".join(
                f"{u} {row[u]['s_per_layer'] * 1e6:.0f} us/layer {row[u]['bytes_per_s'] / 1e9:.0f} GB/s"
                for u in updates if "s_per_layer" in row[u]), flush=True)
            del st, x
    rec["ssm_update_tuned"] = decode_kernels.tuned_state_update_configs()
    save()

    # --- 3. attention alone and the captured step per path
    graph_s_for_profile = None
    for B in batches:
        for ctx in contexts:
            if left() < 20:
                rec.setdefault("skipped", []).append([B, ctx])
                continue
            kv_len = None
            for p in paths:
                kw = kwargs[p]
                row = {"batch": B, "context": ctx, "path": p, "attention": kw["attention"], "compiled": kw["compile"],
                       "state_update": kw["state_update"], "ssm_state_dtype": str(kw["ssm_state_dtype"]).replace("torch.", "")}
                eng = None
                try:
                    eng = build_engine(model, B, ctx, **kw)
                    kv_len = eng.kv_len_for(ctx + 12)
                    t = time_captured_step(eng, kv_len, sampling, ctx)
                    nb = decode_step_bytes(config, B, ctx + 1, params=params,
                                           ssm_state_bytes=kw["ssm_state_dtype"].itemsize)
                    roof = nb["total"] / bw
                    row.update(kv_len=kv_len, step_s=t, roofline_s=roof, step_over_roofline=t / roof, bytes=nb,
                               tok_s=B / t, engine=dict(eng.info))
                    print(f"step B={B} ctx={ctx} {p}: {t * 1e3:.2f} ms (roofline {roof * 1e3:.2f} ms, x{t / roof:.2f})",
                          flush=True)
                    if B == B0 and ctx == C0 and p == "sdpa:plain:mamba_ssm:float32":
                        graph_s_for_profile = t
                except torch.OutOfMemoryError:
                    row["error"] = "does not fit"
                    print(f"step B={B} ctx={ctx} {p}: does not fit", flush=True)
                except Exception as exc:  # noqa: BLE001
                    row["error"] = repr(exc)[:400]
                    print(f"step B={B} ctx={ctx} {p}: failed {exc!r}"[:300], flush=True)
                rec["steps"].append(row)
                if eng is not None and p == paths[0] and kv_len is not None:
                    attention_alone(eng, a, B, kv_len, rec)
                del eng
                torch.cuda.empty_cache()
                save()
    if isinstance(rec.get("kernels"), dict) and "error" not in rec["kernels"]:
        rec["kernels"]["graph_step_s"] = graph_s_for_profile
    rec["wall_s"] = time.time() - t_start
    save()
    ok = [r for r in rec["steps"] if "step_s" in r]
    best = {}
    for r in ok:
        k = (r["batch"], r["context"])
        if k not in best or r["step_s"] < best[k]["step_s"]:
            best[k] = r
    print(json.dumps({"kind": "decode_profile", "gpu": rec["gpu"], "wall_s": round(rec["wall_s"], 1),
                      "best_step_over_roofline": {f"bs{b}_ctx{c}": [round(r["step_over_roofline"], 3), r["path"]]
                                                  for (b, c), r in best.items()},
                      "ssm_update_us_per_layer": {f"bs{r['batch']}_{r['state_dtype']}": {
                          u: round(r[u]["s_per_layer"] * 1e6, 1) for u in updates if "s_per_layer" in r.get(u, {})}
                          for r in rec["ssm_update"]},
                      "profile": "ok" if "error" not in rec.get("kernels", {"error": 1}) else "failed"}))


def attention_alone(eng: Any, a: dict[str, Any], B: int, kv_len: int, rec: dict[str, Any]) -> None:
    """SDPA, the matmul formula and the split-KV Triton kernel on layer 0's live cache."""
    import torch

    q = torch.randn(B, a["kv_heads"], a["heads"] // a["kv_heads"], a["head_dim"], dtype=torch.bfloat16, device="cuda")
    valid = torch.ones(B, eng.max_len, dtype=torch.bool, device="cuda")
    bias = torch.zeros(B, 1, 1, kv_len, dtype=torch.bfloat16, device="cuda")
    keys, values = eng.k_cache[0, :, :, :kv_len], eng.v_cache[0, :, :, :kv_len]
    kv_bytes = 2 * keys.numel() * keys.element_size()
    ref = eng._attend(q, keys, values, bias, 0.088, "sdpa", valid)
    arow: dict[str, Any] = {"batch": B, "kv_len": kv_len, "kv_bytes": kv_bytes}
    for mode in ("sdpa", "matmul", "triton"):
        try:
            t = _time_cuda(lambda: eng._attend(q, keys, values, bias, 0.088, mode, valid))
            diff = float((eng._attend(q, keys, values, bias, 0.088, mode, valid).float() - ref.float()).abs().max())
            arow[mode] = {"s": t, "bytes_per_s": kv_bytes / t, "max_abs_diff_vs_sdpa": diff}
        except Exception as exc:  # noqa: BLE001
            arow[mode] = {"error": repr(exc)[:300]}
    rec["attention"].append(arow)
    print(f"attention B={B} kv={kv_len}: " + ", ".join(
        f"{m} {arow[m]['s'] * 1e6:.0f} us {arow[m]['bytes_per_s'] / 1e9:.0f} GB/s"
        for m in ("sdpa", "matmul", "triton") if "s" in arow[m]), flush=True)


if __name__ == "__main__":
    main()
