#!/usr/bin/env python3
"""Generate the tokenizer conformance corpus for draftwise.

Writes tests/fixtures/tokenizer/corpus.jsonl (relative to the repository
root, i.e. the parent of this script's directory), one JSON object per line:

    {"name": "prose_en_1", "category": "prose", "hex": "4974277320..."}

"hex" holds the raw bytes of the test string in lowercase hex.  Raw bytes are
used because the "invalid_utf8" entries (and a few "mixed" ones) are
deliberately not valid UTF-8.

The corpus is meant to be fed both to the engine's tokenizers and to the
Hugging Face `tokenizers` / `sentencepiece` references, and the resulting
token ids compared.  It covers byte-level BPE pre-tokenizer edge cases
(GPT-2, Llama-3, Qwen2, SmolLM2 regexes: contractions, digit runs,
whitespace runs, newlines, punctuation) and SentencePiece byte fallback.

Valid UTF-8 entries are stored exactly as written here: no Unicode
normalisation is applied (some entries are intentionally NFD).

The script is deterministic: standard library only, a fixed-seed
random.Random for the generated combinations, and stable ordering, so every
run produces a byte-identical file.

Usage:
    python3 tools/make_tokenizer_corpus.py [--out PATH]
"""

import argparse
import json
import os
import random
import sys
import unicodedata

SEED = 0x5EED_D4AF  # fixed seed for all generated content
MAX_ENTRY_BYTES = 600
MAX_FILE_BYTES = 250 * 1024

CATEGORY_MINIMUMS = {
    "prose": 90,
    "code": 50,
    "whitespace": 35,
    "digits": 35,
    "emoji": 30,
    "special": 30,
    "invalid_utf8": 20,
    "mixed": 40,
    "unicode_versions": 12,
}
CATEGORY_ORDER = list(CATEGORY_MINIMUMS)


def nfd(s):
    """Canonical decomposition (stable across Unicode versions)."""
    return unicodedata.normalize("NFD", s)


def crlf(s):
    return s.replace("\n", "\r\n")


class Corpus:
    def __init__(self):
        self.entries = []  # list of (name, category, bytes)
        self._names = set()
        self._counters = {}

    def add(self, category, tag, data):
        """Add an entry; the name is '<category>_<tag>_<n>'."""
        assert category in CATEGORY_MINIMUMS, category
        if isinstance(data, str):
            raw = data.encode("utf-8")
        else:
            raw = bytes(data)
        key = (category, tag)
        n = self._counters.get(key, 0) + 1
        self._counters[key] = n
        name = "%s_%s_%d" % (category, tag, n)
        assert name.isascii() and name not in self._names, name
        assert len(raw) <= MAX_ENTRY_BYTES, (name, len(raw))
        self._names.add(name)
        self.entries.append((name, category, raw))

    def add_all(self, category, tag, items):
        for it in items:
            self.add(category, tag, it)


# ---------------------------------------------------------------------------
# prose
# ---------------------------------------------------------------------------

