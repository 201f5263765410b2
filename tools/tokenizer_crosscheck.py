#!/usr/bin/env python3
"""Cross-checks skv's tokenizer on prose, code, numbers and non-ASCII text against
  * HuggingFace `tokenizers` (pip install tokenizers), built from the GGUF's own vocabulary and
    merges with SmolLM2's pre-tokenizer (Digits(individual) then ByteLevel regex): the reference
    the model was trained with; and
  * llama.cpp (pip install llama-cpp-python, vocab_only), when importable. llama.cpp releases
    older than mid-2024 predate the "smollm" pre-tokenizer and split differently; their
    mismatches are reported but only fail the check with --strict-llama.
Ids must be identical to the reference, and decode(encode(s)) == s. Exit 0 pass, 1 fail, 77 skip.
"""
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
    "Section 12.\n\n  0. Definitions.\n\n  \"This License\" refers to version 3.",
]


def hf_tokenizer(model):
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    r = gguf.GGUFReader(model)
    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    if pre != "smollm":
        raise RuntimeError(f"tokenizer.ggml.pre is {pre!r}; this reference is built for smollm")
    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in reversed(list(enumerate(tokens)))}
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    return lambda s: tok.encode(s, add_special_tokens=False).ids


def llama_tokenizer(model):
    from llama_cpp import Llama
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    return lambda s: list(llm.tokenize(s.encode("utf-8"), add_bos=False, special=False))


def run_probe(probe, *args):
    return json.loads(subprocess.run([probe, *args], check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--model", default="samples/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--strict-llama", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(a.model) or not os.path.exists(a.probe):
        print("tokenizer_crosscheck: skipped (model or probe missing; samples/fetch-model)")
        return 77
    refs = {}
    for name, make in (("hf-tokenizers", hf_tokenizer), ("llama.cpp", llama_tokenizer)):
        try:
            refs[name] = make(a.model)
        except ImportError as e:
            print(f"tokenizer_crosscheck: {name} unavailable ({e})")
    if not refs:
        print("tokenizer_crosscheck: skipped (pip install tokenizers gguf, or llama-cpp-python)")
        return 77
    texts = list(SAMPLES)
    if os.path.exists("/usr/share/common-licenses/GPL-3"):
        texts.append(open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()[:12000])
    ok = True
    for i, text in enumerate(texts):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write(text)
            path = f.name
        ours = run_probe(a.probe, "tokenize", a.model, path)["ids"]
        os.unlink(path)
        back = run_probe(a.probe, "detok", a.model, *map(str, ours))["text"]
        line = [f"sample {i}: {len(ours)} tokens, round trip {'ok' if back == text else 'BROKEN'}"]
        ok &= back == text
        for name, enc in refs.items():
            ref = enc(text)
            same = ours == ref
            first = next((k for k, (x, y) in enumerate(zip(ours, ref)) if x != y), min(len(ours), len(ref)))
            line.append(f"{name}: {'identical' if same else f'DIFFER at {first} ({len(ref)} tokens)'}")
            if name == "hf-tokenizers" or a.strict_llama:
                ok &= same
        print("; ".join(line))
    print("tokenizer_crosscheck:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
