//! Where ReAGent's replacement tokens come from.
//!
//! Reference: `token_sampler.py` of the original code and of inseq. A sampler is always asked
//! about the *original* context (never a perturbed one) and answers for the positions to
//! replace; a replacement may equal the original token.
//!
//! - [`UniformSampler`]: any vocabulary id except special tokens (the original code's
//!   `UniformTokenSampler`, which excluded only BOS/EOS/UNK).
//! - [`PosSampler`]: a uniform draw among the tokens sharing the replaced token's POS tag, the
//!   token itself included (inseq's `POSTagTokenSampler`, the paper's experiments).
//! - [`CausalSampler`]: the attributed model's own greedy prediction from the original prefix
//!   (the original code's `InferentialTokenSampler`); position 0 keeps its token.
//! - [`MlmSampler`]: a masked LM's prediction for the masked positions (what the paper
//!   describes; see its docs for how predictions map into the attributed vocabulary).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::IndexOp;
use rand::Rng;
use serde_json::json;

use super::draw::Draw;
use super::pos::PosTable;
use crate::model::{CausalLm, MaskedLm, Outputs};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Produces replacement tokens.
pub trait Sampler: Send + Sync {
    /// Name and settings, for provenance.
    fn describe(&self) -> serde_json::Value;

    /// For each probe `p`, a token for every position of `context` where `replace[p][i]`
    /// (entries elsewhere are ignored). `draws[p]` carries that probe's random stream.
    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Vec<u32>>>;
}

