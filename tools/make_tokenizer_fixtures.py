#!/usr/bin/env python3
"""Reference data for clipkd's CLIP tokenizer (`crates/clipkd-data/src/tokenizer*`).

The Rust tokenizer must give exactly the token ids of open_clip 3.3.0's `open_clip.tokenize`
(`SimpleTokenizer`, default `clean="lower"`, which runs ftfy 6.3.1's `fix_text` and Python 3.11's
`html.unescape`). This script has two jobs:

``tables``
    Regenerates the data that the Rust port of ftfy/html needs, straight from the Python modules
    that open_clip runs, so that nothing is retyped by hand:

    * ``crates/clipkd-data/src/tokenizer/tables.rs``: open_clip's pre-tokenizer character
      classes as the Python ``regex`` module defines them, ftfy's mojibake heuristic (its
      ``BADNESS_RE`` translated to Rust regex syntax from Python's own parse tree), the
      character sets of its UTF-8 detector, the single-byte codecs it tries (Python codec
      tables), its width map, and Python's ``str.isspace`` set.
    * ``crates/clipkd-data/assets/html_entities.tsv``: Python's ``html.entities.html5`` table and
      ftfy's extra all-caps entities.

``fixtures``
    Writes ``crates/clipkd-data/tests/fixtures/tokenizer/``: for every text, open_clip's cleaned text and token ids.

    Text sources (downloaded with pip into a cache folder, never installed):

    * CuPL image descriptions shipped in ``clip-benchmark==1.6.2`` (PyPI, MIT licence,
      ``clip_benchmark/datasets/cupl_prompts.json``): English sentences describing what photos of
      each ImageNet class look like (Pratt et al., "What does a platypus look like?", 2022). No
      PyPI/npm/Debian package that we could find ships human-written image captions (COCO,
      Flickr, CC), so these machine-written image descriptions are the closest real corpus; the
      fixture README says so.
    * ImageNet zero-shot prompts built from the same package's ``en_classnames.json`` and
      ``en_zeroshot_classification_templates.json`` (the texts CLIP evaluation really tokenizes),
      and its Chinese, Japanese, Arabic, Italian and BabelNet (``babel_imagenet.json``) class
      names.
    * Every ``original`` and ``fixed`` text of ftfy's own test suite (``tests/test_cases.json`` in
      the ``ftfy==6.3.1`` sdist on PyPI, Apache-2.0): real mojibake collected from the web.
    * Hand-written hard cases (HTML entities, NFC/NFD, CJK, emoji, mojibake, quotes, ligatures,
      whitespace, long texts, contractions, numbers, punctuation, case), every character whose
      lowercase differs, every canonically decomposable character in NFD, and seeded random
      strings drawn from ftfy's mojibake alphabet.

Usage::

    /work/venv/bin/python tools/make_tokenizer_fixtures.py [tables|fixtures|all] [--cache DIR]

Deterministic: fixed seeds, sorted iteration; rerunning gives byte-identical files.
"""

from __future__ import annotations

import argparse
import html
import html.entities
import json
import random
import re
import subprocess
import sys
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import ftfy
import ftfy.badness
import ftfy.chardata
import open_clip
from open_clip.tokenizer import SimpleTokenizer, _clean_lower, decode as oc_decode

try:  # Python 3.11 keeps the parser here; `sre_parse` is the deprecated alias.
    from re import _parser as sre_parse  # type: ignore[attr-defined]
    from re import _constants as sre_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants as sre_c  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
CRATE = ROOT / "crates" / "clipkd-data"
TABLES_RS = CRATE / "src" / "tokenizer" / "tables.rs"
ENTITIES_TSV = CRATE / "assets" / "html_entities.tsv"
FIXTURES = ROOT / "crates" / "clipkd-data" / "tests" / "fixtures" / "tokenizer"

CLIP_BENCHMARK = "clip-benchmark==1.6.2"
FTFY_SDIST = "ftfy==6.3.1"
MAX_CP = 0x110000
SURROGATES = range(0xD800, 0xE000)


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------


def chars_matching(pattern: str) -> list[int]:
    """All code points (surrogates excluded) that `pattern` (one char class) matches."""
    rx = re.compile(pattern)
    return [c for c in range(MAX_CP) if c not in SURROGATES and rx.fullmatch(chr(c))]


