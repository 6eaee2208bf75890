"""Loads pinned versions of the Unicode Character Database, for the table generator and
the fixture scripts.

Hugging Face `tokenizers` (0.23.3) mixes three versions, and draftwise matches each:
  - regex classes \\p{L}, \\p{N} (Oniguruma):          Unicode 16.0
  - the Digits pre-tokenizer (Rust char::is_numeric): Unicode 17.0
  - the NFC normalizer:                               Unicode 15.1
(measured by tools/gen_unicode_tables.py --check against tokenizers itself).

Each version comes from the `unicodedata2` wheel of that version, downloaded once with pip
into .cache/unicodedata2/ (needs network the first time).
"""
import importlib.util
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "unicodedata2")

REGEX_CLASSES = "16.0.0"
DIGITS_RULE = "17.0.0"
NFC = "15.1.0"


def load(version):
    """The unicodedata2 module of `version` (e.g. "16.0.0")."""
    folder = os.path.join(CACHE, version)
    package = os.path.join(folder, "site")
    if not os.path.isdir(package):
        os.makedirs(folder, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--dest", folder, f"unicodedata2=={version}"],
                       check=True)
        wheel = next(f for f in os.listdir(folder) if f.endswith(".whl"))
        with zipfile.ZipFile(os.path.join(folder, wheel)) as archive:
            archive.extractall(package)
    extension = next(f for f in os.listdir(package)
                     if f.startswith("unicodedata2") and f.endswith(".so"))
    # The module must keep its own name (its init function is PyInit_unicodedata2); each
    # version is a different file, so several versions load side by side.
    spec = importlib.util.spec_from_file_location("unicodedata2", os.path.join(package, extension))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.unidata_version == version, (module.unidata_version, version)
    return module
