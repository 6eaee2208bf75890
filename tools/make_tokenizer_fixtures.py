#!/usr/bin/env python3
"""Makes the tokenizer fixtures in tests/fixtures/tokenizer/ from the reference tokenizers.

Needs: pip install -r tools/requirements-fixtures.txt (sentencepiece, tokenizers, gguf).

Inputs:
  tests/fixtures/tokenizer/corpus.jsonl   test strings, raw bytes in hex (make_tokenizer_corpus.py)
  data/spec_bench/question_dev.jsonl      training text for the two small tokenizers
  models/SmolLM2-135M-Instruct.Q4_1.gguf  the default model (scripts/fetch_model.sh)

Outputs (all under tests/fixtures/tokenizer/):
  llama2_sp/tokenizer.model       SentencePiece BPE with byte fallback, Llama-2 options
  llama2_sp/tokenizer.json        the same, converted to Hugging Face's legacy Llama format
  llama2_sp/tokenizer_config.json
  llama2_sp.gguf                  the same as a GGUF `llama` tokenizer (no tensors)
  bytelevel_small/tokenizer.json  a small byte-level BPE (SmolLM2-style pre-tokenizer)
  bytelevel_families.json         pre-tokenizer / normalizer of each byte-level family
  expected_llama2_sp.jsonl        SentencePiece's own ids and decode of every corpus string
  llama2_sp_variants.json         the same vocabulary stated other ways in tokenizer.json:
                                  Metaspace pre-tokenizer (prepend schemes, split), added
                                  tokens with lstrip/rstrip
  expected_llama2_sp_variants.jsonl  Hugging Face `tokenizers` ids for each variant
  expected_llama2_sp_decode.jsonl SentencePiece's decode of random piece and byte sequences
  expected_bytelevel_<family>.jsonl  Hugging Face `tokenizers` ids, one file per family
  expected_smollm2.jsonl          ids of `tokenizers` built from the default model's GGUF
                                  vocabulary and merges with SmolLM2's pre-tokenizer

Invalid UTF-8 in the corpus is replaced by U+FFFD (bytes.decode errors="replace") before
it reaches a reference tokenizer; the engine gets the raw bytes and must do the same.
"""
import argparse
import io
import json
import os
import random
import sys

import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.trainers import BpeTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
SPACE_MARKER = "\u2581"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

SMOLLM_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}


def split_then_bytes(regex):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


# Each byte-level family as a tokenizer.json would state it.
FAMILIES = {
    "gpt2": {"normalizer": None,
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                               "trim_offsets": True, "use_regex": True},
             "ignore_merges": False},
    "gpt2_split": {"normalizer": None, "pre_tokenizer": split_then_bytes(GPT2_REGEX),
                   "ignore_merges": False},
    "llama3": {"normalizer": None, "pre_tokenizer": split_then_bytes(LLAMA3_REGEX),
               "ignore_merges": True},
    "qwen2": {"normalizer": {"type": "NFC"}, "pre_tokenizer": split_then_bytes(QWEN2_REGEX),
              "ignore_merges": False},
    "smollm": {"normalizer": None, "pre_tokenizer": SMOLLM_PRE, "ignore_merges": False},
}

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def load_corpus():
    corpus = []
    with open(os.path.join(OUT, "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            raw = bytes.fromhex(entry["hex"])
            corpus.append((entry["name"], raw, raw.decode("utf-8", errors="replace")))
    return corpus


def training_lines():
    lines = []
    with open(os.path.join(ROOT, "data", "spec_bench", "question_dev.jsonl"), encoding="utf-8") as f:
        for line in f:
            question = json.loads(line)
            for turn in question["turns"]:
                lines.extend(part for part in turn.split("\n") if part.strip())
    return lines


def write_jsonl(name, rows):
    with open(os.path.join(OUT, name), "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- SentencePiece (Llama 2)

def train_sentencepiece(folder):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()), model_writer=model,
        model_type="bpe", vocab_size=2000, character_coverage=0.9995,
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        max_sentence_length=1 << 16, num_threads=1, minloglevel=2)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def sentencepiece_token_type(sp, i):
    # llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
    if sp.is_unknown(i):
        return 2
    if sp.is_control(i):
        return 3
    if sp.is_unused(i):
        return 5
    if sp.is_byte(i):
        return 6
    return 1


def sentencepiece_to_tokenizer_json(sp, folder):
    """Hugging Face's legacy Llama tokenizer.json: merges are every split of every normal
    piece into two normal pieces, ordered by the merged piece's score (highest first)."""
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    normal = {p: i for i, p in enumerate(pieces) if sentencepiece_token_type(sp, i) == 1}
    merges = []
    for piece, piece_id in sorted(normal.items(), key=lambda kv: (-sp.get_score(kv[1]), kv[1])):
        splits = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                splits.append((normal[left], normal[right], left, right))
        merges.extend([left, right] for _, _, left, right in sorted(splits))
    specials = [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False, "special": True}
                for i in range(len(pieces)) if sentencepiece_token_type(sp, i) in (2, 3)]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": specials,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE_MARKER},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARKER}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE_MARKER}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {p: i for i, p in enumerate(pieces)}, "merges": merges},
    }
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
              "eos_token": "</s>", "unk_token": "<unk>", "legacy": True,
              "tokenizer_class": "LlamaTokenizer"}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)


