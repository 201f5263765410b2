#!/usr/bin/env python3
"""Cross-checks skv's tokenizer against llama.cpp's (llama-cpp-python, vocab_only) on prose,
code, numbers and non-ASCII text: ids must be identical, and decode(encode(s)) == s.
Exit 0 pass, 1 fail, 77 skip (no llama_cpp, model or probe)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

SAMPLES = [
    "Hello world! It's a test, isn't it? We'll see: they've done 1234 things in 2024.",
    "  Leading spaces,\ttabs\tand\n\nnew lines\r\n   trailing   ",
    "naïve café — 東京タワー, Ελληνικά, русский текст, emoji 🙂🚀 and math ∑x² ≈ 3.14159.",
    "def f(x):\n    return x**2 + 10  # comment\n\nprint(f(3)); a = [1,2,3]\n",
    "I'M SHOUTING'S OK? 'quoted' \"double\" (paren) {brace} <tag/> ##hash## 100% $5.00 a@b.c",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--model", default="samples/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    a = ap.parse_args()
    try:
        from llama_cpp import Llama
    except ImportError as e:
        print(f"tokenizer_crosscheck: skipped ({e}; pip install llama-cpp-python)")
        return 77
    if not os.path.exists(a.model) or not os.path.exists(a.probe):
        print("tokenizer_crosscheck: skipped (model or probe missing; samples/fetch-model)")
        return 77
    texts = list(SAMPLES)
    if os.path.exists("/usr/share/common-licenses/GPL-3"):
        texts.append(open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()[:12000])
    llm = Llama(model_path=a.model, vocab_only=True, verbose=False)
    ok = True
    for i, text in enumerate(texts):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write(text)
            path = f.name
        ours = json.loads(subprocess.run([a.probe, "tokenize", a.model, path], check=True,
                                         capture_output=True, text=True).stdout)["ids"]
        os.unlink(path)
        ref = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        back = json.loads(subprocess.run([a.probe, "detok", a.model, *map(str, ours)], check=True,
                                         capture_output=True, text=True).stdout)["text"]
        same = ours == list(ref)
        first = next((k for k, (x, y) in enumerate(zip(ours, ref)) if x != y), None)
        print(f"sample {i}: {len(ours)} tokens (llama.cpp {len(ref)}) ids {'identical' if same else 'DIFFER at ' + str(first)}"
              f", round trip {'ok' if back == text else 'BROKEN'}")
        ok &= same and back == text
    print("tokenizer_crosscheck:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
