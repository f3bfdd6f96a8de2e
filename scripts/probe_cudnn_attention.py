#!/usr/bin/env python3
"""cuDNN fused SDPA (cuDNN frontend Python API, paged K/V) on NanoFlow's paged KV layout.

For the GPU machine. Measures decode (TB/s of K+V read) and causal prefill (TFLOP/s) at
Llama-3-8B shapes (32 query heads, 8 KV heads, head_dim 128, bf16, page size 16), to compare
with our FlashInfer path on the same cases (tests/kernels/test_kernel_bench.cpp,
Bench.DISABLED_FlashInferPaged, which prints `FI_ATTN {json}` lines).

Layout, as the engine keeps it per layer: one bf16 tensor [num_pages, 2, KVH, 16, 128]; page p
holds K at [p, 0] and V at [p, 1] (HND inside a page). cuDNN gets K and V as strided views of
that one tensor (page stride 2*KVH*16*128 elements); if it refuses them the case is rerun with
separate K and V containers [num_pages, KVH, 16, 128] and the output says so (kv_layout).
Page tables are shuffled; queries are rows [T, 32*128]; prefill queries are the last tokens of
their context (causal, bottom-right aligned), passed packed with ragged offsets (THD).

Each case: graph build time (first and a repeat build of the same shape), correctness against a
PyTorch reference on a few requests, timing with CUDA events (warm-up, median of several
samples). Errors are recorded per case and the script continues. One JSON object is printed at
the end (after a line `CUDNN_ATTN_JSON`) and written to $OUT/cudnn_attention.json if $OUT is set.

Needs the nvidia-cudnn-frontend wheel (module `cudnn`), e.g. from .whl/:
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site python3 scripts/probe_cudnn_attention.py
Options: --quick (fewer reps), --cases check,decode,prefill,kernel_cache (subset),
--impls UNIFIED,COMPOSITE (default; AUTO also accepted).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
import zlib

import torch
import torch.nn.functional as F

H, KVH, D, PAGE = 32, 8, 128, 16
SCALE = 1.0 / math.sqrt(D)
DEV = "cuda"

# (name, kind, per-request new tokens, per-request context length incl. the new tokens)
DECODE_CASES = [
    ("decode_683x1280", [1] * 683, [1280] * 683),
    ("decode_256x4096", [1] * 256, [4096] * 256),
    ("decode_64x16384", [1] * 64, [16384] * 64),
    ("decode_560x1280", [1] * 560, [1280] * 560),
]
PREFILL_CASES = [
    ("prefill_1x2048_prefix0", [2048], [2048]),
    ("prefill_1x1488_prefix0", [1488], [1488]),
    ("prefill_1x1488_prefix1024", [1488], [1024 + 1488]),
    ("prefill_4x512_prefix0", [512] * 4, [512] * 4),
]
# Not timed for the comparison: partial last pages, mixed lengths, mixed prefill and decode rows.
CHECK_CASES = [
    ("check_decode_mixed", "decode", [1] * 6, [1, 15, 16, 17, 1000, 1283]),
    ("check_prefill_mixed", "prefill", [7, 97, 300, 1, 16], [7, 97, 337, 129, 16]),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def err_str(e):
    s = f"{type(e).__name__}: {e}"
    return s if len(s) < 2000 else s[:2000] + "..."


class Case:
    """Inputs of one case in our layout, on the GPU."""

    def __init__(self, name, kind, q_lens, kv_lens, seed=0):
        assert len(q_lens) == len(kv_lens)
        assert all(0 < q <= kv for q, kv in zip(q_lens, kv_lens))
        self.name, self.kind = name, kind
        self.q_lens, self.kv_lens = list(q_lens), list(kv_lens)
        self.B = len(q_lens)
        self.T = sum(q_lens)
        self.max_q = max(q_lens)
        self.pages_per_req = [(L + PAGE - 1) // PAGE for L in kv_lens]
        self.max_pages = max(self.pages_per_req)
        self.num_pages = sum(self.pages_per_req)
        g = torch.Generator(device="cpu")
        g.manual_seed(seed)
        perm = torch.randperm(self.num_pages, generator=g).to(torch.int32)
        # Page ids per request (shuffled over the whole pool), padded with 0 (a valid page).
        table = torch.zeros(self.B, self.max_pages, dtype=torch.int32)
        self.page_lists = []
        off = 0
        for b, n in enumerate(self.pages_per_req):
            table[b, :n] = perm[off:off + n]
            self.page_lists.append(perm[off:off + n].to(torch.int64))
            off += n
        self.page_table = table.to(DEV).reshape(self.B, 1, self.max_pages, 1).contiguous()
        torch.manual_seed(seed)
        # Our per-layer KV tensor. Unwritten tails of last pages hold random data too: a kernel
        # that reads past seq_len_kv gets a wrong answer.
        self.kv = torch.randn(self.num_pages, 2, KVH, PAGE, D, device=DEV, dtype=torch.bfloat16)
        self.q = torch.randn(self.T, H * D, device=DEV, dtype=torch.bfloat16)
        self.o = torch.empty(self.T, H * D, device=DEV, dtype=torch.bfloat16)
        self.seq_q = torch.tensor(q_lens, dtype=torch.int32, device=DEV).reshape(self.B, 1, 1, 1)
        self.seq_kv = torch.tensor(kv_lens, dtype=torch.int32, device=DEV).reshape(self.B, 1, 1, 1)
        qo = [0]
        for n in q_lens:
            qo.append(qo[-1] + n)
        self.qo_indptr = qo
        # Ragged offsets in elements of Q/O (rows of H*D).
        self.ragged = (torch.tensor(qo, dtype=torch.int32, device=DEV) * (H * D)).reshape(
            self.B + 1, 1, 1, 1)

    def k_view(self):
        return self.kv[:, 0]  # [NP, KVH, 16, 128], strides (2*KVH*16*128, 16*128, 128, 1)

    def v_view(self):
        return self.kv[:, 1]

    def kv_bytes(self):
        return sum(self.kv_lens) * KVH * D * 2 * 2  # K and V, bf16

    def causal_flops(self):
        # 4*H*D per (query row, visible key): QK^T and PV, 2 FLOPs per MAC.
        s = 0
        for q, kv in zip(self.q_lens, self.kv_lens):
            s += sum(range(kv - q + 1, kv + 1))
        return 4.0 * H * D * s

    def reference(self, b, k_src=None, v_src=None):
        """fp32 reference output rows [q_len, H*D] of request b (dense gather + SDPA)."""
        k_src = self.k_view() if k_src is None else k_src
        v_src = self.v_view() if v_src is None else v_src
        pages = self.page_lists[b].to(DEV)
        L, ql = self.kv_lens[b], self.q_lens[b]
        k = k_src[pages].permute(1, 0, 2, 3).reshape(KVH, -1, D)[:, :L].float()
        v = v_src[pages].permute(1, 0, 2, 3).reshape(KVH, -1, D)[:, :L].float()
        k = k.repeat_interleave(H // KVH, dim=0)
        v = v.repeat_interleave(H // KVH, dim=0)
        r0 = self.qo_indptr[b]
        q = self.q[r0:r0 + ql].float().reshape(ql, H, D).permute(1, 0, 2)  # [H, ql, D]
        pos_q = torch.arange(L - ql, L, device=DEV)[:, None]
        pos_k = torch.arange(L, device=DEV)[None, :]
        mask = pos_k <= pos_q  # bottom-right causal
        o = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask[None, None],
                                           scale=SCALE)[0]
        return o.permute(1, 0, 2).reshape(ql, H * D)


def time_gpu(fn, reps, inner):
    """Median over `reps` samples of the mean ms of `inner` back-to-back calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) / inner)
    return statistics.median(samples), min(samples), max(samples)


