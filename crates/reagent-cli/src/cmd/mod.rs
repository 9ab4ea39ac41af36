//! One file per subcommand.

pub mod attribute;
pub mod evaluate;
pub mod inspect;
pub mod predict;

use anyhow::{Context, Result};
use reagent::method::attention::{Attention, AttentionMethod};
use reagent::method::gradient::{Baseline, Gradient, GradientMethod};
use reagent::method::occlusion::{Occlusion, Random};
use reagent::{Attributor, LoadOptions, LoadedModel, MethodKind};

use crate::args::{BaselineArg, BaselineArgs, ModelArgs, ReagentArgs};

/// Load the causal LM named by `--model`.
pub fn load_model(a: &ModelArgs) -> Result<LoadedModel> {
    let opts = LoadOptions {
        quantized: a.quantized,
        ..LoadOptions::default()
    };
    let hint = if a.model.starts_with("models/") && !std::path::Path::new(&a.model).exists() {
        " (run scripts/fetch-models.sh to fetch the default models)"
    } else {
        ""
    };
    reagent::load_causal(&a.model, &opts)
        .with_context(|| format!("cannot load model `{}`{hint}", a.model))
}

/// A token's text for display: quoted, with control characters escaped.
pub fn show_token(s: &str) -> String {
    format!("{s:?}")
}

/// Build one attribution method from the command line's settings.
pub fn build_method(
    kind: MethodKind,
    reagent_args: &ReagentArgs,
    b: &BaselineArgs,
    model: &LoadedModel,
) -> Result<Box<dyn Attributor>> {
    let unk = model.tokenizer.unk_id();
    let seed = reagent_args.seed;
    Ok(match kind {
        MethodKind::Reagent => Box::new(attribute::build_reagent(reagent_args, model)?),
        MethodKind::GradientNorm => {
            Box::new(Gradient::new(GradientMethod::GradientNorm, unk, seed)?)
        }
        MethodKind::InputXGradient => {
            Box::new(Gradient::new(GradientMethod::InputXGradient, unk, seed)?)
        }
        MethodKind::IntegratedGradients => Box::new(Gradient::new(
            GradientMethod::IntegratedGradients {
                n_steps: b.ig_steps,
                baseline: match b.ig_baseline {
                    BaselineArg::Zero => Baseline::Zero,
                    BaselineArg::Unk => Baseline::Unk,
                },
            },
            unk,
            seed,
        )?),
        MethodKind::GradientShap => Box::new(Gradient::new(
            GradientMethod::GradientShap {
                n_samples: b.shap_samples,
                stdev: b.shap_stdev,
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
        MethodKind::Occlusion => Box::new(Occlusion::new(unk)),
        MethodKind::Random => Box::new(Random { seed }),
    })
}
