//! The result of an attribution job: plain data (serde), which knows nothing of how it is drawn.
//!
//! A result holds every token (prompt, then the attributed targets), and for each target the
//! scores of the tokens before it: a ragged targets × context matrix, as inseq's target
//! attributions. Provenance travels with it: model, method, full configuration, seed, versions
//! and timings.

use serde::{Deserialize, Serialize};

use crate::method::TargetScores;
use crate::model::BackendStats;

/// One token of the attributed text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Token {
    pub id: u32,
    /// The token's text as decoded on its own.
    pub text: String,
    /// Character offsets `[start, end)` into [`AttributionResult::text`]; equal for tokens the
    /// tokenizer added (e.g. BOS).
    pub start: usize,
    pub end: usize,
    /// Added by the tokenizer (BOS, ...) or a special token.
    pub special: bool,
    /// Written by the chat template (`--chat`), not by the user: never replaced, shown apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub template: bool,
}

/// The attribution of one target token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetAttribution {
    /// Index of the target in [`AttributionResult::tokens`]; its context is `tokens[..position]`.
    pub position: usize,
    pub id: u32,
    pub text: String,
    /// `p(target | context)` under the model.
    pub prob: f32,
    /// Contrastive attribution: the token the target is explained against (the scores explain
    /// `p(target) - p(contrast)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrast: Option<Contrast>,
    /// `scores.len() == position`, plus method diagnostics.
    #[serde(flatten)]
    pub scores: TargetScores,
    /// A served model: what scoring this target cost (requests, cache hits) and how exact it
    /// was (rows whose target fell outside the server's top K, and the largest error such a
    /// probability can have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendStats>,
    /// Wall time for this target, in seconds.
    pub wall_s: f64,
}

/// The contrast token of a contrastive attribution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Contrast {
    pub id: u32,
    pub text: String,
    /// `p(contrast | context)` under the model.
    pub prob: f32,
}

/// How subword scores combine into word scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordAggregation {
    Sum,
    Max,
}

/// A word: a run of tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Word {
    pub text: String,
    /// Token indices `[first, last)`.
    pub tokens: (usize, usize),
}

/// The scores aggregated over words (`--words`), or the scores of larger units (`--unit`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WordScores {
    pub aggregation: WordAggregation,
    /// With `--unit`: the unit (`word`, `sentence` or `spans`). Absent for `--words`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// With `--unit`: true when the method replaced each unit as a whole (ReAGent,
    /// occlusion), false when its token scores were summed over each unit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub perturbed: bool,
    pub words: Vec<Word>,
    /// Per target, one score per word of its context (a word cut by the context's end counts
    /// only its tokens inside the context).
    pub scores: Vec<Vec<f32>>,
}

/// Where the result came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// The reagent version that produced the result.
    pub reagent_version: String,
    /// Model id (file or folder name, or hub id).
    pub model: String,
    pub architecture: String,
    /// f32, or the quantized formats in use.
    pub weights: String,
    /// Method name, e.g. `reagent`.
    pub method: String,
    /// The method's full configuration (seed included).
    pub config: serde_json::Value,
}

/// An attribution job's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttributionResult {
    pub provenance: Provenance,
    /// The prompt followed by the targets' text.
    pub text: String,
    /// All tokens: the prompt's (with any BOS), then the targets'.
    pub tokens: Vec<Token>,
    /// How many of `tokens` are the prompt.
    pub prompt_tokens: usize,
    /// `forced` (given target text) or `generated` (greedy).
    pub target_mode: String,
    pub targets: Vec<TargetAttribution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<WordScores>,
    /// Wall time for the whole job, model loading excluded, in seconds.
    pub wall_s: f64,
}

