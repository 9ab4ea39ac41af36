//! ReAGent: Recursive Attribution Generator (Zhao & Shan 2024,
//! <https://arxiv.org/abs/2402.00794>).
//!
//! For a target token `y` after a context `x_1..x_L`, `P` probes run in one batch. Each probe
//! starts with logit scores `u ~ U[0,1)` per position. Each step:
//!
//! 1. **update** — replace each position with probability `r` ([`Replacer`]) by a token from the
//!    [`Sampler`]; with `d = p(y|x) - p(y|x~)`, add `logit((s+1)/2)` to every score, where
//!    `s = +d` on replaced positions and `-d` on kept ones; the importance is `softmax(u)`;
//! 2. **stopping test** — keep the probe's `n` most important positions, fill all others from
//!    the sampler, and stop when `y` is among the model's top-`k` next tokens
//!    ([`StoppingRule`]). A stopped probe's scores freeze.
//!
//! The result is the mean importance of the converged probes, or of all probes when none
//! converged (reported as `converged_probes: 0`; inseq 0.7.1 returned NaN there, its #304).
//!
//! This follows inseq 0.7.1's `reagent_core` (which follows the paper's code) exactly — the
//! `scripts/reagent_reference.py` port and the recorded-stream parity test pin it — but does
//! less work for the same result:
//! - stopped probes leave the batch (inseq keeps computing and discarding them);
//! - the LM head runs at the last position only (inseq computes it at every position);
//! - the stopping test of step `t` and the update of step `t + 1` share one forward pass
//!   (inseq runs two). The update is independent of the test's outcome, and each probe draws
//!   from its own random stream, so the results are those of the sequential algorithm; a
//!   probe that stops at `t` just discards its precomputed update.
//!
//! Samplers, the replacer and the stopping rule are one small trait each, as the original
//! code's `token_sampler/`, `token_replacer/` and `stopping_condition_evaluator/`.

pub mod pos;
pub mod replacer;
pub mod sampler;
pub mod stopping;
pub mod stream;

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use replacer::{Bernoulli, Initializer, Replacer, UniformInit};
pub use sampler::{CausalSampler, MlmPick, MlmSampler, PosSampler, Sampler, UniformSampler};
pub use stopping::{StoppingRule, TopK};
pub use stream::RecordedStream;

use super::{Attributor, MethodKind, NextTokenFn, Progress, TargetScores};
use crate::model::{CausalLm, LoadedMaskedModel, LoadedModel};
use crate::{Error, Result};

/// The samplers, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Pos,
    Uniform,
    Mlm,
    Causal,
}

/// Build a sampler for `model`. The MLM sampler needs `mlm`.
pub fn build_sampler(
    kind: SamplerKind,
    model: &LoadedModel,
    mlm: Option<&LoadedMaskedModel>,
    pick: MlmPick,
) -> Result<Arc<dyn Sampler>> {
    let vocab = model.model.vocab_size();
    Ok(match kind {
        SamplerKind::Uniform => Arc::new(UniformSampler::new(&model.tokenizer, vocab)?),
        SamplerKind::Pos => Arc::new(PosSampler::new(
            pos::PosTable::cached(&model.tokenizer)?,
            vocab,
        )?),
        SamplerKind::Causal => Arc::new(CausalSampler::new(model.model.clone())),
        SamplerKind::Mlm => {
            let mlm = mlm.ok_or_else(|| {
                Error::input("the MLM sampler needs a masked LM: pass --mlm SPEC (e.g. a distilroberta-base folder)")
            })?;
            Arc::new(MlmSampler::new(
                mlm.model.clone(),
                mlm.tokenizer.clone(),
                model.tokenizer.clone(),
                pick,
            )?)
        }
    })
}

/// What a random draw is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Init,
    Update,
    StopTest,
}

/// One probe's random stream at one step (steps count from 1; initialisation is step 0).
pub struct Draw<'a> {
    pub probe: usize,
    pub step: usize,
    pub phase: Phase,
    pub rng: &'a mut ChaCha8Rng,
}

/// How much a replacement changed the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// `p(y | x) - p(y | x~)`: the reference's (and the paper's code's) objective. Signed: a
    /// replacement that raises the target's probability lowers the replaced tokens' scores.
    #[default]
    TargetProb,
    /// The total variation distance between the next-token distributions,
    /// `0.5 * sum_v |p(v | x) - p(v | x~)|`, in `[0, 1]`: how much the whole prediction moved,
    /// not just the target's probability (the abstract's "output distribution" wording).
    /// Always non-negative: any change raises the replaced tokens' scores.
    TotalVariation,
}

