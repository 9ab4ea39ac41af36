//! Part-of-speech tags for every vocabulary token, for the POS-tag sampler.
//!
//! inseq tags each token with NLTK's perceptron tagger (`token_sampler.py`,
//! `POSTagTokenSampler`). We tag from an English lexicon instead, which needs no downloads: the
//! npm package `brill@3.1.0` (MIT; `data/brill-LICENSE`) maps 89,539 words to Penn Treebank tags,
//! most likely first. A token's tag is found by the first rule that applies (the same rules as
//! `scripts/inseq_pos_cache.py`, which builds inseq's cache from this lexicon for comparisons):
//!
//! 1. `t` = the decoded token, trimmed of whitespace; empty → `_SP`;
//! 2. contains U+FFFD (a partial UTF-8 byte sequence) → `FW`;
//! 3. no alphanumeric character → a punctuation tag (`.` `,` `:` `(` `)` ` `` ` `''` `$` `#`, `%`→NN,
//!    `&`→CC; mixed or other symbols → `SYM`; two or more dots → `:`);
//! 4. `t`, then its ASCII lower case, in the lexicon (plus a small supplement of words brill
//!    lacks: number words, "I", contractions) → its first tag;
//! 5. digits (with `.`/`,` groups) → `CD`; other non-ASCII → `FW`; capitalised → `NNP`;
//! 6. suffixes of all-letter words: -ing VBG, -ed VBD, -ly RB, -able/-ible/-less/-ous/-ful/-ive/
//!    -ic/-al JJ, -s NNS;
//! 7. otherwise `NN`.
//!
//! The table is built once per tokenizer and cached on disk.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

const LEXICON: &str = include_str!("../../../data/brill-lexicon.txt");

/// Words brill@3.1.0 lacks entirely (disjoint from it), looked up like lexicon words.
const SUPPLEMENT: &[(&str, &str)] = &[
    ("zero", "CD"),
    ("one", "CD"),
    ("two", "CD"),
    ("three", "CD"),
    ("four", "CD"),
    ("five", "CD"),
    ("six", "CD"),
    ("seven", "CD"),
    ("eight", "CD"),
    ("nine", "CD"),
    ("ten", "CD"),
    ("eleven", "CD"),
    ("twelve", "CD"),
    ("thirteen", "CD"),
    ("fourteen", "CD"),
    ("fifteen", "CD"),
    ("sixteen", "CD"),
    ("seventeen", "CD"),
    ("eighteen", "CD"),
    ("nineteen", "CD"),
    ("twenty", "CD"),
    ("thirty", "CD"),
    ("forty", "CD"),
    ("fifty", "CD"),
    ("sixty", "CD"),
    ("seventy", "CD"),
    ("eighty", "CD"),
    ("ninety", "CD"),
    ("hundred", "CD"),
    ("thousand", "CD"),
    ("million", "CD"),
    ("billion", "CD"),
    ("trillion", "CD"),
    ("first", "JJ"),
    ("second", "JJ"),
    ("third", "JJ"),
    ("half", "NN"),
    ("dozen", "NN"),
    ("both", "DT"),
    ("I", "PRP"),
    ("'s", "POS"),
    ("'re", "VBP"),
    ("'ve", "VBP"),
    ("'m", "VBP"),
    ("'ll", "MD"),
    ("'d", "MD"),
    ("n't", "RB"),
    ("'t", "RB"),
    ("isn", "VBZ"),
    ("doesn", "VBZ"),
    ("hasn", "VBZ"),
    ("aren", "VBP"),
    ("ain", "VBP"),
    ("wasn", "VBD"),
    ("weren", "VBD"),
    ("hadn", "VBD"),
    ("couldn", "MD"),
    ("wouldn", "MD"),
    ("shouldn", "MD"),
    ("mustn", "MD"),
    ("needn", "MD"),
    ("hi", "UH"),
    ("whilst", "IN"),
];

/// Suffix rules for all-letter words: (suffix, minimum length, tag), first match wins.
const SUFFIXES: &[(&str, usize, &str)] = &[
    ("ing", 5, "VBG"),
    ("ed", 4, "VBD"),
    ("ly", 4, "RB"),
    ("able", 6, "JJ"),
    ("ible", 6, "JJ"),
    ("less", 6, "JJ"),
    ("ous", 5, "JJ"),
    ("ful", 5, "JJ"),
    ("ive", 5, "JJ"),
    ("ic", 4, "JJ"),
    ("al", 4, "JJ"),
];