/// Apply `f` at each replaced position, keeping the original elsewhere.
fn per_position(
    context: &[u32],
    replace: &[Vec<bool>],
    draws: &mut [Draw<'_>],
    mut f: impl FnMut(u32, &mut Draw<'_>) -> u32,
) -> Vec<Vec<u32>> {
    replace
        .iter()
        .zip(draws.iter_mut())
        .map(|(mask, draw)| {
            context
                .iter()
                .zip(mask)
                .map(|(&id, &r)| if r { f(id, draw) } else { id })
                .collect()
        })
        .collect()
}

/// Uniform over the vocabulary, special tokens excluded.
pub struct UniformSampler {
    candidates: Vec<u32>,
}

impl UniformSampler {
    /// Ids below both the model's and the tokenizer's vocabulary size (tokenizers may be
    /// larger or smaller than the embedding matrix, inseq #306), minus special tokens.
    pub fn new(tok: &Tokenizer, model_vocab: usize) -> Result<Self> {
        let limit = model_vocab.min(tok.len()) as u32;
        let special = tok.special_ids();
        let candidates: Vec<u32> = (0..limit)
            .filter(|id| special.binary_search(id).is_err())
            .collect();
        if candidates.is_empty() {
            return Err(Error::input("the uniform sampler has no candidate tokens"));
        }
        Ok(UniformSampler { candidates })
    }
}

impl Sampler for UniformSampler {
    fn describe(&self) -> serde_json::Value {
        json!({"kind": "uniform", "candidates": self.candidates.len()})
    }

    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Vec<u32>>> {
        Ok(per_position(context, replace, draws, |_, d| {
            self.pick(d.rng.random::<f32>())
        }))
    }
}

impl UniformSampler {
    /// The candidate for a uniform draw `u` in `[0, 1)`: `avail[trunc(u * len)]` in f32, as the
    /// reference computes it.
    pub fn pick(&self, u: f32) -> u32 {
        let n = self.candidates.len();
        let i = (u * n as f32) as usize;
        self.candidates[i.min(n - 1)]
    }

    /// The candidate ids, ascending.
    pub fn candidates(&self) -> &[u32] {
        &self.candidates
    }
}

/// Uniform among the tokens with the same part-of-speech tag.
pub struct PosSampler {
    table: PosTable,
    groups: Vec<Vec<u32>>,
    /// Where each group starts in the concatenation of all groups.
    offsets: Vec<usize>,
    limit: u32,
}

impl PosSampler {
    /// Tokens at or past `model_vocab` are never drawn.
    pub fn new(table: PosTable, model_vocab: usize) -> Result<Self> {
        let limit = model_vocab.min(table.tag_of.len()) as u32;
        let mut groups = vec![Vec::new(); table.tags.len()];
        for id in 0..limit {
            groups[table.group(id)].push(id);
        }
        if limit == 0 {
            return Err(Error::input("the POS sampler needs a non-empty vocabulary"));
        }
        let offsets = groups
            .iter()
            .scan(0, |acc, g| {
                let o = *acc;
                *acc += g.len();
                Some(o)
            })
            .collect();
        Ok(PosSampler {
            table,
            groups,
            offsets,
            limit,
        })
    }

    pub fn table(&self) -> &PosTable {
        &self.table
    }
}

impl Sampler for PosSampler {
    fn describe(&self) -> serde_json::Value {
        json!({"kind": "pos", "lexicon": "brill@3.1.0", "tags": self.table.tags.len(), "vocabulary": self.limit})
    }

    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Vec<u32>>> {
        Ok(per_position(context, replace, draws, |id, d| {
            self.pick(id, d.rng.random::<f32>())
        }))
    }
}

impl PosSampler {
    /// The replacement of `id` for a uniform draw `u` in `[0, 1)`, as inseq's
    /// `POSTagTokenSampler` computes it: with the groups concatenated in order of first
    /// appearance, `concat[trunc(u * size[g] + offset[g])]` in f32.
    pub fn pick(&self, id: u32, u: f32) -> u32 {
        let g = self.table.group(id);
        let group = &self.groups[g];
        if group.is_empty() {
            return id;
        }
        let offset = self.offsets[g];
        let x = (u * group.len() as f32 + offset as f32) as usize;
        group[x.saturating_sub(offset).min(group.len() - 1)]
    }
}

/// Something computed from the attributed model's logits at every position of a context, kept
/// for the last context asked about: samplers are asked about the same original context at
/// every step, so this costs one forward per target.
struct PerContext<T> {
    model: Arc<dyn CausalLm>,
    last: Mutex<Option<(Vec<u32>, Arc<T>)>>,
}

impl<T> PerContext<T> {
    fn new(model: Arc<dyn CausalLm>) -> Self {
        PerContext {
            model,
            last: Mutex::new(None),
        }
    }

    /// `make(logits)` for `context`, with `logits[i]` the distribution after `context[..=i]`.
    fn get(&self, context: &[u32], make: impl FnOnce(Vec<Vec<f32>>) -> T) -> Result<Arc<T>> {
        let mut last = self
            .last
            .lock()
            .map_err(|_| Error::input("sampler cache poisoned"))?;
        if let Some((ctx, v)) = last.as_ref() {
            if ctx == context {
                return Ok(v.clone());
            }
        }
        let out = self.model.forward(
            &[context.to_vec()],
            Outputs {
                logits: true,
                attentions: false,
            },
        )?;
        let logits = out
            .logits
            .ok_or_else(|| Error::input("the model returned no logits"))?
            .i(0)?
            .to_vec2()?;
        let v = Arc::new(make(logits));
        *last = Some((context.to_vec(), v.clone()));
        Ok(v)
    }
}

/// The attributed model's own greedy next-token prediction from the original prefix.
pub struct CausalSampler {
    predictions: PerContext<Vec<u32>>,
}

impl CausalSampler {
    pub fn new(model: Arc<dyn CausalLm>) -> Self {
        CausalSampler {
            predictions: PerContext::new(model),
        }
    }

    /// `pred[i]` = argmax of the model's distribution after `context[..i]`; `pred[0] = context[0]`.
    fn predictions(&self, context: &[u32]) -> Result<Arc<Vec<u32>>> {
        self.predictions.get(context, |logits| {
            std::iter::once(context[0])
                .chain(
                    logits[..context.len() - 1]
                        .iter()
                        .map(|row| crate::util::top_n(row, 1)[0] as u32),
                )
                .collect()
        })
    }
}

impl Sampler for CausalSampler {
    fn describe(&self) -> serde_json::Value {
        json!({"kind": "causal", "rule": "argmax of the attributed model given the original prefix"})
    }

    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        _draws: &mut [Draw<'_>],
    ) -> Result<Vec<Vec<u32>>> {
        let pred = self.predictions(context)?;
        Ok(replace
            .iter()
            .map(|mask| {
                context
                    .iter()
                    .zip(mask)
                    .zip(pred.iter())
                    .map(|((&id, &r), &p)| if r { p } else { id })
                    .collect()
            })
            .collect())
    }
}

/// Candidates per position for the in-context sampler: the model's most likely tokens.
const CONTEXT_TOP: usize = 64;

/// The attributed model's own in-context distribution: position `i` is replaced by a draw from
/// `p(. | x_<i)` of the original context, restricted to its 64 most likely tokens, without the
/// original token and special tokens (renormalized). One forward of the original context gives
/// every position's distribution, so it costs nothing per step. Position 0 has no prefix and
/// takes a uniform non-special token.
pub struct ContextSampler {
    uniform: UniformSampler,
    special: Vec<u32>,
    /// For each position: candidate ids and their cumulative probabilities.
    candidates: PerContext<Vec<Candidates>>,
}

type Candidates = (Vec<u32>, Vec<f32>);

impl ContextSampler {
    pub fn new(model: Arc<dyn CausalLm>, tok: &Tokenizer) -> Result<Self> {
        let vocab = model.vocab_size();
        Ok(ContextSampler {
            uniform: UniformSampler::new(tok, vocab)?,
            special: tok.special_ids().to_vec(),
            candidates: PerContext::new(model),
        })
    }

    fn candidates(&self, context: &[u32]) -> Result<Arc<Vec<Candidates>>> {
        self.candidates
            .get(context, |logits| self.table(context, &logits))
    }

    /// Per position, the top candidates after the prefix and their cumulative probabilities.
    fn table(&self, context: &[u32], logits: &[Vec<f32>]) -> Vec<Candidates> {
        let mut all = Vec::with_capacity(context.len());
        all.push((Vec::new(), Vec::new()));
        for i in 1..context.len() {
            let row = &logits[i - 1];
            let original = context[i];
            let mut idx: Vec<u32> = (0..row.len() as u32)
                .filter(|&id| id != original && self.special.binary_search(&id).is_err())
                .collect();
            let k = CONTEXT_TOP.min(idx.len());
            if k == 0 {
                all.push((Vec::new(), Vec::new()));
                continue;
            }
            idx.select_nth_unstable_by(k - 1, |&a, &b| {
                row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
            });
            idx.truncate(k);
            idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            let max = row[idx[0] as usize];
            let mut acc = 0f32;
            let cum: Vec<f32> = idx
                .iter()
                .map(|&id| {
                    acc += (row[id as usize] - max).exp();
                    acc
                })
                .collect();
            let total = acc;
            all.push((idx, cum.into_iter().map(|c| c / total).collect()));
        }
        all
    }
}

impl Sampler for ContextSampler {
    fn describe(&self) -> serde_json::Value {
        json!({"kind": "context", "rule": "a draw from the attributed model's p(. | original prefix), top 64, original and special tokens excluded; position 0 uniform"})
    }

    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Vec<u32>>> {
        let cands = self.candidates(context)?;
        let n = self.uniform.candidates.len();
        Ok(replace
            .iter()
            .zip(draws.iter_mut())
            .map(|(mask, draw)| {
                context
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| {
                        if !mask[i] {
                            return id;
                        }
                        let (ids, cum) = &cands[i];
                        if ids.is_empty() {
                            return self.uniform.candidates[draw.rng.random_range(0..n)];
                        }
                        let u: f32 = draw.rng.random();
                        let j = cum.partition_point(|&c| c <= u).min(ids.len() - 1);
                        ids[j]
                    })
                    .collect()
            })
            .collect())
    }
}

/// How the MLM sampler picks a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlmPick {
    /// The most likely token.
    Argmax,
    /// A draw from the MLM's distribution (temperature 1).
    Sample,
}

