#!/usr/bin/env python3
"""Build inseq's POS-tag sampler cache from the brill lexicon (no NLTK data needed).

inseq 0.7.1 (inseq/attr/feat/ops/reagent_core/token_sampler.py, POSTagTokenSampler)
tags every id in range(tokenizer.vocab_size) with `nltk.pos_tag([tokenizer.decode([i]).strip()])`
and caches the result with pickle at

    $INSEQ_ARTIFACTS_CACHE/pos_tag_sampler_cache/<identifier.split('/')[-1]>.pkl
    (INSEQ_ARTIFACTS_CACHE defaults to $INSEQ_HOME/artifacts, INSEQ_HOME to
     $XDG_CACHE_HOME/inseq, XDG_CACHE_HOME to ~/.cache)

where identifier is `model.config.name_or_path` (ReAGent passes the model name; for
`from_pretrained('/work/main/models', gguf_file=...)` that is '/work/main/models', so the
file is `models.pkl` -- the same name for every GGUF under models/, so give each model its own
INSEQ_ARTIFACTS_CACHE, both when running this script and when running inseq). The pickle is a `collections.defaultdict(list)` mapping tag -> list of
int token ids (ascending), tags in order of first appearance over ascending ids, covering
every id in range(tokenizer.vocab_size) exactly once. When that file exists inseq loads it and
never imports NLTK. This script writes the same object, tagged with the rules below, which the
Rust implementation (crates/reagent) replicates exactly; --tags-json writes a fixture to
check that.

Tagging rule (one vocabulary id -> one tag), first matching step wins:
  surface  = tokenizer.decode([id])  (byte-level BPE: bytes -> UTF-8 with lossy U+FFFD
             replacement; added/special tokens: their literal content)
  t        = surface with leading/trailing White_Space removed (Rust str::trim; Python's
             str.strip would also remove U+001C..U+001F, which is not done here)
  alnum(c) = Rust char::is_alphanumeric (Unicode Alphabetic, or general category Nd/Nl/No)
  dict     = brill lexicon (crates/reagent/data/brill-lexicon.txt) plus SUPPLEMENT below
             (the two are disjoint); value = first tag listed, cut at the first '|'
             ("NN|NNS" -> "NN")
   1. t == ""                                   -> "_SP"   (whitespace-only token)
   2. t contains U+FFFD                         -> "FW"    (partial UTF-8 byte sequence)
   3. no char of t is alnum                     -> punct_tag(t)   (see PUNCT below)
   4. t in dict                                 -> dict[t]            (source "exact")
   5. ascii_lower(t) in dict                    -> dict[ascii_lower(t)] (source "lower")
      (ascii_lower maps only A-Z; the lexicon is pure ASCII)
   6. t matches ^[0-9]+([.,][0-9]+)*$           -> "CD"
   7. t has any non-ASCII char                  -> "FW"
   8. t[0] in A-Z                               -> "NNP"
   9. t is all ASCII letters; s = ascii_lower(t), n = len(s); first matching suffix:
        "ing" (n>=5) -> VBG; "ed" (n>=4) -> VBD; "ly" (n>=4) -> RB;
        "able" "ible" "less" "ous" "ful" "ive" "ic" "al" (n >= len(suffix)+2) -> JJ;
        "s" (n>=3, not ending in "ss" "us" "is") -> NNS
  10. otherwise                                 -> "NN"
  punct_tag(t): if t is two or more '.' only -> ":"; else map every non-whitespace char with
  PUNCT (any char not listed -> "SYM", including ASCII control chars); if all chars give the
  same tag, that tag, else "SYM".

The lexicon (~89.5k words) comes from npm brill@3.1.0 (MIT, see
crates/reagent/data/brill-LICENSE). That package has no CD-tagged words at all and lacks
some very frequent words ("I", "one", "first", "both", ...), hence the SUPPLEMENT table.

Usage:
  python scripts/inseq_pos_cache.py                       # SmolLM2 from models/, write pickle
  python scripts/inseq_pos_cache.py --tags-json fixtures/pos/smollm2_tags.json --no-pickle
  python scripts/inseq_pos_cache.py --tokenizer gpt2 --identifier gpt2
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import regex

REPO = Path(__file__).resolve().parent.parent
LEXICON = REPO / "crates" / "reagent" / "data" / "brill-lexicon.txt"

# Words absent from brill@3.1.0 (checked at load time), looked up like lexicon words.
SUPPLEMENT: dict[str, str] = {
    **{w: "CD" for w in (
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty "
        "sixty seventy eighty ninety hundred thousand million billion trillion").split()},
    "first": "JJ", "second": "JJ", "third": "JJ",
    "half": "NN", "dozen": "NN",
    "both": "DT",
    "I": "PRP",
    "'s": "POS",
    "'re": "VBP", "'ve": "VBP", "'m": "VBP",
    "'ll": "MD", "'d": "MD",
    "n't": "RB", "'t": "RB",
    # pieces left by tokenizers that split "doesn't" as "doesn" + "'t"
    "isn": "VBZ", "doesn": "VBZ", "hasn": "VBZ",
    "aren": "VBP", "ain": "VBP",
    "wasn": "VBD", "weren": "VBD", "hadn": "VBD",
    "couldn": "MD", "wouldn": "MD", "shouldn": "MD", "mustn": "MD", "needn": "MD",
    "hi": "UH",
    "whilst": "IN",
}

# Character -> tag for tokens without any alphanumeric char (rule 3). Unlisted -> SYM.
PUNCT: dict[str, str] = {}
for _tag, _chars in (
    (".", ".!?\u3002\uff01\uff1f"),                      # . ! ? 。 ！ ？
    (",", ",\uff0c\u3001"),                              # , ， 、
    (":", ":;-\u2026\u2013\u2014\u2010\u2011\uff1a\uff1b"),  # : ; - … – — ‐ ‑ ： ；
    ("(", "([{\uff08"),                                  # ( [ { （
    (")", ")]}\uff09"),                                  # ) ] } ）
    ("``", "`\u2018\u201c\u00ab\u201e\u201a"),          # ` ‘ “ « „ ‚
    ("''", "'\"\u2019\u201d\u00bb"),                     # ' " ’ ” »
    ("$", "$\u20ac\u00a3\u00a5\u00a2"),                  # $ € £ ¥ ¢
    ("#", "#"),
    ("NN", "%"),
    ("CC", "&"),
):
    for _c in _chars:
        PUNCT[_c] = _tag

SUFFIX_RULES: list[tuple[str, int, str]] = [  # (suffix, min length, tag), in order
    ("ing", 5, "VBG"),
    ("ed", 4, "VBD"),
    ("ly", 4, "RB"),
    *[(s, len(s) + 2, "JJ") for s in ("able", "ible", "less", "ous", "ful", "ive", "ic", "al")],
]

_WS = regex.compile(r"\p{White_Space}")
_ALNUM = regex.compile(r"[\p{Alphabetic}\p{Nd}\p{Nl}\p{No}]")
_NUMBER = regex.compile(r"[0-9]+(?:[.,][0-9]+)*")
_ASCII_LETTERS = regex.compile(r"[A-Za-z]+")


def rust_trim(s: str) -> str:
    a, b = 0, len(s)
    while a < b and _WS.match(s[a]):
        a += 1
    while b > a and _WS.match(s[b - 1]):
        b -= 1
    return s[a:b]


def ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def load_lexicon(path: Path = LEXICON) -> dict[str, str]:
    """word -> first tag (cut at '|'), merged with SUPPLEMENT."""
    lex: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, tags = line.rstrip("\n").split("\t")
            lex[word] = tags.split(" ")[0].split("|")[0]
    clash = sorted(w for w in SUPPLEMENT if w in lex)
    if clash:
        raise SystemExit(f"SUPPLEMENT words already in the lexicon: {clash}")
    lex.update(SUPPLEMENT)
    return lex


def punct_tag(t: str) -> str:
    if len(t) >= 2 and all(c == "." for c in t):
        return ":"
    tags = {PUNCT.get(c, "SYM") for c in t if not _WS.match(c)}
    return tags.pop() if len(tags) == 1 else "SYM"


def tag_surface(surface: str, lex: dict[str, str]) -> tuple[str, str]:
    """Return (tag, source) for one decoded token. Sources name the rule that fired."""
    t = rust_trim(surface)
    if t == "":
        return "_SP", "space"
    if "\ufffd" in t:
        return "FW", "fffd"
    if not _ALNUM.search(t):
        return punct_tag(t), "punct"
    if t in lex:
        return lex[t], ("supplement" if t in SUPPLEMENT else "exact")
    low = ascii_lower(t)
    if low in lex:
        return lex[low], ("supplement" if low in SUPPLEMENT else "lower")
    if _NUMBER.fullmatch(t):
        return "CD", "number"
    if not t.isascii():
        return "FW", "nonascii"
    if "A" <= t[0] <= "Z":
        return "NNP", "capital"
    if _ASCII_LETTERS.fullmatch(t):
        s, n = low, len(low)
        for suf, min_len, tag in SUFFIX_RULES:
            if n >= min_len and s.endswith(suf):
                return tag, "suffix"
        if n >= 3 and s.endswith("s") and not s.endswith(("ss", "us", "is")):
            return "NNS", "suffix"
    return "NN", "default"


def inseq_cache_dir() -> Path:
    """Same resolution as inseq/utils/cache.py + token_sampler.py defaults."""
    xdg = os.getenv("XDG_CACHE_HOME", "~/.cache")
    home = os.path.expanduser(os.getenv("INSEQ_HOME", os.path.join(xdg, "inseq")))
    artifacts = Path(os.getenv("INSEQ_ARTIFACTS_CACHE", os.path.join(home, "artifacts")))
    return artifacts / "pos_tag_sampler_cache"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=str(REPO / "models"),
                    help="directory holding the GGUF file (default: models/)")
    ap.add_argument("--gguf-file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tokenizer", help="load this HF tokenizer name/path instead of a GGUF")
    ap.add_argument("--identifier",
                    help="what inseq sees as model.config.name_or_path; the pickle is named "
                         "<identifier.split('/')[-1]>.pkl (default: --tokenizer, else --model-dir)")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help=f"default: inseq's ({inseq_cache_dir()})")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing pickle")
    ap.add_argument("--no-pickle", action="store_true", help="do not write the inseq pickle")
    ap.add_argument("--tags-json", type=Path, help="also write {meta, tags[id], sources[id]} JSON")
    ap.add_argument("--order", choices=("first-seen", "size"), default="first-seen",
                    help="order of the tag groups in the pickle. first-seen (default) is what "
                         "inseq's own builder produces. size = ascending group size: inseq samples "
                         "index = long(float32(u*n + offset)), which can round up into the next "
                         "group (P ~ ulp(offset)/(2n)) and, for the LAST group, past the end "
                         "(IndexError); size order makes both far less likely. Sampling is "
                         "otherwise identical.")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        name = args.tokenizer
        tok_desc = args.tokenizer
    else:
        tok = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=args.gguf_file)
        name = args.model_dir
        tok_desc = args.gguf_file
    identifier = args.identifier or name

    lex = load_lexicon()
    vocab_size = tok.vocab_size  # inseq iterates range(tokenizer.vocab_size)
    pos2ids: collections.defaultdict[str, list[int]] = collections.defaultdict(list)
    tags: list[str] = []
    sources: list[str] = []
    for i in range(vocab_size):
        tag, src = tag_surface(tok.decode([i]), lex)
        pos2ids[tag].append(i)
        tags.append(tag)
        sources.append(src)

    if args.order == "size":
        pos2ids = collections.defaultdict(
            list, sorted(pos2ids.items(), key=lambda kv: (len(kv[1]), kv[1][0])))

    src_counts = collections.Counter(sources)
    tag_counts = collections.Counter(tags)
    print(f"tokenizer {tok_desc}: vocab_size {vocab_size}, len {len(tok)}, {len(pos2ids)} tags")
    print("sources:", dict(src_counts.most_common()))
    print("tags:", dict(tag_counts.most_common()))
    singletons = sorted(t for t, n in tag_counts.items() if n == 1)
    if singletons:
        print("single-member tags (sampler always returns the token itself):", singletons)

    if not args.no_pickle:
        cache_dir = args.cache_dir or inseq_cache_dir()
        path = cache_dir / f"{identifier.split('/')[-1]}.pkl"
        if path.exists() and not args.overwrite:
            raise SystemExit(f"{path} exists; pass --overwrite to replace it")
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(pos2ids, f)
        print(f"wrote {path}")

    if args.tags_json:
        meta = {
            "tokenizer": tok_desc,
            "vocab_size": vocab_size,
            "lexicon": "crates/reagent/data/brill-lexicon.txt",
            "lexicon_sha256": hashlib.sha256(LEXICON.read_bytes()).hexdigest(),
            "rules": "scripts/inseq_pos_cache.py (module docstring)",
        }
        args.tags_json.parent.mkdir(parents=True, exist_ok=True)
        with open(args.tags_json, "w", encoding="utf-8") as f:
            # One key per line; `tags` and `sources` are lists indexed by token id.
            f.write("{\n")
            f.write(f'"meta": {json.dumps(meta, separators=(",", ":"))},\n')
            f.write(f'"tags": {json.dumps(tags, separators=(",", ":"))},\n')
            f.write(f'"sources": {json.dumps(sources, separators=(",", ":"))}\n')
            f.write("}\n")
        print(f"wrote {args.tags_json} ({args.tags_json.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
