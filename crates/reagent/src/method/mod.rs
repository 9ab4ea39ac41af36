//! Attribution methods behind one trait.
//!
//! A method scores every context token for one target token ([`Attributor::attribute`]). It
//! declares what it needs from the model ([`Requirements`], as inseq's `use_*` flags and
//! Captum's `SUPPORTED_METHODS`); [`check_requirements`] compares that with the model's
//! [`Capabilities`](crate::Capabilities) before any forward pass, so a mismatch fails in one
//! clear line.

pub mod attention;
pub mod gradient;
pub mod occlusion;
pub mod reagent;
pub mod registry;

use serde::{Deserialize, Serialize};

use crate::model::CausalLm;
use crate::{Error, Result};

/// The attribution methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// ReAGent (Zhao & Shan 2024): recursive perturbation, no gradients.
    Reagent,
    /// L2 norm of the gradient of log p(target) per token.
    GradientNorm,
    /// Input embedding times the gradient of p(target).
    InputXGradient,
    /// Integrated gradients (Sundararajan et al. 2017).
    IntegratedGradients,
    /// Gradient SHAP (Lundberg & Lee 2017, as Captum).
    GradientShap,
    /// Attention of the last position, averaged over layers and heads.
    Attention,
    /// Attention of the last position in the last layer, averaged over heads.
    LastLayerAttention,
    /// Attention rollout (Abnar & Zuidema 2020).
    AttentionRollout,
    /// One token at a time replaced by a baseline.
    Occlusion,
    /// softmax(U[0,1)): the evaluation's random baseline.
    Random,
}

impl MethodKind {
    /// Whether the method reads next-token probabilities only (no gradients, no attentions, no
    /// embeddings): what a served model can run, and what `Precision::auto` may speed up.
    pub fn probability_only(self) -> bool {
        matches!(
            self,
            MethodKind::Reagent | MethodKind::Occlusion | MethodKind::Random
        )
    }

    /// Every method, in the order reports list them.
    pub const ALL: [MethodKind; 10] = [
        MethodKind::Reagent,
        MethodKind::GradientNorm,
        MethodKind::InputXGradient,
        MethodKind::IntegratedGradients,
        MethodKind::GradientShap,
        MethodKind::Attention,
        MethodKind::LastLayerAttention,
        MethodKind::AttentionRollout,
        MethodKind::Occlusion,
        MethodKind::Random,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            MethodKind::Reagent => "reagent",
            MethodKind::GradientNorm => "gradient_norm",
            MethodKind::InputXGradient => "input_x_gradient",
            MethodKind::IntegratedGradients => "integrated_gradients",
            MethodKind::GradientShap => "gradient_shap",
            MethodKind::Attention => "attention",
            MethodKind::LastLayerAttention => "last_layer_attention",
            MethodKind::AttentionRollout => "attention_rollout",
            MethodKind::Occlusion => "occlusion",
            MethodKind::Random => "random",
        }
    }

    /// Parse a method name (as [`MethodKind::name`] gives it).
    pub fn from_name(s: &str) -> Result<Self> {
        MethodKind::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = MethodKind::ALL.iter().map(|m| m.name()).collect();
                Error::input(format!(
                    "unknown method `{s}` (methods: {})",
                    names.join(", ")
                ))
            })
    }

    /// The methods an evaluation runs: `spec` is comma-separated names or `all`; the random
    /// baseline is always added, and the list comes in [`MethodKind::ALL`]'s order. With `all`
    /// and a model `served` elsewhere, the methods that need the weights are left out and
    /// returned second.
    pub fn evaluation_list(spec: &str, served: bool) -> Result<(Vec<Self>, Vec<Self>)> {
        let all = spec.trim() == "all";
        let mut kinds: Vec<MethodKind> = if all {
            MethodKind::ALL.to_vec()
        } else {
            spec.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(MethodKind::from_name)
                .collect::<Result<_>>()?
        };
        if kinds.is_empty() {
            return Err(Error::input("methods is empty"));
        }
        kinds.push(MethodKind::Random);
        kinds.sort_by_key(|k| MethodKind::ALL.iter().position(|x| x == k));
        kinds.dedup();
        let mut left_out = Vec::new();
        if all && served {
            left_out = kinds
                .iter()
                .copied()
                .filter(|k| !k.probability_only())
                .collect();
            kinds.retain(|k| k.probability_only());
        }
        Ok((kinds, left_out))
    }
}

impl std::str::FromStr for MethodKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MethodKind::from_name(s)
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an attribution explains: the target token's probability, or (contrastive) how much more
/// likely the target is than a contrast token, `p(target) - p(contrast)` (inseq's
/// `contrast_prob_diff`: "why this rather than that").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goal {
    pub target: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrast: Option<u32>,
}

impl From<u32> for Goal {
    fn from(target: u32) -> Self {
        Goal {
            target,
            contrast: None,
        }
    }
}

