//! When a ReAGent probe stops.
//!
//! Reference: `stopping_condition_evaluator.py` (`TopKStoppingConditionEvaluator`) and
//! `token_replacer.py` (`RankingTokenReplacer`): keep the `n` most important positions, replace
//! all others, and stop when the target is among the model's `k` most likely next tokens.

/// The stopping test of one probe.
pub trait StoppingRule: Send + Sync {
    /// How many of the most important positions the test keeps, for a context of `len`.
    fn keep(&self, len: usize) -> usize;
    /// Whether the test holds for this next-token distribution (log-probabilities).
    fn holds(&self, log_probs: &[f32], target: u32) -> bool;
}

/// Keep the top `keep_top_n` positions (or `ceil(keep_ratio * len)` when `keep_top_n` is 0) and
/// stop when the target ranks among the top `top_k`.
#[derive(Debug, Clone, Copy)]
pub struct TopK {
    pub keep_top_n: usize,
    pub keep_ratio: Option<f64>,
    pub top_k: usize,
}

impl StoppingRule for TopK {
    fn keep(&self, len: usize) -> usize {
        let n = if self.keep_top_n > 0 {
            self.keep_top_n
        } else {
            (self.keep_ratio.unwrap_or(0.0) * len as f64).ceil() as usize
        };
        n.min(len)
    }

    fn holds(&self, log_probs: &[f32], target: u32) -> bool {
        rank_of(log_probs, target) < self.top_k
    }
}

pub use crate::util::{rank_of, top_n};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_count_follows_n_or_ratio() {
        let r = TopK {
            keep_top_n: 5,
            keep_ratio: None,
            top_k: 3,
        };
        assert_eq!(r.keep(40), 5);
        assert_eq!(r.keep(3), 3);
        let r = TopK {
            keep_top_n: 0,
            keep_ratio: Some(0.3),
            top_k: 3,
        };
        assert_eq!(r.keep(11), 4); // ceil(3.3)
    }

    #[test]
    fn rank_is_strict() {
        let lp = [0.1, 0.5, 0.5, 0.2];
        assert_eq!(rank_of(&lp, 1), 0);
        assert_eq!(rank_of(&lp, 2), 0);
        assert_eq!(rank_of(&lp, 3), 2);
        assert_eq!(rank_of(&lp, 0), 3);
        let rule = TopK {
            keep_top_n: 1,
            keep_ratio: None,
            top_k: 3,
        };
        assert!(rule.holds(&lp, 3));
        assert!(!rule.holds(&lp, 0));
    }

    #[test]
    fn top_n_breaks_ties_by_index() {
        assert_eq!(top_n(&[0.2, 0.9, 0.2, 0.5], 3), vec![1, 3, 0]);
    }
}
