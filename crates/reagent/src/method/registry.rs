//! One place that turns a method's name and settings into a built attributor, so the CLI, the
//! evaluation and (later) the Python bindings build methods the same way.

use serde::{Deserialize, Serialize};

use super::attention::{Attention, AttentionMethod};
use super::gradient::{Baseline, Gradient, GradientMethod};
use super::occlusion::{Occlusion, Random};
use super::reagent::{build_sampler, MlmPick, Reagent, ReagentConfig, SamplerKind};
use super::{Attributor, MethodKind};
use crate::model::{LoadedMaskedModel, LoadedModel};
use crate::Result;

/// Everything any method can be configured with; each method reads its own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSettings {
    /// ReAGent's hyperparameters (its `seed` also seeds gradient SHAP and random).
    pub reagent: ReagentConfig,
    /// ReAGent's replacement sampler.
    pub sampler: SamplerKind,
    /// How the MLM sampler picks a prediction.
    pub mlm_pick: MlmPick,
    /// Integrated gradients: steps and baseline.
    pub ig_steps: usize,
    pub ig_baseline: Baseline,
    /// Gradient SHAP: samples and input-noise standard deviation.
    pub shap_samples: usize,
    pub shap_stdev: f64,
}

impl Default for MethodSettings {
    fn default() -> Self {
        MethodSettings {
            reagent: ReagentConfig::default(),
            sampler: SamplerKind::Pos,
            mlm_pick: MlmPick::Argmax,
            ig_steps: 50,
            ig_baseline: Baseline::Zero,
            shap_samples: 5,
            shap_stdev: 0.1,
        }
    }
}

/// Build `kind` for `model`. The MLM sampler needs `mlm`.
pub fn build(
    kind: MethodKind,
    s: &MethodSettings,
    model: &LoadedModel,
    mlm: Option<&LoadedMaskedModel>,
) -> Result<Box<dyn Attributor>> {
    let unk = model.tokenizer.unk_id();
    let seed = s.reagent.seed;
    Ok(match kind {
        MethodKind::Reagent => {
            let sampler = build_sampler(s.sampler, model, mlm, s.mlm_pick)?;
            Box::new(Reagent::new(s.reagent.clone(), sampler)?)
        }
        MethodKind::GradientNorm => {
            Box::new(Gradient::new(GradientMethod::GradientNorm, unk, seed)?)
        }
        MethodKind::InputXGradient => {
            Box::new(Gradient::new(GradientMethod::InputXGradient, unk, seed)?)
        }
        MethodKind::IntegratedGradients => Box::new(Gradient::new(
            GradientMethod::IntegratedGradients {
                n_steps: s.ig_steps,
                baseline: s.ig_baseline,
            },
            unk,
            seed,
        )?),
        MethodKind::GradientShap => Box::new(Gradient::new(
            GradientMethod::GradientShap {
                n_samples: s.shap_samples,
                stdev: s.shap_stdev,
                baselines: if unk.is_some() {
                    vec![Baseline::Zero, Baseline::Unk]
                } else {
                    vec![Baseline::Zero]
                },
            },
            unk,
            seed,
        )?),
        MethodKind::Attention => Box::new(Attention(AttentionMethod::Mean)),
        MethodKind::LastLayerAttention => Box::new(Attention(AttentionMethod::LastLayer)),
        MethodKind::AttentionRollout => Box::new(Attention(AttentionMethod::Rollout)),
        MethodKind::Occlusion => {
            let kept = super::gradient::unk_kept_token(model.model.info());
            Box::new(Occlusion::new(unk).keeping(kept))
        }
        MethodKind::Random => Box::new(Random { seed }),
    })
}