PROSE = [
    # English, with contractions in various cases.
    ("en", "It's a beautiful morning, and I'M telling you: we don't have time to waste."),
    ("en", "We'Re going to the market later; they'll meet us by the fountain if you've finished your chores."),
    ("en", "She'd said she DON'T want any more tea, but she'd already poured herself a second cup."),
    ("en", "YOU'LL never guess what HE'D done: he'D painted the whole fence blue, and they'RE furious."),
    ("en", "Don't. Won't. Can't. Shouldn't've. Y'all'd've. O'Brien's cat isn't 'ours', it's THEIRS."),
    ("en", "i'm not sure i've ever seen a sunset that pink. it's almost unreal, isn't it?"),
    ("en", "The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow!"),
    ("en", "In 1969, people first walked on the Moon; it was, by most accounts, a remarkable achievement."),
    ("en", "Dear Sam,\n\nThanks for the book you sent last week. I've read half of it already and I'd recommend it to anyone.\n\nBest,\nAlex"),
    ("en", "Dr. Smith's lab (Room 4B) is closed on Fridays \u2014 please e-mail the front desk instead."),
    ("en", "\"Where are you going?\" she asked. \"Home,\" he replied, 'where it's warm.'"),
    ("en", "WE'VE BEEN WAITING FOR HOURS AND NOBODY'S TOLD US ANYTHING. I'M DONE. WE'LL LEAVE."),
    ("en", "The committee's decision\u2014announced late on Tuesday\u2014surprised almost everyone; nobody had expected a unanimous vote."),
    ("en", "Rain fell steadily over the harbour. Gulls circled the fishing boats, and somewhere a bell rang twice."),
    # French
    ("fr", "Il \u00e9tait une fois une petite fille qui habitait au bord d'un lac ; elle s'appelait \u00c9lodie et n'aimait pas l'hiver."),
    ("fr", "O\u00f9 est la biblioth\u00e8que ? Je voudrais emprunter \u00ab Le Petit Prince \u00bb avant qu'elle ferme."),
    ("fr", "L'\u00e9t\u00e9 dernier, nous sommes all\u00e9s \u00e0 Besan\u00e7on, o\u00f9 nous avons mang\u00e9 des cr\u00eapes et bu du cidre."),
    ("fr", "C'EST INCROYABLE ! Qu'est-ce qu'on fait maintenant ? \u00c7a m'\u00e9tonnerait qu'il vienne."),
    # German
    ("de", "Die Stra\u00dfe war nass, und die B\u00e4ume rauschten im Wind, w\u00e4hrend J\u00fcrgen \u00fcber die Br\u00fccke lief."),
    ("de", "Gr\u00f6\u00dfere Ma\u00dfnahmen f\u00fcr den Umweltschutz sind n\u00f6tig, sagte die B\u00fcrgermeisterin von K\u00f6ln."),
    ("de", "\u00c4\u00d6\u00dc \u00e4\u00f6\u00fc \u00df \u1e9e \u2014 Gr\u00fc\u00dfe aus M\u00fcnchen! Fu\u00dfg\u00e4nger\u00fcberg\u00e4nge gibt es \u00fcberall."),
    ("de", "Donaudampfschifffahrtsgesellschaftskapit\u00e4nsm\u00fctze ist ein sehr langes Wort, aber es geht noch l\u00e4nger."),
    # Spanish
    ("es", "\u00bfD\u00f3nde est\u00e1 la estaci\u00f3n de tren? \u00a1Necesito llegar a M\u00e1laga antes del mediod\u00eda!"),
    ("es", "El ni\u00f1o comi\u00f3 una manzana y despu\u00e9s jug\u00f3 al f\u00fatbol con sus amigos en el parque."),
    ("es", "Ma\u00f1ana, si el tiempo lo permite, subiremos a la monta\u00f1a para ver el amanecer."),
    # Portuguese
    ("pt", "N\u00e3o sei se vou conseguir chegar a tempo, mas vou tentar. A reuni\u00e3o come\u00e7a \u00e0s tr\u00eas."),
    ("pt", "O cora\u00e7\u00e3o da cidade bate mais forte \u00e0 noite, quando as luzes se acendem e as ruas se enchem."),
    # Italian
    ("it", "Perch\u00e9 non vieni con noi al mare? Sar\u00e0 una giornata bellissima, pi\u00f9 calda di ieri."),
    ("it", "L'universit\u00e0 \u00e8 chiusa per le festivit\u00e0; riaprir\u00e0 luned\u00ec prossimo, dall'una in poi."),
    # Dutch
    ("nl", "Het regent al de hele dag, dus we blijven lekker binnen met een kopje thee."),
    ("nl", "Zij heeft gisteren haar fiets laten repareren bij de winkel op de hoek; 't was niet duur."),
    # Polish
    ("pl", "Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144. Wczoraj poszli\u015bmy do kina, a potem na pizz\u0119."),
    ("pl", "\u0141\u00f3d\u017a jest trzecim co do wielko\u015bci miastem w Polsce; mieszka tam wielu student\u00f3w."),
    # Czech
    ("cs", "P\u0159\u00edli\u0161 \u017elu\u0165ou\u010dk\u00fd k\u016f\u0148 \u00fap\u011bl \u010f\u00e1belsk\u00e9 \u00f3dy."),
    ("cs", "V\u010dera jsem byl v Brn\u011b a koupil jsem si nov\u00e9 boty; \u0159\u00edkali, \u017ee budou pr\u0161et."),
    # Turkish
    ("tr", "\u0130stanbul'da ya\u015f\u0131yorum ve her sabah vapurla i\u015fe gidiyorum."),
    ("tr", "I\u011eDIR ILIK \u0130NCE \u0131slak \u2014 b\u00fcy\u00fck harf \u0130 ve k\u00fc\u00e7\u00fck harf \u0131 farkl\u0131d\u0131r; i\u0307 de var."),
    # Russian
    ("ru", "\u0412\u0447\u0435\u0440\u0430 \u043c\u044b \u0433\u0443\u043b\u044f\u043b\u0438 \u043f\u043e \u043f\u0430\u0440\u043a\u0443 \u0438 \u0440\u0430\u0437\u0433\u043e\u0432\u0430\u0440\u0438\u0432\u0430\u043b\u0438 \u043e \u043a\u043d\u0438\u0433\u0430\u0445, \u043a\u043e\u0442\u043e\u0440\u044b\u0435 \u043f\u0440\u043e\u0447\u0438\u0442\u0430\u043b\u0438 \u043b\u0435\u0442\u043e\u043c."),
    ("ru", "\u041c\u043e\u0441\u043a\u0432\u0430 \u2014 \u0441\u0442\u043e\u043b\u0438\u0446\u0430 \u0420\u043e\u0441\u0441\u0438\u0438. \u0401\u043b\u043a\u0430 \u0441\u0442\u043e\u0438\u0442 \u0432 \u0443\u0433\u043b\u0443 \u043a\u043e\u043c\u043d\u0430\u0442\u044b, \u0430 \u043a\u043e\u0442 \u0441\u043f\u0438\u0442 \u043d\u0430 \u0434\u0438\u0432\u0430\u043d\u0435."),
    ("ru", "\u0421\u041f\u0410\u0421\u0418\u0411\u041e \u0417\u0410 \u041f\u041e\u041c\u041e\u0429\u042c! \u0411\u0435\u0437 \u0432\u0430\u0441 \u043c\u044b \u0431\u044b \u043d\u0435 \u0441\u043f\u0440\u0430\u0432\u0438\u043b\u0438\u0441\u044c."),
    # Ukrainian
    ("uk", "\u0407\u0436\u0430\u043a \u0456 \u0491\u0430\u0432\u0430 \u0448\u0443\u043a\u0430\u043b\u0438 \u0449\u0430\u0441\u0442\u044f \u0443 \u0434\u0432\u043e\u0440\u0456; \u0454\u043d\u043e\u0442 \u0434\u0438\u0432\u0438\u0432\u0441\u044f \u0437 \u0432\u0456\u043a\u043d\u0430."),
    ("uk", "\u041a\u0438\u0457\u0432 \u2014 \u0441\u0442\u043e\u043b\u0438\u0446\u044f \u0423\u043a\u0440\u0430\u0457\u043d\u0438, \u043c\u0456\u0441\u0442\u043e \u0437 \u0431\u0430\u0433\u0430\u0442\u043e\u044e \u0456\u0441\u0442\u043e\u0440\u0456\u0454\u044e \u0442\u0430 \u0437\u0435\u043b\u0435\u043d\u0438\u043c\u0438 \u043f\u0430\u0440\u043a\u0430\u043c\u0438."),
    # Greek
    ("el", "\u0397 \u0391\u03b8\u03ae\u03bd\u03b1 \u03b5\u03af\u03bd\u03b1\u03b9 \u03b7 \u03c0\u03c1\u03c9\u03c4\u03b5\u03cd\u03bf\u03c5\u03c3\u03b1 \u03c4\u03b7\u03c2 \u0395\u03bb\u03bb\u03ac\u03b4\u03b1\u03c2 \u03ba\u03b1\u03b9 \u03ad\u03c7\u03b5\u03b9 \u03c0\u03bf\u03bb\u03cd \u03bc\u03b5\u03b3\u03ac\u03bb\u03b7 \u03b9\u03c3\u03c4\u03bf\u03c1\u03af\u03b1."),
    ("el", "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1! \u03a4\u03b9 \u03ba\u03ac\u03bd\u03b5\u03b9\u03c2; \u0398\u03ad\u03bb\u03b5\u03b9\u03c2 \u03bd\u03b1 \u03c0\u03ac\u03bc\u03b5 \u03b3\u03b9\u03b1 \u03ba\u03b1\u03c6\u03ad \u03c3\u03c4\u03bf \u03bb\u03b9\u03bc\u03ac\u03bd\u03b9;"),
    # Arabic
    ("ar", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0643\u0645 \u0641\u064a \u0645\u062f\u064a\u0646\u062a\u0646\u0627 \u0627\u0644\u062c\u0645\u064a\u0644\u0629. \u0646\u062a\u0645\u0646\u0649 \u0644\u0643\u0645 \u0625\u0642\u0627\u0645\u0629 \u0633\u0639\u064a\u062f\u0629."),
    ("ar", "\u0630\u064e\u0647\u064e\u0628\u0652\u062a\u064f \u0625\u0650\u0644\u064e\u0649 \u0627\u0644\u0633\u064f\u0651\u0648\u0642\u0650 \u0635\u064e\u0628\u064e\u0627\u062d\u064b\u0627 \u0648\u064e\u0627\u0634\u0652\u062a\u064e\u0631\u064e\u064a\u0652\u062a\u064f \u062e\u064f\u0628\u0652\u0632\u064b\u0627 \u0648\u064e\u062d\u064e\u0644\u0650\u064a\u0628\u064b\u0627."),
    ("ar", "\u0647\u0644 \u062a\u062a\u062d\u062f\u062b \u0627\u0644\u0639\u0631\u0628\u064a\u0629\u061f \u0646\u0639\u0645\u060c \u0642\u0644\u064a\u0644\u0627\u064b \u0641\u0642\u0637\u061b \u0623\u062a\u0639\u0644\u0645\u0647\u0627 \u0645\u0646\u0630 \u0633\u0646\u062a\u064a\u0646."),
    # Hebrew
    ("he", "\u05e9\u05dc\u05d5\u05dd, \u05de\u05d4 \u05e9\u05dc\u05d5\u05de\u05da \u05d4\u05d9\u05d5\u05dd? \u05d0\u05e0\u05d9 \u05d4\u05d5\u05dc\u05da \u05dc\u05e1\u05e4\u05e8\u05d9\u05d9\u05d4 \u05d0\u05d7\u05e8 \u05d4\u05e6\u05d4\u05e8\u05d9\u05d9\u05dd."),
    ("he", "\u05d4\u05b7\u05d9\u05b6\u05bc\u05dc\u05b6\u05d3 \u05d0\u05b8\u05db\u05b7\u05dc \u05ea\u05b7\u05bc\u05e4\u05bc\u05d5\u05bc\u05d7\u05b7 \u05d0\u05b8\u05d3\u05b9\u05dd."),
    # Persian (with ZWNJ U+200C)
    ("fa", "\u0627\u0645\u0631\u0648\u0632 \u0647\u0648\u0627 \u062e\u06cc\u0644\u06cc \u062e\u0648\u0628 \u0627\u0633\u062a \u0648 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u06cc\u0645 \u0628\u0647 \u067e\u0627\u0631\u06a9 \u0628\u0631\u0648\u06cc\u0645."),
    ("fa", "\u06a9\u062a\u0627\u0628\u200c\u0647\u0627\u06cc \u0632\u06cc\u0627\u062f\u06cc \u062f\u0631 \u06a9\u062a\u0627\u0628\u062e\u0627\u0646\u0647\u0654 \u0634\u0647\u0631 \u0647\u0633\u062a\u060c \u0627\u0645\u0627 \u0648\u0642\u062a \u06a9\u0645 \u0627\u0633\u062a."),
    # Hindi
    ("hi", "\u092e\u0948\u0902 \u0915\u0932 \u092c\u093e\u091c\u093c\u093e\u0930 \u0917\u092f\u093e \u0925\u093e \u0914\u0930 \u0935\u0939\u093e\u0901 \u0938\u0947 \u0915\u0941\u091b \u092b\u0932 \u0916\u0930\u0940\u0926\u0947\u0964"),
    ("hi", "\u0939\u093f\u0928\u094d\u0926\u0940 \u092e\u0947\u0902 \u0938\u0902\u092f\u0941\u0915\u094d\u0924\u093e\u0915\u094d\u0937\u0930 \u091c\u0948\u0938\u0947 \u0915\u094d\u0937, \u0924\u094d\u0930, \u091c\u094d\u091e \u0914\u0930 \u0936\u094d\u0930 \u0939\u094b\u0924\u0947 \u0939\u0948\u0902\u0964"),
    ("hi", "\u0915\u094d\u092f\u093e \u0906\u092a \u092e\u0947\u0930\u0940 \u092e\u0926\u0926 \u0915\u0930 \u0938\u0915\u0924\u0947 \u0939\u0948\u0902? \u092e\u0941\u091d\u0947 \u0938\u094d\u091f\u0947\u0936\u0928 \u091c\u093e\u0928\u093e \u0939\u0948\u0964"),
    # Bengali
    ("bn", "\u0986\u09ae\u09bf \u09aa\u09cd\u09b0\u09a4\u09bf\u09a6\u09bf\u09a8 \u09b8\u0995\u09be\u09b2\u09c7 \u099a\u09be \u0996\u09be\u0987 \u098f\u09ac\u0982 \u0996\u09ac\u09b0\u09c7\u09b0 \u0995\u09be\u0997\u099c \u09aa\u09a1\u09bc\u09bf\u0964"),
    # Tamil
    ("ta", "\u0ba8\u0bbe\u0ba9\u0bcd \u0ba8\u0bc7\u0bb1\u0bcd\u0bb1\u0bc1 \u0b9a\u0bc6\u0ba9\u0bcd\u0ba9\u0bc8\u0b95\u0bcd\u0b95\u0bc1\u0b9a\u0bcd \u0b9a\u0bc6\u0ba9\u0bcd\u0bb1\u0bc7\u0ba9\u0bcd. \u0b85\u0b99\u0bcd\u0b95\u0bc7 \u0bae\u0bb4\u0bc8 \u0baa\u0bc6\u0baf\u0bcd\u0ba4\u0ba4\u0bc1."),
    # Thai (no spaces between words)
    ("th", "\u0e27\u0e31\u0e19\u0e19\u0e35\u0e49\u0e2d\u0e32\u0e01\u0e32\u0e28\u0e14\u0e35\u0e21\u0e32\u0e01\u0e40\u0e23\u0e32\u0e08\u0e30\u0e44\u0e1b\u0e40\u0e17\u0e35\u0e48\u0e22\u0e27\u0e17\u0e30\u0e40\u0e25\u0e01\u0e31\u0e19\u0e44\u0e2b\u0e21"),
    ("th", "\u0e09\u0e31\u0e19\u0e0a\u0e2d\u0e1a\u0e01\u0e34\u0e19\u0e02\u0e49\u0e32\u0e27\u0e1c\u0e31\u0e14\u0e01\u0e38\u0e49\u0e07\u0e17\u0e35\u0e48\u0e23\u0e49\u0e32\u0e19\u0e02\u0e49\u0e32\u0e07\u0e1a\u0e49\u0e32\u0e19 \u0e41\u0e15\u0e48\u0e27\u0e31\u0e19\u0e19\u0e35\u0e49\u0e23\u0e49\u0e32\u0e19\u0e1b\u0e34\u0e14"),
    # Vietnamese (stacked diacritics)
    ("vi", "Ti\u1ebfng Vi\u1ec7t c\u00f3 nhi\u1ec1u d\u1ea5u thanh: s\u1eafc, huy\u1ec1n, h\u1ecfi, ng\u00e3, n\u1eb7ng. H\u00f4m nay tr\u1eddi \u0111\u1eb9p qu\u00e1!"),
    ("vi", "Ng\u01b0\u1eddi ta th\u01b0\u1eddng n\u00f3i r\u1eb1ng h\u1ecdc, h\u1ecdc n\u1eefa, h\u1ecdc m\u00e3i. Ch\u00fang t\u00f4i \u0111ang \u0103n ph\u1edf \u1edf H\u00e0 N\u1ed9i."),
    # Chinese, simplified
    ("zh", "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u4e00\u8d77\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002"),
    ("zh", "\u673a\u5668\u5b66\u4e60\u662f\u4eba\u5de5\u667a\u80fd\u7684\u4e00\u4e2a\u5206\u652f\uff0c\u5b83\u8ba9\u8ba1\u7b97\u673a\u4ece\u6570\u636e\u4e2d\u5b66\u4e60\u89c4\u5f8b\u3002"),
    ("zh", "\u4f60\u5403\u996d\u4e86\u5417\uff1f\u6211\u521a\u4e70\u4e86\u4e09\u4e2a\u82f9\u679c\u3001\u4e24\u74f6\u725b\u5976\u548c\u4e00\u888b\u9762\u5305\uff01"),
    # Chinese, traditional
    ("zht", "\u6211\u5011\u660e\u5929\u5728\u5716\u66f8\u9928\u898b\u9762\uff0c\u8a0e\u8ad6\u9019\u500b\u8a08\u756b\u7684\u7d30\u7bc0\u3002"),
    ("zht", "\u81fa\u7063\u7684\u591c\u5e02\u975e\u5e38\u71b1\u9b27\uff0c\u6709\u5f88\u591a\u597d\u5403\u7684\u5c0f\u5403\uff0c\u4f8b\u5982\u81ed\u8c46\u8150\u548c\u73cd\u73e0\u5976\u8336\u3002"),
    # Japanese
    ("ja", "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002\u6563\u6b69\u306b\u884c\u304d\u307e\u305b\u3093\u304b\uff1f"),
    ("ja", "\u6771\u4eac\u99c5\u304b\u3089\u65b0\u5e79\u7dda\u306b\u4e57\u3063\u3066\u3001\u4eac\u90fd\u3078\u5411\u304b\u3044\u307e\u3057\u305f\u3002\u300c\u697d\u3057\u304b\u3063\u305f\uff01\u300d\u3068\u5f7c\u5973\u306f\u8a00\u3063\u305f\u3002"),
    ("ja", "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57\u3092\u6df7\u305c\u3066\u66f8\u304d\u307e\u3059\uff1a\u30b3\u30f3\u30d4\u30e5\u30fc\u30bf\u30fc\u3001\u3042\u308a\u304c\u3068\u3046\u3001\u65e5\u672c\u8a9e\u3002"),
    # Korean
    ("ko", "\uc548\ub155\ud558\uc138\uc694! \uc624\ub298 \ub0a0\uc528\uac00 \uc815\ub9d0 \uc88b\ub124\uc694. \uac19\uc774 \uc0b0\ucc45\ud558\uc2e4\ub798\uc694?"),
    ("ko", "\ud55c\uad6d\uc5b4\ub294 \ud55c\uae00\ub85c \uc4f0\uba70, \uc138\uc885\ub300\uc655\uc774 \ub9cc\ub4e4\uc5c8\uc2b5\ub2c8\ub2e4."),
    # Georgian
    ("ka", "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0, \u10e0\u10dd\u10d2\u10dd\u10e0 \u10ee\u10d0\u10e0? \u10d3\u10e6\u10d4\u10e1 \u10eb\u10d0\u10da\u10d8\u10d0\u10dc \u10da\u10d0\u10db\u10d0\u10d6\u10d8 \u10d0\u10db\u10d8\u10dc\u10d3\u10d8\u10d0."),
    # Armenian
    ("hy", "\u0532\u0561\u0580\u0587 \u0571\u0565\u0566, \u056b\u0576\u0579\u057a\u0565\u055e\u057d \u0565\u0584\u0589 \u0531\u0575\u057d\u0585\u0580 \u0577\u0561\u057f \u0563\u0565\u0572\u0565\u0581\u056b\u056f \u0585\u0580 \u0567\u0589"),
    # Amharic
    ("am", "\u1230\u120b\u121d \u1290\u12cd? \u12db\u122c \u12e8\u12a0\u12e8\u1229 \u1201\u1294\u1273 \u1260\u1323\u121d \u1325\u1229 \u1290\u12cd\u1362"),
    # Swahili
    ("sw", "Habari za asubuhi! Leo tutaenda sokoni kununua matunda na mboga kwa ajili ya chakula cha jioni."),
    # Indonesian
    ("id", "Saya suka makan nasi goreng di warung dekat rumah setiap akhir pekan bersama teman-teman."),
    # More varied sentences in some languages
    ("en", "Well... I guess that's that. Onwards!"),
    ("en", "Her grandmother's recipe called for \"a pinch of salt, a splash of vinegar, and patience.\""),
    ("en", "  Indented first line of a paragraph.\nSecond line follows without indentation.\n"),
    ("fr", "\u00ab Tu viens ? \u00bb demanda-t-il. \u00ab Oui, j'arrive tout de suite ! \u00bb"),
    ("de", "\u201eKommst du mit?\u201c, fragte sie. \u201eJa, gern \u2013 aber erst nach dem Fr\u00fchst\u00fcck.\u201c"),
    ("es", "\u00bfQu\u00e9 hora es? Son las tres y media, \u00a1date prisa!"),
    ("ru", "\u00ab\u041d\u0435\u0442, \u0441\u043f\u0430\u0441\u0438\u0431\u043e\u00bb, \u2014 \u043e\u0442\u0432\u0435\u0442\u0438\u043b \u043e\u043d \u0438 \u0443\u0448\u0451\u043b."),
    ("ja", "\u732b\u304c\u597d\u304d\u3067\u3059\u3002\u72ac\u3082\u597d\u304d\u3067\u3059\u304c\u3001\u732b\u306e\u307b\u3046\u304c\u597d\u304d\u304b\u3082\u3057\u308c\u307e\u305b\u3093\u3002"),
    ("ko", "\uc800\ub294 \ub9e4\uc77c \uc544\uce68 \ucee4\ud53c\ub97c \ub9c8\uc2dc\uace0 \ucd9c\uadfc\ud569\ub2c8\ub2e4."),
    ("zh", "\u4ed6\u8bf4\uff1a\u201c\u6211\u660e\u5929\u518d\u6765\u3002\u201d\u7136\u540e\u5c31\u8d70\u4e86\u3002"),
    ("pt", "Voc\u00ea j\u00e1 foi a Lisboa? As ruas s\u00e3o estreitas e cheias de hist\u00f3ria."),
    ("it", "Ho mangiato una pizza margherita e bevuto un caff\u00e8 espresso."),
    ("tr", "G\u00fczel bir g\u00fcn! \u00c7ocuklar bah\u00e7ede oynuyor, k\u00f6pek de onlar\u0131 izliyor."),
]

# NFD (decomposed) text: built with explicit combining marks or by
# decomposing precomposed text.  Decompositions of these characters are
# fixed by the Unicode normalisation stability policy.
PROSE_NFD = [
    "Cafe\u0301 de\u0301ja\u0300 vu: un re\u0301sume\u0301 tre\u0300s nai\u0308ve.",
    "Mu\u0308nchen, Ko\u0308ln und Du\u0308sseldorf \u2014 scho\u0308ne Gru\u0308\u00dfe!",
    nfd("Ti\u1ebfng Vi\u1ec7t c\u00f3 nhi\u1ec1u d\u1ea5u: \u0111\u01b0\u1eddng, ph\u1edf, ngh\u0129, m\u1eb9."),
    nfd("\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc744 \ubd84\ud574\ud558\uba74 \uc790\ubaa8\uac00 \ub429\ub2c8\ub2e4."),
    nfd("\u00bfC\u00f3mo est\u00e1s? Espa\u00f1a, Portugal e S\u00e3o Tom\u00e9."),
    nfd("\u30ac\u30ae\u30b0\u30b2\u30b4 \u304c\u304e\u3050\u3052\u3054 \u30d1\u30d4\u30d7\u30da\u30dd"),
    nfd("\u1f08\u03b8\u03ae\u03bd\u03b1\u03b9 \u03ba\u03b1\u1f76 \u1f41 \u1f21\u03bb\u03b9\u03bf\u03c2."),
    nfd("P\u0159\u00edli\u0161 \u017elu\u0165ou\u010dk\u00fd k\u016f\u0148, \u0130stanbul, \u0141\u00f3d\u017a."),
]

# Mixed-script sentences.
PROSE_MIXED = [
    "The word '\u041c\u043e\u0441\u043a\u0432\u0430' means Moscow, and \u6771\u4eac means 'eastern capital'.",
    "I ordered \u5bff\u53f8 and a cola in K\u00f6ln; the bill said \u20ac12,50 \u2014 c'est la vie.",
    "My friend \u0391\u03bb\u03ad\u03be\u03b1\u03bd\u03b4\u03c1\u03bf\u03c2 lives in Tel Aviv (\u05ea\u05dc \u05d0\u05d1\u05d9\u05d1) and speaks English, \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac and \u05e2\u05d1\u05e8\u05d9\u05ea.",
    "The Arabic word \u0643\u062a\u0627\u0628 (kit\u0101b) means 'book', and \u092a\u0941\u0938\u094d\u0924\u0915 is Hindi for the same.",
    "Sie sagte: \u00abC'est la vie\u00bb, und lachte \u2014 \u4eba\u751f\u5c31\u662f\u8fd9\u6837\u3002",
    "\u6211\u7684\u540d\u5b57\u662fAnna\uff0c\u6211\u6765\u81eaBerlin\u3002\u79c1\u306f\u5b66\u751f\u3067\u3059\u3002\uc800\ub294 \ud559\uc0dd\uc785\ub2c8\ub2e4.",
    "Hello\u043f\u0440\u0438\u0432\u0435\u0442\u3053\u3093\u306b\u3061\u306f\u0645\u0631\u062d\u0628\u0627\u05e9\u05dc\u05d5\u05ddhola",
    "iPhone\u306e\u65b0\u3057\u3044\u30e2\u30c7\u30eb\u306fUSB-C\u30dd\u30fc\u30c8\u3092\u63a1\u7528\u3057\u3066\u3044\u307e\u3059\u3002",
]


def add_prose(c):
    for tag, text in PROSE:
        c.add("prose", tag, text)
    c.add_all("prose", "nfd", PROSE_NFD)
    c.add_all("prose", "mixscript", PROSE_MIXED)


# ---------------------------------------------------------------------------
# code
# ---------------------------------------------------------------------------

CODE = [
    ("py", '''def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
    print(fibonacci(10))
'''),
    ("py", r"""words = ['s', 't', 're', 've', 'm', 'll', 'd']
suffix = d['s'] + x['t']+y['re']
print(f"it's {name}'s turn, they're here")
msg = 'don\'t stop'  # escaped quote
print("%s's" % user)
"""),
    ("py", '''class Matrix:
        def __init__(self, rows):
                self.rows = rows

        def transpose(self):
                return Matrix([list(r) for r in zip(*self.rows)])
'''),
    ("py", '''def walk(tree, depth=0):
  for node in tree:
    if node.children:
      yield from walk(node.children, depth + 1)
    else:
      yield depth, node.value
'''),
    ("py", "def f(x):\n\tif x:\n\t\treturn x * 2\n\treturn None\n"),
    ("py", "x = 1   \ny = 2\t\nz = x + y  \n\n    \nprint(z)    \n"),
    ("py", 'caf\u00e9 = "na\u00efve r\u00e9sum\u00e9"\n\u03c0 = 3.14159\n\u0394t = t1 - t0\nprint(f"{caf\u00e9!r} {\u03c0:.2f}")\n'),
    ("py", r'''import re
PAT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
m = re.match(r"^(\d{4})-(\d{2})-(\d{2})$", "2024-01-31")
'''),
    ("py", r'''s1 = 'He said "hi"'
s2 = "She said \"it's fine\""
s3 = 'it\'s'
s4 = """triple 'quoted' "text" """
s5 = b'\x00\xff\n'
'''),
    ("py", '''@dataclass(frozen=True)
class Config:
    vocab_size: int = 49152
    hidden: int = 576
    rope_theta: float = 1e4

    def scaled(self, k: float) -> "Config":
        if (n := int(self.hidden * k)) % 64:
            raise ValueError(f"hidden={n} not a multiple of 64")
        return replace(self, hidden=n)
'''),
    ("py", '''>>> sorted({"b": 2, "a": 1}.items())
[('a', 1), ('b', 2)]
>>> 0x10 + 0o10 + 0b10
26
'''),
    ("cpp", '''#include <vector>
#include <cstdint>

template <typename T>
T sum(const std::vector<T>& xs) {
  T acc{};
  for (const auto& x : xs) acc += x;
  return acc;
}

int main() {
  constexpr uint32_t kMagic = 0xDEADBEEF;
  std::vector<int> v{1, 2, 3};
  return sum(v) == 6 && kMagic != 0u ? 0 : 1;
}
'''),
    ("cpp", "struct Point {\n\tfloat x, y;\n\tfloat norm() const {\n\t\treturn std::sqrt(x * x + y * y);\n\t}\n};\n"),
    ("cpp", r'''#define CHECK(cond)                                  \
  do {                                               \
    if (!(cond)) {                                   \
      fprintf(stderr, "check failed: %s\n", #cond);  \
      abort();                                       \
    }                                                \
  } while (0)
'''),
    ("cpp", r'''char c = '\'';
char nl = '\n';
const char* s = "tab\there \"quoted\" \\ backslash";
auto r = R"(raw string with "quotes" and \n)";
int64_t big = 0x7fffffffffffffffLL;
uint8_t mask = 0b1010'1010;  // digit separator
'''),
    ("cpp", '''namespace dw {
    class Tokenizer {
    public:
        virtual ~Tokenizer() = default;
        virtual std::vector<int32_t> encode(std::string_view text) const = 0;
    };
}  // namespace dw
'''),
    ("rust", '''fn longest<'a>(x: &'a str, y: &'a str) -> &'a str {
    if x.len() > y.len() { x } else { y }
}

fn main() {
    let c = 's';
    let s: &'static str = "it's";
    println!("{} {}", longest(s, "t're"), c);
}
'''),
    ("rust", '''impl<T: fmt::Display> fmt::Display for Wrapper<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => write!(f, "[{v}]"),
            None => f.write_str("[]"),
        }
    }
}
let b: u8 = 0xFF_u8; let n = 1_000_000i64;
'''),
    ("js", '''const greet = (name = "world") => `Hello, ${name}!`;
let items = [1, 2, 3].map((x) => x ** 2).filter(x => x !== 4);
if (items.length === 2 && typeof greet === 'function') {
  console.log(greet('O\\'Neil'));
}
export default { greet, items };
'''),
    ("js", r'''const phone = /^\+?\d{1,3}[-.\s]?\(?\d{3}\)?[-.\s]?\d{3}[-.\s]?\d{4}$/;
const email = /^[\w.+-]+@[\w-]+\.[\w.-]+$/i;
"a-b_c d".replace(/[-_\s]+/g, " ");
'''),
    ("json", '''{
  "name": "draftwise",
  "version": "0.1.0",
  "tags": ["llm", "inference", "c++"],
  "config": {
    "max_tokens": 4096,
    "temperature": 0.7,
    "stop": ["<|im_end|>", "\\n\\n"],
    "enabled": true,
    "seed": null
  }
}
'''),
    ("json", r'''{"id":12345,"text":"She said \"hello\"\nthen left.","path":"C:\\temp\\x.txt","emoji":"\ud83d\ude00","accent":"caf\u00e9","list":[1,2.5,-3e10,true,false,null]}'''),
    ("json", '{"cells": [{"cell_type": "code", "source": ["import numpy as np\\n", "x = np.arange(10)\\n"], "outputs": []}], "nbformat": 4}'),
    ("html", '''<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Test &amp; Demo</title>
</head>
<body>
  <p class="note">It&#39;s a <b>bold</b> move &mdash; isn't it?</p>
  <a href="https://example.org/search?q=tokens&amp;page=2">link</a>
</body>
</html>
'''),
    ("xml", '''<?xml version="1.0" encoding="UTF-8"?>
<catalog xmlns:dc="http://purl.org/dc/elements/1.1/">
    <book id="bk101">
        <dc:title>XML Developer's Guide</dc:title>
        <price currency="EUR">44.95</price>
        <!-- comment -->
        <note><![CDATA[a < b && c > d]]></note>
    </book>
</catalog>
'''),
    ("sql", '''SELECT u.id, u.name, COUNT(o.id) AS order_count
FROM users AS u
LEFT JOIN orders o ON o.user_id = u.id
WHERE u.name LIKE 'O''Reilly%' AND u.created_at >= '2023-01-01'
GROUP BY u.id, u.name
HAVING COUNT(o.id) > 5
ORDER BY order_count DESC
LIMIT 10;
'''),
    ("sql", "INSERT INTO t (a, b) VALUES (1, 'it''s'), (2, NULL);\nCREATE INDEX idx_t_a ON t(a);\n-- comment\n/* block */ UPDATE t SET b = 'x' WHERE a <> 1;\n"),
    ("sh", r'''#!/usr/bin/env bash
set -euo pipefail
OUT_DIR="${OUT_DIR:-./build}"
for f in src/*.cpp; do
    echo "compiling $f" >&2
    g++ -O2 -std=c++20 -c "$f" -o "$OUT_DIR/$(basename "${f%.cpp}").o"
done
grep -rn 'TODO' . | wc -l
'''),
    ("sh", "ls -la ~/.config | awk '{print $9}' | sort -u > /tmp/list.txt 2>&1 && echo done || echo \"failed: $?\"\n"),
    ("md", '''| Model      | Params | Vocab  | Context |
|------------|-------:|:------:|---------|
| SmolLM2    | 135M   | 49152  | 8192    |
| Qwen2.5    | 0.5B   | 151936 | 32768   |
| Llama-3.2  | 1B     | 128256 | 131072  |
'''),
    ("md", '''# Installation

1. Clone the repo.
2. Run `cmake -B build && cmake --build build`.

```cpp
int x = 42;
```

> **Note:** it's *experimental* \u2014 use at your own risk.
- [x] done
- [ ] todo
'''),
    ("regex", r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""),
    ("regex", r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""),
    ("regex", r"""^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$"""),
    ("yaml", '''server:
  host: 0.0.0.0
  port: 8080
  tls:
    enabled: false
    cert: "/etc/ssl/certs/server.pem"
models:
  - name: smollm2-135m
    path: ./models/smollm2.gguf
    params:
      temperature: 0.2
      top_p: 0.95
  - name: "qwen2.5-0.5b"
    path: './models/qwen.gguf'
# comment: it's fine
'''),
    ("yaml", "description: |\n  First line\n    indented more\n  last line\nfolded: >-\n  a b\n  c\nempty: ~\nlist: [a, 'b', \"c\"]\n"),
    ("make", "CXX ?= g++\nCXXFLAGS := -O2 -Wall -std=c++20\n\nall: draftwise\n\ndraftwise: main.o tokenizer.o\n\t$(CXX) $(CXXFLAGS) -o $@ $^\n\n%.o: %.cpp\n\t$(CXX) $(CXXFLAGS) -c $< -o $@\n\n.PHONY: clean\nclean:\n\trm -f *.o draftwise\n"),
    ("latex", r'''\documentclass{article}
\usepackage{amsmath}
\begin{document}
The softmax is $\sigma(z)_i = \frac{e^{z_i}}{\sum_{j=1}^{K} e^{z_j}}$.
\begin{align}
  \mathcal{L} &= -\sum_{t} \log p_\theta(x_t \mid x_{<t}) \\
  \nabla_\theta \mathcal{L} &\approx 0
\end{align}
\end{document}
'''),
    ("bat", crlf("@echo off\nset PATH=C:\\Program Files\\Git\\bin;%PATH%\ncd /d \"%~dp0\"\nif exist build\\Release\\app.exe (\n    build\\Release\\app.exe --verbose\n) else (\n    echo Build not found & exit /b 1\n)\n")),
    ("cs", crlf("using System;\n\nnamespace Demo\n{\n    class Program\n    {\n        static void Main(string[] args)\n        {\n            Console.WriteLine(\"Hello, World!\");\n        }\n    }\n}\n")),
    ("http", "GET /api/v1/models?limit=10 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer abc123.def456\r\nAccept: application/json\r\n\r\n"),
    ("ini", crlf("[database]\nhost = 127.0.0.1\nport = 5432\nuser = admin ; inline comment\n\n[paths]\ndata_dir = C:\\ProgramData\\App\\data\n")),
    ("path", r"C:\Users\Admin\Documents\report_2023.docx"),
    ("path", r"\\fileserver\shared\Q3 Reports\summary (final).xlsx" + "\n" + r"D:\dev\draftwise\build\Release\draftwise.exe --model ..\models\smollm2.gguf"),
    ("ps1", r'''Get-ChildItem -Path "C:\Program Files (x86)\Steam\steamapps" -Recurse |
    Where-Object { $_.Length -gt 1GB } |
    Select-Object FullName, @{Name="SizeGB";Expression={[math]::Round($_.Length / 1GB, 2)}}
'''),
    ("url", "See https://en.wikipedia.org/wiki/Byte_pair_encoding#Algorithm or http://localhost:8080/v1/chat/completions?stream=true&model=qwen2.5 for details. FTP: ftp://ftp.example.com/pub/file.tar.gz"),
    ("email", "Contact: jane.doe+newsletter@example.co.uk, admin@localhost, \"Bob O'Neil\" <bob_oneil@mail.example.org>, x@y.z"),
    ("go", "package main\n\nimport (\n\t\"fmt\"\n\t\"strings\"\n)\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\tfmt.Println(strings.Repeat(\"=\", i))\n\t}\n}\n"),
    ("java", '''public final class Counter {
    private int count = 0;

    public synchronized void increment() { count++; }

    @Override
    public String toString() {
        return String.format("Counter[count=%d]", count);
    }
}
'''),
    ("css", ".btn-primary:hover,\n.btn-primary:focus {\n  color: #fff;\n  background-color: #0b5ed7;\n  border: 1px solid rgba(0, 0, 0, .125);\n  transition: all 0.15s ease-in-out;\n}\n@media (max-width: 768px) { .nav { display: none !important; } }\n"),
    ("docker", "FROM ubuntu:22.04\nRUN apt-get update && \\\n    apt-get install -y --no-install-recommends build-essential cmake && \\\n    rm -rf /var/lib/apt/lists/*\nWORKDIR /app\nCOPY . .\nCMD [\"./build/draftwise\", \"--port\", \"8080\"]\n"),
    ("toml", '[package]\nname = "draftwise"\nversion = "0.1.0"\nauthors = ["A. Person <a@example.com>"]\n\n[dependencies]\nserde = { version = "1.0", features = ["derive"] }\n'),
    ("diff", '''diff --git a/src/bpe.cpp b/src/bpe.cpp
index 3f2a1b0..7c9e4d2 100644
--- a/src/bpe.cpp
+++ b/src/bpe.cpp
@@ -10,7 +10,7 @@ std::vector<int> encode(const std::string& s) {
-    auto words = split(s);
+    auto words = pretokenize(s);
     for (auto& w : words) {
'''),
    ("asm", "_start:\n\tmov rax, 60\n\txor rdi, rdi\n\tsyscall\nloop:\n\tdec ecx\n\tjnz loop\t; repeat\n"),
    ("hs", "module Main where\n\nmain :: IO ()\nmain = mapM_ print $ take 10 primes\n  where primes = sieve [2..]\n        sieve (p:xs) = p : sieve [x | x <- xs, x `mod` p /= 0]\n"),
    ("lua", "local function greet(name)\n  return (\"Hello, %s!\"):format(name or \"world\")\nend\n\nfor i, v in ipairs({\"a\", \"b\"}) do print(i, v) end\n-- comment\n--[[ block\n comment ]]\n"),
    ("ruby", "class Dog\n  attr_reader :name\n  def initialize(name) = @name = name\n  def to_s = \"#{name}'s dog\"\nend\nputs Dog.new('Rex').to_s\nputs %w[a b c].map(&:upcase).join(', ')\n"),
    ("php", "<?php\n$user = $_GET['user'] ?? 'guest';\necho \"Welcome, {$user}!\" . PHP_EOL;\n$arr = ['key' => 'value', 'n' => 42];\n?>\n"),
    ("kotlin", r'''data class User(val name: String, val age: Int)

fun main() {
    val users = listOf(User("Ann", 31), User("Bo", 25))
    println(users.sortedBy { it.age }.joinToString { "${it.name}'s age: ${it.age}" })
}
'''),
    ("swift", 'import Foundation\n\nstruct Point: Equatable {\n    var x: Double\n    var y: Double\n}\nlet p = Point(x: 1.5, y: -2)\nprint("p = \\(p)")\nguard let url = URL(string: "https://swift.org") else { fatalError() }\n'),
    ("csv", 'id,name,quote,amount\n1,"Smith, John","He said ""hi""",1234.50\n2,O\'Brien,,-0.01\n3,"Multi\nline",x,1e3\n'),
    ("csv", crlf('date;value;unit\n2024-01-01;3,5;kg\n2024-01-02;;kg\n')),
    ("log", "2024-05-17 08:42:13,512 INFO  [main] server.cc:88 - Listening on 0.0.0.0:8080\n2024-05-17 08:42:15,001 WARN  [worker-3] kv_cache.cc:201 - cache 93.7% full (15360/16384 blocks)\n2024-05-17 08:42:15,002 ERROR [worker-3] Out of memory: requested 268435456 bytes\n"),
    ("trace", 'Traceback (most recent call last):\n  File "/home/user/app/main.py", line 42, in <module>\n    result = compute(data)\n  File "/home/user/app/main.py", line 17, in compute\n    return 1 / len(data)\nZeroDivisionError: division by zero\n'),
    ("perl", r"""perl -ne 'print if /^\s*#/ || s/(\w+)'s\b/$1 is/g' file.txt"""),
    ("r", "df <- data.frame(x = c(1, 2, 3), y = c('a', 'b', NA))\nsummary(lm(x ~ y, data = df))\n`my var` <- 5 %/% 2\n"),
    ("ocaml", "let rec fact n = if n <= 1 then 1 else n * fact (n - 1)\nlet () = Printf.printf \"%d\\n\" (fact 10)\n(* comment *)\n"),
    ("nginx", "server {\n    listen 80;\n    server_name example.com www.example.com;\n\n    location /api/ {\n        proxy_pass http://127.0.0.1:8080/;\n        proxy_set_header X-Real-IP $remote_addr;\n    }\n}\n"),
    ("proto", 'syntax = "proto3";\n\nmessage Request {\n  string prompt = 1;\n  repeated int32 token_ids = 2 [packed = true];\n  optional float temperature = 3;\n}\n'),
    ("mixindent", "if (x) {\n\t  y = 1;  \n  \tz = 2;\n\t\t}\n        \t// eight spaces then a tab\n"),
    ("hex", "uint32_t crc = 0xEDB88320u; uint64_t h = 0xcbf29ce484222325ULL; // FNV\nbytes = [0x00, 0x7F, 0x80, 0xFF]; color = #1E90FF; addr = 0x7ffd5c3a9e10\n"),
    ("apos", "it's isn't'it 's 't 're x's'y 'S' 'T' 'RE' he'll've foo'bar' 'quoted' \"it's\" ('s) ['t] {'re}\n"),
]


def add_code(c):
    for tag, text in CODE:
        c.add("code", tag, text)


# ---------------------------------------------------------------------------
# whitespace
# ---------------------------------------------------------------------------

def whitespace_items():
    items = [
        "",  # the empty string -- must appear exactly once in the corpus
        " ",
        "\n",
    ]
    for n in (2, 3, 4, 5, 7, 8, 15, 16, 17, 23, 31, 32, 40):
        items.append(" " * n)
    for n in (1, 2, 3, 7, 15, 32, 40):
        items.append("a" + " " * n + "b")
    items += [
        "   leading spaces",
        "trailing spaces   ",
        "  both sides  ",
        "word  word   word    word     word",
        "\t",
        "\t\t\t",
        "\t\t a",
        "a\tb\tc\t",
        " \t \t",
        "\n\n",
        "\n\n\n",
        "\n\n\n\n\n\n\n\n",
        "x\n\n\n\n\n\n\n\ny",
        "\r\n",
        "\r\n\r\n",
        "line one\r\nline two\r\n",
        "\r",
        "a\rb\rc",
        "\r\r\n\n\r",
        " \n \n  x",
        "  \n",
        "\n  ",
        "\n ",
        " \n",
        " \t \n \r\n ",
        "line1\n\nline2\n",
        "word \n",
        "end.  \n\n  Start",
        "    four\n        eight\n\ttab\n",
        # non-ASCII spaces
        "a\u00a0b",
        "\u00a0\u00a0\u00a0",
        "  \u00a0 ",
        "\u2003em\u2003space\u2003",
        "\u3000\u5168\u89d2\u3000\u30b9\u30da\u30fc\u30b9\u3000",
        "\u3000\u3000",
        "line\u2028separator",
        "para\u2029separator",
        "10\u202f000\u202f000",
        "a\u205fb\u205f\u205fc",
        "\u1680ogham\u1680space",
        "next\u0085line",
        "\u0085",
        "thin\u2009hair\u200aspace\u2002en\u2004three",
        # control characters treated as whitespace by some regexes
        "\u000b",
        "a\u000bb",
        "\u000c",
        "page\u000cbreak",
        "\u001c\u001d\u001e\u001f",
        "x\u001cy\u001dz\u001e\u001fw",
        # zero-width characters (not whitespace in Unicode)
        "zero\u200bwidth\u200bspace",
        "\u200b",
        "\u200c\u200d",
        "\ufeffBOM at start",
        " \u00a0\u2003\u3000\t\n\u000b\u000c\r\u0085\u2028\u2029",
    ]
    return items


def add_whitespace(c):
    c.add_all("whitespace", "ws", whitespace_items())


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------

def digit_items():
    rng = random.Random(SEED ^ 0xD161)
    items = []
    for n in range(1, 21):
        first = str(rng.randrange(1, 10))
        rest = "".join(str(rng.randrange(10)) for _ in range(n - 1))
        items.append(first + rest)
    items += [
        "0",
        "007",
        "10000000000000000000000000000000000000000",
        "3.14159",
        "0.000001",
        ".5 and 5. and 0.50",
        "-273.15",
        "-42",
        "\u221217 (with a minus sign)",
        "+1 (555) 123-4567",
        "+44 20 7946 0958",
        "1,234,567.89",
        "1.234.567,89",
        "1 234 567",
        "1'234'567",
        "2024-03-15T13:45:30Z",
        "15/03/2024 at 09:05",
        "12:30:45.678",
        "v1.2.3",
        "version 10.0.19045.3803 and 1.0.0-beta+exp.sha.5114f85",
        "6.022e23",
        "1.6E-19 and 1e-10",
        "0x1F 0b1010 0o777",
        "abc123def",
        "1st 2nd 3rd 4th 21st 102nd",
        "IPv4 192.168.0.1:8080",
        "$1,000.00 \u20ac2.50 \u00a33 \u00a5400 100%",
        "2^10=1024, 3*4=12, 7/8",
        "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
        "\u06f1\u06f2\u06f3\u06f4 \u06f5\u06f6",
        "\u0966\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e\u096f",
        "\u09e7\u09e8\u09e9 \u0e51\u0e52\u0e53",
        "\uff11\uff12\uff13\uff14\uff15",
        "x\u00b2\u00b3 + y\u2074 = z\u2070",
        "H\u2082O CO\u2082",
        "\u00bd \u00be \u2153 \u215e",
        "\u216b \u2177 \u2163",
        "\u2460\u2461\u2462\u2463\u2469",
        "1234567890 1234567890 1234567890 1234567890",
        "123 456 789 012 345 678 901",
        "9" * 64,
    ]
    return items


def add_digits(c):
    c.add_all("digits", "num", digit_items())


# ---------------------------------------------------------------------------
# emoji
# ---------------------------------------------------------------------------

ZWJ = "\u200d"
VS16 = "\ufe0f"

EMOJI = [
    "\U0001F600",
    "\U0001F44D\U0001F3FD",
    "\U0001F44B\U0001F3FB\U0001F44B\U0001F3FC\U0001F44B\U0001F3FD\U0001F44B\U0001F3FE\U0001F44B\U0001F3FF",
    "\U0001F468" + ZWJ + "\U0001F469" + ZWJ + "\U0001F467" + ZWJ + "\U0001F466",
    "\U0001F469\U0001F3FE" + ZWJ + "\U0001F4BB coding all night",
    "\U0001F9D1" + ZWJ + "\U0001F91D" + ZWJ + "\U0001F9D1",
    "\U0001F3F3" + VS16 + ZWJ + "\U0001F308",
    "\U0001F3F4" + ZWJ + "\u2620" + VS16,
    "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",
    "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5\U0001F1E9\U0001F1EA",
    "\U0001F1EA\U0001F1FA flag",
    "\U0001F1E6",
    "1" + VS16 + "\u20e3" + "2" + VS16 + "\u20e3" + "#" + VS16 + "\u20e3",
    "\u2764" + VS16 + " vs \u2764",
    "\u263a" + VS16 + " \u263a",
    "\u00a9" + VS16 + " \u00ae" + VS16 + " \u2122" + VS16,
    "I \u2764" + VS16 + " NY",
    "Great job!\U0001F389\U0001F389\U0001F389",
    "hello\U0001F600world",
    "\U0001F525" * 12,
    "\U0001F600\U0001F603\U0001F604\U0001F601\U0001F606\U0001F605\U0001F923\U0001F602",
    ":-) :-( ;-) :D XD <3 :P o_O ^_^ \u00af\\_(\u30c4)_/\u00af",
    "(\u256f\u00b0\u25a1\u00b0\uff09\u256f\ufe35 \u253b\u2501\u253b",
    "emoji at end \U0001F680",
    "\U0001F680 emoji at start",
    "\U0001F642.",
    "(\U0001F60A)",
    "\"\U0001F355\"",
    "\U0001F4AF%",
    "\U0001F441" + VS16 + ZWJ + "\U0001F5E8" + VS16,
    "\U0001F3FD",
    "\u231a\u231b \U0001F004\U0001F0CF",
    "\u270c" + VS16 + " peace \u270c\U0001F3FF",
    "kiss \U0001F48F couple \U0001F491",
    "Let's go!!!\U0001F3C3" + ZWJ + "\u2642" + VS16 + "\U0001F4A8",
    "don't\U0001F62Ds",
    "\U0001F44D's and \U0001F44E't",
    "\u2b50\u2b50\u2b50\u2b50\u2606 (4/5)",
]


def add_emoji(c):
    c.add_all("emoji", "em", EMOJI)


# ---------------------------------------------------------------------------
# special tokens in text
# ---------------------------------------------------------------------------

SPECIAL = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat's the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are SmolLM, a concise assistant.<|im_end|>\n<|im_start|>user\nTranslate 'it's raining' to French.<|im_end|>\n<|im_start|>assistant\nIl pleut.<|im_end|>\n<|endoftext|>",
    "Hello<|endoftext|>World",
    "text <|endoftext|> text",
    "<|endoftext|><|endoftext|><|endoftext|>",
    "<|im_start|><|im_end|>",
    "<|im_start|>",
    "The end.<|im_end|>",
    "  <|im_start|>  assistant  <|im_end|>  ",
    "\n<|im_start|>\n\n<|im_end|>\n",
    "<|im_end|><|im_start|>",
    "<repo_name>draftwise/engine<file_sep><filename>src/main.cpp\nint main() { return 0; }\n<|endoftext|>",
    "<filename>README.md\n# Title\n<file_sep>",
    "<repo_name> <file_sep> <filename>",
    "<|im_start",
    "<|im_end |>",
    "< |im_end|>",
    "<|im_start|",
    "|im_start|>",
    "<|IM_START|>",
    "<|im_strat|>user",
    "<||im_end||>",
    "<<|im_end|>>",
    "<|endoftext|",
    "<|endoftext |>",
    "<repo_name",
    "<file_sep >",
    "<filename>>",
    "Hello</s>world",
    "<s> [INST] hi [/INST]",
    "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4 </s><s>[INST] thanks [/INST]",
    "An <unk> token in text",
    "a<unk>b",
    "</s></s>",
    "<s>",
    "< s> <s > <S> </s <unk",
    "<0x41>",
    "<0x0A><0xFF>",
    "<0x1F600>",
    "\u2581hello",
    "\u2581\u2581\u2581",
    "hello\u2581world",
    "\u2581",
    "[INST] <pad> <mask> <|begin_of_text|> <|eot_id|>",
    "<|im_start|>\u2581<s>",
]