def sentencepiece_to_gguf(sp, path):
    import gguf  # imported here: only this step needs it
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i).encode("utf-8") for i in range(sp.get_piece_size())])
    writer.add_token_scores([sp.get_score(i) for i in range(sp.get_piece_size())])
    writer.add_token_types([sentencepiece_token_type(sp, i) for i in range(sp.get_piece_size())])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def sentencepiece_with_specials(sp, text):
    """Hugging Face semantics for special tokens written in text: the text is split at the
    (leftmost-longest) special tokens and each remaining run is encoded on its own."""
    specials = sorted((sp.id_to_piece(i) for i in range(sp.get_piece_size())
                       if sp.is_control(i) or sp.is_unknown(i)), key=len, reverse=True)
    ids, start, i = [], 0, 0
    while i < len(text):
        match = next((s for s in specials if text.startswith(s, i)), None)
        if match is None:
            i += 1
            continue
        ids += sp.encode(text[start:i]) if i > start else []
        ids.append(sp.piece_to_id(match))
        i += len(match)
        start = i
    ids += sp.encode(text[start:]) if start < len(text) else []
    return ids


def metaspace(prepend_scheme, split):
    return {"type": "Metaspace", "replacement": SPACE_MARKER, "prepend_scheme": prepend_scheme,
            "split": split}


# The SentencePiece vocabulary stated other ways in tokenizer.json. "strip" gives added
# tokens' [lstrip, rstrip].
SENTENCEPIECE_VARIANTS = {
    "metaspace_always": {"normalizer": None, "pre_tokenizer": metaspace("always", False), "strip": {}},
    "metaspace_always_split": {"normalizer": None, "pre_tokenizer": metaspace("always", True),
                               "strip": {}},
    "metaspace_first_split": {"normalizer": None, "pre_tokenizer": metaspace("first", True),
                              "strip": {}},
    "legacy_strip": {"normalizer": "legacy", "pre_tokenizer": None,
                     "strip": {"</s>": [True, True], "<s>": [False, True]}},
}


def sentencepiece_variant(base_json, spec):
    data = json.loads(base_json)
    if spec["normalizer"] != "legacy":
        data["normalizer"] = spec["normalizer"]
    data["pre_tokenizer"] = spec["pre_tokenizer"]
    for token in data["added_tokens"]:
        if token["content"] in spec["strip"]:
            token["lstrip"], token["rstrip"] = spec["strip"][token["content"]]
    return Tokenizer.from_str(json.dumps(data))


def sentencepiece_decode_cases(sp, rng):
    """Random sequences of normal pieces and byte pieces, decoded by SentencePiece: byte
    runs that are not valid UTF-8 show its replacement rule."""
    normal = [i for i in range(sp.get_piece_size()) if sentencepiece_token_type(sp, i) == 1]
    byte = [i for i in range(sp.get_piece_size()) if sentencepiece_token_type(sp, i) == 6]
    rows = []
    for _ in range(300):
        ids = [rng.choice(byte if rng.random() < 0.6 else normal) for _ in range(rng.randint(1, 12))]
        rows.append({"ids": ids, "decoded_hex": sp.decode(ids).encode("utf-8").hex()})
    return rows


