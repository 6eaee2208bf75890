#!/usr/bin/env python3
"""Makes tests/fixtures/dequant/gguf_py_reference.json: random blocks of every GGUF type the
engine reads, with the values gguf-py (llama.cpp's Python package) dequantizes them to.

Block bytes are random except the fp16 scale fields, which are set to finite values so the
expected values are finite. Needs: pip install gguf numpy.
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "dequant", "gguf_py_reference.json")

# Byte offsets of the fp16 fields (scales, mins) inside each block.
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
BLOCKS = 3


def main():
    rng = np.random.default_rng(20261123)
    cases = []
    for qtype, fields in HALF_FIELDS.items():
        block_values, block_bytes = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for offset in fields:
            halves = rng.uniform(-2.0, 2.0, size=BLOCKS).astype(np.float16)
            raw[:, offset:offset + 2] = halves.view(np.uint8).reshape(BLOCKS, 2)
        values = dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
        assert values.size == BLOCKS * block_values and np.all(np.isfinite(values))
        cases.append({"type": qtype.name, "hex": raw.tobytes().hex(),
                      "values": [float(v) for v in values]})
    for qtype, dtype in ((T.F16, np.float16), (T.BF16, None)):
        if dtype is not None:
            raw = rng.uniform(-100, 100, size=64).astype(dtype).view(np.uint8)
        else:  # bf16: the top halves of random fp32 values
            raw = (rng.uniform(-100, 100, size=64).astype(np.float32).view(np.uint32) >> 16)
            raw = raw.astype(np.uint16).view(np.uint8)
        values = dequantize(raw, qtype).astype(np.float32).reshape(-1)
        cases.append({"type": qtype.name, "hex": raw.tobytes().hex(),
                      "values": [float(v) for v in values]})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "gguf-py dequantize", "cases": cases}, f, indent=0)
    print(f"{OUT}: {len(cases)} types")


if __name__ == "__main__":
    main()