def add_special(c):
    c.add_all("special", "tok", SPECIAL)


# ---------------------------------------------------------------------------
# invalid UTF-8
# ---------------------------------------------------------------------------

INVALID = [
    b"\x80",
    b"\xbf",
    b"abc\x80def",
    b"\x80\x81\x82\x83",
    bytes(range(0x80, 0xC0)),
    b"\xc2",
    b"end\xc2",
    b"\xc2A",
    b"\xe0abc",
    b"\xf0xyz",
    b"text\xf0",
    b"text\xe0",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xc1\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xed\xa0\xbd\xed\xb8\x80",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    bytes(range(0xF5, 0x100)),
    b"\xfe\xff",
    b"\xff\xfeh\x00i\x00",
    b"text \xe6\x97 more",
    b"abc\xf0\x9f\x98 def",
    b"\xf0\x9fhello",
    "Gr\u00fc\u00dfe".encode() + b"\xff" + "\u65e5\u672c\u8a9e".encode() + b"\x80\x80" + "\u041f\u0440\u0438\u0432\u0435\u0442".encode(),
    b"price \xe2\x82",
    b"\xc3\x28",
    b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\xbc",
    b"\xf8\x88\x80\x80\x80",
    b"\xfc\x84\x80\x80\x80\x80",
    "caf\u00e9 na\u00efve".encode("latin-1"),
    b" \x80 \x80 ",
    b"\x80\n\xc2\n",
    b"I'm \xff\xfe\xfd OK",
]


