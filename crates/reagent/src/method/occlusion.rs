//! Occlusion and the random baseline.
//!
//! - **Occlusion** (Captum's `Occlusion` as inseq runs it, one token at a time): token `i`'s
//!   embedding is replaced by the baseline's (UNK token embedding, else zeros) and the score is
//!   `|p(y | x) - p(y | x with i occluded)|`, unnormalized. All `L` occluded contexts run as one
//!   batch.
//! - **Random**: `softmax(u)` with `u ~ U[0, 1)` per token, the random baseline of the ReAGent
//!   paper's evaluation.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::gradient::{baseline, inputs, unk_kept_token, values, Attributed, Baseline};
use super::{
    score_rows_for, Attributor, Goal, LmTarget, MethodKind, NextTokenFn, Progress, TargetScores,
    Units,
};
use crate::model::CausalLm;
use crate::Result;

/// One-token occlusion.
pub struct Occlusion {
    pub baseline: Baseline,
    pub unk: Option<u32>,
    /// The token the UNK baseline leaves in place (the model's EOS, else its padding token), as
    /// the embedding baseline does; taken from the model when it is at hand, from here on the
    /// probability-only path.
    pub kept: Option<u32>,
}

impl Occlusion {
    /// UNK baseline when the tokenizer has an UNK token, else zeros.
    pub fn new(unk: Option<u32>) -> Self {
        Occlusion {
            baseline: if unk.is_some() {
                Baseline::Unk
            } else {
                Baseline::Zero
            },
            unk,
            kept: None,
        }
    }

    /// The token the UNK baseline leaves in place on the probability-only path.
    pub fn keeping(mut self, kept: Option<u32>) -> Self {
        self.kept = kept;
        self
    }

    /// Signed drops `p(y|x) - p(y|x_(i))`.
    ///
    /// With the UNK baseline, occluding token `i` is replacing its id by UNK's (the same
    /// embedding), so the contexts go through the probability-only seam as token ids; with the
    /// zero baseline they are built as embeddings. Either way they run in batches that fit the
    /// token budget ([`super::batch_tokens`]), so a long context never holds all `L + 1` rows.
    pub fn drops(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: impl Into<Goal>,
    ) -> Result<Vec<f32>> {
        Ok(self.drops_bounded(model, context, goal)?.0)
    }

    /// [`Occlusion::drops`] with the largest error of each drop (all 0 unless the model is
    /// served in top-K mode; see [`CausalLm::prob_error`]).
    fn drops_bounded(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: impl Into<Goal>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.unit_drops(model, context, goal.into(), None)
    }

    /// The drops of occluding each unit as a whole (each token, without units).
    fn unit_drops(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: Goal,
        units: Option<&Units>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let tokens;
        let units = match units {
            Some(u) => u,
            None => {
                tokens = Units::tokens(context.len());
                &tokens
            }
        };
        if units.context_len() != context.len() {
            return Err(crate::Error::input(format!(
                "units cover {} positions, the context has {}",
                units.context_len(),
                context.len()
            )));
        }
        if let (Baseline::Unk, Some(unk)) = (self.baseline, self.unk) {
            let kept = unk_kept_token(model.info());
            return Self::id_drops(&LmTarget(model), unk, kept, context, goal, units);
        }
        if !model.capabilities().weights {
            return Err(crate::Error::Unsupported(
                "occlusion with the zero baseline replaces embeddings, which a served model does not take; \
                 use the UNK baseline (baseline: unk)"
                    .into(),
            ));
        }
        let d = self.embedding_drops_of(model, context, goal, units)?;
        let zeros = vec![0.0; d.len()];
        Ok((d, zeros))
    }

    /// Drops with token `i` replaced by `unk` (a `kept` token stays), from next-token
    /// probabilities alone.
    fn id_drops(
        f: &dyn NextTokenFn,
        unk: u32,
        kept: Option<u32>,
        context: &[u32],
        goal: Goal,
        units: &Units,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (l, n) = (context.len(), units.len());
        let row = |u: Option<usize>| -> Vec<u32> {
            let mut c = context.to_vec();
            if let Some(u) = u {
                for &i in &units.groups()[u] {
                    if Some(c[i]) != kept {
                        c[i] = unk;
                    }
                }
            }
            c
        };
        let mut p = Vec::with_capacity(n + 1);
        let rows = super::rows_for(l);
        let all: Vec<Option<usize>> = std::iter::once(None).chain((0..n).map(Some)).collect();
        for chunk in all.chunks(rows) {
            let ctx: Vec<Vec<u32>> = chunk.iter().map(|&i| row(i)).collect();
            p.extend(score_rows_for(f, &ctx, &goal.ids(), |_, lp| {
                (goal.value(lp), goal.error(f, lp))
            })?);
        }
        let (p0, e0) = p[0];
        Ok(p[1..].iter().map(|&(pi, ei)| (p0 - pi, e0 + ei)).unzip())
    }

