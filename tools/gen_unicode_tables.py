#!/usr/bin/env python3
"""Generates engine/tokenizer/unicode_tables.cpp: the Unicode data the tokenizer needs, each
part from the Unicode version Hugging Face `tokenizers` uses for it (unicode_versions.py):

  kLetters, kNumbers   general categories L*, N*: regex \\p{L}, \\p{N}     (Unicode 16.0)
  kNumeric             general category N*: Digits pre-tokenizer        (Unicode 17.0)
  kCombiningClasses    canonical combining classes (non-zero)          } Unicode 15.1, limited
  kDecompositions      canonical decompositions, one level             } to the characters
  kCompositions        primary composites, composition exclusions out  } tokenizers' NFC knows

tokenizers' NFC normalizer predates Unicode 13.0 (it does not compose U+11935 U+11930 into
U+11938). Assigned characters never change their combining class or decomposition
(Unicode's stability policy), so its tables are the 15.1 tables restricted to the
characters it knows; which those are is measured by asking tokenizers itself, one probe
string per mark, decomposition and composition. Generating therefore needs `tokenizers`.

Usage:
  python3 tools/gen_unicode_tables.py > engine/tokenizer/unicode_tables.cpp
  python3 tools/gen_unicode_tables.py --check   # re-measure the versions against tokenizers
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unicode_versions  # noqa: E402

MAX_CODE_POINT = 0x10FFFF


def ranges(predicate):
    result, start = [], None
    for cp in range(MAX_CODE_POINT + 2):
        inside = cp <= MAX_CODE_POINT and predicate(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            result.append((start, cp - 1))
            start = None
    return result


def merge_class_ranges(single):
    merged = []
    for first, last, ccc in single:
        if merged and merged[-1][2] == ccc and merged[-1][1] + 1 == first:
            merged[-1] = (merged[-1][0], last, ccc)
        else:
            merged.append((first, last, ccc))
    return merged


def class_ranges(ucd):
    result, start, current = [], None, 0
    for cp in range(MAX_CODE_POINT + 2):
        ccc = ucd.combining(chr(cp)) if cp <= MAX_CODE_POINT else 0
        if start is not None and ccc != current:
            result.append((start, cp - 1, current))
            start = None
        if ccc != 0 and start is None:
            start, current = cp, ccc
    return result


def canonical_decompositions(ucd):
    result = []
    for cp in range(MAX_CODE_POINT + 1):
        decomposition = ucd.decomposition(chr(cp))
        if not decomposition or decomposition.startswith("<"):
            continue  # none, or a compatibility mapping
        parts = [int(p, 16) for p in decomposition.split()]
        result.append((cp, parts[0], parts[1] if len(parts) > 1 else 0))
    return result


def compositions(ucd, decompositions):
    result = []
    for cp, first, second in decompositions:
        if second == 0:
            continue  # singletons never compose
        if ucd.combining(chr(cp)) != 0 or ucd.combining(chr(first)) != 0:
            continue  # non-starter decompositions are excluded
        if ucd.normalize("NFC", chr(first) + chr(second)) != chr(cp):
            continue  # a composition exclusion
        result.append((first, second, cp))
    result.sort()
    return result


def tokenizers_nfc_knowledge(ucd, decompositions, composed):
    """The marks, decompositions and compositions tokenizers' NFC applies, from the 15.1 ones."""
    from tokenizers import normalizers
    hf_nfc, hf_nfd = normalizers.NFC(), normalizers.NFD()
    base = "\u4e00"  # a starter that composes with nothing
    known_marks = set()
    for cp in range(MAX_CODE_POINT + 1):
        mark = chr(cp)
        ccc = ucd.combining(mark)
        if ccc == 0:
            continue
        # A mark of a known class next to one of another class is put in class order.
        probe = base + "\u0345" + mark if ccc < 240 else base + mark + "\u0301"
        if hf_nfc.normalize_str(probe) == ucd.normalize("NFC", probe):
            known_marks.add(cp)
    known_decompositions = {cp for cp, _, _ in decompositions
                            if hf_nfd.normalize_str(chr(cp)) == ucd.normalize("NFD", chr(cp))}
    known_compositions = {(first, second) for first, second, cp in composed
                          if hf_nfc.normalize_str(chr(first) + chr(second)) == chr(cp)}
    return known_marks, known_decompositions, known_compositions


def emit_ranges(out, name, items):
    out.write(f"const CodePointRange {name}[] = {{\n")
    for first, last in items:
        out.write(f"    {{0x{first:X}, 0x{last:X}}},\n")
    out.write("};\n")
    out.write(f"const size_t {name}_count = {len(items)};\n\n")