def to_ranges(cps: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(set(cps)):
        if out and out[-1][1] + 1 == c:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def rust_ranges(name: str, doc: str, cps: list[int]) -> str:
    body = ", ".join(f"(0x{a:X}, 0x{b:X})" for a, b in to_ranges(cps))
    return f"/// {doc}\npub(super) const {name}: &[(u32, u32)] = &[{body}];\n"


def rust_str(text: str) -> str:
    """`text` as the inside of a Rust string literal, every character escaped."""
    return "".join(f"\\u{{{ord(ch):X}}}" for ch in text)


def rust_class_body(cps: list[int]) -> str:
    """The inside of a Rust regex character class matching exactly `cps`."""
    return "".join(class_item(a) if a == b else f"{class_item(a)}-{class_item(b)}" for a, b in to_ranges(cps))


def class_item(c: int) -> str:
    return f"\\x{{{c:X}}}"


PY_SPACE = [c for c in range(MAX_CP) if chr(c).isspace()]
# Python's `re` `\w` on str (Unicode 14 here), spelled out so that Rust's newer tables do not leak in.
PY_WORD = [c for c in range(MAX_CP) if c not in SURROGATES and re.match(r"\w", chr(c))]


def sre_to_rust(items) -> str:
    """Translate a parsed Python `re` pattern (the subset ftfy's BADNESS_RE uses) to Rust regex."""
    out = []
    for op, av in items:
        if op is sre_c.LITERAL:
            out.append(class_item(av))
        elif op is sre_c.NOT_LITERAL:
            out.append(f"[^{class_item(av)}]")
        elif op is sre_c.ANY:
            out.append(".")  # neither Python (no DOTALL) nor Rust match "\n" here
        elif op is sre_c.AT:
            if av is sre_c.AT_BEGINNING or av is sre_c.AT_BEGINNING_STRING:
                out.append(r"\A")
            else:
                raise ValueError(f"unsupported anchor {av}")
        elif op is sre_c.IN:
            out.append(sre_class_to_rust(av))
        elif op is sre_c.BRANCH:
            _, branches = av
            out.append("(?:" + "|".join(sre_to_rust(b) for b in branches) + ")")
        elif op is sre_c.SUBPATTERN:
            out.append("(?:" + sre_to_rust(av[-1]) + ")")
        elif op is sre_c.MAX_REPEAT:
            lo, hi, sub = av
            hi_s = "" if hi is sre_c.MAXREPEAT else str(hi)
            out.append(f"(?:{sre_to_rust(sub)}){{{lo},{hi_s}}}")
        else:
            raise ValueError(f"unsupported regex op {op}")
    return "".join(out)


def sre_class_to_rust(items) -> str:
    parts = []
    negate = False
    for op, av in items:
        if op is sre_c.NEGATE:
            negate = True
        elif op is sre_c.LITERAL:
            parts.append(class_item(av))
        elif op is sre_c.RANGE:
            parts.append(f"{class_item(av[0])}-{class_item(av[1])}")
        elif op is sre_c.CATEGORY:
            if av is sre_c.CATEGORY_SPACE:
                parts.extend(f"{class_item(a)}-{class_item(b)}" for a, b in to_ranges(PY_SPACE))
            elif av is sre_c.CATEGORY_WORD:
                parts.append(rust_class_body(PY_WORD))
            else:
                raise ValueError(f"unsupported category {av}")
        else:
            raise ValueError(f"unsupported class item {op}")
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def codec_table(encoding: str) -> list[int]:
    """Code points that bytes 0x80..=0xFF decode to in `encoding` (ftfy's codecs included)."""
    chars = bytes(range(0x80, 0x100)).decode(encoding)
    assert len(chars) == 128, encoding
    return [ord(ch) for ch in chars]


def gen_tables() -> None:
    badness = sre_to_rust(sre_parse.parse(ftfy.badness.BADNESS_RE.pattern, re.VERBOSE))
    clues = ftfy.chardata.UTF8_CLUES
    sets = {k: chars_matching("[" + v + "]") for k, v in clues.items()}
    f2, f3, f4 = (set(sets[k]) for k in ("utf8_first_of_2", "utf8_first_of_3", "utf8_first_of_4"))
    assert not (f2 & f3) and not (f2 & f4) and not (f3 & f4), "UTF-8 lead sets overlap"

    encodings = []
    for enc in ftfy.chardata.CHARMAP_ENCODINGS:
        table = codec_table(enc)
        sloppy = enc.startswith("sloppy")
        if sloppy:
            assert bytes([0x1A]).decode(enc) == "\ufffd"
        allchars = table + [ord(bytes([0x1A]).decode(enc))] + [c for c in range(0x80) if c != 0x1A]
        assert len(set(allchars)) == len(allchars), f"{enc} is not one-to-one"
        encodings.append((enc, sloppy, table))

    width = []
    for cp, rep in sorted(ftfy.chardata.WIDTH_MAP.items()):
        width.append((cp, rep))

    # open_clip's pre-tokenizer classes as the `regex` module (with IGNORECASE) has them, so
    # that characters of newer Unicode versions split exactly as in Python.
    import regex as mrab_regex
    pre = {}
    for name, pat in [("letter", r"[\p{L}]"), ("number", r"[\p{N}]"), ("other", r"[^\s\p{L}\p{N}]")]:
        rx = mrab_regex.compile(pat, mrab_regex.IGNORECASE)
        pre[name] = [c for c in range(MAX_CP) if c not in SURROGATES and rx.match(chr(c))]
    not_other = sorted(set(range(MAX_CP)) - set(SURROGATES) - set(pre["other"]))

    # Python's `str.lower()`: which code points it changes, and (for U+03A3's Final_Sigma rule)
    # which are skipped as case-ignorable and which count as cased. Probed through `lower()`
    # itself: "xΣ" ends in "ς" iff x is cased and not ignorable; "AxΣ" iff x is ignorable or
    # cased. (Whether an ignorable character is also cased never matters to the rule.)
    lower_changes = [c for c in range(MAX_CP) if c not in SURROGATES and chr(c).lower() != chr(c)]
    p1 = [c for c in range(MAX_CP) if c not in SURROGATES and (chr(c) + "\u03a3").lower()[-1] == "\u03c2"]
    p2 = {c for c in range(MAX_CP) if c not in SURROGATES and ("A" + chr(c) + "\u03a3").lower()[-1] == "\u03c2"}
    cased = p1
    unassigned = [c for c in range(MAX_CP) if c not in SURROGATES and unicodedata.category(chr(c)) == "Cn"]
    ignorable = sorted(p2 - set(p1))

    lines = [
        "//! Tables for the tokenizer and its ftfy port, GENERATED by",
        "//! `tools/make_tokenizer_fixtures.py tables` from",
        f"//! ftfy {ftfy.__version__} and Python {sys.version.split()[0]} (Unicode "
        f"{unicodedata.unidata_version}). Do not edit by hand.",
        "//!",
        "//! ftfy is Apache-2.0 licensed (Copyright Robyn Speer); these tables are data derived",
        "//! from it.",
        "",
        "/// ftfy's `badness.BADNESS_RE`, translated from Python's parse tree to Rust regex syntax.",
        "/// Python's `\\s` and `\\w` are spelled out as the sets Python 3.11 (Unicode 14) has.",
        f"pub(super) const BADNESS_PATTERN: &str = r\"{badness}\";",
        "",
        rust_ranges("PY_SPACE", "Code points for which Python's `str.isspace()` is true.", PY_SPACE),
        f"/// open_clip's pre-tokenizer `[\\p{{L}}]` (Python `regex` {mrab_regex.__version__}, IGNORECASE).",
        f"pub(super) const PRE_LETTER: &str = r\"{rust_class_body(pre['letter'])}\";",
        f"/// open_clip's pre-tokenizer `[\\p{{N}}]` (Python `regex` {mrab_regex.__version__}, IGNORECASE).",
        f"pub(super) const PRE_NUMBER: &str = r\"{rust_class_body(pre['number'])}\";",
        rust_ranges("PY_UNASSIGNED", "Code points unassigned in Python's Unicode version (`unicodedata` "
                    "category Cn); NFC leaves them alone there.", unassigned),
        rust_ranges("PY_LOWER_CHANGES", "Code points that Python's `str.lower()` changes.", lower_changes),
        rust_ranges("PY_CASED", "Cased, not case-ignorable code points (Python's Final_Sigma rule).", cased),
        rust_ranges("PY_CASE_IGNORABLE", "Case-ignorable code points (Python's Final_Sigma rule).", ignorable),
        "/// The complement of open_clip's pre-tokenizer `[^\\s\\p{L}\\p{N}]` (with IGNORECASE, U+0345",
        "/// case-folds into `\\p{L}` and so is excluded too).",
        f"pub(super) const PRE_NOT_OTHER: &str = r\"{rust_class_body(not_other)}\";",
        "",
    ]
    for key, const in [
        ("utf8_first_of_2", "UTF8_FIRST_OF_2"),
        ("utf8_first_of_3", "UTF8_FIRST_OF_3"),
        ("utf8_first_of_4", "UTF8_FIRST_OF_4"),
        ("utf8_continuation", "UTF8_CONTINUATION"),
        ("utf8_continuation_strict", "UTF8_CONTINUATION_STRICT"),
    ]:
        lines.append(rust_ranges(const, f"ftfy's `chardata.UTF8_CLUES[\"{key}\"]` character set.",
                                 sets[key]))
    lines.append("/// A single-byte encoding that ftfy tries when it repairs mojibake.")
    lines.append("pub(super) struct Charmap {")
    lines.append("    /// Python's codec name.")
    lines.append("    pub(super) name: &'static str,")
    lines.append("    /// ftfy's `sloppy-*` codecs map byte 0x1A to U+FFFD.")
    lines.append("    pub(super) sloppy: bool,")
    lines.append("    /// The code points of bytes 0x80..=0xFF.")
    lines.append("    pub(super) high: [u16; 128],")
    lines.append("}")
    lines.append("")
    lines.append("/// ftfy's `chardata.CHARMAP_ENCODINGS`, in the order ftfy tries them.")
    lines.append("pub(super) const CHARMAPS: &[Charmap] = &[")
    for enc, sloppy, table in encodings:
        assert all(c <= 0xFFFF for c in table)
        body = ", ".join(f"0x{c:04X}" for c in table)
        lines.append(f"    Charmap {{ name: \"{enc}\", sloppy: {str(sloppy).lower()}, high: [{body}] }},")
    lines.append("];")
    lines.append("")
    lines.append("/// ftfy's `chardata.WIDTH_MAP`: fullwidth/halfwidth forms and U+3000 to their normal form.")
    body = ", ".join(f"(0x{cp:X}, \"{rust_str(rep)}\")" for cp, rep in width)
    lines.append(f"pub(super) const WIDTH_MAP: &[(u32, &str)] = &[{body}];")
    lines.append("")
    TABLES_RS.write_text("\n".join(lines))
    print(f"wrote {TABLES_RS.relative_to(ROOT)}")

    # HTML entities: Python's html5 table, and ftfy's additional all-caps names.
    h5 = html.entities.html5
    ftfy_ents = ftfy.chardata.HTML_ENTITIES
    rebuilt = {"&" + n: v for n, v in h5.items() if n.endswith(";")}
    extra = {k: v for k, v in ftfy_ents.items() if k not in rebuilt}
    assert all(rebuilt[k] == ftfy_ents[k] for k in rebuilt if k in ftfy_ents)
    assert set(rebuilt) | set(extra) == set(ftfy_ents)
    out = [
        "# HTML named character references, GENERATED by tools/make_tokenizer_fixtures.py tables.",
        f"# 'h' rows: Python {sys.version.split()[0]} html.entities.html5 (the WHATWG HTML5 list,",
        "#   names with and without the trailing ';'), used by html.unescape.",
        f"# 'f' rows: ftfy {ftfy.__version__}'s extra all-caps entities (ftfy.chardata.HTML_ENTITIES).",
        "# Columns: kind, name, code points (hex, space separated).",
    ]
    for name in sorted(h5):
        out.append(f"h\t{name}\t{' '.join(f'{ord(ch):X}' for ch in h5[name])}")
    for name in sorted(extra):
        assert name.startswith("&")
        out.append(f"f\t{name[1:]}\t{' '.join(f'{ord(ch):X}' for ch in extra[name])}")
    ENTITIES_TSV.write_text("\n".join(out) + "\n")
    print(f"wrote {ENTITIES_TSV.relative_to(ROOT)} ({len(h5)} html5 + {len(extra)} ftfy names)")


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------


def pip_download(spec: str, cache: Path, sdist: bool) -> Path:
    dest = cache / spec.replace("==", "-")
    if not dest.exists() or not any(dest.iterdir()):
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
        if sdist:
            cmd[4:4] = ["--no-binary", ":all:"]
        subprocess.run(cmd, check=True)
    files = sorted(dest.iterdir())
    assert len(files) == 1, files
    return files[0]


def load_sources(cache: Path) -> list[tuple[str, str]]:
    """(source tag, text) pairs from the shipped corpora, deterministic."""
    rng = random.Random(0)
    out: list[tuple[str, str]] = []

    wheel = pip_download(CLIP_BENCHMARK, cache, sdist=False)
    with zipfile.ZipFile(wheel) as z:
        def load(name: str):
            return json.loads(z.read(f"clip_benchmark/datasets/{name}.json").decode("utf-8"))

        cupl = load("cupl_prompts")["imagenet1k"]
        classes = sorted(cupl)
        # One description per ImageNet class, then 300 more picked at random.
        for c in classes:
            out.append(("cupl", rng.choice(cupl[c])))
        pool = [d for c in classes for d in cupl[c]]
        for d in rng.sample(pool, 300):
            out.append(("cupl", d))

        names = load("en_classnames")["imagenet1k"]
        templates = load("en_zeroshot_classification_templates")["imagenet1k"]
        for _ in range(300):
            out.append(("prompt", rng.choice(templates).replace("{c}", rng.choice(names))))

        for lang in ["cn", "jp", "ar", "it"]:
            ln = load(f"{lang}_classnames")["imagenet1k"]
            for n in rng.sample(ln, 40):
                out.append((f"classname-{lang}", n))
        babel = load("babel_imagenet")
        for lang in sorted(babel):
            _ids, lnames = babel[lang]
            for n in rng.sample(lnames, min(3, len(lnames))):
                out.append((f"babel-{lang.lower()}", n))

    sdist = pip_download(FTFY_SDIST, cache, sdist=True)
    with tarfile.open(sdist) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("tests/test_cases.json"))
        cases = json.loads(t.extractfile(member).read().decode("utf-8"))  # type: ignore[union-attr]
    for case in cases:
        out.append(("ftfy-case", case["original"]))
        out.append(("ftfy-fixed", case["fixed"]))
    return out


