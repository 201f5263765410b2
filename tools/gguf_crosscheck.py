#!/usr/bin/env python3
"""Cross-checks skv's GGUF reader and dequantization against the Python `gguf` package.

Two sources of tensors:
  * a small GGUF written here with gguf.GGUFWriter, holding F32, F16, BF16, Q4_0, Q4_1 and Q8_0
    tensors quantized by gguf.quants.quantize from random data;
  * a few tensors of the sample model (Q8_0 embedding, Q4_1 projections, F32 norms), if present.
For each, skv_model_probe dequantizes sampled flat indices and the results must equal what
gguf.quants.dequantize gives (to 1e-6 relative). Exit 0 on success, 1 on a mismatch, 77 (skip)
when `gguf` (pip install gguf) or the probe is missing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf import quants
except ImportError as e:  # pragma: no cover
    print(f"gguf_crosscheck: skipped ({e}; pip install gguf)")
    sys.exit(77)


def probe_values(probe, path, name, idx):
    out = subprocess.run([probe, "dequant", path, name, *map(str, idx)], check=True,
                         capture_output=True, text=True).stdout
    d = json.loads(out)
    return d["type"], np.array(d["values"], dtype=np.float64), d["sum"]


def check_file(probe, path, names, rng):
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    ok = True
    for name in names:
        t = tensors[name]
        want = quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
        n = want.size
        idx = sorted(set(range(min(n, 96))) | set(rng.integers(0, n, size=min(n, 1500)).tolist()))
        typ, got, total = probe_values(probe, path, name, idx)
        diff = np.abs(got - want[idx])
        tol = 1e-6 * (1 + np.abs(want[idx]))
        bad = int((diff > tol).sum())
        sum_ok = abs(total - want.sum()) <= 1e-4 * (1 + np.abs(want).sum())
        status = "ok" if bad == 0 and sum_ok else "MISMATCH"
        ok &= status == "ok"
        print(f"{os.path.basename(path)}:{name} {typ} n={n} checked={len(idx)} "
              f"max_abs_diff={diff.max():.3g} sum_skv={total:.6g} sum_gguf={want.sum():.6g} {status}")
    return ok


def write_synthetic(path, rng):
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("general.alignment", 64)
    T = gguf.GGMLQuantizationType
    base = rng.standard_normal((8, 256)).astype(np.float32) * 3
    w.add_tensor("f32", base)
    w.add_tensor("f16", base.astype(np.float16))
    names = ["f32", "f16"]
    for qt in (T.BF16, T.Q4_0, T.Q4_1, T.Q8_0):
        q = quants.quantize(base, qt)
        w.add_tensor(qt.name.lower(), q, raw_shape=q.shape, raw_dtype=qt)
        names.append(qt.name.lower())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--model", default="samples/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    a = ap.parse_args()
    if not os.path.exists(a.probe):
        print("gguf_crosscheck: skipped (no probe binary)")
        return 77
    rng = np.random.default_rng(1234)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        syn = os.path.join(tmp, "synthetic.gguf")
        ok &= check_file(a.probe, syn, write_synthetic(syn, rng), rng)
    if os.path.exists(a.model):
        ok &= check_file(a.probe, a.model, ["token_embd.weight", "blk.0.attn_q.weight",
                                            "blk.7.ffn_down.weight", "output_norm.weight"], rng)
    else:
        print(f"gguf_crosscheck: {a.model} absent (samples/fetch-model); synthetic tensors only")
    print("gguf_crosscheck:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