def make_sentencepiece(corpus):
    folder = os.path.join(OUT, "llama2_sp")
    os.makedirs(folder, exist_ok=True)
    sp = train_sentencepiece(folder)
    sentencepiece_to_tokenizer_json(sp, folder)
    sentencepiece_to_gguf(sp, os.path.join(OUT, "llama2_sp.gguf"))
    hf = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    rows, hf_mismatches = [], 0
    for name, _, text in corpus:
        ids = sp.encode(text)
        ids_special = sentencepiece_with_specials(sp, text)
        if hf.encode(text, add_special_tokens=False).ids != ids_special:
            hf_mismatches += 1
        rows.append({"name": name, "ids": ids, "ids_parse_special": ids_special,
                     "decoded_hex": sp.decode(ids).encode("utf-8").hex()})
    write_jsonl("expected_llama2_sp.jsonl", rows)
    print(f"llama2_sp: {sp.get_piece_size()} pieces; converted tokenizer.json differs from "
          f"SentencePiece on {hf_mismatches} of {len(corpus)} strings")

    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        base_json = f.read()
    with open(os.path.join(OUT, "llama2_sp_variants.json"), "w", encoding="utf-8") as f:
        json.dump(SENTENCEPIECE_VARIANTS, f, indent=1, ensure_ascii=False)
    variants = {name: sentencepiece_variant(base_json, spec)
                for name, spec in SENTENCEPIECE_VARIANTS.items()}
    rows = []
    for name, _, text in corpus:
        row = {"name": name}
        for variant, tokenizer in variants.items():
            row[variant] = tokenizer.encode(text, add_special_tokens=False).ids
        rows.append(row)
    write_jsonl("expected_llama2_sp_variants.jsonl", rows)
    write_jsonl("expected_llama2_sp_decode.jsonl",
                sentencepiece_decode_cases(sp, random.Random(20261123)))


# ---------------------------------------------------------------- byte-level BPE families

def tokenizer_for_family(base_json, family):
    spec = FAMILIES[family]
    data = json.loads(base_json)
    data["normalizer"] = spec["normalizer"]
    data["pre_tokenizer"] = spec["pre_tokenizer"]
    data["model"]["ignore_merges"] = spec["ignore_merges"]
    return Tokenizer.from_str(json.dumps(data))


def make_bytelevel(corpus):
    folder = os.path.join(OUT, "bytelevel_small")
    os.makedirs(folder, exist_ok=True)
    # Trained on whole lines (no regex split) so that merges cross spaces, punctuation and
    # digits: each family's split rules then decide which of them may apply, and the
    # families' ids differ wherever their rules do.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=3000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         special_tokens=CHATML_SPECIALS, show_progress=False)
    tokenizer.train_from_iterator(training_lines(), trainer=trainer)
    base = json.loads(tokenizer.to_str())
    base["pre_tokenizer"] = SMOLLM_PRE
    base_json = json.dumps(base, ensure_ascii=False)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(base_json)
    with open(os.path.join(OUT, "bytelevel_families.json"), "w", encoding="utf-8") as f:
        json.dump(FAMILIES, f, indent=1)
    for family in FAMILIES:
        hf = tokenizer_for_family(base_json, family)
        rows = [{"name": name, "ids": hf.encode(text, add_special_tokens=False).ids}
                for name, _, text in corpus]
        write_jsonl(f"expected_bytelevel_{family}.jsonl", rows)
    print(f"bytelevel_small: {tokenizer.get_vocab_size()} tokens, families {list(FAMILIES)}")


# ---------------------------------------------------------------- the default model

def make_smollm2(corpus, model_path):
    from gguf import GGUFReader
    reader = GGUFReader(model_path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    types_field = reader.fields["tokenizer.ggml.token_type"]
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t, kind in zip(tokens, types) if kind == 3])
    rows = []
    for name, _, text in corpus:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        decoded = tokenizer.decode(ids, skip_special_tokens=False)
        rows.append({"name": name, "ids": ids, "decoded_hex": decoded.encode("utf-8").hex()})
    write_jsonl("expected_smollm2.jsonl", rows)
    print(f"smollm2: {len(tokens)} tokens, {len(merges)} merges, "
          f"{sum(1 for k in types if k == 3)} special tokens")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the default model's GGUF")
    args = parser.parse_args()
    corpus = load_corpus()
    make_sentencepiece(corpus)
    make_bytelevel(corpus)
    if not os.path.exists(args.model):
        sys.exit(f"{args.model}: not found; run scripts/fetch_model.sh first")
    make_smollm2(corpus, args.model)


if __name__ == "__main__":
    main()