    /// Drops with token `i`'s embedding replaced by the baseline's.
    pub fn embedding_drops(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: impl Into<Goal>,
    ) -> Result<Vec<f32>> {
        self.embedding_drops_of(model, context, goal.into(), &Units::tokens(context.len()))
    }

    fn embedding_drops_of(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: Goal,
        units: &Units,
    ) -> Result<Vec<f32>> {
        let (l, n) = (context.len(), units.len());
        let x = inputs(model, context)?;
        let b = baseline(self.baseline, model, context, &x.embeds, self.unk)?;
        let single = units.groups().iter().all(|g| g.len() == 1);
        let build = |u: Option<usize>| -> Result<Tensor> {
            let Some(u) = u else {
                return Ok(x.embeds.clone());
            };
            if !single {
                // A unit of several positions: the baseline where the unit is, by a mask.
                let mut m = vec![0u8; l];
                for &i in &units.groups()[u] {
                    m[i] = 1;
                }
                let mask = Tensor::from_vec(m, (1, l, 1), x.embeds.device())?
                    .broadcast_as(x.embeds.shape())?;
                return Ok(mask.where_cond(&b, &x.embeds)?);
            }
            let i = units.groups()[u][0];
            let mut parts = Vec::with_capacity(3);
            if i > 0 {
                parts.push(x.embeds.narrow(1, 0, i)?);
            }
            parts.push(b.narrow(1, i, 1)?);
            if i + 1 < l {
                parts.push(x.embeds.narrow(1, i + 1, l - i - 1)?);
            }
            Ok(Tensor::cat(&parts, 1)?)
        };
        let all: Vec<Option<usize>> = std::iter::once(None).chain((0..n).map(Some)).collect();
        let mut p = Vec::with_capacity(n + 1);
        for chunk in all.chunks(super::rows_for(l)) {
            let rows: Vec<Tensor> = chunk.iter().map(|&i| build(i)).collect::<Result<_>>()?;
            p.extend(values(
                model,
                &Tensor::cat(&rows, 0)?,
                goal,
                Attributed::Probability,
            )?);
        }
        Ok(p[1..].iter().map(|pi| p[0] - pi).collect())
    }
}

impl Attributor for Occlusion {
    fn kind(&self) -> MethodKind {
        MethodKind::Occlusion
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({"method": "occlusion", "window": 1, "baseline": self.baseline, "score": "|p - p_occluded|"})
    }

    fn attribute_black_box(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        target: u32,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        let unk = match (self.baseline, self.unk) {
            (Baseline::Unk, Some(unk)) => unk,
            _ => return None,
        };
        let units = Units::tokens(context.len());
        Some(Self::id_drops(f, unk, self.kept, context, target.into(), &units).map(scores))
    }

    fn attribute_contrastive(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: Goal,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        Some(self.drops_bounded(model, context, goal).map(scores))
    }

    fn attribute_units(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: Goal,
        units: &Units,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        Some(
            self.unit_drops(model, context, goal, Some(units))
                .map(scores),
        )
    }

    fn attribute(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: u32,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Result<TargetScores> {
        self.drops_bounded(model, context, target).map(scores)
    }
}

/// Occlusion's scores `|drop|` from the drops and their largest errors (kept only when some
/// error is not 0: `| |a| - |b| | <= |a - b|`, so a drop's bound is its score's).
fn scores((drops, errors): (Vec<f32>, Vec<f32>)) -> TargetScores {
    let rows = drops.len() + 1;
    let mut s = TargetScores::plain(drops.into_iter().map(f32::abs).collect()).with_rows(rows);
    if errors.iter().any(|e| *e > 0.0) {
        s.error_bound = Some(errors);
    }
    s
}

/// The random baseline: `softmax(U[0, 1))` per token.
pub struct Random {
    pub seed: u64,
}

impl Random {
    /// The scores for target number `index` of a job; the same `(seed, key, index)` gives the
    /// same scores.
    pub fn scores(&self, len: usize, key: u64, index: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64,
        );
        let u: Vec<f32> = (0..len).map(|_| rng.random::<f32>()).collect();
        crate::util::softmax(&u)
    }
}

impl Attributor for Random {
    fn kind(&self) -> MethodKind {
        MethodKind::Random
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({"method": "random", "scores": "softmax(U[0,1))", "seed": self.seed})
    }

    fn attribute_black_box(
        &self,
        _f: &dyn NextTokenFn,
        context: &[u32],
        _target: u32,
        index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        Some(Ok(self.for_context(context, index)))
    }

    fn attribute(
        &self,
        _model: &dyn CausalLm,
        context: &[u32],
        _target: u32,
        index: usize,
        _progress: &dyn Progress,
    ) -> Result<TargetScores> {
        Ok(self.for_context(context, index))
    }
}

impl Random {
    fn for_context(&self, context: &[u32], index: usize) -> TargetScores {
        let key = context
            .iter()
            .fold(0u64, |h, &id| h.wrapping_mul(31).wrapping_add(id as u64));
        TargetScores::plain(self.scores(context.len(), key, index)).with_rows(0)
    }
}
