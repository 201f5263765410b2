#!/usr/bin/env python3
"""Fuzzes skv's hand-written pre-tokenizer splits against the real regexes run by the Python
`regex` module (which has \\p{L}/\\p{N}): random strings mixing letters of several scripts,
digits, punctuation, symbols, spaces, tabs, CR/LF, NBSP and apostrophes. Exit 0 pass, 1 fail,
77 skip (no `regex` module or probe)."""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
ALPHABET = list("abcXYZ'stremvld") + ["é", "ß", "東", "京", "Ж", "ω", "١", "½", "Ⅻ", "0", "1", "7",
           " ", " ", " ", "\t", "\n", "\r", "\u00a0", "\u3000", "!", ".", ",", "-", "(", "🙂", "€", "_", "\u0301"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--model", default=None, help="unused; accepted for CTest uniformity")
    ap.add_argument("--cases", type=int, default=3000)
    a = ap.parse_args()
    try:
        import regex
    except ImportError as e:
        print(f"pretokenize_crosscheck: skipped ({e}; pip install regex)")
        return 77
    if not os.path.exists(a.probe):
        print("pretokenize_crosscheck: skipped (no probe)")
        return 77
    rng = random.Random(7)
    cases = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 24))) for _ in range(a.cases)]

    def digits_then(pat):
        def split(s):
            out = []
            for part in regex.split(r"(\p{N})", s):
                if part:
                    out += [part] if regex.fullmatch(r"\p{N}", part) else regex.findall(pat, part)
            return out
        return split

    refs = {"gpt2": lambda s: regex.findall(GPT2, s), "digits_gpt2": digits_then(GPT2),
            "llama3": lambda s: regex.findall(LLAMA3, s), "qwen2": lambda s: regex.findall(QWEN2, s)}
    ok = True
    with tempfile.NamedTemporaryFile("w", delete=False, encoding="utf-8", newline="") as f:
        f.write("\x1e".join(cases))
        path = f.name
    for kind, ref in refs.items():
        got = json.loads(subprocess.run([a.probe, "pretok", kind, path], check=True,
                                        capture_output=True, text=True).stdout)
        bad = [(c, g, ref(c)) for c, g in zip(cases, got) if g != ref(c)]
        print(f"{kind}: {len(cases) - len(bad)}/{len(cases)} identical")
        for c, g, r in bad[:3]:
            print(f"  {c!r}: skv {g} regex {r}")
        ok &= not bad
    os.unlink(path)
    print("pretokenize_crosscheck:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