/// A shared vocabulary: MLM id → attributed id, and attributed id → MLM id.
type SharedVocab = (Vec<Option<u32>>, HashMap<u32, u32>);

/// A masked LM's predictions (RoBERTa, BERT, ...), as the paper describes.
///
/// For each probe, the positions to replace are masked together and the MLM predicts each one;
/// special tokens are never predicted. The prediction then enters the attributed model's
/// vocabulary in one of two ways:
///
/// - **Shared vocabulary** (e.g. GPT-2 and RoBERTa: the same byte-level BPE strings; at least
///   99% of each side's token strings exist on the other): tokens map one to one through their
///   strings, and the MLM only ranks tokens that have a counterpart.
/// - **Otherwise, through text**: the context is decoded token by token; each replaced token's
///   text becomes the MLM's mask token (keeping its leading whitespace); the MLM's prediction is
///   decoded, trimmed, given the replaced token's leading space, and encoded with the attributed
///   tokenizer. One attributed token replaces one attributed token: when the predicted word
///   spans several attributed tokens, the first is used; when it encodes to nothing, the
///   original token is kept.
pub struct MlmSampler {
    mlm: Arc<dyn MaskedLm>,
    mlm_tok: Tokenizer,
    tok: Tokenizer,
    pick: MlmPick,
    mask_id: u32,
    mask_text: String,
    /// Shared vocabulary: MLM id → attributed id, and back.
    shared: Option<SharedVocab>,
    banned: Vec<bool>,
}

