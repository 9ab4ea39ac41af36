//! One file per subcommand.

pub mod attribute;
pub mod evaluate;
pub mod inspect;
pub mod predict;

use anyhow::{Context, Result};
use reagent::{LoadOptions, LoadedModel};

use crate::args::ModelArgs;

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