def add_invalid(c):
    c.add_all("invalid_utf8", "bad", INVALID)


# ---------------------------------------------------------------------------
# mixed
# ---------------------------------------------------------------------------

PUNCT_RUNS = [
    "!!!!!!", "......", "----", "====", "```", "?!?!?!", "***", "___",
    "~~~~", "#####", "&&&&", "...", "\u2026\u2026\u2026", "--", "-->", "<!--",
    "::", "::=", "=>", "->", "!==", "&&", "||", "///", ";;", ",,,", "'''",
    '"""', "\u2014\u2014", "\u00b7\u00b7\u00b7",
]

QUOTES = [
    "\u201eGuten Tag\u201c", "\u201csmart quotes\u201d", "\u00abguillemets\u00bb",
    "\u2018single\u2019", "\u2039angle\u203a", "\u300c\u62ec\u5f27\u300d",
    "\u300e\u4e8c\u91cd\u300f", "5\u2032 11\u2033", "`backtick`",
    "\"double\"", "'single'", "\u00bb reversed \u00ab",
]

APOSTROPHES = [
    "'s", " 's", "''s", "'S", "'t've", "123's", "\U0001F600's", "\u2019s",
    "'ll'", "'", "''", "'''", " 'RE", "'m'", "-'d", ".'ve", "\n'll",
    "\u00e9't", "\u4e2d's",
]