impl MlmSampler {
    pub fn new(
        mlm: Arc<dyn MaskedLm>,
        mlm_tok: Tokenizer,
        tok: Tokenizer,
        pick: MlmPick,
    ) -> Result<Self> {
        let mask_text = ["<mask>", "[MASK]"]
            .into_iter()
            .find(|m| mlm_tok.token_to_id(m).is_some())
            .ok_or_else(|| {
                Error::input("the MLM's tokenizer has no mask token (<mask> or [MASK])")
            })?
            .to_string();
        let mask_id = mlm_tok.token_to_id(&mask_text).expect("checked");
        let vocab = mlm.info().vocab_size;
        let mut banned = vec![false; vocab];
        for &s in mlm_tok.special_ids() {
            if let Some(b) = banned.get_mut(s as usize) {
                *b = true;
            }
        }
        // Shared vocabulary: token strings that exist on both sides.
        let mlm_len = vocab.min(mlm_tok.len());
        let to_attr: Vec<Option<u32>> = (0..vocab as u32)
            .map(|id| {
                if (id as usize) < mlm_len && !banned[id as usize] {
                    mlm_tok.id_to_token(id).and_then(|t| tok.token_to_id(&t))
                } else {
                    None
                }
            })
            .collect();
        let mapped = to_attr.iter().filter(|x| x.is_some()).count();
        let mlm_plain = banned.iter().take(mlm_len).filter(|b| !**b).count().max(1);
        let attr_plain = tok.len().saturating_sub(tok.special_ids().len()).max(1);
        let shared = (mapped as f64 >= 0.99 * mlm_plain as f64
            && mapped as f64 >= 0.99 * attr_plain as f64)
            .then(|| {
                let back: HashMap<u32, u32> = to_attr
                    .iter()
                    .enumerate()
                    .filter_map(|(m, a)| a.map(|a| (a, m as u32)))
                    .collect();
                (to_attr, back)
            });
        Ok(MlmSampler {
            mlm,
            mlm_tok,
            tok,
            pick,
            mask_id,
            mask_text,
            shared,
            banned,
        })
    }

    /// Whether predictions map through shared token strings (else through text).
    pub fn shares_vocabulary(&self) -> bool {
        self.shared.is_some()
    }