/// ReAGent's hyperparameters. Defaults are inseq's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReagentConfig {
    /// Probes run in parallel (`num_probes`).
    pub probes: usize,
    /// Step limit per probe (`max_probe_steps`).
    pub max_steps: usize,
    /// Positions the stopping test keeps (`keep_top_n`); 0 uses `keep_ratio`.
    pub keep_top_n: usize,
    /// Fraction of positions the stopping test keeps, rounded up, when `keep_top_n` is 0.
    pub keep_ratio: Option<f64>,
    /// The stopping test holds when the target is among this many top next tokens.
    pub stop_top_k: usize,
    /// Probability that an update replaces each position.
    pub replacing_ratio: f64,
    pub objective: Objective,
    pub seed: u64,
}

impl Default for ReagentConfig {
    fn default() -> Self {
        ReagentConfig {
            probes: 16,
            max_steps: 3000,
            keep_top_n: 5,
            keep_ratio: None,
            stop_top_k: 3,
            replacing_ratio: 0.3,
            objective: Objective::TargetProb,
            seed: 42,
        }
    }
}

impl ReagentConfig {
    /// The paper's token-level setting (its repository's
    /// `config/top3_replace0.1_max5000_batch5.json`): `r = 0.1`, `n = 8`, `k = 3`, 5000 steps,
    /// 5 probes.
    pub fn paper_token() -> Self {
        ReagentConfig {
            probes: 5,
            max_steps: 5000,
            keep_top_n: 8,
            keep_ratio: None,
            stop_top_k: 3,
            replacing_ratio: 0.1,
            ..ReagentConfig::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.probes == 0 {
            return Err(Error::input("--probes must be at least 1"));
        }
        if self.max_steps == 0 {
            return Err(Error::input("--max-steps must be at least 1"));
        }
        if self.stop_top_k == 0 {
            return Err(Error::input("--stop-top-k must be at least 1"));
        }
        if !(self.replacing_ratio > 0.0 && self.replacing_ratio <= 1.0) {
            return Err(Error::input(format!(
                "--replacing-ratio must be in (0, 1], got {}",
                self.replacing_ratio
            )));
        }
        if self.keep_top_n == 0 {
            match self.keep_ratio {
                Some(r) if r > 0.0 && r <= 1.0 => {}
                Some(r) => {
                    return Err(Error::input(format!(
                        "--keep-ratio must be in (0, 1], got {r}"
                    )))
                }
                None => return Err(Error::input("--keep-top-n is 0, so --keep-ratio is needed")),
            }
        }
        Ok(())
    }
}

/// Everything one ReAGent run computed, for inspection and tests.
#[derive(Debug, Clone)]
pub struct Trace {
    /// `p(y | context)`.
    pub p0: f32,
    /// Steps taken (the step in which the last probe converged, or `max_steps`).
    pub steps: usize,
    /// Per probe: the step at which its stopping test held.
    pub converged_step: Vec<Option<usize>>,
    /// Per probe: `softmax(u)` at the end.
    pub final_scores: Vec<Vec<f32>>,
    /// The result: mean over converged probes (all probes when none converged).
    pub mean: Vec<f32>,
}

impl Trace {
    pub fn converged_probes(&self) -> usize {
        self.converged_step.iter().filter(|s| s.is_some()).count()
    }
}

/// The ReAGent attributor: configuration plus its parts.
pub struct Reagent {
    cfg: ReagentConfig,
    sampler: Arc<dyn Sampler>,
    replacer: Arc<dyn Replacer>,
    init: Arc<dyn Initializer>,
    stopping: Arc<dyn StoppingRule>,
}

impl Reagent {
    /// ReAGent with the given sampler, Bernoulli replacement, uniform initial scores and the
    /// top-k stopping rule, all from `cfg`.
    pub fn new(cfg: ReagentConfig, sampler: Arc<dyn Sampler>) -> Result<Self> {
        cfg.validate()?;
        Ok(Reagent {
            replacer: Arc::new(Bernoulli {
                ratio: cfg.replacing_ratio,
            }),
            init: Arc::new(UniformInit),
            stopping: Arc::new(TopK {
                keep_top_n: cfg.keep_top_n,
                keep_ratio: cfg.keep_ratio,
                top_k: cfg.stop_top_k,
            }),
            cfg,
            sampler,
        })
    }

