//! Attention methods: mean attention, last-layer attention, attention rollout.
//!
//! All read the attention of the last context position (the query that predicts the target)
//! to every context token, itself included:
//! - **attention** (inseq 0.7.1's `attention`): mean over heads, normalized; mean over layers,
//!   normalized;
//! - **last-layer attention** (inseq 0.4's `attention`, which the ReAGent paper ran): mean over
//!   the last layer's heads, normalized;
//! - **rollout** (Abnar & Zuidema 2020, <https://arxiv.org/abs/2005.00928>, as the paper's
//!   `attention.py`): `R_l = 0.5 mean_h(A_l) + 0.5 I`, `R = R_{n-1} ... R_0`, row `L-1`,
//!   normalized.
//!
//! Normalized means divided by the sum (rows of attention already sum to one, so this only
//! changes rounding). The paper's own attention baselines applied a softmax over these weights
//! on top, which pushes them toward uniform; we do not.

use candle_core::{IndexOp, Tensor};
use serde::{Deserialize, Serialize};

use super::{Attributor, MethodKind, Progress, Requirements, TargetScores};
use crate::model::{CausalLm, Outputs};
use crate::Result;

/// Which attention method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMethod {
    Mean,
    LastLayer,
    Rollout,
}

/// An attention method, ready to run.
pub struct Attention(pub AttentionMethod);

fn normalize(v: Vec<f32>) -> Vec<f32> {
    let s: f32 = v.iter().map(|x| x.abs()).sum();
    v.into_iter().map(|x| x / s.max(1e-12)).collect()
}

/// Per layer, the head-mean attention matrix `[L, L]` of a single context.
fn head_means(model: &dyn CausalLm, context: &[u32]) -> Result<Vec<Tensor>> {
    let out = model.forward(
        &[context.to_vec()],
        Outputs {
            logits: false,
            attentions: true,
        },
    )?;
    let attns = out.attentions.unwrap_or_default();
    attns
        .iter()
        .map(|a| Ok(a.i(0)?.mean(0)?))
        .collect::<Result<Vec<_>>>()
}

impl Attention {
    /// Scores over the context for its last position.
    pub fn scores(&self, model: &dyn CausalLm, context: &[u32]) -> Result<Vec<f32>> {
        let means = head_means(model, context)?;
        let l = context.len();
        let last = |m: &Tensor| -> Result<Vec<f32>> { Ok(m.i(l - 1)?.to_vec1()?) };
        Ok(match self.0 {
            AttentionMethod::Mean => {
                let mut acc = vec![0f32; l];
                for m in &means {
                    for (a, v) in acc.iter_mut().zip(normalize(last(m)?)) {
                        *a += v;
                    }
                }
                let n = means.len() as f32;
                normalize(acc.into_iter().map(|a| a / n).collect())
            }
            AttentionMethod::LastLayer => {
                let lastl = means
                    .last()
                    .ok_or_else(|| crate::Error::input("the model has no attention layers"))?;
                normalize(last(lastl)?)
            }
            AttentionMethod::Rollout => {
                let eye = Tensor::eye(l, candle_core::DType::F32, model.device())?;
                let mut rollout: Option<Tensor> = None;
                for m in &means {
                    let r = ((m * 0.5)? + (&eye * 0.5)?)?;
                    rollout = Some(match rollout {
                        None => r,
                        Some(prev) => r.matmul(&prev)?,
                    });
                }
                let r = rollout
                    .ok_or_else(|| crate::Error::input("the model has no attention layers"))?;
                normalize(last(&r)?)
            }
        })
    }
}

impl Attributor for Attention {
    fn kind(&self) -> MethodKind {
        match self.0 {
            AttentionMethod::Mean => MethodKind::Attention,
            AttentionMethod::LastLayer => MethodKind::LastLayerAttention,
            AttentionMethod::Rollout => MethodKind::AttentionRollout,
        }
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            attentions: true,
            ..Requirements::default()
        }
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({"method": self.0, "row": "last context position", "normalization": "divide by sum"})
    }

    fn attribute(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        _target: u32,
        _index: usize,
        _progress: &dyn Progress,
    ) -> Result<TargetScores> {
        Ok(TargetScores::plain(self.scores(model, context)?).with_rows(1))
    }
}