def generate(out):
    regex = unicode_versions.load(unicode_versions.REGEX_CLASSES)
    digits = unicode_versions.load(unicode_versions.DIGITS_RULE)
    nfc = unicode_versions.load(unicode_versions.NFC)
    letters = ranges(lambda cp: regex.category(chr(cp)).startswith("L"))
    numbers = ranges(lambda cp: regex.category(chr(cp)).startswith("N"))
    numeric = ranges(lambda cp: digits.category(chr(cp)).startswith("N"))
    decompositions = canonical_decompositions(nfc)
    composed = compositions(nfc, decompositions)
    known_marks, known_decompositions, known_compositions = tokenizers_nfc_knowledge(
        nfc, decompositions, composed)
    classes = [(first, last, ccc) for first, last, ccc in class_ranges(nfc)]
    classes = [(cp, cp, ccc) for first, last, ccc in classes for cp in range(first, last + 1)
               if cp in known_marks]
    classes = merge_class_ranges(classes)
    decompositions = [entry for entry in decompositions if entry[0] in known_decompositions]
    composed = [entry for entry in composed if (entry[0], entry[1]) in known_compositions]

    out.write("// Generated by tools/gen_unicode_tables.py. Do not edit. Unicode versions: "
              f"regex classes {regex.unidata_version}, Digits rule {digits.unidata_version}, "
              f"NFC {nfc.unidata_version} limited to what tokenizers' NFC knows.\n")
    out.write('#include "engine/tokenizer/unicode_tables.h"\n\n')
    out.write("namespace draftwise::unicode_tables {\n\n")
    out.write(f'const char kRegexClassesVersion[] = "{regex.unidata_version}";\n')
    out.write(f'const char kNumericVersion[] = "{digits.unidata_version}";\n')
    out.write(f'const char kNfcVersion[] = "{nfc.unidata_version}";\n\n')
    emit_ranges(out, "kLetters", letters)
    emit_ranges(out, "kNumbers", numbers)
    emit_ranges(out, "kNumeric", numeric)
    out.write("const CombiningClassRange kCombiningClasses[] = {\n")
    for first, last, ccc in classes:
        out.write(f"    {{0x{first:X}, 0x{last:X}, {ccc}}},\n")
    out.write("};\n")
    out.write(f"const size_t kCombiningClasses_count = {len(classes)};\n\n")
    out.write("const Decomposition kDecompositions[] = {\n")
    for cp, first, second in decompositions:
        out.write(f"    {{0x{cp:X}, 0x{first:X}, 0x{second:X}}},\n")
    out.write("};\n")
    out.write(f"const size_t kDecompositions_count = {len(decompositions)};\n\n")
    out.write("const Composition kCompositions[] = {\n")
    for first, second, cp in composed:
        out.write(f"    {{0x{first:X}, 0x{second:X}, 0x{cp:X}}},\n")
    out.write("};\n")
    out.write(f"const size_t kCompositions_count = {len(composed)};\n\n")
    out.write("}  // namespace draftwise::unicode_tables\n")


def check():
    """For every code point whose class changes between two consecutive Unicode versions,
    which version `tokenizers` agrees with: regex \\p{L}/\\p{N}, Digits, and NFC."""
    from tokenizers import normalizers, pre_tokenizers
    versions = ["15.1.0", "16.0.0", "17.0.0", "18.0.0"]
    ucd = {v: unicode_versions.load(v) for v in versions}
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    digits = pre_tokenizers.Digits(individual_digits=True)
    hf_nfc = normalizers.NFC()

    def major(version, cp):
        category = ucd[version].category(chr(cp))[0]
        return category if category in "LN" else "-"

    def regex_class(cp):
        x = chr(cp)
        if len(byte_level.pre_tokenize_str("a" + x + x + "b")) == 1:
            return "L"
        return "N" if len(byte_level.pre_tokenize_str(x + x + "!")) == 2 else "-"

    for old, new in zip(versions, versions[1:]):
        changed = [cp for cp in range(MAX_CODE_POINT + 1) if major(old, cp) != major(new, cp)]
        regex_new = sum(regex_class(cp) == major(new, cp) for cp in changed)
        numeric = [cp for cp in changed if (major(old, cp) == "N") != (major(new, cp) == "N")]
        digits_new = sum((len(digits.pre_tokenize_str("a" + chr(cp) + "b")) == 3) ==
                         (major(new, cp) == "N") for cp in numeric)
        print(f"{old} -> {new}: {len(changed)} code points change class, regex agrees with "
              f"{new} on {regex_new}; {len(numeric)} change numeric-ness, Digits agrees with "
              f"{new} on {digits_new}")
    samples = {ucd[v].normalize("NFD", chr(cp)) for v in versions for cp in range(MAX_CODE_POINT + 1)
               if ucd[v].decomposition(chr(cp)) and not ucd[v].decomposition(chr(cp)).startswith("<")}
    for version in versions:
        agree = sum(hf_nfc.normalize_str(s) == ucd[version].normalize("NFC", s) for s in samples)
        print(f"NFC: tokenizers agrees with {version} on {agree} of {len(samples)} strings")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="measure tokenizers' versions")
    if parser.parse_args().check:
        check()
    else:
        generate(sys.stdout)


if __name__ == "__main__":
    main()
