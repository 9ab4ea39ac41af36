//! One file per subcommand.

pub mod attribute;
pub mod evaluate;
pub mod inspect;
pub mod predict;
pub mod report;

use anyhow::{Context, Result};
use reagent::method::registry::{self, MethodSettings};
use reagent::model::LoadedMaskedModel;
use reagent::{Attributor, LoadOptions, LoadedModel, MethodKind};

use crate::args::{BaselineArgs, ModelArgs, ReagentArgs};

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

/// The method settings the command line gives.
pub fn method_settings(r: &ReagentArgs, b: &BaselineArgs) -> Result<MethodSettings> {
    Ok(MethodSettings {
        reagent: attribute::reagent_config(r)?,
        sampler: r.sampler,
        mlm_pick: r.mlm_pick,
        ig_steps: b.ig_steps,
        ig_baseline: b.ig_baseline,
        shap_samples: b.shap_samples,
        shap_stdev: b.shap_stdev,
    })
}

/// Load the masked LM for the MLM sampler, when one is named.
pub fn load_mlm(r: &ReagentArgs) -> Result<Option<LoadedMaskedModel>> {
    r.mlm
        .as_ref()
        .map(|spec| {
            reagent::load_masked(spec, &LoadOptions::default())
                .with_context(|| format!("cannot load the MLM `{spec}`"))
        })
        .transpose()
}

/// Build one attribution method from the command line's settings.
pub fn build_method(
    kind: MethodKind,
    reagent_args: &ReagentArgs,
    b: &BaselineArgs,
    model: &LoadedModel,
) -> Result<Box<dyn Attributor>> {
    let settings = method_settings(reagent_args, b)?;
    if kind == MethodKind::Reagent
        && reagent_args.sampler == reagent::method::reagent::SamplerKind::Mlm
        && reagent_args.mlm.is_none()
    {
        anyhow::bail!(
            "--sampler mlm needs a masked LM: pass --mlm SPEC (e.g. a distilroberta-base folder)"
        );
    }
    let mlm = if kind == MethodKind::Reagent {
        load_mlm(reagent_args)?
    } else {
        None
    };
    Ok(registry::build(kind, &settings, model, mlm.as_ref())?)
}