class CudnnSdpa:
    """One built cuDNN graph for one case shape."""

    def __init__(self, cudnn, handle, case, impl, separate_kv, ragged_q):
        self.cudnn, self.handle, self.case = cudnn, handle, case
        self.separate_kv = separate_kv
        self.ragged_q = ragged_q
        c = case
        dt = cudnn.data_type
        if separate_kv:
            self.k_buf = c.k_view().contiguous()
            self.v_buf = c.v_view().contiguous()
        else:
            self.k_buf, self.v_buf = c.k_view(), c.v_view()
        t0 = time.perf_counter()
        g = cudnn.pygraph(io_data_type=dt.BFLOAT16, intermediate_data_type=dt.FLOAT,
                          compute_data_type=dt.FLOAT, handle=handle)
        sq = c.max_q
        # Q/O logical [B, H, S_q, D] over rows of H*D (BSHD); packed (THD) with ragged offsets.
        qo_dim = [c.B, H, sq, D]
        qo_stride = [sq * H * D, D, H * D, 1]
        q = g.tensor(name="q", dim=qo_dim, stride=qo_stride, data_type=dt.BFLOAT16)
        k = g.tensor(name="k_container", dim=list(self.k_buf.shape), stride=list(self.k_buf.stride()),
                     data_type=dt.BFLOAT16)
        v = g.tensor(name="v_container", dim=list(self.v_buf.shape), stride=list(self.v_buf.stride()),
                     data_type=dt.BFLOAT16)
        pt_dim = [c.B, 1, c.max_pages, 1]
        pt_stride = [c.max_pages, c.max_pages, 1, 1]
        kt = g.tensor(name="k_table", dim=pt_dim, stride=pt_stride, data_type=dt.INT32)
        vt = g.tensor(name="v_table", dim=pt_dim, stride=pt_stride, data_type=dt.INT32)
        s_q = g.tensor(name="seq_len_q", dim=[c.B, 1, 1, 1], stride=[1, 1, 1, 1], data_type=dt.INT32)
        s_kv = g.tensor(name="seq_len_kv", dim=[c.B, 1, 1, 1], stride=[1, 1, 1, 1], data_type=dt.INT32)
        ro = None
        if ragged_q:
            ro = g.tensor(name="ragged_q", dim=[c.B + 1, 1, 1, 1], stride=[1, 1, 1, 1],
                          data_type=dt.INT32)
            q.set_ragged_offset(ro)
        kwargs = dict(name="sdpa", q=q, k=k, v=v, generate_stats=False, attn_scale=SCALE,
                      use_padding_mask=True, seq_len_q=s_q, seq_len_kv=s_kv,
                      paged_attention_k_table=kt, paged_attention_v_table=vt,
                      paged_attention_max_seq_len_kv=c.max_pages * PAGE,
                      compute_data_type=dt.FLOAT)
        if c.max_q > 1:  # decode rows see their whole context: no mask needed
            kwargs["diagonal_alignment"] = cudnn.diagonal_alignment.BOTTOM_RIGHT
            kwargs["diagonal_band_right_bound"] = 0
        if impl != "AUTO":
            kwargs["implementation"] = getattr(cudnn.attention_implementation, impl)
        o, _ = g.sdpa(**kwargs)
        o.set_output(True).set_dim(qo_dim).set_stride(qo_stride).set_data_type(dt.BFLOAT16)
        ro_o = None
        if ragged_q:
            ro_o = g.tensor(name="ragged_o", dim=[c.B + 1, 1, 1, 1], stride=[1, 1, 1, 1],
                            data_type=dt.INT32)
            o.set_ragged_offset(ro_o)
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()
        self.build_ms = (time.perf_counter() - t0) * 1e3
        self.graph = g
        try:
            self.plan_name = g.get_plan_name_at_index(0)
        except Exception as e:  # noqa: BLE001 - informational only
            self.plan_name = f"? ({err_str(e)})"
        self.ws = torch.empty(max(1, g.get_workspace_size()), device=DEV, dtype=torch.uint8)
        self.pack = {q: c.q, k: self.k_buf, v: self.v_buf, kt: c.page_table, vt: c.page_table,
                     s_q: c.seq_q, s_kv: c.seq_kv, o: c.o}
        if ragged_q:
            self.pack[ro] = c.ragged
            self.pack[ro_o] = c.ragged

    def run(self):
        self.graph.execute(self.pack, self.ws, handle=self.handle)