    /// Deterministic mode: initial scores, masks and tokens come from a recorded stream.
    ///
    /// A recording ends where the reference stopped, so `max_steps` is capped at its length:
    /// the last step's stopping test then comes without a speculative next update.
    pub fn with_stream(mut cfg: ReagentConfig, stream: Arc<RecordedStream>) -> Result<Self> {
        cfg.max_steps = cfg.max_steps.min(stream.steps());
        let mut r = Reagent::new(cfg, stream.clone())?;
        r.replacer = stream.clone();
        r.init = stream;
        Ok(r)
    }

    pub fn config(&self) -> &ReagentConfig {
        &self.cfg
    }

    /// The random stream of probe `probe` for target number `index`.
    fn rng(&self, index: usize, probe: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.cfg.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        rng.set_stream(probe as u64);
        rng
    }

    /// The update rows (mask, perturbed context) of step `step` for the `active` probes.
    fn draw_updates(
        &self,
        context: &[u32],
        active: &[usize],
        step: usize,
        rngs: &mut [ChaCha8Rng],
    ) -> Result<Vec<(Vec<bool>, Vec<u32>)>> {
        let mut masks = Vec::with_capacity(active.len());
        for &p in active {
            let mut d = Draw {
                probe: p,
                step,
                phase: Phase::Update,
                rng: &mut rngs[p],
            };
            masks.push(self.replacer.choose(context.len(), &mut d));
        }
        let xs = self.sample(context, &masks, active, step, Phase::Update, rngs)?;
        Ok(masks.into_iter().zip(xs).collect())
    }

    fn sample(
        &self,
        context: &[u32],
        masks: &[Vec<bool>],
        active: &[usize],
        step: usize,
        phase: Phase,
        rngs: &mut [ChaCha8Rng],
    ) -> Result<Vec<Vec<u32>>> {
        let mut draws: Vec<Draw<'_>> = rngs
            .iter_mut()
            .enumerate()
            .filter(|(p, _)| active.binary_search(p).is_ok())
            .map(|(probe, rng)| Draw {
                probe,
                step,
                phase,
                rng,
            })
            .collect();
        self.sampler.sample(context, masks, &mut draws)
    }

    /// The change in prediction of one perturbed context.
    fn delta(&self, p0: f32, probs0: &[f32], row: &[f32], target: u32) -> f32 {
        match self.cfg.objective {
            Objective::TargetProb => p0 - row[target as usize].exp(),
            Objective::TotalVariation => {
                0.5 * probs0
                    .iter()
                    .zip(row)
                    .map(|(p, lq)| (p - lq.exp()).abs())
                    .sum::<f32>()
            }
        }
    }

