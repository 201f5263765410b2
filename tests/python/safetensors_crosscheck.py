#!/usr/bin/env python3
"""Cross-check skv's safetensors reader/writer against the reference Python library.

usage: safetensors_crosscheck.py ST_ROUNDTRIP WORKDIR

(a) files written by the Python library (F16, BF16, F32, U8, BOOL, with metadata) go through
    skv's Reader and Writer (st_roundtrip) and must come back with identical names, dtypes,
    shapes, tensor bytes and metadata;
(b) the files skv writes must load in the Python library unchanged, and, given tensors in the
    order the Python library uses, be byte-identical to what it writes.
Exits 77 (CTest: skipped) when numpy or safetensors is not installed.
"""
import json
import os
import subprocess
import sys

try:
    import numpy as np
    import safetensors
    from safetensors import deserialize, safe_open
    from safetensors.numpy import save
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"SKIP: python3 with numpy and safetensors is needed ({e})")
    sys.exit(77)

try:
    import ml_dtypes  # numpy bfloat16, so the Python library can write BF16
except ImportError:
    ml_dtypes = None


def raw_tensors(blob):
    """name -> (dtype, shape, bytes) using the library's dtype-agnostic parser."""
    return {name: (t["dtype"], list(t["shape"]), bytes(t["data"])) for name, t in deserialize(blob)}


def layout(blob):
    """Header length, ordered tensor entries and data bytes; metadata compared as a dict."""
    n = int.from_bytes(blob[:8], "little")
    pairs = json.loads(blob[8:8 + n], object_pairs_hook=list)
    entries = [(k, v) for k, v in pairs if k != "__metadata__"]
    meta = {k: dict(v) if v else {} for k, v in pairs if k == "__metadata__"}
    return n, entries, meta, blob[8 + n:]


def metadata_of(path):
    with safe_open(path, framework="numpy") as f:
        return f.metadata() or {}


def cases():
    rng = np.random.default_rng(7)
    yield "mixed", {
        "layers.0.k": rng.standard_normal((2, 5, 64)).astype(np.float16),
        "layers.0.v": rng.standard_normal((2, 5, 64)).astype(np.float32),
        "layers.0.mask": (rng.random(5) > 0.5).astype(np.uint8),
        "flags": rng.random(3) > 0.5,
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float16),
    }, {"model": "test/model", "rope_theta": "10000", "note": "caf\u00e9 \"quoted\""}
    yield "no_metadata", {"a": np.arange(7, dtype=np.uint8)}, None
    if ml_dtypes is not None:
        yield "bf16", {
            "past_key_values.0.key": rng.standard_normal((1, 4, 3, 80)).astype(ml_dtypes.bfloat16),
            "past_key_values.0.value": rng.standard_normal((1, 4, 3, 80)).astype(ml_dtypes.bfloat16),
        }, {"architecture": "X"}
    else:
        print("note: ml_dtypes not installed; BF16 written by Python is not checked")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    tool, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failures = 0
    for name, tensors, meta in cases():
        src = os.path.join(work, f"{name}.py.safetensors")
        dst = os.path.join(work, f"{name}.skv.safetensors")
        blob = save(tensors, metadata=meta)
        with open(src, "wb") as f:
            f.write(blob)
        r = subprocess.run([tool, src, dst], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL {name}: st_roundtrip exited {r.returncode}: {r.stderr.strip()}")
            failures += 1
            continue
        with open(dst, "rb") as f:
            out = f.read()
        # (b) the Python library loads skv's file ...
        try:
            got, got_meta = raw_tensors(out), metadata_of(dst)
        except Exception as e:  # noqa: BLE001 - any failure to load is the finding
            print(f"FAIL {name}: Python safetensors cannot load skv's output: {e}")
            failures += 1
            continue
        # (a) ... and it holds exactly what Python wrote.
        want = raw_tensors(blob)
        if got != want:
            diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            print(f"FAIL {name}: tensors differ after the skv round trip: {diff}")
            failures += 1
        if got_meta != (meta or {}):
            print(f"FAIL {name}: metadata {got_meta!r} != {meta!r}")
            failures += 1
        # skv keeps the Python library's tensor order (st_roundtrip writes in offset order), so
        # header entries, padding and data must match byte for byte; only __metadata__ key order
        # may differ (the Rust library writes it in hash-map order, skv sorted).
        if layout(out) != layout(blob):
            print(f"FAIL {name}: skv's file layout differs from the Python library's")
            failures += 1
        print(f"checked {name}: {len(want)} tensors")
    print(f"safetensors {safetensors.__version__}: {'all cross-checks passed' if not failures else f'{failures} failures'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
