//! The probability-only seam: what a perturbation method sees of a model is next-token
//! log-probabilities for a batch of token-id contexts (Captum's `forward_func`). A local model
//! implements it through [`LmTarget`]; a model served elsewhere can implement [`NextTokenFn`]
//! too. [`score_rows`] runs any number of contexts in batches that fit a token budget and keeps
//! only what the caller reduces each row to.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::CausalLm;
use crate::{Error, Result};

/// What a perturbation method sees of the model: next-token log-probabilities for a batch of
/// contexts (Captum's `forward_func`). A model served elsewhere can implement this.
pub trait NextTokenFn: Sync {
    fn vocab_size(&self) -> usize;
    /// `[batch][vocab]` log-probabilities of the token after each context. Callers keep a batch
    /// within [`NextTokenFn::max_rows`] (see [`score_rows`]).
    fn log_probs(&self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
    /// [`NextTokenFn::log_probs`] where the caller reads the ids in `focus` (target, contrast):
    /// a served model may return the other ids only as bounds.
    fn log_probs_for(&self, contexts: &[Vec<u32>], focus: &[u32]) -> Result<Vec<Vec<f32>>> {
        let _ = focus;
        self.log_probs(contexts)
    }
    /// The largest error of `exp(row[id])` (0 where every probability is exact).
    fn prob_error(&self, row: &[f32], id: u32) -> f32 {
        let _ = (row, id);
        0.0
    }
    /// How many contexts of `len` tokens one call should carry at most.
    fn max_rows(&self, len: usize) -> usize {
        rows_for(len)
    }
    /// Whether every id's probability is computed (false for a served model, which returns
    /// the top K and the focus ids only).
    fn whole_distribution(&self) -> bool {
        true
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
    reduce: impl FnMut(usize, &[f32]) -> T,
) -> Result<Vec<T>> {
    score_rows_for(f, contexts, &[], reduce)
}

/// [`score_rows`] for a caller that reads the ids in `focus` of each row (see
/// [`NextTokenFn::log_probs_for`]).
pub fn score_rows_for<T>(
    f: &dyn NextTokenFn,
    contexts: &[Vec<u32>],
    focus: &[u32],
    mut reduce: impl FnMut(usize, &[f32]) -> T,
) -> Result<Vec<T>> {
    let len = contexts.iter().map(Vec::len).max().unwrap_or(1);
    let rows = f.max_rows(len).max(1);
    let mut out = Vec::with_capacity(contexts.len());
    for (c, chunk) in contexts.chunks(rows).enumerate() {
        let lps = f.log_probs_for(chunk, focus)?;
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
        self.log_probs_for(contexts, &[])
    }

    fn log_probs_for(&self, contexts: &[Vec<u32>], focus: &[u32]) -> Result<Vec<Vec<f32>>> {
        let len = contexts.iter().map(Vec::len).max().unwrap_or(1);
        let mut out = Vec::with_capacity(contexts.len());
        for chunk in contexts.chunks(rows_for(len)) {
            out.extend(
                self.0
                    .next_token_log_probs_for(chunk, focus)?
                    .to_vec2::<f32>()?,
            );
        }
        Ok(out)
    }

    fn prob_error(&self, row: &[f32], id: u32) -> f32 {
        self.0.prob_error(row, id)
    }

    fn whole_distribution(&self) -> bool {
        // A model whose weights live here computes every id; a served one does not.
        self.0.capabilities().weights
    }
}