    /// Run ReAGent for one target and return everything it computed.
    pub fn trace(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        target: u32,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<Trace> {
        let (l, n_probes) = (context.len(), self.cfg.probes);
        if l == 0 {
            return Err(Error::input("ReAGent needs at least one context token"));
        }
        if target as usize >= f.vocab_size() {
            return Err(Error::input(format!(
                "target id {target} is outside the vocabulary of {} ids",
                f.vocab_size()
            )));
        }
        let row0 = f.log_probs(&[context.to_vec()])?.remove(0);
        let p0 = row0[target as usize].exp();
        let probs0: Vec<f32> = match self.cfg.objective {
            Objective::TotalVariation => row0.iter().map(|x| x.exp()).collect(),
            Objective::TargetProb => Vec::new(),
        };
        let mut rngs: Vec<ChaCha8Rng> = (0..n_probes).map(|p| self.rng(index, p)).collect();
        let mut scores: Vec<Vec<f32>> = rngs
            .iter_mut()
            .enumerate()
            .map(|(probe, rng)| {
                let mut d = Draw {
                    probe,
                    step: 0,
                    phase: Phase::Init,
                    rng,
                };
                self.init.initial_scores(l, &mut d)
            })
            .collect();
        let mut converged_step: Vec<Option<usize>> = vec![None; n_probes];
        let mut active: Vec<usize> = (0..n_probes).collect();

        // Step 1's update on its own; afterwards each forward pairs step t's stopping test with
        // step t+1's update.
        let updates = self.draw_updates(context, &active, 1, &mut rngs)?;
        let xs: Vec<Vec<u32>> = updates.iter().map(|(_, x)| x.clone()).collect();
        let rows = f.log_probs(&xs)?;
        for (k, &p) in active.iter().enumerate() {
            let d = self.delta(p0, &probs0, &rows[k], target);
            apply_update(&mut scores[p], &updates[k].0, d);
        }
        let keep = self.stopping.keep(l);
        let mut step = 1;
        loop {
            let masks: Vec<Vec<bool>> = active
                .iter()
                .map(|&p| {
                    let kept = stopping::top_n(&softmax(&scores[p]), keep);
                    let mut m = vec![true; l];
                    for i in kept {
                        m[i] = false;
                    }
                    m
                })
                .collect();
            let mut batch =
                self.sample(context, &masks, &active, step, Phase::StopTest, &mut rngs)?;
            let more = step < self.cfg.max_steps;
            let next = if more {
                self.draw_updates(context, &active, step + 1, &mut rngs)?
            } else {
                Vec::new()
            };
            batch.extend(next.iter().map(|(_, x)| x.clone()));
            let rows = f.log_probs(&batch)?;
            let (stop_rows, update_rows) = rows.split_at(active.len());
            let mut still = Vec::with_capacity(active.len());
            for (k, &p) in active.iter().enumerate() {
                if self.stopping.holds(&stop_rows[k], target) {
                    converged_step[p] = Some(step);
                } else {
                    still.push((k, p));
                }
            }
            let done = n_probes - still.len();
            progress.step(step, self.cfg.max_steps, done, n_probes);
            if still.is_empty() || !more {
                break;
            }
            for &(k, p) in &still {
                let d = self.delta(p0, &probs0, &update_rows[k], target);
                apply_update(&mut scores[p], &next[k].0, d);
            }
            active = still.into_iter().map(|(_, p)| p).collect();
            step += 1;
        }

        let final_scores: Vec<Vec<f32>> = scores.iter().map(|s| softmax(s)).collect();
        let picked: Vec<&Vec<f32>> = if converged_step.iter().any(Option::is_some) {
            final_scores
                .iter()
                .zip(&converged_step)
                .filter(|(_, c)| c.is_some())
                .map(|(s, _)| s)
                .collect()
        } else {
            final_scores.iter().collect()
        };
        let mut mean = vec![0f32; l];
        for s in &picked {
            for (m, v) in mean.iter_mut().zip(s.iter()) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= picked.len() as f32;
        }
        Ok(Trace {
            p0,
            steps: step,
            converged_step,
            final_scores,
            mean,
        })
    }
}

/// `u += logit((s + 1) / 2)` with `s = +d` on replaced positions, `-d` on kept ones.
///
/// `|d| = 1` (p0 = 1 and the replaced probability underflowing to 0) would give an infinite
/// score and then NaN; we clamp `d` to `1 - 2^-23` in magnitude there, which the reference does
/// not need to do in practice but never guards against.
fn apply_update(scores: &mut [f32], replaced: &[bool], d: f32) {
    const MAX: f32 = 1.0 - f32::EPSILON;
    let d = d.clamp(-MAX, MAX);
    let up = logit(d * 0.5 + 0.5);
    let down = logit(-d * 0.5 + 0.5);
    for (s, &r) in scores.iter_mut().zip(replaced) {
        *s += if r { up } else { down };
    }
}

/// `ln(x / (1 - x))`, as torch computes `logit` in float32.
fn logit(x: f32) -> f32 {
    (x / (1.0 - x)).ln()
}

/// Softmax in f32.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

impl Attributor for Reagent {
    fn kind(&self) -> MethodKind {
        MethodKind::Reagent
    }

    fn config(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.cfg).unwrap_or_default();
        v["sampler"] = self.sampler.describe();
        v
    }

    fn attribute(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: u32,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<TargetScores> {
        let t = self.trace(&super::LmTarget(model), context, target, index, progress)?;
        Ok(TargetScores {
            steps: Some(t.steps),
            converged_probes: Some(t.converged_probes()),
            probes: Some(self.cfg.probes),
            ..TargetScores::plain(t.mean)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_is_symmetric_and_finite() {
        let mut s = vec![0.0; 3];
        apply_update(&mut s, &[true, false, true], 0.5);
        // logit(0.75) = ln 3
        assert!((s[0] - 3f32.ln()).abs() < 1e-6);
        assert!((s[1] + 3f32.ln()).abs() < 1e-6);
        let mut s = vec![0.0; 2];
        apply_update(&mut s, &[true, false], 1.0);
        assert!(s.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }

    #[test]
    fn config_validation() {
        assert!(ReagentConfig::default().validate().is_ok());
        assert!(ReagentConfig::paper_token().validate().is_ok());
        let bad = ReagentConfig {
            replacing_ratio: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = ReagentConfig {
            keep_top_n: 0,
            keep_ratio: None,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