    /// Pick one MLM id from a logits row, among allowed ids.
    fn choose(
        &self,
        row: &[f32],
        allowed: impl Fn(usize) -> bool,
        draw: &mut Draw<'_>,
    ) -> Option<u32> {
        let ok = |i: usize| !self.banned.get(i).copied().unwrap_or(true) && allowed(i);
        match self.pick {
            MlmPick::Argmax => row
                .iter()
                .enumerate()
                .filter(|(i, _)| ok(*i))
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32),
            MlmPick::Sample => {
                let max = row
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ok(*i))
                    .map(|(_, &v)| v)
                    .fold(f32::NEG_INFINITY, f32::max);
                if !max.is_finite() {
                    return None;
                }
                let weights: Vec<f64> = row
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| if ok(i) { ((v - max) as f64).exp() } else { 0.0 })
                    .collect();
                let total: f64 = weights.iter().sum();
                let mut u = draw.rng.random::<f64>() * total;
                for (i, w) in weights.iter().enumerate() {
                    if *w > 0.0 {
                        if u < *w {
                            return Some(i as u32);
                        }
                        u -= w;
                    }
                }
                weights.iter().rposition(|w| *w > 0.0).map(|i| i as u32)
            }
        }
    }

    /// The MLM input for one probe and the context positions its masks stand for.
    fn build_input(&self, context: &[u32], mask: &[bool]) -> Result<(Vec<u32>, Vec<usize>)> {
        let positions: Vec<usize> = (0..context.len()).filter(|&i| mask[i]).collect();
        if let Some((_, back)) = &self.shared {
            if let Some(mapped) = context
                .iter()
                .zip(mask)
                .map(|(id, &m)| {
                    if m {
                        Some(self.mask_id)
                    } else {
                        back.get(id).copied()
                    }
                })
                .collect::<Option<Vec<u32>>>()
            {
                let wrap = self.mlm_tok.encode("", true)?.ids;
                let (pre, post) = match wrap.as_slice() {
                    [a, b] => (vec![*a], vec![*b]),
                    other => (other.to_vec(), vec![]),
                };
                let ids = [pre, mapped, post].concat();
                return Ok((ids, positions));
            }
        }
        let mut text = String::new();
        for (&id, &m) in context.iter().zip(mask) {
            let t = self.tok.token_text(id);
            if m {
                let lead: String = t.chars().take_while(|c| c.is_whitespace()).collect();
                text.push_str(&lead);
                text.push_str(&self.mask_text);
            } else {
                text.push_str(&t);
            }
        }
        let ids = self.mlm_tok.encode(&text, true)?.ids;
        Ok((ids, positions))
    }
}

impl Sampler for MlmSampler {
    fn describe(&self) -> serde_json::Value {
        json!({
            "kind": "mlm",
            "mlm": self.mlm.info().architecture,
            "pick": self.pick,
            "mapping": if self.shared.is_some() { "shared vocabulary" } else { "text" },
        })
    }

    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Vec<u32>>> {
        let mut out: Vec<Vec<u32>> = replace.iter().map(|_| context.to_vec()).collect();
        let mut inputs = Vec::new();
        let mut where_: Vec<(usize, Vec<usize>)> = Vec::new();
        for (p, mask) in replace.iter().enumerate() {
            if !mask.iter().any(|&m| m) {
                continue;
            }
            let (ids, positions) = self.build_input(context, mask)?;
            let max = self.mlm.info().max_positions;
            if ids.len() > max {
                return Err(Error::input(format!(
                    "the context is {} tokens for the MLM sampler, more than its maximum of {max}",
                    ids.len()
                )));
            }
            inputs.push(ids);
            where_.push((p, positions));
        }
        if inputs.is_empty() {
            return Ok(out);
        }
        let mut at = Vec::new();
        for (row, ids) in inputs.iter().enumerate() {
            for (i, &id) in ids.iter().enumerate() {
                if id == self.mask_id {
                    at.push((row, i));
                }
            }
        }
        let logits: Vec<Vec<f32>> = self.mlm.logits_at(&inputs, &at)?.to_vec2()?;
        let mut k = 0;
        for (row, (p, positions)) in where_.iter().enumerate() {
            let n_masks = at.iter().filter(|(r, _)| *r == row).count();
            if n_masks != positions.len() {
                return Err(Error::input(format!(
                    "the MLM tokenizer split the masked context into {n_masks} masks for {} replaced tokens",
                    positions.len()
                )));
            }
            for &pos in positions {
                let logit_row = &logits[k];
                k += 1;
                let draw = &mut draws[*p];
                let new = match &self.shared {
                    Some((to_attr, _)) => self
                        .choose(logit_row, |i| to_attr[i].is_some(), draw)
                        .and_then(|m| to_attr[m as usize]),
                    None => self.choose(logit_row, |_| true, draw).and_then(|m| {
                        let word = self.mlm_tok.token_text(m);
                        let word = word.trim();
                        let orig = self.tok.token_text(context[pos]);
                        let lead: String = orig.chars().take_while(|c| c.is_whitespace()).collect();
                        let ids = self.tok.encode(&format!("{lead}{word}"), false).ok()?.ids;
                        ids.first().copied()
                    }),
                };
                out[*p][pos] = new.unwrap_or(context[pos]);
            }
        }
        Ok(out)
    }
}
