"""Where a decode step's time goes, and what the engine's alternative paths change (GPU).

    python3 bench/decode_profile.py --out $OUT [--layers 44] [--batches 32,53,128] [--contexts 160,8192,24576]

For the Falcon-H1R-7B architecture (random bf16 weights) it writes ``$OUT/decode_profile.json`` with:

* ``kernels``: one eager decode step under ``torch.profiler``, kernel time summed per category (matmuls,
  attention, SSM update, sampling, small element-wise kernels), the number of kernels, and the captured
  graph's step time beside the sum of kernel times (the gap is launch overhead inside the graph);
* ``attention``: SDPA, the eager matmul formula and the split-KV Triton kernel on one layer's live cache,
  their times and effective bandwidth (K and V bytes over time), and the largest difference from SDPA;
* ``triton_sweep``: the Triton kernel's tile size and warps at one configuration;
* ``ssm_update``: mamba-ssm's state update alone, float32 and bfloat16 states, time and bandwidth;
* ``steps``: the captured step for every (batch, context, attention mode[, compile]) with its roofline ratio.

Figures print as they come; nothing here is a test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
              ("ssm_update", ("selective_state", "_selective_scan_update")),
              ("matmul", ("gemm", "gemv", "sm90_xmma", "cublas", "nvjet", "splitk", "matmul")),
              ("sampling", ("sort", "topk", "radix", "cumsum", "scan", "softmax", "argmax", "exponential")),
              ("reduction", ("reduce", "norm")),
              ("copy_index", ("copy", "index", "cat", "fill")))


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=44)
    ap.add_argument("--batches", default="32,53,128")
    ap.add_argument("--contexts", default="160,8192,24576")
    ap.add_argument("--modes", default="sdpa,triton")
    ap.add_argument("--compile", action="store_true", help="also time the engine's torch.compile'd layer glue")
    ap.add_argument("--ssm-bf16", action="store_true", help="also time the fastest variant with a bfloat16 SSM state")
    ap.add_argument("--budget-s", type=float, default=480)
    args = ap.parse_args()

    import torch

    from falcon_h1r.inference.engine import DecodeEngine
    from falcon_h1r.inference.engine_ops import triton_state_update
    from falcon_h1r.models import falcon_h1r_7b_config
    from falcon_h1r.results import write_json
    from falcon_h1r.throughput import copy_seconds, decode_step_bytes, param_count

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "layers": args.layers,
                           "steps": [], "attention": [], "triton_sweep": [], "ssm_update": []}
    path = out / "decode_profile.json"

    def save() -> None:
        write_json(path, rec)

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
    batches = [int(b) for b in args.batches.split(",")]
    contexts = [int(c) for c in args.contexts.split(",")]
    modes = args.modes.split(",")

    # --- the SSM state update alone
    ssu = triton_state_update()
    a = DecodeEngine(model, 1, 64, cuda_graph=False).arch
    for B in batches:
        for sd in (torch.float32, torch.bfloat16):
            NH, HD, N, G = a["m_heads"], a["m_head_dim"], a["d_state"], a["n_groups"]
            st = torch.randn(B, NH, HD, N, device="cuda").to(sd)
            x = torch.randn(B, NH, HD, device="cuda", dtype=torch.bfloat16)
            dt = torch.randn(B, NH, device="cuda", dtype=torch.bfloat16)[:, :, None].expand(B, NH, HD)
            A = -torch.rand(NH, device="cuda")[:, None, None].expand(NH, HD, N)
            Bm = torch.randn(B, G, N, device="cuda", dtype=torch.bfloat16)
            Cm = torch.randn(B, G, N, device="cuda", dtype=torch.bfloat16)
            Dv = torch.randn(NH, device="cuda")[:, None].expand(NH, HD)
            dtb = torch.randn(NH, device="cuda")[:, None].expand(NH, HD)
            t = _time_cuda(lambda: ssu(st, x, dt, A, Bm, Cm, D=Dv, z=None, dt_bias=dtb, dt_softplus=True))
            nbytes = 2 * st.numel() * st.element_size()
            rec["ssm_update"].append({"batch": B, "state_dtype": str(sd), "s_per_layer": t,
                                      "bytes_per_s": nbytes / t, "s_all_layers": t * args.layers})
            print(f"ssm update B={B} {sd}: {t * 1e6:.0f} us/layer, {nbytes / t / 1e9:.0f} GB/s", flush=True)
            del st
    save()

    for B in batches:
        for ctx in contexts:
            if time.time() - t_start > args.budget_s:
                rec.setdefault("skipped", []).append([B, ctx])
                continue
            try:
                eng = build_engine(model, B, ctx)
            except torch.OutOfMemoryError:
                rec.setdefault("oom", []).append([B, ctx])
                print(f"B={B} ctx={ctx}: does not fit", flush=True)
                continue
            kv_len = eng.kv_len_for(ctx + 12)
            nbytes = decode_step_bytes(config, B, ctx + 1, params=params)
            roof = nbytes["total"] / bw
            # attention alone on layer 0
            q = torch.randn(B, a["kv_heads"], a["heads"] // a["kv_heads"], a["head_dim"], dtype=torch.bfloat16,
                            device="cuda")
            valid = torch.ones(B, eng.max_len, dtype=torch.bool, device="cuda")
            bias = torch.zeros(B, 1, 1, kv_len, dtype=torch.bfloat16, device="cuda")
            keys, values = eng.k_cache[0, :, :, :kv_len], eng.v_cache[0, :, :, :kv_len]
            kv_bytes = 2 * keys.numel() * keys.element_size()
            ref = eng._attend(q, keys, values, bias, 0.088, "sdpa", valid)
            arow = {"batch": B, "kv_len": kv_len, "kv_bytes": kv_bytes}
            for mode in ("sdpa", "matmul", "triton"):
                try:
                    t = _time_cuda(lambda: eng._attend(q, keys, values, bias, 0.088, mode, valid))
                    diff = float((eng._attend(q, keys, values, bias, 0.088, mode, valid).float()
                                  - ref.float()).abs().max())
                    arow[mode] = {"s": t, "bytes_per_s": kv_bytes / t, "max_abs_diff_vs_sdpa": diff}
                except Exception as exc:  # noqa: BLE001
                    arow[mode] = {"error": repr(exc)[:300]}
            rec["attention"].append(arow)
            print(f"attention B={B} kv={kv_len}: " + ", ".join(
                f"{m} {arow[m]['s'] * 1e6:.0f} us {arow[m]['bytes_per_s'] / 1e9:.0f} GB/s"
                for m in ("sdpa", "matmul", "triton") if "s" in arow[m]), flush=True)
            if B == batches[0] and ctx == contexts[-1]:
                from falcon_h1r.inference.decode_kernels import split_kv_attention
                for bn in (32, 64, 128):
                    for nw in (2, 4, 8):
                        for ns in (1, 2, 3):
                            try:
                                t = _time_cuda(lambda: split_kv_attention(q, keys, values, valid, 0.088, block_n=bn,
                                                                          num_warps=nw, num_stages=ns), reps=10)
                                rec["triton_sweep"].append({"block_n": bn, "num_warps": nw, "num_stages": ns,
                                                            "s": t, "bytes_per_s": kv_bytes / t})
                            except Exception as exc:  # noqa: BLE001
                                rec["triton_sweep"].append({"block_n": bn, "num_warps": nw, "num_stages": ns,
                                                            "error": repr(exc)[:200]})
                best = min((r for r in rec["triton_sweep"] if "s" in r), key=lambda r: r["s"], default=None)
                print(f"triton sweep best: {best}", flush=True)
            # captured steps, per attention mode (and compiled glue)
            variants = [(m, False) for m in modes] + ([(m, True) for m in modes] if args.compile else [])
            for mode, comp in variants:
                try:
                    eng.attention = mode
                    if comp != getattr(eng, "compiled", False):
                        eng.set_compiled(comp)
                    eng._graphs.clear()
                    t = time_captured_step(eng, kv_len, sampling, ctx)
                    row = {"batch": B, "context": ctx, "kv_len": kv_len, "attention": mode, "compiled": comp,
                           "step_s": t, "roofline_s": roof, "step_over_roofline": t / roof,
                           "bytes": nbytes, "tok_s": B / t}
                    rec["steps"].append(row)
                    print(f"step B={B} ctx={ctx} {mode}{' compiled' if comp else ''}: {t * 1e3:.2f} ms "
                          f"(roofline {roof * 1e3:.2f} ms, x{t / roof:.2f})", flush=True)
                except Exception as exc:  # noqa: BLE001
                    rec["steps"].append({"batch": B, "context": ctx, "attention": mode, "compiled": comp,
                                         "error": repr(exc)[:400]})
                    print(f"step B={B} ctx={ctx} {mode} compiled={comp}: failed {exc!r}"[:300], flush=True)
            if B == batches[0] and ctx == contexts[len(contexts) // 2]:
                eng.attention = "sdpa"
                if getattr(eng, "compiled", False):
                    eng.set_compiled(False)
                eng.set_position(ctx, 1)
                kp = kernel_profile(eng, kv_len, sampling)
                graph_s = next((r["step_s"] for r in rec["steps"] if r.get("batch") == B and r.get("context") == ctx
                                and r.get("attention") == "sdpa" and not r.get("compiled") and "step_s" in r), None)
                kp.update(batch=B, context=ctx, graph_step_s=graph_s)
                rec["kernels"] = kp
                print(f"profile B={B} ctx={ctx}: {kp['kernels']} kernels, {kp['kernel_s_total'] * 1e3:.2f} ms of "
                      f"kernel time, graph step {graph_s and graph_s * 1e3:.2f} ms; "
                      + ", ".join(f"{k} {v * 1e3:.2f} ms/{kp['per_category_count'][k]}"
                                  for k, v in sorted(kp["per_category_s"].items(), key=lambda kv: -kv[1])), flush=True)
            if args.ssm_bf16 and rec["steps"]:
                # the fastest variant again with a bfloat16 SSM state (vLLM's default: the model dtype)
                ok = [r for r in rec["steps"] if r.get("batch") == B and r.get("context") == ctx and "step_s" in r]
                if ok:
                    best = min(ok, key=lambda r: r["step_s"])
                    del q, valid, bias, keys, values, ref, eng
                    torch.cuda.empty_cache()
                    try:
                        eng = build_engine(model, B, ctx, ssm_state_dtype=torch.bfloat16,
                                           attention=best["attention"], compile=best["compiled"])
                        t = time_captured_step(eng, kv_len, sampling, ctx)
                        nb = decode_step_bytes(config, B, ctx + 1, params=params, ssm_state_bytes=2)
                        rec["steps"].append({"batch": B, "context": ctx, "kv_len": kv_len, "attention": best["attention"],
                                             "compiled": best["compiled"], "ssm_state_dtype": "bfloat16", "step_s": t,
                                             "roofline_s": nb["total"] / bw, "step_over_roofline": t / (nb["total"] / bw),
                                             "tok_s": B / t})
                        print(f"step B={B} ctx={ctx} {best['attention']} compiled={best['compiled']} bf16 state: "
                              f"{t * 1e3:.2f} ms (x{t / (nb['total'] / bw):.2f} of its roofline)", flush=True)
                    except Exception as exc:  # noqa: BLE001
                        print(f"bf16 state B={B} ctx={ctx}: failed {exc!r}"[:300], flush=True)
            save()
            q = valid = bias = keys = values = ref = eng = None  # the views keep the caches alive otherwise
            torch.cuda.empty_cache()
    rec["wall_s"] = time.time() - t_start
    save()
    print(f"done in {rec['wall_s']:.0f} s -> {path}", flush=True)


if __name__ == "__main__":
    main()
