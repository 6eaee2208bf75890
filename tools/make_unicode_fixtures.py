#!/usr/bin/env python3
"""Makes tests/fixtures/unicode/cases.json: reference results for the tokenizer's Unicode
code.

  nfc:     [input_hex, output_hex] of Hugging Face tokenizers' NFC normalizer, the one the
           engine must match, for every character with a canonical decomposition (given
           decomposed), the valid corpus strings, and seeded random runs of starters and
           combining marks (marks of every class, old and new)
  replace: [bytes_hex, bytes.decode("utf-8", errors="replace")_hex] for seeded random
           byte strings biased towards UTF-8 lead and continuation bytes

Needs: pip install tokenizers (and network once for the pinned Unicode data).
"""
import json
import os
import random
import sys

from tokenizers import normalizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unicode_versions  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "unicode", "cases.json")


def nfc_cases(rng):
    ucd = unicode_versions.load(unicode_versions.NFC)
    inputs = []
    for cp in range(0x110000):
        decomposition = ucd.decomposition(chr(cp))
        if decomposition and not decomposition.startswith("<"):
            inputs.append(ucd.normalize("NFD", chr(cp)))
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "corpus.jsonl")) as f:
        for line in f:
            raw = bytes.fromhex(json.loads(line)["hex"])
            inputs.append(raw.decode("utf-8", errors="replace"))
    marks = [cp for cp in range(0x110000) if ucd.combining(chr(cp))]
    starters = [ord(c) for c in "aAeEiIoOuUyYcCnNsSwZ"] + [0x1100, 0x1112, 0xAC00, 0x3046,
                                                             0x304B, 0x915, 0x5D0, 0x3B1,
                                                             0x11935, 0x1161, 0x11A8]
    for _ in range(2000):
        text = "".join(chr(rng.choice(starters if rng.random() < 0.4 else marks))
                       for _ in range(rng.randint(1, 8)))
        inputs.append(text)
    reference = normalizers.NFC()
    return [[s.encode("utf-8").hex(), reference.normalize_str(s).encode("utf-8").hex()]
            for s in inputs]


def replace_cases(rng):
    interesting = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                   0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5,
                   0xFE, 0xFF]
    cases = []
    for _ in range(1500):
        raw = bytes(rng.choice(interesting) if rng.random() < 0.8 else rng.randrange(256)
                    for _ in range(rng.randint(1, 12)))
        cases.append([raw.hex(), raw.decode("utf-8", errors="replace").encode("utf-8").hex()])
    return cases


def main():
    rng = random.Random(20261123)
    cases = {"nfc_reference": "tokenizers.normalizers.NFC",
             "nfc": nfc_cases(rng), "replace": replace_cases(rng)}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(cases, f, separators=(",", ":"))
    print(f"{OUT}: {len(cases['nfc'])} NFC cases, {len(cases['replace'])} replacement cases")


if __name__ == "__main__":
    main()
