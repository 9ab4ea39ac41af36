//! Faithfulness metrics, as the ReAGent paper's evaluation code computes them
//! (`src/evaluation/evaluator/` of casszhao/ReAGent: `soft_sufficiency.py`,
//! `soft_comprehensiveness.py`, `soft_norm_*.py`, `base_masking.py`, and the hard
//! `sufficiency.py` / `comprehensiveness.py` / `norm_*.py`).
//!
//! With `E` the input embeddings `[L, H]` (what [`CausalLm::embed`] gives), `q` the model's
//! next-token distribution after the context, and `D(p, q) = sum_v (sqrt p_v - sqrt q_v)^2 / sqrt 2`:
//!
//! - **soft masking**: each embedding element of token `i` is kept with probability `m_i` (one
//!   uniform draw per element, kept iff `u < m_i`), the others zeroed. Sufficiency uses
//!   `m = s`, comprehensiveness `m = 1 - s`; scores are used as they are (no normalization);
//! - `SoftSuff = 1 - D(p_s, q)`, `SoftComp = D(p_c, q)`, `Suff0 = 1 - D(p_0, q)` with `p_0` from
//!   all-zero embeddings;
//! - `Soft-NS = max(0, SoftSuff - Suff0) / (1 - Suff0)`, `Soft-NC = SoftComp / (1 - Suff0)`;
//! - **hard** metrics at a rationale ratio: the `k = floor(ratio * L)` top-scored tokens are kept
//!   (sufficiency) or zeroed (comprehensiveness) whole; hard comprehensiveness uses the true
//!   Hellinger distance `||sqrt(p/sum p) - sqrt(q/sum q)|| / sqrt 2`, as the paper's code does; both
//!   are normalized by `Suff0` like the soft ones.
//!
//! The paper draws one mask per example; we average over `R` seeded draws. Metrics that are
//! undefined (the prediction does not change even with all-zero embeddings) are `None`, never NaN.
//!
//! **Erasure metrics** ([`erasure`]) need next-token probabilities only, so they also run against
//! a served model: ERASER's sufficiency and comprehensiveness (DeYoung et al. 2020) with the
//! target's probability in place of the predicted class's. At a ratio, the `k` top-scored tokens
//! are kept (the others *dropped* from the context, not zeroed) or dropped: `Suff = p(y | x) -
//! p(y | top k only)` (lower is better), `Comp = p(y | x) - p(y | x without the top k)` (higher
//! is better); their mean over the ratios is ERASER's AOPC. Special tokens (BOS, chat markers) are
//! never dropped; `k = floor(ratio * n)` of the `n` other tokens, clamped to `1..n-1` so that
//! both contexts keep a token.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{CausalLm, Outputs};
use crate::score::{score_rows_for, NextTokenFn};
use crate::{Error, Result};

/// `sqrt(2)` as float32, as `torch.sqrt(torch.tensor(2.0))`.
const SQRT2: f32 = std::f32::consts::SQRT_2;

/// `sum_v (sqrt p_v - sqrt q_v)^2 / sqrt 2` (no square root of the sum).
pub fn distance(p: &[f32], q: &[f32]) -> f32 {
    p.iter()
        .zip(q)
        .map(|(a, b)| {
            let d = a.sqrt() - b.sqrt();
            d * d / SQRT2
        })
        .sum()
}

/// The Hellinger distance of the normalized distributions (hard comprehensiveness).
pub fn hellinger(p: &[f32], q: &[f32]) -> f32 {
    let sp: f32 = p.iter().sum();
    let sq: f32 = q.iter().sum();
    let s: f32 = p
        .iter()
        .zip(q)
        .map(|(a, b)| {
            let d = (a / sp).sqrt() - (b / sq).sqrt();
            d * d
        })
        .sum();
    s.sqrt() / SQRT2
}

/// `max(0, suff - suff0) / (1 - suff0)` (NaN → 0, as Python's `max`); `None` when `1 - suff0` is 0.
fn normalized_suff(suff: f32, one_minus_suff0: f32, suff0: f32) -> Option<f32> {
    if one_minus_suff0 == 0.0 {
        return None;
    }
    let x = suff - suff0;
    let x = if x > 0.0 { x } else { 0.0 };
    Some(x / one_minus_suff0)
}