COMBINING = [
    "\u0301", "\u0301\u0302\u0303", " \u0308", "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307",
    "\u20dd", "\u0e31", "\u094d", "\u05b7", "\u064b\u064c",
]

NUL_FFFD = [
    "abc\u0000def", "\u0000", "\ufffd", "bad\ufffdchar", "\u0000\u0000 \ufffd",
    "\ufffd\ufffd\ufffd", "end\u0000",
]

JOINERS = ["", "", " ", "\n", "  ", "\t", ", ", "\n\n", " - "]


def _fragment(rng, text, max_chars=80):
    """A random character slice of `text` (whole text when it is short)."""
    if len(text) <= max_chars:
        return text
    n = rng.randrange(8, max_chars + 1)
    start = rng.randrange(0, len(text) - n + 1)
    return text[start:start + n]


def _clip_utf8(s, limit):
    while len(s.encode("utf-8")) > limit:
        s = s[:-1]
    return s


def mixed_items():
    rng = random.Random(SEED)
    items = []

    # Hand-picked edge cases.
    letters = "abcdefghijklmnopqrstuvwxyz"
    items.append("x" * 200)
    items.append("".join(rng.choice(letters) for _ in range(200)))
    items.append("Pneumono" + "".join(rng.choice(letters) for _ in range(240)) + "osis")
    items.append("\u0436" * 120)
    items.append("".join(rng.choice("\u0430\u0431\u0432\u0433\u0434\u0435\u0451\u0436\u0437\u0438\u043a\u043b\u043c\u043d\u043e\u043f") for _ in range(150)))
    items.append("\u5b57" * 60 + "\u6f22\u5b57\u304b\u306a\u4ea4\u3058\u308a\u6587" * 10)
    items.append("A" * 100 + "1" * 100 + "!" * 100)
    items.append(" ".join(PUNCT_RUNS))
    items.append("".join(PUNCT_RUNS))
    items.append("!@#$%^&*()_+-=[]{}|;':\",./<>?`~\\")
    items.append("?!.,;:")
    items.append("!" * 64)
    items.append("." * 50 + "\n" + "-" * 50 + "\n" + "=" * 50)
    items.append("```python\nprint('hi')\n```")
    items.append(" ".join(QUOTES))
    items.append("".join(QUOTES))
    items.append(" ".join(APOSTROPHES))
    items.append("".join(APOSTROPHES))
    items.append("'s")
    items.append(" 's")
    items.append("''s")
    items.append("  's's's 'S'T'RE'VE'M'LL'D")
    items.append("\u2019s \u2019S \u2019re \u2019ll")
    items.append("".join(COMBINING))
    items.append("\u0301")
    items.append(" \u0301 \u0308\u0308 \u20dd")
    items.append(nfd("Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034da\u0300\u0301\u0302l\u0327\u0328g\u0316\u0317o\u0335\u0336"))  # zalgo, canonical order
    items.append("".join(NUL_FFFD))
    items.append("abc\u0000def")
    items.append("\u0000")
    items.append("\ufffd")
    items.append("null\u0000 in the\u0000middle and replacement \ufffd char")
    items.append("!!!\u0000???\ufffd...")
    items.append("WOW!!!!!! Really?????? ......no way------")

    # Fragment pools (invalid UTF-8 excluded here; see the byte entries below).
    pools = [
        [t for _, t in PROSE] + PROSE_NFD + PROSE_MIXED,
        [t for _, t in CODE],
        [t for t in whitespace_items() if t],
        digit_items(),
        EMOJI,
        SPECIAL,
        PUNCT_RUNS,
        QUOTES,
        APOSTROPHES,
        COMBINING,
        NUL_FFFD,
    ]
    for _ in range(48):
        k = rng.randrange(2, 7)
        parts = []
        for _ in range(k):
            pool = pools[rng.randrange(len(pools))]
            parts.append(_fragment(rng, pool[rng.randrange(len(pool))]))
            parts.append(JOINERS[rng.randrange(len(JOINERS))])
        s = _clip_utf8("".join(parts[:-1]), MAX_ENTRY_BYTES)
        assert s
        items.append(s)

    # A few mixed entries that combine valid text with invalid bytes.
    prose_pool = [t for _, t in PROSE]
    for _ in range(4):
        a = _fragment(rng, prose_pool[rng.randrange(len(prose_pool))], 40)
        b = _fragment(rng, EMOJI[rng.randrange(len(EMOJI))], 20)
        bad = INVALID[rng.randrange(len(INVALID))][:8]
        items.append(a.encode("utf-8") + bad + b.encode("utf-8") + b" 's\xc3")
    return items