impl Goal {
    /// The explained quantity from next-token log-probabilities: `p_t`, or `p_t - p_c`.
    pub fn value(&self, log_probs: &[f32]) -> f32 {
        let p = log_probs[self.target as usize].exp();
        match self.contrast {
            Some(c) => p - log_probs[c as usize].exp(),
            None => p,
        }
    }
}

impl Goal {
    /// The ids a caller reads from each row: the target, and the contrast token if any.
    pub fn ids(&self) -> Vec<u32> {
        std::iter::once(self.target).chain(self.contrast).collect()
    }

    /// The largest error of [`Goal::value`] on a row from `f` (0 for a local model).
    pub fn error(&self, f: &dyn NextTokenFn, log_probs: &[f32]) -> f32 {
        f.prob_error(log_probs, self.target)
            + self.contrast.map_or(0.0, |c| f.prob_error(log_probs, c))
    }
}

/// What a method needs from the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requirements {
    pub gradients: bool,
    pub attentions: bool,
    /// Every id's next-token probability (ReAGent's total-variation objective), which a
    /// served model does not return.
    pub whole_distribution: bool,
}

/// Fail with one line when the model cannot serve the method.
pub fn check_requirements(kind: MethodKind, req: Requirements, model: &dyn CausalLm) -> Result<()> {
    let caps = model.capabilities();
    if (req.gradients || req.attentions) && !caps.weights {
        return Err(Error::Unsupported(format!(
            "{} needs the model's {}, but a served model gives only next-token probabilities; \
             use reagent, occlusion or random, or load the model's weights locally",
            kind.name(),
            if req.gradients {
                "gradients"
            } else {
                "attention probabilities"
            }
        )));
    }
    if req.whole_distribution && !caps.weights {
        return Err(Error::Unsupported(format!(
            "{} with the total-variation objective needs the whole next-token distribution, and a served model returns only its top K; use target_prob",
            kind.name()
        )));
    }
    if req.gradients && !caps.gradients {
        return Err(Error::Unsupported(format!(
            "{} needs gradients, but this model's weights ({}) have no backward pass; \
             load it in f32 (quantized: false, precision: f32)",
            kind.name(),
            model.info().weights
        )));
    }
    if req.attentions && !caps.attentions {
        return Err(Error::Unsupported(format!(
            "{} needs attention probabilities, which this model does not expose",
            kind.name()
        )));
    }
    Ok(())
}

/// The scores of one target token over its context, with method-specific diagnostics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetScores {
    /// One score per context token.
    pub scores: Vec<f32>,
    /// ReAGent: steps taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// ReAGent: probes whose stopping test held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged_probes: Option<usize>,
    /// ReAGent: probes run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<usize>,
    /// ReAGent: how much each score varies, on the scores' scale: the standard deviation across
    /// the probes averaged (reference read-out), or the standard error of each effect (mask
    /// difference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Vec<f32>>,
    /// The largest error of each score when the model is served in top-K mode and some
    /// target probabilities entered as bounds (occlusion); absent when every score is exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_bound: Option<Vec<f32>>,
    /// Contexts the model scored for this target (forward rows; gradient methods count one
    /// forward and backward per row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_rows: Option<usize>,
    /// ReAGent with the adaptive ratio: the replacing ratio the pilots chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing_ratio: Option<f64>,
    /// Integrated gradients: completeness error `|sum(attr) - (f(x) - f(baseline))|`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence_delta: Option<f32>,
}

impl TargetScores {
    /// The same scores, recording how many contexts the model scored for them.
    pub fn with_rows(mut self, rows: usize) -> Self {
        self.forward_rows = Some(rows);
        self
    }

    pub fn plain(scores: Vec<f32>) -> Self {
        TargetScores {
            scores,
            steps: None,
            converged_probes: None,
            probes: None,
            spread: None,
            error_bound: None,
            forward_rows: None,
            replacing_ratio: None,
            convergence_delta: None,
        }
    }
}

/// Features larger than a token: each unit is a set of context positions that perturbation
/// methods replace together (a word, a sentence, a document of a RAG prompt). Positions in no
/// unit (a chat template, special tokens) are never replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct Units {
    groups: Vec<Vec<usize>>,
    context_len: usize,
}

impl Units {
    /// Units over a context of `context_len` positions: each group non-empty, within the
    /// context, and no position in two groups.
    pub fn new(groups: Vec<Vec<usize>>, context_len: usize) -> crate::Result<Self> {
        if groups.is_empty() {
            return Err(crate::Error::input(
                "units: the context has no unit to attribute",
            ));
        }
        let mut seen = vec![false; context_len];
        for (u, g) in groups.iter().enumerate() {
            if g.is_empty() {
                return Err(crate::Error::input(format!("units: unit {u} is empty")));
            }
            for &i in g {
                if i >= context_len {
                    return Err(crate::Error::input(format!(
                        "units: unit {u} names position {i}, outside the context of {context_len}"
                    )));
                }
                if std::mem::replace(&mut seen[i], true) {
                    return Err(crate::Error::input(format!(
                        "units: position {i} is in two units"
                    )));
                }
            }
        }
        Ok(Units {
            groups,
            context_len,
        })
    }