fn normalized_comp(comp: f32, one_minus_suff0: f32) -> Option<f32> {
    (one_minus_suff0 != 0.0).then(|| comp / one_minus_suff0)
}

/// Soft metrics of one score vector (one draw, or the mean of several).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Soft {
    pub soft_suff: f32,
    pub soft_comp: f32,
    pub soft_ns: Option<f32>,
    pub soft_nc: Option<f32>,
}

/// Hard metrics at one rationale ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hard {
    pub ratio: f64,
    pub k: usize,
    pub suff: f32,
    pub comp: f32,
    pub ns: Option<f32>,
    pub nc: Option<f32>,
}

/// The element masks of one soft draw, `[L, H]` as 0/1.
#[derive(Debug, Clone)]
pub struct SoftMasks {
    pub suff: Tensor,
    pub comp: Tensor,
}

/// Everything the metrics need about one (context, model) pair: embeddings, `q` and `Suff0`.
pub struct Faithfulness<'a> {
    model: &'a dyn CausalLm,
    /// `[1, L, H]`
    embeds: Tensor,
    q: Vec<f32>,
    pub suff0: f32,
    one_minus_suff0: f32,
}

impl<'a> Faithfulness<'a> {
    pub fn new(model: &'a dyn CausalLm, context: &[u32]) -> Result<Self> {
        let ids = Tensor::new(context, model.device())?.unsqueeze(0)?;
        let embeds = model.embed(&ids)?;
        let batch = Tensor::cat(&[&embeds, &embeds.zeros_like()?], 0)?;
        let mut rows = Self::distributions(model, &batch)?;
        let p0 = rows.pop().expect("two rows");
        let q = rows.pop().expect("two rows");
        let suff0 = 1.0 - distance(&p0, &q);
        Ok(Faithfulness {
            model,
            embeds,
            q,
            suff0,
            one_minus_suff0: 1.0 - suff0,
        })
    }

    /// `(L, H)` of the embeddings.
    pub fn shape(&self) -> (usize, usize) {
        let d = self.embeds.dims();
        (d[1], d[2])
    }