/// The tag of a punctuation character (tokens without any alphanumeric character).
fn punct_char(c: char) -> &'static str {
    match c {
        '.' | '!' | '?' | '\u{3002}' | '\u{ff01}' | '\u{ff1f}' => ".",
        ',' | '\u{ff0c}' | '\u{3001}' => ",",
        ':' | ';' | '-' | '\u{2026}' | '\u{2013}' | '\u{2014}' | '\u{2010}' | '\u{2011}'
        | '\u{ff1a}' | '\u{ff1b}' => ":",
        '(' | '[' | '{' | '\u{ff08}' => "(",
        ')' | ']' | '}' | '\u{ff09}' => ")",
        '`' | '\u{2018}' | '\u{201c}' | '\u{ab}' | '\u{201e}' | '\u{201a}' => "``",
        '\'' | '"' | '\u{2019}' | '\u{201d}' | '\u{bb}' => "''",
        '$' | '\u{20ac}' | '\u{a3}' | '\u{a5}' | '\u{a2}' => "$",
        '#' => "#",
        '%' => "NN",
        '&' => "CC",
        _ => "SYM",
    }
}

fn punct_tag(t: &str) -> &'static str {
    if t.chars().count() >= 2 && t.chars().all(|c| c == '.') {
        return ":";
    }
    let mut tag: Option<&'static str> = None;
    for c in t.chars().filter(|c| !c.is_whitespace()) {
        let x = punct_char(c);
        match tag {
            None => tag = Some(x),
            Some(y) if y != x => return "SYM",
            _ => {}
        }
    }
    tag.unwrap_or("SYM")
}

fn is_number(t: &str) -> bool {
    // ^[0-9]+([.,][0-9]+)*$
    !t.is_empty()
        && t.split(['.', ','])
            .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
}

/// The English lexicon: word → first tag (cut at `|`).
pub struct Lexicon {
    words: HashMap<&'static str, &'static str>,
}

impl Lexicon {
    /// The embedded brill lexicon with the supplement.
    pub fn builtin() -> Self {
        let mut words: HashMap<&'static str, &'static str> = LEXICON
            .lines()
            .filter_map(|l| {
                let (w, tags) = l.split_once('\t')?;
                let first = tags.split(' ').next()?;
                Some((w, first.split('|').next().unwrap_or(first)))
            })
            .collect();
        for &(w, t) in SUPPLEMENT {
            words.insert(w, t);
        }
        Lexicon { words }
    }

    /// The tag of one decoded token.
    pub fn tag(&self, surface: &str) -> &'static str {
        let t = surface.trim();
        if t.is_empty() {
            return "_SP";
        }
        if t.contains('\u{fffd}') {
            return "FW";
        }
        if !t.chars().any(char::is_alphanumeric) {
            return punct_tag(t);
        }
        if let Some(tag) = self.words.get(t) {
            return tag;
        }
        let low = t.to_ascii_lowercase();
        if let Some(tag) = self.words.get(low.as_str()) {
            return tag;
        }
        if is_number(t) {
            return "CD";
        }
        if !t.is_ascii() {
            return "FW";
        }
        if t.as_bytes()[0].is_ascii_uppercase() {
            return "NNP";
        }
        if t.bytes().all(|b| b.is_ascii_alphabetic()) {
            let n = low.len();
            for &(suffix, min, tag) in SUFFIXES {
                if n >= min && low.ends_with(suffix) {
                    return tag;
                }
            }
            if n >= 3 && low.ends_with('s') && !["ss", "us", "is"].iter().any(|s| low.ends_with(s))
            {
                return "NNS";
            }
        }
        "NN"
    }
}

/// Every token's tag, as group indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosTable {
    /// Tag names, in order of first appearance over ascending ids.
    pub tags: Vec<String>,
    /// `tag_of[id]` indexes `tags`.
    pub tag_of: Vec<u16>,
}