def add_mixed(c):
    c.add_all("mixed", "mix", mixed_items())


# ---------------------------------------------------------------------------
# unicode_versions: characters new in Unicode 15.0 to 18.0. Hugging Face tokenizers
# classifies them by different versions in different places (its regex engine by 16.0,
# the Digits rule by Rust's 17.0), so these pin down the tables a tokenizer must use.
# ---------------------------------------------------------------------------

UNICODE_VERSIONS = [
    ("cjk15", "a\U00031350\U00031351b \U00031352"),           # CJK Ext H letters (15.0)
    ("cjk151", "x\U0002EBF0\U0002EBF1y"),                      # CJK Ext I letters (15.1)
    ("kawi", "n\U00011F50\U00011F51\U00011F52m 4"),            # Kawi digits (15.0)
    ("mundari", "\U0001E4F0\U0001E4F1!"),                      # Nag Mundari digits (15.0)
    ("garay", "v16 \U00010D40\U00010D41\U00010D42 done"),      # Garay digits (16.0)
    ("outlined", "\U0001CCF0\U0001CCF1\U0001CCF2\U0001CCF3!"),  # outlined digits (16.0)
    ("kirat", "k\U00016D70\U00016D71"),                        # Kirat Rai digits (16.0)
    ("digits17", "z\U00011DE0\U00011DE1\U00011DE2 7"),         # digits new in 17.0
    ("digits17b", "\U00011DE0\U00011DE1!?"),
    ("letters17", "a\u088f\u088fb \u088f1"),                   # a letter new in 17.0
    ("letters18", "a\u0558\u0558b"),                           # a letter new in 18.0
    ("numbers18", "a\U0001246F\U0001246Fb 12"),                 # a number new in 18.0
    ("mix", "\U00031350 \U00010D40\U00011DE0\u088f \U0001246F end"),
]