    /// Next-token distributions for `[n, L, H]` inputs.
    fn distributions(model: &dyn CausalLm, inputs: &Tensor) -> Result<Vec<Vec<f32>>> {
        let (n, l, _) = inputs.dims3()?;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(16) {
            let m = 16.min(n - start);
            let lp = model
                .forward_embeds(
                    &inputs.narrow(0, start, m)?,
                    &vec![l; m],
                    Outputs::default(),
                )?
                .last_log_probs;
            out.extend(crate::model::nn::softmax_last(&lp)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// Distributions of the embeddings under each `[L, H]` element mask.
    fn masked(&self, masks: &[Tensor]) -> Result<Vec<Vec<f32>>> {
        let e = self.embeds.squeeze(0)?;
        let rows = masks
            .iter()
            .map(|m| e.mul(m))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Self::distributions(self.model, &Tensor::stack(&rows, 0)?)
    }

    /// Draw one soft mask pair: element `(i, h)` kept iff `u < s_i` (sufficiency) and, with an
    /// independent draw, iff `u < 1 - s_i` (comprehensiveness).
    pub fn draw_masks(&self, scores: &[f32], rng: &mut ChaCha8Rng) -> Result<SoftMasks> {
        let (l, h) = self.shape();
        let mut draw = |keep: &dyn Fn(usize) -> f32| -> Result<Tensor> {
            let v: Vec<f32> = (0..l * h)
                .map(|j| {
                    if rng.random::<f32>() < keep(j / h) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            Ok(Tensor::from_vec(v, (l, h), self.model.device())?)
        };
        let suff = draw(&|i| scores[i])?;
        let comp = draw(&|i| 1.0 - scores[i])?;
        Ok(SoftMasks { suff, comp })
    }

    /// Soft metrics for each draw.
    pub fn soft(&self, draws: &[SoftMasks]) -> Result<Vec<Soft>> {
        let masks: Vec<Tensor> = draws
            .iter()
            .flat_map(|d| [d.suff.clone(), d.comp.clone()])
            .collect();
        let p = self.masked(&masks)?;
        Ok(p.chunks(2)
            .map(|pair| {
                let soft_suff = 1.0 - distance(&pair[0], &self.q);
                let soft_comp = distance(&pair[1], &self.q);
                Soft {
                    soft_suff,
                    soft_comp,
                    soft_ns: normalized_suff(soft_suff, self.one_minus_suff0, self.suff0),
                    soft_nc: normalized_comp(soft_comp, self.one_minus_suff0),
                }
            })
            .collect())
    }

    /// Soft metrics averaged over `r` seeded draws.
    pub fn soft_mean(&self, scores: &[f32], r: usize, rng: &mut ChaCha8Rng) -> Result<Soft> {
        let draws = (0..r)
            .map(|_| self.draw_masks(scores, rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(mean_soft(&self.soft(&draws)?))
    }

    /// Hard metrics at each ratio.
    pub fn hard(&self, scores: &[f32], ratios: &[f64]) -> Result<Vec<Hard>> {
        let (l, h) = self.shape();
        let order = crate::method::reagent::stopping::top_n(scores, l);
        let mut masks = Vec::with_capacity(2 * ratios.len());
        let mut ks = Vec::with_capacity(ratios.len());
        for &ratio in ratios {
            let k = (ratio * l as f64) as usize;
            let mut keep = vec![0f32; l];
            for &i in &order[..k.min(l)] {
                keep[i] = 1.0;
            }
            let suff = Tensor::from_vec(keep.clone(), (l, 1), self.model.device())?
                .broadcast_as((l, h))?;
            let comp = (1.0 - &suff)?;
            masks.push(suff.contiguous()?);
            masks.push(comp.contiguous()?);
            ks.push(k);
        }
        let p = self.masked(&masks)?;
        Ok(ratios
            .iter()
            .zip(ks)
            .zip(p.chunks(2))
            .map(|((&ratio, k), pair)| {
                let suff = 1.0 - distance(&pair[0], &self.q);
                let comp = hellinger(&pair[1], &self.q);
                Hard {
                    ratio,
                    k,
                    suff,
                    comp,
                    ns: normalized_suff(suff, self.one_minus_suff0, self.suff0),
                    nc: normalized_comp(comp, self.one_minus_suff0),
                }
            })
            .collect())
    }
}

/// Erasure metrics at one rationale ratio (see the module docs). `error` bounds how far each of
/// `suff` and `comp` can be from its exact value: 0 for a local model, the sum of the two
/// probabilities' bounds when a served model gives only its top K.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Erasure {
    pub ratio: f64,
    pub k: usize,
    pub suff: f32,
    pub comp: f32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub error: f32,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// One ratio's erasure contexts: `(k, kept, dropped)`.
pub type ErasurePlan = (usize, Vec<u32>, Vec<u32>);

/// The contexts the erasure metrics score at each ratio, as `(k, kept, dropped)`: the `k`
/// top-scored droppable tokens alone (with every fixed token), and the context without them.
/// Empty when fewer than two tokens can be dropped.
pub fn erasure_contexts(
    context: &[u32],
    scores: &[f32],
    fixed: &[bool],
    ratios: &[f64],
) -> Result<Vec<ErasurePlan>> {
    if scores.len() != context.len() || fixed.len() != context.len() {
        return Err(Error::input(format!(
            "erasure metrics: {} scores and {} fixed flags for a context of {} tokens",
            scores.len(),
            fixed.len(),
            context.len()
        )));
    }
    let free: Vec<usize> = (0..context.len()).filter(|&i| !fixed[i]).collect();
    let n = free.len();
    if n < 2 {
        return Ok(Vec::new());
    }
    let free_scores: Vec<f32> = free.iter().map(|&i| scores[i]).collect();
    let order = crate::util::top_n(&free_scores, n);
    let mut out = Vec::with_capacity(ratios.len());
    for &ratio in ratios {
        let k = ((ratio * n as f64) as usize).clamp(1, n - 1);
        let mut top = vec![false; context.len()];
        for &j in &order[..k] {
            top[free[j]] = true;
        }
        let kept = (0..context.len())
            .filter(|&i| fixed[i] || top[i])
            .map(|i| context[i])
            .collect();
        let dropped = (0..context.len())
            .filter(|&i| !top[i])
            .map(|i| context[i])
            .collect();
        out.push((k, kept, dropped));
    }
    Ok(out)
}

/// Erasure sufficiency and comprehensiveness of `scores` at each ratio (see the module docs),
/// through any next-token scorer (a local model or a served one). `fixed` marks the positions
/// never dropped (special tokens). Returns `p(y | x)` and one [`Erasure`] per ratio (none when
/// fewer than two tokens can be dropped).
pub fn erasure(
    f: &dyn NextTokenFn,
    context: &[u32],
    target: u32,
    scores: &[f32],
    fixed: &[bool],
    ratios: &[f64],
) -> Result<(f32, Vec<Erasure>)> {
    if target as usize >= f.vocab_size() {
        return Err(Error::input(format!(
            "erasure metrics: target id {target} is outside the vocabulary ({})",
            f.vocab_size()
        )));
    }
    if context.is_empty() {
        return Err(Error::input("erasure metrics: the context is empty"));
    }
    let plan = erasure_contexts(context, scores, fixed, ratios)?;
    let mut contexts = Vec::with_capacity(1 + 2 * plan.len());
    contexts.push(context.to_vec());
    for (_, kept, dropped) in &plan {
        contexts.push(kept.clone());
        contexts.push(dropped.clone());
    }
    let p = score_rows_for(f, &contexts, &[target], |_, row| {
        // A row shorter than the vocabulary is the scorer's fault: NaN, refused below.
        match row.get(target as usize) {
            Some(lp) => (lp.exp(), f.prob_error(row, target)),
            None => (f32::NAN, 0.0),
        }
    })?;
    let (p0, e0) = p[0];
    if p.iter().any(|(x, e)| !x.is_finite() || !e.is_finite()) {
        return Err(Error::input(
            "erasure metrics: the model gave a non-finite probability",
        ));
    }
    let rows = ratios
        .iter()
        .zip(&plan)
        .enumerate()
        .map(|(j, (&ratio, (k, _, _)))| {
            let (pk, ek) = p[1 + 2 * j];
            let (pd, ed) = p[2 + 2 * j];
            Erasure {
                ratio,
                k: *k,
                suff: p0 - pk,
                comp: p0 - pd,
                error: e0 + ek.max(ed),
            }
        })
        .collect();
    Ok((p0, rows))
}

fn mean_opt(xs: impl Iterator<Item = Option<f32>>) -> Option<f32> {
    let v: Option<Vec<f32>> = xs.collect();
    v.filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f32>() / v.len() as f32)
}

/// The mean of several soft draws.
pub fn mean_soft(draws: &[Soft]) -> Soft {
    let n = draws.len() as f32;
    Soft {
        soft_suff: draws.iter().map(|d| d.soft_suff).sum::<f32>() / n,
        soft_comp: draws.iter().map(|d| d.soft_comp).sum::<f32>() / n,
        soft_ns: mean_opt(draws.iter().map(|d| d.soft_ns)),
        soft_nc: mean_opt(draws.iter().map(|d| d.soft_nc)),
    }
}

/// A seeded stream for one (example, method, target) evaluation.
pub fn metric_rng(seed: u64, example: &str, method: &str, target: usize) -> ChaCha8Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in example.bytes().chain([0xff]).chain(method.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(seed ^ h ^ (target as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        let p = [0.5, 0.5, 0.0];
        assert_eq!(distance(&p, &p), 0.0);
        let q = [0.0, 0.0, 1.0];
        // sum (sqrt p - sqrt q)^2 = 0.5 + 0.5 + 1 = 2, / sqrt 2
        assert!((distance(&p, &q) - 2.0 / SQRT2).abs() < 1e-6);
        assert!((hellinger(&p, &q) - 1.0).abs() < 1e-6);
        assert_eq!(normalized_suff(0.5, 0.0, 1.0), None);
        assert_eq!(normalized_suff(0.2, 0.5, 0.5), Some(0.0));
        assert_eq!(normalized_suff(f32::NAN, 0.5, 0.5), Some(0.0));
    }
}