def check(case, runner, num_reqs):
    """Max abs error and relative Frobenius error over a few requests against the reference."""
    case.o.fill_(float("nan"))
    runner.run()
    torch.cuda.synchronize()
    picks = sorted(set([0, case.B - 1, case.B // 2][:num_reqs]))
    if num_reqs >= case.B:
        picks = list(range(case.B))
    max_abs, num, den = 0.0, 0.0, 0.0
    for b in picks:
        ref = case.reference(b, runner.k_buf, runner.v_buf)
        r0 = case.qo_indptr[b]
        out = case.o[r0:r0 + case.q_lens[b]].float()
        if not torch.isfinite(out).all():
            return {"ok": False, "reqs_checked": picks, "error": "non-finite output"}
        max_abs = max(max_abs, (out - ref).abs().max().item())
        num += ((out - ref) ** 2).sum().item()
        den += (ref ** 2).sum().item()
    rel = math.sqrt(num / max(den, 1e-30))
    return {"ok": bool(rel < 2e-2 and max_abs < 0.1), "reqs_checked": picks,
            "max_abs_err": round(max_abs, 5), "rel_fro_err": round(rel, 6)}


def run_variant(cudnn, handle, case, impl, separate_kv, ragged_q, reps, inner, timed):
    rec = {"impl": impl, "kv_layout": "separate" if separate_kv else "interleaved",
           "q_layout": "ragged" if ragged_q else "padded"}
    runner = CudnnSdpa(cudnn, handle, case, impl, separate_kv, ragged_q)
    rec["build_ms"] = round(runner.build_ms, 2)
    rec["plan"] = runner.plan_name
    rec["workspace_bytes"] = int(runner.ws.numel())
    # The same shape built again in this process (the first build of a process pays extra setup).
    t0 = time.perf_counter()
    CudnnSdpa(cudnn, handle, case, impl, separate_kv, ragged_q)
    rec["rebuild_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    rec["check"] = check(case, runner, 3 if case.kind != "check" else case.B)
    if timed:
        ms, lo, hi = time_gpu(runner.run, reps, inner)
        rec["ms"], rec["ms_min"], rec["ms_max"] = round(ms, 4), round(lo, 4), round(hi, 4)
        if case.kind == "decode":
            rec["TB_per_s"] = round(case.kv_bytes() / ms / 1e9, 3)
        else:
            rec["TFLOP_per_s"] = round(case.causal_flops() / ms / 1e9, 1)
        # Host cost of one execute() call (Python + cuDNN enqueue), no sync inside.
        torch.cuda.synchronize()
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            runner.run()
        rec["host_execute_us"] = round((time.perf_counter() - t0) / n * 1e6, 1)
        torch.cuda.synchronize()
    del runner
    return rec


def run_case(cudnn, handle, name, kind, q_lens, kv_lens, impls, reps, inner, timed=True):
    res = {"case": name, "kind": kind, "batch": len(q_lens), "q_tokens": sum(q_lens),
           "kv_len": kv_lens[0] if len(set(kv_lens)) == 1 else kv_lens,
           "q_len": q_lens[0] if len(set(q_lens)) == 1 else q_lens}
    try:
        case = Case(name, kind, q_lens, kv_lens, seed=zlib.crc32(name.encode()) & 0xFFFF)
    except Exception as e:  # noqa: BLE001
        res["error"] = "setup: " + err_str(e)
        return res
    res["num_pages"] = case.num_pages
    if kind == "decode":
        res["kv_bytes"] = case.kv_bytes()
    else:
        res["causal_flops"] = case.causal_flops()
    res["variants"] = []
    ragged_q = case.max_q > 1  # decode: one row per request, plain [B, H, 1, D]
    for impl in impls:
        done = False
        errors = []
        for separate_kv in (False, True):
            try:
                rec = run_variant(cudnn, handle, case, impl, separate_kv, ragged_q, reps, inner, timed)
                if errors:
                    rec["note"] = "interleaved K/V views refused, separate K and V containers used"
                    rec["interleaved_error"] = errors[-1]
                res["variants"].append(rec)
                done = True
                break
            except Exception as e:  # noqa: BLE001
                errors.append(err_str(e))
                log(f"[{name}] impl {impl} {'separate' if separate_kv else 'interleaved'} K/V: "
                    f"{errors[-1]}")
                torch.cuda.synchronize()
        if not done and ragged_q:
            # Packed Q refused: one more try with a padded Q (only valid when all q_lens match).
            if len(set(q_lens)) == 1:
                try:
                    rec = run_variant(cudnn, handle, case, impl, False, False, reps, inner, timed)
                    rec["note"] = "ragged (packed) Q refused, padded Q used"
                    rec["ragged_error"] = errors[-1]
                    res["variants"].append(rec)
                    done = True
                except Exception as e:  # noqa: BLE001
                    errors.append(err_str(e))
        if not done:
            res["variants"].append({"impl": impl, "error": errors})
    ok = [v for v in res["variants"] if "ms" in v]
    if ok:
        best = min(ok, key=lambda v: v["ms"])
        res["best"] = {k: best[k] for k in ("impl", "kv_layout", "ms", "TB_per_s", "TFLOP_per_s",
                                            "build_ms", "rebuild_ms") if k in best}
        res["best"]["check_ok"] = best["check"].get("ok")
    del case
    torch.cuda.empty_cache()
    return res


class _Bound:
    def __init__(self, run, k_buf, v_buf):
        self.run, self.k_buf, self.v_buf = run, k_buf, v_buf


def kernel_cache_probe(cudnn, handle, separate_kv):
    """Dynamic-shape graphs with a kernel cache: build time of a second batch shape."""
    out = {"kv_layout": "separate" if separate_kv else "interleaved",
           "impl": "AUTO (dynamic shapes rule out UNIFIED, so COMPOSITE)"}
    try:
        kc = cudnn.create_kernel_cache()
        dt = cudnn.data_type
        times = []
        for B, L in ((683, 1280), (560, 1280), (256, 4096)):
            c = Case(f"kc_{B}x{L}", "decode", [1] * B, [L] * B, seed=B)
            kv_k, kv_v = c.k_view(), c.v_view()
            if separate_kv:
                kv_k, kv_v = kv_k.contiguous(), kv_v.contiguous()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            g = cudnn.pygraph(io_data_type=dt.BFLOAT16, intermediate_data_type=dt.FLOAT,
                              compute_data_type=dt.FLOAT, handle=handle,
                              is_dynamic_shape_enabled=True, kernel_cache=kc)
            q = g.tensor(name="q", dim=[B, H, 1, D], stride=[H * D, D, H * D, 1], data_type=dt.BFLOAT16)
            k = g.tensor(name="k", dim=list(kv_k.shape), stride=list(kv_k.stride()), data_type=dt.BFLOAT16)
            v = g.tensor(name="v", dim=list(kv_v.shape), stride=list(kv_v.stride()), data_type=dt.BFLOAT16)
            pd, ps = [B, 1, c.max_pages, 1], [c.max_pages, c.max_pages, 1, 1]
            kt = g.tensor(name="kt", dim=pd, stride=ps, data_type=dt.INT32)
            vt = g.tensor(name="vt", dim=pd, stride=ps, data_type=dt.INT32)
            sq = g.tensor(name="sq", dim=[B, 1, 1, 1], stride=[1, 1, 1, 1], data_type=dt.INT32)
            skv = g.tensor(name="skv", dim=[B, 1, 1, 1], stride=[1, 1, 1, 1], data_type=dt.INT32)
            o, _ = g.sdpa(name="sdpa", q=q, k=k, v=v, generate_stats=False, attn_scale=SCALE,
                          use_padding_mask=True, seq_len_q=sq, seq_len_kv=skv,
                          paged_attention_k_table=kt, paged_attention_v_table=vt,
                          paged_attention_max_seq_len_kv=c.max_pages * PAGE,
                          compute_data_type=dt.FLOAT)
            o.set_output(True).set_dim([B, H, 1, D]).set_stride([H * D, D, H * D, 1])
            g.validate()
            g.build_operation_graph()
            g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
            g.check_support()
            g.build_plans()
            ms = (time.perf_counter() - t0) * 1e3
            ws = torch.empty(max(1, g.get_workspace_size()), device=DEV, dtype=torch.uint8)
            pack = {q: c.q, k: kv_k, v: kv_v, kt: c.page_table, vt: c.page_table, sq: c.seq_q,
                    skv: c.seq_kv, o: c.o}
            runner = _Bound(lambda g=g, pack=pack, ws=ws: g.execute(pack, ws, handle=handle),
                            kv_k, kv_v)
            chk = check(c, runner, 2)
            tms, _, _ = time_gpu(runner.run, 5, 5)
            times.append({"shape": f"{B}x{L}", "build_ms": round(ms, 2), "check_ok": chk.get("ok"),
                          "ms": round(tms, 4), "TB_per_s": round(c.kv_bytes() / tms / 1e9, 3)})
            del c
        out["decode_dynamic_shape_with_kernel_cache"] = times
    except Exception as e:  # noqa: BLE001
        out["error"] = err_str(e)
    torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default="check,decode,prefill,kernel_cache")
    # AUTO picks UNIFIED when the graph's features allow it, else COMPOSITE: naming both covers
    # AUTO's choice and shows the other.
    ap.add_argument("--impls", default="UNIFIED,COMPOSITE",
                    help="comma list of AUTO, COMPOSITE, UNIFIED (each case is built once per impl)")
    args = ap.parse_args()
    reps, inner = (5, 5) if args.quick else (9, 10)
    which = set(args.cases.split(","))
    impls = args.impls.split(",")

    result = {"probe": "cudnn_paged_sdpa", "shape": {"H": H, "KVH": KVH, "D": D, "page": PAGE,
                                                     "dtype": "bf16"},
              "timing": f"median of {reps} samples of {inner} back-to-back executes (CUDA events)",
              "torch": torch.__version__, "cases": []}
    try:
        result["gpu"] = torch.cuda.get_device_name(0)
        result["torch_cudnn"] = torch.backends.cudnn.version()
    except Exception as e:  # noqa: BLE001
        result["gpu_error"] = err_str(e)
    try:
        import cudnn  # noqa: PLC0415
        result["cudnn_frontend"] = getattr(cudnn, "__version__", "?")
        result["cudnn_backend"] = cudnn.backend_version()
        handle = cudnn.create_handle()
        cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
    except Exception as e:  # noqa: BLE001
        result["error"] = "cudnn frontend unavailable: " + err_str(e)
        finish(result)
        return

    todo = []
    if "check" in which:
        todo += [(n, k, q, kv, False) for n, k, q, kv in CHECK_CASES]
    if "decode" in which:
        todo += [(n, "decode", q, kv, True) for n, q, kv in DECODE_CASES]
    if "prefill" in which:
        todo += [(n, "prefill", q, kv, True) for n, q, kv in PREFILL_CASES]
    for name, kind, q_lens, kv_lens, timed in todo:
        t0 = time.perf_counter()
        try:
            res = run_case(cudnn, handle, name, kind if timed else "check", q_lens, kv_lens, impls,
                           reps, inner, timed)
        except Exception as e:  # noqa: BLE001
            res = {"case": name, "error": err_str(e), "trace": traceback.format_exc()[-1500:]}
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        result["cases"].append(res)
        b = res.get("best", {})
        log(f"{name}: " + (json.dumps(b) if b else json.dumps(res)[:1500]))
        save(result)  # partial results survive a timeout
    if "kernel_cache" in which:
        # Interleaved K/V unless only separate containers worked in the decode cases.
        layouts = [v.get("kv_layout") for r in result["cases"] if r.get("kind") == "decode"
                   for v in r.get("variants", []) if "ms" in v]
        separate = bool(layouts) and "interleaved" not in layouts
        result["kernel_cache"] = kernel_cache_probe(cudnn, handle, separate)
        log("kernel_cache: " + json.dumps(result["kernel_cache"]))
    result["summary"] = {r["case"]: r.get("best", r.get("error", "no timed variant"))
                         for r in result["cases"] if r.get("kind") != "check"}
    result["checks_ok"] = all(v.get("check", {}).get("ok", False)
                              for r in result["cases"] for v in r.get("variants", []) if "check" in v)
    finish(result)


def finish(result):
    text = json.dumps(result, indent=1)
    print("CUDNN_ATTN_JSON")
    print(text, flush=True)
    save(result)


def save(result):
    text = json.dumps(result, indent=1)
    out = os.environ.get("OUT")
    if out:
        try:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "cudnn_attention.json"), "w") as f:
                f.write(text + "\n")
        except OSError as e:
            log(f"could not write $OUT/cudnn_attention.json: {e}")


if __name__ == "__main__":
    main()
