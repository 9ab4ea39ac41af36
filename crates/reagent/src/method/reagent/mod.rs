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

pub mod draw;
pub mod pos;
pub mod readout;
pub mod replacer;
pub mod sampler;
pub mod stopping;
pub mod stream;

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use draw::{Draw, Phase};
pub use readout::{Pool, Readout};
pub use replacer::{Bernoulli, Initializer, Replacer, UniformInit};
pub use sampler::{
    CausalSampler, ContextSampler, MlmPick, MlmSampler, PosSampler, Sampler, UniformSampler,
};
pub use stopping::{StoppingRule, TopK};
pub use stream::RecordedStream;

use super::{
    score_rows_for, Attributor, Goal, MethodKind, NextTokenFn, Progress, Requirements,
    TargetScores, Units,
};
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
    /// A draw from the attributed model's in-context distribution (this library's variant).
    Context,
}

impl SamplerKind {
    /// Every sampler, in the order the documentation lists them.
    pub const ALL: [SamplerKind; 5] = [
        SamplerKind::Pos,
        SamplerKind::Uniform,
        SamplerKind::Mlm,
        SamplerKind::Causal,
        SamplerKind::Context,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            SamplerKind::Pos => "pos",
            SamplerKind::Uniform => "uniform",
            SamplerKind::Mlm => "mlm",
            SamplerKind::Causal => "causal",
            SamplerKind::Context => "context",
        }
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SamplerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.name()).collect();
                Error::input(format!(
                    "sampler must be one of {}; got `{s}`",
                    names.join(", ")
                ))
            })
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
        SamplerKind::Context => {
            Arc::new(ContextSampler::new(model.model.clone(), &model.tokenizer)?)
        }
        SamplerKind::Mlm => {
            let mlm = mlm.ok_or_else(|| {
                Error::input(
                    "the MLM sampler needs a masked LM (mlm: e.g. a distilroberta-base folder)",
                )
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

/// How the converged probes' scores are combined by the reference read-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProbeWeighting {
    /// A plain mean (the reference).
    #[default]
    Mean,
    /// Each converged probe weighted by the number of updates it made, so a probe that stopped
    /// after a step or two (still close to its random initialisation) counts little.
    Steps,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Objective {
    /// How much the prediction moved from the original (`p0`: the goal's value on the original,
    /// `p(y|x)` or `p(y|x) - p(c|x)`; `probs0 = p(.|x)`, needed by the total variation only) to a
    /// perturbed context's log-probabilities `row`.
    pub fn change(self, p0: f32, probs0: &[f32], row: &[f32], target: impl Into<Goal>) -> f32 {
        let goal = target.into();
        match self {
            // A contrastive change of `p_t - p_c` lies in [-2, 2]; halved, it stays in [-1, 1]
            // as the update's `logit((d + 1) / 2)` needs.
            Objective::TargetProb if goal.contrast.is_some() => 0.5 * (p0 - goal.value(row)),
            Objective::TargetProb => p0 - goal.value(row),
            Objective::TotalVariation => {
                0.5 * probs0
                    .iter()
                    .zip(row)
                    .map(|(p, lq)| (p - lq.exp()).abs())
                    .sum::<f32>()
            }
        }
    }
}

/// ReAGent's hyperparameters. Defaults are inseq's.
///
/// The fields after `seed` are this library's variants (none is in the reference); each is off
/// by default, and a configuration that leaves them off is the reference and serializes as the
/// reference's fields only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// How scores are read out of the perturbations (see [`Readout`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub readout: Readout,
    /// A probe may stop only after this many update steps (0: from the first step, the
    /// reference). Stopping tests before then are not run.
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_steps: usize,
    /// How the reference read-out combines converged probes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub probe_weighting: ProbeWeighting,
    /// Any-time stop: a probe also stops when its top-n positions (the stopping test's `n`) have
    /// not changed for this many steps; with a pooled read-out, the whole run stops when the
    /// pooled estimate's top-n has not changed for this many steps. 0: off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub stable_window: usize,
    /// Choose the replacing ratio per target: try `replacing_ratio`, then half of it, and so on
    /// (at most 5 values), on 8 pilot contexts each, and keep the first whose median
    /// `p(y | x~)` is at least half of `p(y | x)`, so that `d` still says which tokens were
    /// replaced.
    #[serde(default, skip_serializing_if = "is_default")]
    pub adaptive_ratio: bool,
    /// With the mask-difference read-out, shrink each effect towards 0 by this many standard
    /// errors before normalizing, so positions whose effect is within noise get no mass. 0: off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub shrink_z: f64,
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
            readout: Readout::Reference,
            min_steps: 0,
            probe_weighting: ProbeWeighting::Mean,
            stable_window: 0,
            adaptive_ratio: false,
            shrink_z: 0.0,
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

    /// This library's pooled setting (`--preset mask-diff`): 16 probes × 8 update steps of
    /// POS replacements at `r = 0.1` (128 perturbed contexts, no stopping test), read out as the
    /// mask difference shrunk by 2 standard errors. Measured against the reference and the
    /// baselines in `docs/results/`.
    pub fn mask_diff() -> Self {
        ReagentConfig {
            probes: 16,
            max_steps: 8,
            min_steps: 8,
            replacing_ratio: 0.1,
            readout: Readout::MaskDiff,
            shrink_z: 2.0,
            ..ReagentConfig::default()
        }
    }

    /// The configuration's field names, as [`ReagentConfig::set`] takes them.
    pub const FIELDS: [&'static str; 14] = [
        "probes",
        "max_steps",
        "keep_top_n",
        "keep_ratio",
        "stop_top_k",
        "replacing_ratio",
        "objective",
        "seed",
        "readout",
        "min_steps",
        "probe_weighting",
        "stable_window",
        "adaptive_ratio",
        "shrink_z",
    ];

    /// The preset names [`ReagentConfig::preset`] knows.
    pub const PRESETS: [&'static str; 3] = ["inseq", "paper_token", "mask_diff"];

    /// A preset by name (`-` and `_` alike): `inseq` (the default), `paper_token` or `mask_diff`.
    pub fn preset(name: &str) -> Result<Self> {
        match name.replace('-', "_").as_str() {
            "inseq" => Ok(ReagentConfig::default()),
            "paper_token" => Ok(ReagentConfig::paper_token()),
            "mask_diff" => Ok(ReagentConfig::mask_diff()),
            _ => Err(Error::input(format!(
                "preset must be one of {}; got `{name}`",
                Self::PRESETS.join(", ")
            ))),
        }
    }

    /// Change one field by its name (`replacing_ratio`, `readout`, ...) to a JSON value; a
    /// string value may spell a name with `-` for `_` (`mask-diff`). The whole configuration is
    /// not validated here (see [`ReagentConfig::validate`]).
    pub fn set(&mut self, key: &str, value: serde_json::Value) -> Result<()> {
        let key = key.replace('-', "_");
        let mut v = serde_json::to_value(&*self).map_err(|e| Error::input(e.to_string()))?;
        let obj = v.as_object_mut().expect("a struct serializes to an object");
        let value = match value {
            serde_json::Value::String(s) if key != "seed" => {
                serde_json::Value::String(s.replace('-', "_"))
            }
            other => other,
        };
        obj.insert(key.clone(), value);
        *self = serde_json::from_value(v).map_err(|e| {
            let msg = e.to_string();
            if msg.starts_with("unknown field") {
                Error::input(format!("unknown ReAGent setting `{key}`"))
            } else {
                Error::input(format!("{key}: {msg}"))
            }
        })?;
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.probes == 0 {
            return Err(Error::input("probes must be at least 1"));
        }
        if self.max_steps == 0 {
            return Err(Error::input("max_steps must be at least 1"));
        }
        if self.stop_top_k == 0 {
            return Err(Error::input("stop_top_k must be at least 1"));
        }
        if !(self.replacing_ratio > 0.0 && self.replacing_ratio <= 1.0) {
            return Err(Error::input(format!(
                "replacing_ratio must be in (0, 1], got {}",
                self.replacing_ratio
            )));
        }
        if self.keep_top_n == 0 {
            match self.keep_ratio {
                Some(r) if r > 0.0 && r <= 1.0 => {}
                Some(r) => {
                    return Err(Error::input(format!(
                        "keep_ratio must be in (0, 1], got {r}"
                    )))
                }
                None => return Err(Error::input("keep_top_n is 0, so keep_ratio is needed")),
            }
        } else if self.keep_ratio.is_some() {
            return Err(Error::input(
                "keep_ratio is used only when keep_top_n is 0; set one of them",
            ));
        }
        if self.min_steps > self.max_steps {
            return Err(Error::input(format!(
                "min_steps ({}) must not exceed max_steps ({})",
                self.min_steps, self.max_steps
            )));
        }
        if !(self.shrink_z >= 0.0 && self.shrink_z.is_finite()) {
            return Err(Error::input(format!(
                "shrink_z must be a finite number of at least 0, got {}",
                self.shrink_z
            )));
        }
        if self.shrink_z > 0.0 && self.readout != Readout::MaskDiff {
            return Err(Error::input(
                "shrink_z applies to the mask_diff read-out only",
            ));
        }
        if self.probe_weighting != ProbeWeighting::Mean && self.readout.is_pooled() {
            return Err(Error::input(
                "probe_weighting applies to the reference read-out only",
            ));
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
    /// The result: the read-out (for the reference, the mean over converged probes, or all
    /// probes when none converged).
    pub mean: Vec<f32>,
    /// How much each score varies (see [`TargetScores::spread`]).
    pub spread: Option<Vec<f32>>,
    /// Contexts scored by the model (the original, pilots, updates and stopping tests).
    pub forward_rows: usize,
    /// The replacing ratio the adaptive pilots chose.
    pub replacing_ratio: Option<f64>,
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

    /// Swap the replacer (which positions an update replaces), the initial scores or the
    /// stopping rule, e.g. for experiments beyond the configuration's fields.
    pub fn with_parts(
        mut self,
        replacer: Option<Arc<dyn Replacer>>,
        init: Option<Arc<dyn Initializer>>,
        stopping: Option<Arc<dyn StoppingRule>>,
    ) -> Self {
        if let Some(r) = replacer {
            self.replacer = r;
        }
        if let Some(i) = init {
            self.init = i;
        }
        if let Some(st) = stopping {
            self.stopping = st;
        }
        self
    }

    /// Deterministic mode: initial scores, masks and tokens come from a recorded stream.
    ///
    /// A recording ends where the reference stopped, so `max_steps` is capped at its length:
    /// the last step's stopping test then comes without a speculative next update.
    pub fn with_stream(mut cfg: ReagentConfig, stream: Arc<RecordedStream>) -> Result<Self> {
        cfg.max_steps = cfg.max_steps.min(stream.steps());
        let r = Reagent::new(cfg, stream.clone())?;
        Ok(r.with_parts(Some(stream.clone()), Some(stream), None))
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
        replacer: &dyn Replacer,
        context: &[u32],
        units: Option<&Units>,
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
            masks.push(replacer.choose(features(context, units), &mut d));
        }
        let xs = self.sample(context, units, &masks, active, step, Phase::Update, rngs)?;
        Ok(masks.into_iter().zip(xs).collect())
    }

    /// The perturbed contexts of `masks` (over units, when there are units: each unit's
    /// positions are replaced together).
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        context: &[u32],
        units: Option<&Units>,
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
        match units {
            None => self.sampler.sample(context, masks, &mut draws),
            Some(u) => {
                let expanded: Vec<Vec<bool>> = masks.iter().map(|m| u.expand(m)).collect();
                self.sampler.sample(context, &expanded, &mut draws)
            }
        }
    }

    /// The change in prediction of one perturbed context.
    fn delta(&self, p0: f32, probs0: &[f32], row: &[f32], goal: Goal) -> f32 {
        self.cfg.objective.change(p0, probs0, row, goal)
    }

    /// The adaptive replacing ratio: the first of `r, r/2, ...` (at most 5) whose 8 pilot
    /// contexts keep a median `p(y | x~)` of at least `p0 / 2`; the last one tried otherwise.
    /// Returns the ratio and the rows the pilots cost.
    fn pilot_ratio(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        units: Option<&Units>,
        goal: Goal,
        p0: f32,
        index: usize,
    ) -> Result<(f64, usize)> {
        const PILOTS: usize = 8;
        const TRIES: usize = 5;
        let mut rows_used = 0;
        let mut r = self.cfg.replacing_ratio;
        for t in 0..TRIES {
            let replacer = Bernoulli { ratio: r };
            let base = self.cfg.probes + t * PILOTS;
            let ids: Vec<usize> = (base..base + PILOTS).collect();
            let mut rngs: Vec<ChaCha8Rng> =
                (0..base + PILOTS).map(|p| self.rng(index, p)).collect();
            let masks: Vec<Vec<bool>> = ids
                .iter()
                .map(|&p| {
                    replacer.choose(
                        features(context, units),
                        &mut Draw {
                            probe: p,
                            step: 0,
                            phase: Phase::Pilot,
                            rng: &mut rngs[p],
                        },
                    )
                })
                .collect();
            let xs = self.sample(context, units, &masks, &ids, 0, Phase::Pilot, &mut rngs)?;
            let mut ps = score_rows_for(f, &xs, &goal.ids(), |_, row| goal.value(row))?;
            rows_used += ps.len();
            ps.sort_by(f32::total_cmp);
            let median = 0.5 * (ps[PILOTS / 2 - 1] + ps[PILOTS / 2]);
            if median >= 0.5 * p0 || t + 1 == TRIES {
                return Ok((r, rows_used));
            }
            r *= 0.5;
        }
        Ok((r, rows_used))
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
        self.trace_goal(f, context, target.into(), index, progress)
    }

    /// [`Reagent::trace`] for a goal: with a contrast token, each perturbation's change is that
    /// of `p(target) - p(contrast)` (the stopping test still asks for the target in the top k).
    pub fn trace_goal(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        goal: Goal,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<Trace> {
        self.trace_units(f, context, goal, None, index, progress)
    }

    /// [`Reagent::trace_goal`] over units: each unit of `units` is one feature, replaced as a
    /// whole; positions in no unit are never replaced. The trace's scores are per unit. With
    /// `None` (or every position its own unit) this is the token-level run, draw for draw.
    pub fn trace_units(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        goal: Goal,
        units: Option<&Units>,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<Trace> {
        let target = goal.target;
        if let Some(u) = units {
            if u.context_len() != context.len() {
                return Err(Error::input(format!(
                    "units cover {} positions, the context has {}",
                    u.context_len(),
                    context.len()
                )));
            }
        }
        if goal.contrast.is_some() && self.cfg.objective == Objective::TotalVariation {
            return Err(Error::input(
                "the total-variation objective has no contrastive form; use target_prob",
            ));
        }
        if self.cfg.objective == Objective::TotalVariation && !f.whole_distribution() {
            return Err(Error::Unsupported(
                "the total-variation objective needs the whole next-token distribution, and a served model returns only its top K; use target_prob".into(),
            ));
        }
        if let Some(c) = goal.contrast {
            if c as usize >= f.vocab_size() {
                return Err(Error::input(format!(
                    "contrast id {c} is outside the vocabulary of {} ids",
                    f.vocab_size()
                )));
            }
        }
        if context.is_empty() {
            return Err(Error::input("ReAGent needs at least one context token"));
        }
        // The features: tokens, or units.
        let (l, n_probes) = (features(context, units), self.cfg.probes);
        if target as usize >= f.vocab_size() {
            return Err(Error::input(format!(
                "target id {target} is outside the vocabulary of {} ids",
                f.vocab_size()
            )));
        }
        let cfg = &self.cfg;
        let row0 = f.log_probs_for(&[context.to_vec()], &goal.ids())?.remove(0);
        let mut rows_used = 1;
        let p0 = goal.value(&row0);
        let probs0: Vec<f32> = match cfg.objective {
            Objective::TotalVariation => row0.iter().map(|x| x.exp()).collect(),
            Objective::TargetProb => Vec::new(),
        };
        let adaptive;
        let replacer: &dyn Replacer = if cfg.adaptive_ratio {
            let (r, used) = self.pilot_ratio(f, context, units, goal, p0, index)?;
            rows_used += used;
            adaptive = Bernoulli { ratio: r };
            &adaptive
        } else {
            self.replacer.as_ref()
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
        let pooled = cfg.readout.is_pooled();
        let mut pool = Pool::new(l);
        let keep = self.stopping.keep(l);
        // Any-time stop: the last top-n set and for how many steps it has held.
        let mut stable: Vec<(Vec<usize>, usize)> = vec![(Vec::new(), 0); n_probes];
        let mut pool_stable: (Vec<usize>, usize) = (Vec::new(), 0);

        // Step 1's update on its own; afterwards each forward pairs step t's stopping test with
        // step t+1's update.
        let updates = self.draw_updates(replacer, context, units, &active, 1, &mut rngs)?;
        let xs: Vec<Vec<u32>> = updates.iter().map(|(_, x)| x.clone()).collect();
        let ds = score_rows_for(f, &xs, &goal.ids(), |_, row| {
            self.delta(p0, &probs0, row, goal)
        })?;
        rows_used += ds.len();
        for (k, &p) in active.iter().enumerate() {
            let d = ds[k];
            apply_update(&mut scores[p], &updates[k].0, d);
            if pooled {
                pool.push(&updates[k].0, d);
            }
        }
        let mut step = 1;
        loop {
            let more = step < cfg.max_steps;
            // Stopping tests run only once a probe may stop, and a pooled read-out skips the
            // last one: it does not use convergence, and no update follows it.
            let testing = step >= cfg.min_steps && (more || !pooled);
            let mut batch = if testing {
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
                self.sample(
                    context,
                    units,
                    &masks,
                    &active,
                    step,
                    Phase::StopTest,
                    &mut rngs,
                )?
            } else {
                Vec::new()
            };
            let n_tests = batch.len();
            let next = if more {
                self.draw_updates(replacer, context, units, &active, step + 1, &mut rngs)?
            } else {
                Vec::new()
            };
            batch.extend(next.iter().map(|(_, x)| x.clone()));
            // Each row reduced as its batch returns: a stopping test to whether it holds, an
            // update to its change d.
            let rows = score_rows_for(f, &batch, &goal.ids(), |i, row| {
                if i < n_tests {
                    (self.stopping.holds(row, target), 0.0)
                } else {
                    (false, self.delta(p0, &probs0, row, goal))
                }
            })?;
            rows_used += rows.len();
            let (stop_rows, update_rows) = rows.split_at(n_tests);
            let mut still = Vec::with_capacity(active.len());
            for (k, &p) in active.iter().enumerate() {
                let mut stops = testing && stop_rows[k].0;
                if cfg.stable_window > 0 && !pooled && testing {
                    let top = sorted_top(&softmax(&scores[p]), keep);
                    let s = &mut stable[p];
                    if s.0 == top {
                        s.1 += 1;
                    } else {
                        *s = (top, 1);
                    }
                    stops |= s.1 >= cfg.stable_window;
                }
                if stops {
                    converged_step[p] = Some(step);
                } else {
                    still.push((k, p));
                }
            }
            // The precomputed updates of probes that just stopped are still measurements: a
            // pooled read-out keeps them.
            if pooled {
                for (k, (mask, _)) in next.iter().enumerate() {
                    pool.push(mask, update_rows[k].1);
                }
            }
            let mut pool_done = false;
            if pooled && cfg.stable_window > 0 && step >= cfg.min_steps {
                let top = sorted_top(&readout::positive_unit(&pool.mask_diff()), keep);
                if pool_stable.0 == top {
                    pool_stable.1 += 1;
                } else {
                    pool_stable = (top, 1);
                }
                pool_done = pool_stable.1 >= cfg.stable_window;
            }
            let done = n_probes - still.len();
            progress.step(step, cfg.max_steps, done, n_probes);
            if progress.cancelled() {
                return Err(crate::Error::Cancelled);
            }
            if still.is_empty() || !more || pool_done {
                break;
            }
            for &(k, p) in &still {
                apply_update(&mut scores[p], &next[k].0, update_rows[k].1);
            }
            active = still.into_iter().map(|(_, p)| p).collect();
            step += 1;
        }

        let final_scores: Vec<Vec<f32>> = scores.iter().map(|s| softmax(s)).collect();
        let (mean, spread) = match cfg.readout {
            Readout::Reference => {
                let mean = reference_mean(&final_scores, &converged_step, cfg.probe_weighting, l);
                let spread = probe_spread(&final_scores, &converged_step, &mean);
                (mean, Some(spread))
            }
            Readout::MaskDiff => {
                let effects = pool.mask_diff_shrunk(cfg.shrink_z);
                // The standard errors on the scores' scale (divided by the same total).
                let total: f64 = effects.iter().filter(|e| **e > 0.0).sum();
                let spread = (total > 0.0).then(|| {
                    pool.standard_errors()
                        .iter()
                        .map(|se| (se / total) as f32)
                        .collect()
                });
                (readout::positive_unit(&effects), spread)
            }
            Readout::Regression => (
                readout::positive_unit(&pool.regression(REGRESSION_LAMBDA)),
                None,
            ),
        };
        Ok(Trace {
            p0,
            steps: step,
            converged_step,
            final_scores,
            mean,
            spread,
            forward_rows: rows_used,
            replacing_ratio: cfg.adaptive_ratio.then_some(replacer_ratio(replacer)),
        })
    }
}

/// How many features a run perturbs: the context's tokens, or its units.
fn features(context: &[u32], units: Option<&Units>) -> usize {
    units.map_or(context.len(), Units::len)
}

/// The ridge penalty of the regression read-out, per row (small: it only keeps the system
/// well-posed when a position was never, or always, replaced).
const REGRESSION_LAMBDA: f64 = 1e-3;

fn replacer_ratio(r: &dyn Replacer) -> f64 {
    r.ratio().unwrap_or(f64::NAN)
}

/// The `n` largest positions as a sorted set.
fn sorted_top(values: &[f32], n: usize) -> Vec<usize> {
    let mut t = stopping::top_n(values, n);
    t.sort_unstable();
    t
}

/// The standard deviation, per position, of the probes the reference read-out averages.
fn probe_spread(
    final_scores: &[Vec<f32>],
    converged_step: &[Option<usize>],
    mean: &[f32],
) -> Vec<f32> {
    let any = converged_step.iter().any(Option::is_some);
    let used: Vec<&Vec<f32>> = final_scores
        .iter()
        .zip(converged_step)
        .filter(|(_, c)| !any || c.is_some())
        .map(|(s, _)| s)
        .collect();
    let n = used.len() as f32;
    (0..mean.len())
        .map(|i| {
            let v: f32 = used.iter().map(|s| (s[i] - mean[i]).powi(2)).sum::<f32>() / n;
            v.sqrt()
        })
        .collect()
}

/// The reference read-out: the (weighted) mean of the converged probes' scores, or of all
/// probes when none converged.
fn reference_mean(
    final_scores: &[Vec<f32>],
    converged_step: &[Option<usize>],
    weighting: ProbeWeighting,
    l: usize,
) -> Vec<f32> {
    let any = converged_step.iter().any(Option::is_some);
    let picked: Vec<(&Vec<f32>, f32)> = final_scores
        .iter()
        .zip(converged_step)
        .filter(|(_, c)| !any || c.is_some())
        .map(|(s, c)| {
            let w = match weighting {
                ProbeWeighting::Mean => 1.0,
                ProbeWeighting::Steps => c.unwrap_or(1) as f32,
            };
            (s, w)
        })
        .collect();
    let mut mean = vec![0f32; l];
    if weighting == ProbeWeighting::Mean {
        // The reference's arithmetic: sum, then divide by the count.
        for (s, _) in &picked {
            for (m, v) in mean.iter_mut().zip(s.iter()) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= picked.len() as f32;
        }
    } else {
        let total: f32 = picked.iter().map(|(_, w)| w).sum();
        for (s, w) in &picked {
            for (m, v) in mean.iter_mut().zip(s.iter()) {
                *m += v * w / total;
            }
        }
    }
    mean
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

pub use crate::util::softmax;

impl Attributor for Reagent {
    fn kind(&self) -> MethodKind {
        MethodKind::Reagent
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            whole_distribution: self.cfg.objective == Objective::TotalVariation,
            ..Requirements::default()
        }
    }

    fn config(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.cfg).unwrap_or_default();
        v["sampler"] = self.sampler.describe();
        v
    }

    fn attribute_black_box(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        target: u32,
        index: usize,
        progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        Some(self.scores(f, context, target.into(), index, progress))
    }

    fn attribute_contrastive(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: Goal,
        index: usize,
        progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        Some(self.scores(&super::LmTarget(model), context, goal, index, progress))
    }

    fn attribute_units(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: Goal,
        units: &Units,
        index: usize,
        progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        Some(self.unit_scores(
            &super::LmTarget(model),
            context,
            goal,
            Some(units),
            index,
            progress,
        ))
    }

    fn attribute(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: u32,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<TargetScores> {
        self.scores(
            &super::LmTarget(model),
            context,
            target.into(),
            index,
            progress,
        )
    }
}

impl Reagent {
    /// The result of [`Reagent::trace`] as target scores.
    fn scores(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        goal: Goal,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<TargetScores> {
        self.unit_scores(f, context, goal, None, index, progress)
    }

    fn unit_scores(
        &self,
        f: &dyn NextTokenFn,
        context: &[u32],
        goal: Goal,
        units: Option<&Units>,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<TargetScores> {
        let t = self.trace_units(f, context, goal, units, index, progress)?;
        Ok(TargetScores {
            steps: Some(t.steps),
            converged_probes: Some(t.converged_probes()),
            probes: Some(self.cfg.probes),
            forward_rows: Some(t.forward_rows),
            replacing_ratio: t.replacing_ratio,
            spread: t.spread,
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
    fn sampler_names_round_trip() {
        for k in SamplerKind::ALL {
            assert_eq!(k.name().parse::<SamplerKind>().unwrap(), k);
            // The serde name is the same.
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        assert!("nope".parse::<SamplerKind>().is_err());
        for m in crate::MethodKind::ALL {
            assert_eq!(m.to_string().parse::<crate::MethodKind>().unwrap(), m);
        }
    }

    #[test]
    fn config_validation() {
        assert!(ReagentConfig::default().validate().is_ok());
        assert!(ReagentConfig::paper_token().validate().is_ok());
        assert!(ReagentConfig::mask_diff().validate().is_ok());
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
