//! Which positions a ReAGent update replaces, and where the initial scores come from.
//!
//! Reference: `token_replacer.py` (`UniformTokenReplacer`) of the original code and of inseq:
//! every position is replaced independently with probability `r` (`rand < r`), so an update may
//! replace nothing or everything.

use rand::Rng;

use super::draw::Draw;

/// Chooses the positions an update replaces.
pub trait Replacer: Send + Sync {
    /// `true` where position `i` of a context of length `len` is replaced.
    fn choose(&self, len: usize, draw: &mut Draw<'_>) -> Vec<bool>;
    /// The replacing probability, where there is one.
    fn ratio(&self) -> Option<f64> {
        None
    }
}

/// Each position independently with probability `ratio`.
#[derive(Debug, Clone, Copy)]
pub struct Bernoulli {
    pub ratio: f64,
}

impl Replacer for Bernoulli {
    fn choose(&self, len: usize, draw: &mut Draw<'_>) -> Vec<bool> {
        let r = self.ratio as f32;
        (0..len).map(|_| draw.rng.random::<f32>() < r).collect()
    }
    fn ratio(&self) -> Option<f64> {
        Some(self.ratio)
    }
}

/// The probes' initial logit scores.
pub trait Initializer: Send + Sync {
    fn initial_scores(&self, len: usize, draw: &mut Draw<'_>) -> Vec<f32>;
}

/// `U[0, 1)` per position, as `torch.rand` in the reference.
#[derive(Debug, Clone, Copy, Default)]
pub struct UniformInit;

impl Initializer for UniformInit {
    fn initial_scores(&self, len: usize, draw: &mut Draw<'_>) -> Vec<f32> {
        (0..len).map(|_| draw.rng.random::<f32>()).collect()
    }
}