def add_unicode_versions(c):
    for tag, text in UNICODE_VERSIONS:
        c.add("unicode_versions", tag, text)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def build():
    c = Corpus()
    add_prose(c)
    add_code(c)
    add_whitespace(c)
    add_digits(c)
    add_emoji(c)
    add_special(c)
    add_invalid(c)
    add_mixed(c)
    add_unicode_versions(c)
    return c


def serialize(corpus):
    out = []
    for name, category, raw in corpus.entries:
        obj = {"name": name, "category": category, "hex": raw.hex()}
        out.append(json.dumps(obj, ensure_ascii=True))
    return ("\n".join(out) + "\n").encode("ascii")


def verify(path):
    """Read the file back and check the corpus invariants."""
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) < MAX_FILE_BYTES, "file too large: %d bytes" % len(data)
    assert b"\r" not in data, "file must use \\n line endings"
    lines = data.decode("ascii").split("\n")
    assert lines[-1] == "", "file must end with a newline"
    lines = lines[:-1]
    names = set()
    counts = {k: 0 for k in CATEGORY_ORDER}
    empty = 0
    invalid_by_cat = {k: 0 for k in CATEGORY_ORDER}
    for i, line in enumerate(lines, 1):
        obj = json.loads(line)
        assert list(obj) == ["name", "category", "hex"], (i, list(obj))
        name, cat, hx = obj["name"], obj["category"], obj["hex"]
        assert name.isascii() and name not in names, (i, name)
        names.add(name)
        assert cat in counts, (i, cat)
        counts[cat] += 1
        assert hx == hx.lower(), (i, name)
        raw = bytes.fromhex(hx)
        assert len(raw) <= MAX_ENTRY_BYTES, (name, len(raw))
        if not raw:
            empty += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            invalid_by_cat[cat] += 1
        else:
            assert (unicodedata.is_normalized("NFC", text)
                    or unicodedata.is_normalized("NFD", text)), name
    assert empty == 1, "empty string must appear exactly once (got %d)" % empty
    assert len(lines) >= 330, len(lines)
    for cat, minimum in CATEGORY_MINIMUMS.items():
        assert counts[cat] >= minimum, (cat, counts[cat], minimum)
    assert invalid_by_cat["invalid_utf8"] == counts["invalid_utf8"], \
        "every invalid_utf8 entry must really be invalid UTF-8"
    for cat in ("prose", "code", "whitespace", "digits", "emoji", "special", "unicode_versions"):
        assert invalid_by_cat[cat] == 0, cat
    assert invalid_by_cat["mixed"] <= 5, invalid_by_cat["mixed"]
    return counts, len(lines), len(data)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(os.path.dirname(here), "tests", "fixtures",
                               "tokenizer", "corpus.jsonl")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out, help="output path")
    args = ap.parse_args(argv)

    data = serialize(build())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(data)

    counts, n_lines, n_bytes = verify(args.out)
    for cat in CATEGORY_ORDER:
        print("%-13s %4d" % (cat, counts[cat]))
    print("%-13s %4d entries, %d bytes -> %s" % ("total", n_lines, n_bytes, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