    /// Every position its own unit: token level.
    pub fn tokens(context_len: usize) -> Self {
        Units {
            groups: (0..context_len).map(|i| vec![i]).collect(),
            context_len,
        }
    }

    /// How many units.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn groups(&self) -> &[Vec<usize>] {
        &self.groups
    }

    pub fn context_len(&self) -> usize {
        self.context_len
    }

    /// A mask over units as a mask over positions (positions in no unit stay unreplaced).
    pub fn expand(&self, unit_mask: &[bool]) -> Vec<bool> {
        let mut m = vec![false; self.context_len];
        for (g, &on) in self.groups.iter().zip(unit_mask) {
            if on {
                for &i in g {
                    m[i] = true;
                }
            }
        }
        m
    }

    /// Token scores summed over each unit.
    pub fn sum(&self, token_scores: &[f32]) -> Vec<f32> {
        self.groups
            .iter()
            .map(|g| g.iter().map(|&i| token_scores[i]).sum())
            .collect()
    }
}

/// Where long-running methods report progress. The CLI draws a progress bar; the library
/// draws nothing.
pub trait Progress: Sync {
    /// ReAGent finished `step` of at most `max_steps`; `converged` of `probes` have stopped.
    fn step(&self, _step: usize, _max_steps: usize, _converged: usize, _probes: usize) {}
    /// Whether the caller asked to stop (Ctrl-C in Python, say). Long methods ask after each
    /// step and the pipeline before each target; the answer is [`crate::Error::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

pub use crate::score::{
    batch_tokens, rows_for, score_rows, score_rows_for, set_batch_tokens, LmTarget, NextTokenFn,
    DEFAULT_BATCH_TOKENS, MAX_BATCH_ROWS,
};

/// An attribution method.
pub trait Attributor: Send + Sync {
    fn kind(&self) -> MethodKind;

    fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    /// The full configuration, for provenance.
    fn config(&self) -> serde_json::Value;

    /// The probability-only path: methods that need nothing but next-token probabilities
    /// (ReAGent, occlusion with the UNK baseline, random) score here from any [`NextTokenFn`],
    /// such as a model served elsewhere; the others return `None`.
    fn attribute_black_box(
        &self,
        _f: &dyn NextTokenFn,
        _context: &[u32],
        _target: u32,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        None
    }

    /// Contrastive attribution: score each token for `p(target) - p(contrast)`. Methods that
    /// have no contrastive form (attention) return `None`.
    fn attribute_contrastive(
        &self,
        _model: &dyn CausalLm,
        _context: &[u32],
        _goal: Goal,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        None
    }

    /// Unit-level attribution: one score per unit of `units`, each perturbed as a whole, for
    /// the goal (a target, or a target against a contrast). Methods without a unit form return
    /// `None`; the pipeline then sums their token scores over each unit.
    fn attribute_units(
        &self,
        _model: &dyn CausalLm,
        _context: &[u32],
        _goal: Goal,
        _units: &Units,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        None
    }

    /// Score each token of `context` for the prediction of `target` right after it.
    /// `index` numbers the targets of one job (0, 1, ...), so random streams differ per target.
    fn attribute(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: u32,
        index: usize,
        progress: &dyn Progress,
    ) -> Result<TargetScores>;
}

#[cfg(test)]
mod tests {
    use super::MethodKind as M;

    #[test]
    fn evaluation_lists_add_random_sort_and_filter_for_servers() {
        let (k, out) = M::evaluation_list(" occlusion, reagent,occlusion ", false).unwrap();
        assert_eq!(k, vec![M::Reagent, M::Occlusion, M::Random]);
        assert!(out.is_empty());
        let (k, out) = M::evaluation_list("all", false).unwrap();
        assert_eq!((k, out.len()), (M::ALL.to_vec(), 0));
        let (k, out) = M::evaluation_list("all", true).unwrap();
        assert_eq!(k, vec![M::Reagent, M::Occlusion, M::Random]);
        assert_eq!(out.len(), M::ALL.len() - 3);
        // Named methods are kept as given against a server: the requirement check refuses them.
        let (k, _) = M::evaluation_list("gradient_norm", true).unwrap();
        assert_eq!(k, vec![M::GradientNorm, M::Random]);
        assert!(M::evaluation_list(" , ", false)
            .unwrap_err()
            .to_string()
            .contains("methods is empty"));
        assert!(M::evaluation_list("foo", false)
            .unwrap_err()
            .to_string()
            .contains("unknown method `foo`"));
    }
}