LONG_CAPTION = (
    "A crowded city street at dusk: yellow taxis line up at a red light while cyclists weave "
    "between them, neon signs reflect in puddles left by the afternoon rain, a street vendor "
    "sells roasted chestnuts from a steaming cart, tourists photograph the skyline with their "
    "phones, and in the distance a tall clock tower shows a quarter past seven as pigeons "
    "settle on the ledges of old brick buildings covered with ivy and faded advertisements."
)

HARD_CASES = [
    # empty, whitespace
    "", " ", "   \t\n  ", "\u00a0\u2003\u3000", "\n\n", "\t", "\x1c\x1d\x1e\x1f", "a\x1cb\x1dc\x1ed\x1ff",
    "\u200b", "zero\u200bwidth\u200cjoiners\u200d", "\ufeffbom at start", "bom\ufeffinside",
    "tab\there", "many   spaces\t\tand\n\nnewlines", "CRLF\r\nline\rline\u2028x\u2029y\x85z",
    "\u1680ogham\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f.",
    # case and contractions
    "A photo of a cat.", "A PHOTO OF A CAT.", "a photo of a cat", "It's a dog's life, isn't it?",
    "They're here; we've gone; I'm ok; you'll see; he'd go.", "IT'S THEY'RE WE'VE I'M YOU'LL HE'D",
    "'s 't 're 've 'm 'll 'd", "'S 'T 'RE", "rock'n'roll", "o'clock ''quoted'' '", "'ſ 'ſt", "K\u212a",
    "don\u2019t", "\u2018single\u2019 \u201cdouble\u201d \u201elow\u201f \u201bq\u201a \u02bcmodifier",
    # HTML entities
    "&amp; &lt;b&gt; &quot;hi&quot; &#39;x&#39; &#x27;y&#x27;", "&amp;amp;", "&amp;lt;tag&amp;gt;",
    "&amp;amp;amp;", "&ampersand", "AT&T and H&M", "fish &chips", "&copy 2020", "&copy; 2020",
    "this&not that", "&notit;", "&nbsp;&nbsp;x", "caf&eacute;", "CAF&EACUTE;", "P&EACUTE;REZ",
    "&EACUTE", "&Eacute;", "&eAcute;", "&#128512;", "&#x1F600;", "&#X1f600;", "&#0;", "&#x80;",
    "&#150;", "&#x9d;", "&#xD800;", "&#1114112;", "&#99999999999999999999;", "&#65", "&#x41",
    "&#65x", "&#;", "&#x;", "&#abc;", "&#12a;", "&lt3", "&gtx", "&amp", "&AMP", "&AMP;",
    "&ampx;", "&Jscr;ohn &HilbertSpace;ancock", "&checkmark;", "&ntilde; &Ntilde; &NTILDE; &nTILDE;",
    "BUNDESSTRA&SZLIG;E", "&lt;tag&gt; <b>bold</b> &amp;", "a < b &amp; c",
    "line one &amp;\nline two <\nline three &amp;", "no lt &amp;\nsecond &eacute;",
    "&" + "a" * 40 + ";", "&abcdefghijklmnopqrstuvwxyz;", "&frac12;&frac14; &half;", "&#8217;s",
    "&hellip;&mdash;&ndash;", "&NotNestedGreaterGreater;", "&nvlt;", "&bne;", "&fjlig;",
    "&#x10FFFF;", "&#xFFFE;", "&#xb;", "&#13;", "&#x1b;",
    # accents, normalization
    "caf\u00e9", "cafe\u0301", "A\u030angstro\u0308m", "\u00c5ngstr\u00f6m", "na\u00efve r\u00e9sum\u00e9",
    "e\u0301\u0301\u0301", "\u0345", "a\u0345b", "\u1e9b\u0323", "q\u0307\u0323", "\u212b \u2126",
    "\uac00\u11a8 \u1100\u1161\u11a8", "\u0958\u0959", "\u2000\u2001",
    # ligatures, width
    "\ufb01nancial \ufb02uffy \ufb00 \ufb03 \ufb04 \ufb05 \ufb06", "\u0132ssel \u0133 \u01c4 \u01c5 \u01c6 \u01c7 \u01c8 \u01c9 \u01ca \u01cb \u01cc \u01f1 \u01f2 \u01f3 \u0149",
    "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33", "\uff35\uff80\uff70\uff9d", "\uff76\uff80\uff76\uff85",
    "\uff01\uff1f\uff08\uff09\uff10\uff11\uff12", "\uffe0\uffe1\uffe5\uffe6\uffe8\uffee",
    # scripts
    "\u6771\u4eac\u30bf\u30ef\u30fc\u306e\u591c\u666f", "\u4e2d\u6587\u5b57\u5e55 \u4e00\u53ea\u732b",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5", "\u65e5\u672c\u8a9e\u3068English\u6df7\u5408",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u039f\u03a3 \u03a3",
    "\u0130stanbul \u0131i I\u0307", "\u00df \u1e9e Stra\u00dfe", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440", "\U00020000\U0002a700 \U0001d400\U0001d41a",
    # emoji
    "\U0001f600 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f3f3\ufe0f\u200d\U0001f308 \u2764\ufe0f",
    "\U0001f1ef\U0001f1f5 flag \U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f",
    "cat\U0001f431dog\U0001f436", "\u00a9\u00ae\u2122 \u2603 \u2708\ufe0f",
    # mojibake
    "caf\u00c3\u00a9", "\u00c3 la mode", "\u00c3\u00a0 la", "voil\u00c3 le travail", "don\u00e2\u20ac\u2122t",
    "\u00e2\u20ac\u0153quoted\u00e2\u20ac\ufffd", "sch\u00c3\u00b6n", "Sloven\u00c4\ufffdina",
    "\u00c3\u00a2\u00e2\u201a\u00ac\u00c5\u201c", "\u00c3\u0192\u00c2\u00a9", "\u00d0\u00bf\u00d1\u20ac\u00d0\u00b8\u00d0\u00b2\u00d0\u00b5\u00d1\u201a",
    "\u00e2\u0153\u201d No problems", "&macr;\\_(\u00e3\x83\x84)_/&macr;",
    "Broken text&hellip; it&#x2019;s \ufb02ubberi\ufb01c!", "\x93quoted\x94 \x80100", "\x81\x8d\x8f\x90\x9d",
    "\u00c3\u00a9t\u00c3\u00a9 \u00c3\u00a0 Paris", "The Mona Lisa doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t have eyebrows.",
    "\u00c3\u00a9\u00c0\n", "\u00c3\u00a9\u00c0", "\u00ed\u00a0\u00bd\u00ed\u00b8\u008d", "na\u00c3\u00afve caf\u00c3\u00a9 \u2014 r\u00c3\u00a9sum\u00c3\u00a9",
    "\u00e6\u0096\u0087\u00e5\u00ad\u0097\u00e5\u008c\u0096\u00e3\u0081\u0091",
    # control characters and terminal escapes
    "a\x00b\x07c\x08d\x0be\x0ef\x7fg", "\x1b[36;44mblue text\x1b[0m", "\x1b[1mbold\x1b[m", "rtl \u202e txt \u202c",
    "\u206a\u206f\ufff9\ufffa\ufffb\ufffc", "\U0001d173\U0001d17a", "\x0c form feed",
    # numbers, punctuation
    "123 4.5 1,000,000 3rd 2nd \u00bd \u00b2 \u2460 \u0663 \u0e53", "\u216b \u2170 \u2160\u2161", "2024-01-01T12:34:56Z",
    "!!!???...---***", "hello!!! world??", "((nested)) [brackets] {braces} <angles>", "a\u2014b\u2013c \u2026",
    "$100 \u20ac50 \u00a335 \u00a5900 \u20b9", "100% 50\u00b0C 3\u00d74 5\u00f72 \u00b1", "#hashtag @mention C++ C# F#",
    "http://example.com/a_b?c=d&e=f", "user@example.com", "~/path/to/file.txt", "\\backslash\\",
    "__init__ snake_case kebab-case CamelCase", "......", "?!?!", "\"quotes\" 'single' `back`",
    # special-token look-alikes
    "<start_of_text>", "<end_of_text> hello", "<START_OF_TEXT>", "<\u017ftart_of_text>", "</w>", "a</w>b",
    "<start_of_text><end_of_text>", "x<end_of_text>y",
    # characters newer than Python 3.11's Unicode 14: letters only the `regex` module knows
    # (Unicode 17), case pairs and canonical compositions added in Unicode 16
    "a\u0558b \u0558", "\U000323b0\U000323b1 \U0002b73a", "\u1c89 \ua7cb \ua7cc \U00010d50",
    "\U00011382\U000113c9 \U00016d67\U00016d67 e\u0301",
    # Greek final sigma contexts (case-ignorable characters between letters)
    "\u039f\u0394\u039f\u03a3' \u0391\u03a3'\u0391 \u0391\u03a3\u0301 \u0391\u03a3\u00ad\u0391 \u03a3\u03a3\u03a3",
    # long texts (truncation)
    LONG_CAPTION, LONG_CAPTION.upper(), "word " * 100, "a" * 300, "supercalifragilisticexpialidocious" * 5,
    " ".join(str(i) for i in range(200)), "\U0001f600" * 80, "\u732b" * 100, "&amp;" * 100,
]


