//! One file per subcommand.

pub mod attribute;
pub mod evaluate;
pub mod inspect;
pub mod predict;
pub mod report;

use anyhow::{Context, Result};
use reagent::method::registry::{self, MethodSettings};
use reagent::model::{LoadedMaskedModel, Precision};
use reagent::{Attributor, LoadOptions, LoadedModel, MethodKind};

use crate::args::{BaselineArgs, ModelArgs, ReagentArgs};

/// Load the causal LM named by `--model`: local weights, or a server. `probability_only`: the
/// work reads next-token probabilities only (what `--precision auto` may run in bf16).
pub fn load_model(a: &ModelArgs, probability_only: bool) -> Result<LoadedModel> {
    if reagent::remote::is_url(&a.model) {
        if a.precision != "auto" {
            anyhow::bail!("--precision applies to local weights; a served model computes in the server's precision");
        }
        return load_served(a);
    }
    for (set, flag) in [
        (a.tokenizer.is_some(), "--tokenizer"),
        (a.served_model.is_some(), "--served-model"),
        (a.api_key_env.is_some(), "--api-key-env"),
    ] {
        if set {
            anyhow::bail!("{flag} applies to a served model (--model http://HOST:PORT/v1)");
        }
    }
    let precision = match a.precision.as_str() {
        "auto" if a.quantized => Precision::F32,
        "auto" => Precision::auto(probability_only),
        p => Precision::parse(p)?,
    };
    let opts = LoadOptions {
        quantized: a.quantized,
        precision,
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

/// Connect to the server `--model` names.
fn load_served(a: &ModelArgs) -> Result<LoadedModel> {
    let Some(tokenizer) = &a.tokenizer else {
        anyhow::bail!(
            "a served model needs --tokenizer SPEC (a tokenizer.json, .gguf file, model folder or hub id of the served model)"
        );
    };
    if a.quantized {
        anyhow::bail!("--quantized applies to local GGUF weights, not to a served model");
    }
    if !(1..=256).contains(&a.concurrency) {
        anyhow::bail!(
            "--concurrency must be between 1 and 256, got {}",
            a.concurrency
        );
    }
    if !(1..=10_000).contains(&a.top_logprobs) {
        anyhow::bail!(
            "--top-logprobs must be between 1 and 10000, got {}",
            a.top_logprobs
        );
    }
    if !(a.request_timeout > 0.0 && a.request_timeout.is_finite()) {
        anyhow::bail!("--request-timeout must be a positive number of seconds");
    }
    let api_key = match &a.api_key_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            anyhow::anyhow!("--api-key-env names {var}, but the environment has no such variable")
        })?),
        None => None,
    };
    let mut opts = reagent::remote::RemoteOptions::new(&a.model, tokenizer);
    opts.served_model = a.served_model.clone();
    opts.api_key = api_key;
    opts.concurrency = a.concurrency;
    opts.top_k = a.top_logprobs;
    opts.http.timeout_s = a.request_timeout;
    opts.http.retries = a.retries;
    Ok(reagent::remote::load_remote(&opts)?)
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
