#!/usr/bin/env python3
"""Writes small seed inputs for the libFuzzer harnesses into tests/fuzz/seeds/.

  gguf/         tiny GGUF files: every metadata type, tensors of each readable type, a
                byte-level and a SentencePiece tokenizer
  safetensors/  tiny safetensors files of each dtype
  tokenizer/    first byte modulo 3: 0 text to encode, 1 a tokenizer.json document,
                2 a config.json document

Needs: pip install gguf numpy.
"""
import json
import os
import struct

import numpy as np
import gguf
from gguf.constants import GGML_QUANT_SIZES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "tests", "fuzz", "seeds")


def write(folder, name, data):
    os.makedirs(os.path.join(SEEDS, folder), exist_ok=True)
    with open(os.path.join(SEEDS, folder, name), "wb") as f:
        f.write(data)


def gguf_bytes(build):
    os.makedirs(SEEDS, exist_ok=True)
    path = os.path.join(SEEDS, "tmp.gguf")
    writer = gguf.GGUFWriter(path, arch="llama")
    build(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with open(path, "rb") as f:
        data = f.read()
    os.remove(path)
    return data


def gguf_seeds(rng):
    def model(writer):
        writer.add_block_count(1)
        writer.add_embedding_length(32)
        writer.add_feed_forward_length(64)
        writer.add_head_count(2)
        writer.add_head_count_kv(1)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_uint8("test.u8", 7)
        writer.add_int16("test.i16", -3)
        writer.add_float64("test.f64", 0.25)
        writer.add_bool("test.bool", True)
        writer.add_array("test.nested", [[1, 2], [3]])
        for qtype in (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q8_0,
                      gguf.GGMLQuantizationType.Q5_1, gguf.GGMLQuantizationType.Q4_K,
                      gguf.GGMLQuantizationType.Q6_K):
            _, block_bytes = GGML_QUANT_SIZES[qtype]
            raw = rng.integers(0, 256, size=(1, block_bytes), dtype=np.uint8)
            raw[:, 0:2] = np.array([0.5], dtype=np.float16).view(np.uint8)
            writer.add_tensor(f"t.{qtype.name}", raw, raw_dtype=qtype)
        writer.add_tensor("token_embd.weight", rng.standard_normal((8, 32)).astype(np.float32))
        writer.add_tensor("f16", rng.standard_normal((2, 4)).astype(np.float16))

    def bpe(writer):
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_list(["a", "b", "ab", "Ġ", "Ġab", "<|im_end|>"])
        writer.add_token_types([1, 1, 1, 1, 1, 3])
        writer.add_token_merges(["a b", "Ġ ab"])
        writer.add_eos_token_id(5)

    def sentencepiece(writer):
        writer.add_tokenizer_model("llama")
        pieces = ["<unk>", "<s>", "</s>", "<0x41>", "\u2581", "a", "b", "\u2581a", "ab"]
        writer.add_token_list(pieces)
        writer.add_token_scores([0, 0, 0, 0, -1, -2, -3, -4, -5])
        writer.add_token_types([2, 3, 3, 6, 1, 1, 1, 1, 1])
        writer.add_bos_token_id(1)

    write("gguf", "model.gguf", gguf_bytes(model))
    write("gguf", "bpe_tokenizer.gguf", gguf_bytes(bpe))
    write("gguf", "sentencepiece_tokenizer.gguf", gguf_bytes(sentencepiece))


def safetensors_bytes(tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds(rng):
    tensors = {
        "f32": ("F32", [2, 3], rng.standard_normal(6).astype(np.float32).tobytes()),
        "f16": ("F16", [4], rng.standard_normal(4).astype(np.float16).tobytes()),
        "bf16": ("BF16", [2], b"\x80\x3f\x00\x40"),
        "i8": ("I8", [3], b"\x01\xff\x7f"),
        "scalar": ("F64", [], struct.pack("<d", 1.5)),
    }
    write("safetensors", "dtypes.safetensors", safetensors_bytes(tensors, {"format": "pt"}))
    write("safetensors", "empty.safetensors", safetensors_bytes({}))


def tokenizer_seeds():
    for i, text in enumerate(["Hello world, it's 2026!", "  \n\n\tindented\r\n",
                              "<|im_start|>user\nhi<|im_end|>", "\u00e9t\u00e9 \u4e2d\u6587 \U0001F600",
                              "bad \xff\xfe bytes".encode("latin-1").decode("latin-1")]):
        write("tokenizer", f"text_{i}", b"\x00" + text.encode("utf-8", "surrogateescape"))
    write("tokenizer", "text_invalid", b"\x00a\xc3\x28b\xf0\x9f\x98")
    small = {
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4},
                  "merges": ["a b", "\u0120 ab"]},
        "added_tokens": [{"id": 5, "content": "<|end|>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
    }
    write("tokenizer", "bytelevel.json", b"\x01" + json.dumps(small).encode())
    sentencepiece = {
        "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>",
                  "vocab": {"<unk>": 0, "<s>": 1, "<0x41>": 2, "\u2581": 3, "a": 4, "\u2581a": 5},
                  "merges": [["\u2581", "a"]]},
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    }
    write("tokenizer", "sentencepiece.json", b"\x01" + json.dumps(sentencepiece).encode())
    with open(os.path.join(ROOT, "configs", "llama-3.2-1b.json"), "rb") as f:
        write("tokenizer", "config_llama.json", b"\x02" + f.read())
    with open(os.path.join(ROOT, "configs", "qwen2.5-7b.json"), "rb") as f:
        write("tokenizer", "config_qwen2.json", b"\x02" + f.read())


CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def model_config_seeds():
    for name in ["llama_tied", "llama3_rope", "qwen2_bias"]:
        with open(os.path.join(ROOT, "tests", "fixtures", "models", name, "config.json"), "rb") as f:
            write("model_config", f"{name}.json", f.read())
    write("model_config", "chatml.jinja", CHATML_TEMPLATE.encode())
    write("model_config", "llama3.jinja", b"{{ bos_token }}<|start_header_id|>user<|end_header_id|>"
                                          b"<|eot_id|>Cutting Knowledge Date date_string = \"1 Jan 2025\"")
    write("model_config", "llama2.jinja", b"[INST] <<SYS>>")
    write("model_config", "mistral.jinja", b"{{ '[INST] ' + message['content'] + ' [/INST]' }}")


def main():
    rng = np.random.default_rng(7)
    gguf_seeds(rng)
    safetensors_seeds(rng)
    tokenizer_seeds()
    model_config_seeds()
    for folder in sorted(os.listdir(SEEDS)):
        files = os.listdir(os.path.join(SEEDS, folder))
        print(folder, sum(os.path.getsize(os.path.join(SEEDS, folder, f)) for f in files), "bytes in", len(files), "files")


if __name__ == "__main__":
    main()
