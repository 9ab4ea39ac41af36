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

use std::sync::atomic::{AtomicUsize, Ordering};

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

/// What a method needs from the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requirements {
    pub gradients: bool,
    pub attentions: bool,
}

/// Fail with one line when the model cannot serve the method.
pub fn check_requirements(kind: MethodKind, req: Requirements, model: &dyn CausalLm) -> Result<()> {
    let caps = model.capabilities();
    if req.gradients && !caps.gradients {
        return Err(Error::Unsupported(format!(
            "{} needs gradients, but this model runs quantized weights, which have no backward pass; \
             load it dequantized (quantized: false)",
            kind.name()
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
            forward_rows: None,
            replacing_ratio: None,
            convergence_delta: None,
        }
    }
}

/// Where long-running methods report progress. The CLI draws a progress bar; the library
/// draws nothing.
pub trait Progress: Sync {
    /// ReAGent finished `step` of at most `max_steps`; `converged` of `probes` have stopped.
    fn step(&self, _step: usize, _max_steps: usize, _converged: usize, _probes: usize) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a perturbation method sees of the model: next-token log-probabilities for a batch of
/// contexts (Captum's `forward_func`). A model served elsewhere can implement this.
pub trait NextTokenFn: Sync {
    fn vocab_size(&self) -> usize;
    /// `[batch][vocab]` log-probabilities of the token after each context. Callers keep a batch
    /// within [`NextTokenFn::max_rows`] (see [`score_rows`]).
    fn log_probs(&self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
    /// How many contexts of `len` tokens one call should carry at most.
    fn max_rows(&self, len: usize) -> usize {
        rows_for(len)
    }
}

/// The token budget of one batch of contexts (see [`set_batch_tokens`]).
static BATCH_TOKENS: AtomicUsize = AtomicUsize::new(DEFAULT_BATCH_TOKENS);

/// The default token budget per forward batch: 64 rows of up to 128 tokens.
pub const DEFAULT_BATCH_TOKENS: usize = 8192;

/// Rows per forward batch, whatever the token budget.
pub const MAX_BATCH_ROWS: usize = 64;

/// Set the token budget of the perturbation methods' forward batches for this process (rows ×
/// context length; at least one row always runs). Results do not depend on it; memory does.
pub fn set_batch_tokens(tokens: usize) {
    BATCH_TOKENS.store(tokens.max(1), Ordering::Relaxed);
}

/// The current token budget per forward batch.
pub fn batch_tokens() -> usize {
    BATCH_TOKENS.load(Ordering::Relaxed)
}

/// Rows of `len` tokens that fit the budget (1 to [`MAX_BATCH_ROWS`]).
pub fn rows_for(len: usize) -> usize {
    (batch_tokens() / len.max(1)).clamp(1, MAX_BATCH_ROWS)
}

/// Score `contexts` in batches that fit the budget and reduce each row to what the caller keeps
/// (`reduce(index, log_probs)`), so memory holds one batch of distributions at a time, however
/// many contexts there are.
pub fn score_rows<T>(
    f: &dyn NextTokenFn,
    contexts: &[Vec<u32>],
    mut reduce: impl FnMut(usize, &[f32]) -> T,
) -> Result<Vec<T>> {
    let len = contexts.iter().map(Vec::len).max().unwrap_or(1);
    let rows = f.max_rows(len).max(1);
    let mut out = Vec::with_capacity(contexts.len());
    for (c, chunk) in contexts.chunks(rows).enumerate() {
        let lps = f.log_probs(chunk)?;
        if lps.len() != chunk.len() {
            return Err(Error::input(format!(
                "the model scored {} of {} contexts",
                lps.len(),
                chunk.len()
            )));
        }
        for (k, row) in lps.iter().enumerate() {
            out.push(reduce(c * rows + k, row));
        }
    }
    Ok(out)
}

/// A causal LM as a [`NextTokenFn`].
pub struct LmTarget<'a>(pub &'a dyn CausalLm);

impl NextTokenFn for LmTarget<'_> {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn log_probs(&self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let len = contexts.iter().map(Vec::len).max().unwrap_or(1);
        let mut out = Vec::with_capacity(contexts.len());
        for chunk in contexts.chunks(rows_for(len)) {
            out.extend(self.0.next_token_log_probs(chunk)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

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