def unicode_sweeps() -> list[tuple[str, str]]:
    """Texts that run every case mapping and every canonical decomposition through the cleaner."""
    out = []
    lower_changes = [c for c in range(MAX_CP)
                     if c not in SURROGATES and chr(c).lower() != chr(c)]
    for i in range(0, len(lower_changes), 60):
        out.append(("sweep-lower", " ".join(chr(c) for c in lower_changes[i:i + 60])))
    decomposable = [c for c in range(MAX_CP)
                    if c not in SURROGATES and unicodedata.decomposition(chr(c))
                    and not unicodedata.decomposition(chr(c)).startswith("<")]
    for i in range(0, len(decomposable), 60):
        out.append(("sweep-nfd", " ".join(unicodedata.normalize("NFD", chr(c))
                                          for c in decomposable[i:i + 60])))
    widths = sorted(ftfy.chardata.WIDTH_MAP)
    for i in range(0, len(widths), 60):
        out.append(("sweep-width", " ".join(chr(c) for c in widths[i:i + 60])))
    return out


def random_mojibake(n: int) -> list[tuple[str, str]]:
    """Seeded random strings over ftfy's mojibake alphabet, ASCII and entities."""
    rng = random.Random(1234)
    cats = ftfy.badness.MOJIBAKE_CATEGORIES
    alphabet = sorted(set(chars_matching(
        "[" + "".join(cats.values()) + "".join(ftfy.chardata.UTF8_CLUES.values()) + "]")))
    ascii_letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ .,!?'\"-"
    pieces = ["&amp;", "&eacute;", "&lt;", "&#x2019;", "&nbsp;", "\n", "\u00c3\u00a9", "\u00e2\u20ac\u2122",
              "\u00c3\u00a0", "\u00c2\u00a0", "\u00c2 ", "\u00c3 "]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.45:
                parts.append(chr(rng.choice(alphabet)))
            elif r < 0.8:
                parts.append(rng.choice(ascii_letters))
            else:
                parts.append(rng.choice(pieces))
        out.append(("random-mojibake", "".join(parts)))
    # Correct UTF-8 for non-ASCII words, decoded with each codec ftfy knows (real mojibake).
    words = ["café", "naïve", "über", "señor", "Ελληνικά", "привет", "日本語", "😀 smile", "Ærø",
             "Łódź", "İstanbul", "€100", "“quoted”", "it’s", "—dash—", "½ cup", "na\u00efve", "ß"]
    for w in words:
        raw = w.encode("utf-8")
        for enc in ftfy.chardata.CHARMAP_ENCODINGS:
            try:
                out.append(("encoded-mojibake", "The word " + raw.decode(enc) + " here"))
            except UnicodeDecodeError:
                pass
    return out