impl AttributionResult {
    /// Group tokens into words and combine their scores.
    ///
    /// A token starts a new word when its text starts with whitespace, when it or the token
    /// before it is special, or when it or the token before it is punctuation only; otherwise
    /// it continues the previous word (subword pieces such as `Par` + `is`).
    pub fn aggregate_words(&mut self, how: WordAggregation) {
        let words = group_words(&self.tokens);
        let scores = self
            .targets
            .iter()
            .map(|t| {
                words
                    .iter()
                    .filter(|w| w.tokens.0 < t.position)
                    .map(|w| {
                        let end = w.tokens.1.min(t.position);
                        let s = &t.scores.scores[w.tokens.0..end];
                        match how {
                            WordAggregation::Sum => s.iter().sum(),
                            WordAggregation::Max => {
                                s.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        self.words = Some(WordScores {
            aggregation: how,
            unit: None,
            perturbed: false,
            words,
            scores,
        });
    }
}

/// What one attributed feature is (`--unit`).
#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    /// A token (the default; no units).
    Token,
    /// A word by Unicode's word boundaries (UAX #29); punctuation marks are units of their own.
    Word,
    /// A sentence by Unicode's sentence boundaries (UAX #29).
    Sentence,
    /// The given character spans `[start, end)` of the prompt (e.g. the documents of a RAG
    /// prompt); tokens outside every span are kept and score 0.
    Spans(Vec<(usize, usize)>),
}

impl Unit {
    /// The units that have a name (spans are given, not named).
    pub const NAMED: [Unit; 3] = [Unit::Token, Unit::Word, Unit::Sentence];

    /// `token`, `word` or `sentence`.
    pub fn from_name(name: &str) -> crate::Result<Unit> {
        Self::NAMED
            .into_iter()
            .find(|u| u.name() == name)
            .ok_or_else(|| {
                crate::Error::input(format!(
                    "unit must be one of token, word, sentence; got `{name}`"
                ))
            })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Unit::Token => "token",
            Unit::Word => "word",
            Unit::Sentence => "sentence",
            Unit::Spans(_) => "spans",
        }
    }
}

/// Group `tokens` of `text` into units. Boundaries come from the text, not from the
/// tokenizer's conventions (`Ġ`, `▁`, bytes): each token belongs to the unit holding its first
/// non-space character (a token of spaces only, to the unit before it). Special tokens and
/// tokens with no text (BOS) belong to no unit: they are never replaced. Each unit is a run of
/// tokens; a unit no token starts in is dropped.
pub fn segment(text: &str, tokens: &[Token], unit: &Unit) -> crate::Result<Vec<Word>> {
    use unicode_segmentation::UnicodeSegmentation;
    // Character offset of each byte boundary, for the segmenters' byte offsets.
    let char_at = |byte: usize| text[..byte].chars().count();
    let n_chars = text.chars().count();
    // Units as character ranges, in order.
    let ranges: Vec<(usize, usize)> = match unit {
        Unit::Token => {
            return Ok(tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.special && !t.template)
                .map(|(i, t)| Word {
                    text: t.text.clone(),
                    tokens: (i, i + 1),
                })
                .collect())
        }
        Unit::Word => text
            .split_word_bound_indices()
            .filter(|(_, w)| !w.trim().is_empty())
            .map(|(b, w)| (char_at(b), char_at(b + w.len())))
            .collect(),
        Unit::Sentence => text
            .split_sentence_bound_indices()
            .map(|(b, s)| (char_at(b), char_at(b + s.len())))
            .collect(),
        Unit::Spans(spans) => {
            let mut v = spans.clone();
            v.sort_unstable();
            for (k, &(a, b)) in v.iter().enumerate() {
                if a >= b || b > n_chars {
                    return Err(crate::Error::input(format!(
                        "unit span [{a}, {b}) is empty or outside the text of {n_chars} characters"
                    )));
                }
                if k > 0 && v[k - 1].1 > a {
                    return Err(crate::Error::input(format!(
                        "unit spans [{}, {}) and [{a}, {b}) overlap",
                        v[k - 1].0,
                        v[k - 1].1
                    )));
                }
            }
            v
        }
    };
    let chars: Vec<char> = text.chars().collect();
    let mut owner: Vec<Option<usize>> = Vec::with_capacity(tokens.len());
    let mut last: Option<usize> = None;
    for t in tokens {
        if t.special || t.template || t.start >= t.end {
            owner.push(None);
            continue;
        }
        let anchor = (t.start..t.end.min(chars.len())).find(|&c| !chars[c].is_whitespace());
        let u = match anchor {
            Some(c) => ranges.iter().position(|&(a, b)| a <= c && c < b),
            // Spaces only: with the unit before (inside a span only if the span holds it).
            None => match unit {
                Unit::Spans(_) => ranges
                    .iter()
                    .position(|&(a, b)| a <= t.start && t.start < b),
                _ => last,
            },
        };
        if u.is_some() {
            last = u;
        }
        owner.push(u);
    }
    let mut units: Vec<Word> = Vec::new();
    let mut current: Option<usize> = None;
    for (i, o) in owner.iter().enumerate() {
        match (*o, current) {
            (Some(u), Some(c)) if u == c && units.last().is_some_and(|w| w.tokens.1 == i) => {
                let w = units.last_mut().expect("a unit is open");
                w.text.push_str(&tokens[i].text);
                w.tokens.1 = i + 1;
            }
            (Some(u), _) => {
                units.push(Word {
                    text: tokens[i].text.clone(),
                    tokens: (i, i + 1),
                });
                current = Some(u);
            }
            (None, _) => current = None,
        }
    }
    Ok(units)
}

fn is_punct(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty() && !t.chars().any(char::is_alphanumeric)
}

fn group_words(tokens: &[Token]) -> Vec<Word> {
    let mut words: Vec<Word> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let new_word = match tokens[..i].last() {
            None => true,
            Some(prev) => {
                t.special
                    || prev.special
                    || t.text.starts_with(char::is_whitespace)
                    || is_punct(&t.text)
                    || is_punct(&prev.text)
            }
        };
        match words.last_mut() {
            Some(w) if !new_word => {
                w.text.push_str(&t.text);
                w.tokens.1 = i + 1;
            }
            _ => words.push(Word {
                text: t.text.clone(),
                tokens: (i, i + 1),
            }),
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, special: bool) -> Token {
        Token {
            id: 0,
            text: text.into(),
            start: 0,
            end: 0,
            special,
            template: false,
        }
    }

    #[test]
    fn words_group_subwords() {
        let toks = vec![
            tok("<bos>", true),
            tok("The", false),
            tok(" Eiff", false),
            tok("el", false),
            tok(" Tower", false),
            tok(",", false),
            tok(" Par", false),
            tok("is", false),
        ];
        let w: Vec<String> = group_words(&toks).into_iter().map(|w| w.text).collect();
        assert_eq!(w, ["<bos>", "The", " Eiffel", " Tower", ",", " Paris"]);
    }
}
