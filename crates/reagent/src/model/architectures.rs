//! The one table of architectures: how `config.json` names them, which GGUF architecture (if
//! any) maps onto them, and the constructor. A new architecture costs its own file and one row
//! here.

use std::path::Path;
use std::sync::Arc;

use super::load::parse_config;
use super::weights::Vb;
use super::{gemma3, gpt2, gpt_neox, gptj, llama, opt, CausalLm};
use crate::Result;

/// Builds a causal LM from its weights and `config.json` (the architecture name as given).
pub type HfBuild = fn(Vb, &serde_json::Value, &Path, &str) -> Result<Arc<dyn CausalLm>>;

/// What an architecture is for.
#[derive(Clone, Copy)]
pub enum Role {
    /// A causal LM that can be attributed.
    Causal(HfBuild),
    /// A masked LM: the MLM sampler's model only.
    Masked,
}

/// One row of the table.
pub struct Architecture {
    /// `architectures` names in `config.json`.
    pub names: &'static [&'static str],
    /// `model_type` values, for configs without `architectures`: value i means name i.
    pub model_types: &'static [&'static str],
    /// The GGUF `general.architecture` loaded as this architecture, if any.
    pub gguf: Option<&'static str>,
    pub role: Role,
}

/// Every architecture this crate loads.
pub const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        names: &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"],
        model_types: &["llama", "mistral", "qwen2"],
        gguf: Some("llama"),
        role: Role::Causal(llama_hf),
    },
    Architecture {
        names: &["Gemma3ForCausalLM"],
        model_types: &["gemma3_text"],
        gguf: Some("gemma3"),
        role: Role::Causal(|vb, cfg, path, _| build(vb, cfg, path, gemma3::Gemma3::load)),
    },
    Architecture {
        names: &["GPT2LMHeadModel"],
        model_types: &["gpt2"],
        gguf: None,
        role: Role::Causal(|vb, cfg, path, _| build(vb, cfg, path, gpt2::Gpt2::load)),
    },
    Architecture {
        names: &["OPTForCausalLM"],
        model_types: &["opt"],
        gguf: None,
        role: Role::Causal(|vb, cfg, path, _| build(vb, cfg, path, opt::Opt::load)),
    },
    Architecture {
        names: &["GPTJForCausalLM"],
        model_types: &["gptj"],
        gguf: None,
        role: Role::Causal(|vb, cfg, path, _| build(vb, cfg, path, gptj::GptJ::load)),
    },
    Architecture {
        names: &["GPTNeoXForCausalLM"],
        model_types: &["gpt_neox"],
        gguf: None,
        role: Role::Causal(|vb, cfg, path, _| build(vb, cfg, path, gpt_neox::GptNeoX::load)),
    },
    Architecture {
        names: &["BertForMaskedLM", "RobertaForMaskedLM"],
        model_types: &["bert", "roberta"],
        gguf: None,
        role: Role::Masked,
    },
];

/// A model from its weights and its parsed `config.json`.
fn build<C: serde::de::DeserializeOwned, M: CausalLm + 'static>(
    vb: Vb,
    cfg: &serde_json::Value,
    path: &Path,
    load: fn(Vb, &C) -> Result<M>,
) -> Result<Arc<dyn CausalLm>> {
    Ok(Arc::new(load(vb, &parse_config(cfg, path)?)?))
}

/// The Llama family: one file, three flavours.
fn llama_hf(vb: Vb, cfg: &serde_json::Value, path: &Path, arch: &str) -> Result<Arc<dyn CausalLm>> {
    let mut c: llama::Config = parse_config(cfg, path)?;
    c.flavor = match arch {
        "MistralForCausalLM" => llama::Flavor::Mistral,
        "Qwen2ForCausalLM" => llama::Flavor::Qwen2,
        _ => llama::Flavor::Llama,
    };
    Ok(Arc::new(llama::Llama::load(vb, &c, arch)?))
}

/// The row whose `config.json` name is `name`.
pub fn by_name(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().find(|a| a.names.contains(&name))
}

/// The first `architectures` name of a `model_type`.
pub fn name_of_model_type(model_type: &str) -> Option<&'static str> {
    ARCHITECTURES.iter().find_map(|a| {
        a.model_types
            .iter()
            .position(|m| *m == model_type)
            .map(|i| a.names[i])
    })
}

/// Every name this crate accepts: `config.json` names and `gguf:` architectures.
pub fn supported() -> String {
    let mut v: Vec<String> = ARCHITECTURES
        .iter()
        .flat_map(|a| a.names.iter().map(|n| n.to_string()))
        .collect();
    v.extend(
        ARCHITECTURES
            .iter()
            .filter_map(|a| a.gguf.map(|g| format!("gguf:{g}"))),
    );
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let mut names: Vec<&str> = ARCHITECTURES
            .iter()
            .flat_map(|a| a.names.iter().copied())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name appears twice");
        for a in ARCHITECTURES {
            // `model_type` i means name i.
            assert_eq!(a.names.len(), a.model_types.len(), "{:?}", a.names);
        }
        assert_eq!(name_of_model_type("qwen2"), Some("Qwen2ForCausalLM"));
        assert_eq!(name_of_model_type("roberta"), Some("RobertaForMaskedLM"));
        assert!(supported().contains("gguf:gemma3"));
    }
}