def gen_fixtures(cache: Path) -> None:
    tok = SimpleTokenizer()
    texts = load_sources(cache)
    texts += [("hard", t) for t in HARD_CASES]
    texts += unicode_sweeps()
    texts += random_mojibake(400)

    FIXTURES.mkdir(parents=True, exist_ok=True)
    rows = []
    seen = set()
    for src, text in texts:
        if text in seen:
            continue
        seen.add(text)
        enc = tok.encode(text)
        ids = open_clip.tokenize([text])[0].tolist()
        while ids and ids[-1] == 0:  # the row always ends with EOT (49407) before the padding
            ids.pop()
        assert ids[-1] == tok.eot_token_id
        row = {"src": src, "text": text, "clean": _clean_lower(text), "ids": ids}
        if len(enc) + 2 > 77:
            row["encode"] = enc  # the untruncated ids, only where they differ from ids[1:-1]
        else:
            assert enc == ids[1:-1]
        rows.append(row)
    write_jsonl(FIXTURES / "parity.jsonl", rows)

    # Other context lengths, incl. the degenerate ones.
    ctx_rows = []
    for text in ["", "a photo of a cat", LONG_CAPTION, "\U0001f600" * 10]:
        for cl in [1, 2, 3, 5, 16, 77, 100]:
            ids = open_clip.tokenize([text], context_length=cl)[0].tolist()
            ctx_rows.append({"text": text, "context_length": cl, "ids": ids})
    write_jsonl(FIXTURES / "context_lengths.jsonl", ctx_rows)

    # Other cleaning modes of SimpleTokenizer.
    mode_rows = []
    mode_texts = [r["text"] for r in rows if r["src"] in ("hard", "ftfy-case", "prompt")][:250]
    for mode in ["whitespace", "canonicalize"]:
        t = SimpleTokenizer(clean=mode)
        for text in mode_texts:
            ids = t([text])[0].tolist()
            while ids and ids[-1] == 0:
                ids.pop()
            mode_rows.append({"mode": mode, "text": text, "ids": ids})
    write_jsonl(FIXTURES / "clean_modes.jsonl", mode_rows)

    # decode(): token ids of real texts, and random id sequences (invalid UTF-8 included).
    rng = random.Random(7)
    dec_rows = []
    for r in rows[:: max(1, len(rows) // 150)]:
        ids = r.get("encode", r["ids"][1:-1])
        dec_rows.append({"ids": ids, "text": oc_decode(__import__("torch").tensor(ids))})
    for _ in range(150):
        ids = [rng.randrange(49408) for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.5:
            ids += [rng.randrange(256) for _ in range(rng.randint(1, 4))]  # single bytes
        dec_rows.append({"ids": ids, "text": tok.decode(ids)})
    write_jsonl(FIXTURES / "decode.jsonl", dec_rows)

    counts: dict[str, int] = {}
    for r in rows:
        counts[r["src"]] = counts.get(r["src"], 0) + 1
    meta = {
        "open_clip": open_clip.__version__,
        "ftfy": ftfy.__version__,
        "python": sys.version.split()[0],
        "unicodedata": unicodedata.unidata_version,
        "regex": __import__("regex").__version__,
        "parity_rows": len(rows),
        "rows_by_source": dict(sorted(counts.items())),
        "context_length_rows": len(ctx_rows),
        "clean_mode_rows": len(mode_rows),
        "decode_rows": len(dec_rows),
    }
    (FIXTURES / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(json.dumps(meta, indent=2, sort_keys=True))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True, separators=(",", ":")) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(rows)} rows, {path.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", nargs="?", default="all", choices=["tables", "fixtures", "all"])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/clipkd-tokenizer-sources"),
                    help="where pip downloads the source packages")
    args = ap.parse_args()
    assert open_clip.__version__ == "3.3.0", open_clip.__version__
    assert ftfy.__version__ == "6.3.1", ftfy.__version__
    if args.job in ("tables", "all"):
        gen_tables()
    if args.job in ("fixtures", "all"):
        gen_fixtures(args.cache)


if __name__ == "__main__":
    main()