impl PosTable {
    /// Tag ids `0..tokenizer.len()`, each decoded on its own.
    pub fn build(tok: &Tokenizer) -> Self {
        let lex = Lexicon::builtin();
        let mut index: HashMap<&'static str, u16> = HashMap::new();
        let mut tags = Vec::new();
        let tag_of = (0..tok.len() as u32)
            .map(|id| {
                let tag = lex.tag(&tok.token_text(id));
                *index.entry(tag).or_insert_with(|| {
                    tags.push(tag.to_string());
                    (tags.len() - 1) as u16
                })
            })
            .collect();
        PosTable { tags, tag_of }
    }

    /// [`PosTable::build`], cached on disk under the cache folder, keyed by the vocabulary and
    /// the lexicon.
    pub fn cached(tok: &Tokenizer) -> Result<Self> {
        let Some(dir) = cache_dir() else {
            return Ok(Self::build(tok));
        };
        let path = dir.join(format!("pos-{:016x}.txt", fingerprint(tok)));
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Some(t) = Self::parse(&text, tok.len()) {
                return Ok(t);
            }
        }
        let table = Self::build(tok);
        // A cache that cannot be written is not an error: the table is rebuilt next time.
        let _ = std::fs::create_dir_all(&dir).and_then(|_| {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, table.serialize())?;
            std::fs::rename(&tmp, &path)
        });
        Ok(table)
    }

    fn serialize(&self) -> String {
        let ids: Vec<String> = self.tag_of.iter().map(|t| t.to_string()).collect();
        format!("{}\n{}\n", self.tags.join(" "), ids.join(" "))
    }

    fn parse(text: &str, len: usize) -> Option<Self> {
        let mut lines = text.lines();
        let tags: Vec<String> = lines.next()?.split(' ').map(String::from).collect();
        let tag_of: Vec<u16> = lines
            .next()?
            .split(' ')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (tag_of.len() == len && tag_of.iter().all(|&t| (t as usize) < tags.len()))
            .then_some(PosTable { tags, tag_of })
    }

    /// The tag of an id (ids past the table, e.g. a model's padding rows, get group 0's, as
    /// inseq's fix for #306).
    pub fn tag(&self, id: u32) -> &str {
        &self.tags[self.group(id)]
    }

    pub fn group(&self, id: u32) -> usize {
        self.tag_of.get(id as usize).copied().unwrap_or(0) as usize
    }
}

/// `$REAGENT_CACHE`, else `$XDG_CACHE_HOME/reagent`, else `~/.cache/reagent`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("REAGENT_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("reagent"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("reagent"))
}

/// A hash of the vocabulary (every token's text) and of the lexicon.
fn fingerprint(tok: &Tokenizer) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    LEXICON.len().hash(&mut h);
    SUPPLEMENT.hash(&mut h);
    for id in 0..tok.len() as u32 {
        tok.id_to_token(id).hash(&mut h);
    }
    h.finish()
}

/// Fails when a table cannot serve a model of `vocab` rows.
pub fn check_table(table: &PosTable, vocab: usize) -> Result<()> {
    if table.tag_of.is_empty() || vocab == 0 {
        return Err(Error::input("the POS sampler needs a non-empty vocabulary"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_order() {
        let lex = Lexicon::builtin();
        assert_eq!(lex.tag("   "), "_SP");
        assert_eq!(lex.tag(" caf\u{fffd}"), "FW");
        assert_eq!(lex.tag(" ."), ".");
        assert_eq!(lex.tag("..."), ":");
        assert_eq!(lex.tag("(\""), "SYM");
        assert_eq!(lex.tag(" the"), "DT");
        assert_eq!(lex.tag("The"), "DT"); // lower-case lookup
        assert_eq!(lex.tag("3.14"), "CD");
        assert_eq!(lex.tag(" one"), "CD"); // supplement
        assert_eq!(lex.tag("日本"), "FW");
        assert_eq!(lex.tag("Zorblax"), "NNP");
        assert_eq!(lex.tag("zorblaxing"), "VBG");
        assert_eq!(lex.tag("zorblaxs"), "NNS");
        assert_eq!(lex.tag("zorblass"), "NN");
    }

    #[test]
    fn numbers() {
        assert!(is_number("12,345.6"));
        assert!(!is_number("12."));
        assert!(!is_number(".5"));
        assert!(!is_number("1a"));
    }
}
