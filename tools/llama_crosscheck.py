#!/usr/bin/env python3
"""Cross-checks skv's model runner against llama.cpp (llama-cpp-python) on the same GGUF.

A 256-token prompt of English prose (GPL-3 from Debian's /usr/share/common-licenses, or a
built-in paragraph) is tokenized by skv, run through both runners with logits for every
position, and compared: top-1 agreement must be >= 99% and perplexity (over the 255 next-token
predictions) within 1%. Exit 0 pass, 1 fail, 77 skip (no llama_cpp, model or probe).

Recent llama.cpp CPU builds quantize activations to 8 bits before multiplying by Q4/Q8 weights,
which moves logits by ~0.1 and flips the argmax where the top two are nearly tied; skv (like
llama.cpp's older OpenBLAS path) multiplies by the dequantized F32 weights. So a position also
counts as agreeing when llama.cpp's logit for skv's top-1 is within --tie (default 0.25) of its
own top-1; raw agreement and every disagreement's margin are printed too.
  pip install llama-cpp-python   (compiles llama.cpp when no wheel fits; takes a while)
"""
import argparse
import json
import math
import os
import subprocess
import sys

GPL3 = "/usr/share/common-licenses/GPL-3"
FALLBACK = ("The licenses for most software and other practical works are designed to take away "
            "your freedom to share and change the works. By contrast, the GNU General Public "
            "License is intended to guarantee your freedom to share and change all versions of a "
            "program--to make sure it remains free software for all its users. ") * 8


def prose():
    if os.path.exists(GPL3):
        return open(GPL3, encoding="utf-8").read()[1500:]
    return FALLBACK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--model", default="samples/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--tie", type=float, default=0.25)
    a = ap.parse_args()
    try:
        import numpy as np
        from llama_cpp import Llama
    except ImportError as e:
        print(f"llama_crosscheck: skipped ({e}; pip install llama-cpp-python)")
        return 77
    if not os.path.exists(a.model) or not os.path.exists(a.probe):
        print("llama_crosscheck: skipped (model or probe missing; samples/fetch-model)")
        return 77

    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prose())
        text_path = f.name
    ids = json.loads(subprocess.run([a.probe, "tokenize", a.model, text_path], check=True,
                                    capture_output=True, text=True).stdout)["ids"]
    os.unlink(text_path)
    ids = ids[: a.tokens]
    assert len(ids) == a.tokens, "prose too short"

    ours = json.loads(subprocess.run([a.probe, "logits", a.model, *map(str, ids)], check=True,
                                     capture_output=True, text=True).stdout)

    llm = Llama(model_path=a.model, n_ctx=max(512, a.tokens), n_batch=a.tokens, logits_all=True,
                verbose=False, n_threads=2)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
    ref_top1 = logits.argmax(axis=1)
    mx = logits.max(axis=1, keepdims=True)
    logp = logits - mx - np.log(np.exp(logits - mx).sum(axis=1, keepdims=True))
    ref_lp = [logp[t, ids[t + 1]] for t in range(len(ids) - 1)]

    ours_top1 = np.array(ours["top1"])
    agree = float(np.mean(ours_top1 == ref_top1))
    rows = np.arange(len(ids))
    margin = logits[rows, ref_top1] - logits[rows, ours_top1]
    agree_tie = float(np.mean(margin <= a.tie))
    import llama_cpp
    ppl_ours = math.exp(-sum(ours["logprob"]) / len(ours["logprob"]))
    ppl_ref = math.exp(-sum(ref_lp) / len(ref_lp))
    rel = abs(ppl_ours - ppl_ref) / ppl_ref
    lp_diff = float(np.max(np.abs(np.array(ours["logprob"]) - np.array(ref_lp))))
    res = {"llama_cpp_version": llama_cpp.__version__, "tokens": len(ids), "top1_agreement": agree,
           "top1_agreement_tie_tolerant": agree_tie,
           "disagreement_margins": [round(float(m), 4) for m in margin[ours_top1 != ref_top1]], "ppl_skv": ppl_ours, "ppl_llama_cpp": ppl_ref,
           "ppl_rel_diff": rel, "max_abs_logprob_diff": lp_diff}
    print("llama_crosscheck:", json.dumps(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    ok = agree_tie >= 0.99 and rel <= 0.01
    print("llama_crosscheck:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
