//! Bounds on the sizes a model file may declare, checked before anything divides by them or
//! allocates from them.

use serde::Deserialize;

use crate::{Error, Result};

/// The sizes every architecture's `config.json` states, under either of the names transformers
/// gives them (GPT-2 and GPT-J write `n_embd`, `n_layer`, `n_head`). Each architecture's
/// `Config` flattens it in; [`super::ModelInfo::of`] describes a model from it.
#[derive(Debug, Clone, Deserialize)]
pub struct Dims {
    #[serde(alias = "n_embd")]
    pub hidden_size: usize,
    #[serde(alias = "n_layer")]
    pub num_hidden_layers: usize,
    #[serde(alias = "n_head")]
    pub num_attention_heads: usize,
    /// Grouped-query attention's key/value heads: as many as the query heads when absent.
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
}

impl Dims {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// `hidden_size / num_attention_heads`, the head width where a config does not state it.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// `1 / sqrt(head_dim)`, the usual attention scale.
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim() as f64).sqrt()
    }
}

/// The largest size any dimension may have (16 Mi): far above real models (vocabularies of
/// 262,144, contexts of 131,072), far below what would exhaust memory in one allocation of a
/// rotary table or a mask.
pub const MAX_DIM: usize = 1 << 24;

/// Each `(name, value)` must be in `1..=MAX_DIM`.
pub fn check(source: &str, dims: &[(&str, usize)]) -> Result<()> {
    for &(name, v) in dims {
        if v == 0 {
            return Err(Error::input(format!(
                "{source}: `{name}` must be at least 1, got 0"
            )));
        }
        if v > MAX_DIM {
            return Err(Error::input(format!(
                "{source}: `{name}` is {v}, more than the {MAX_DIM} this library accepts"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_read_either_naming_scheme() {
        let gpt2: Dims = serde_json::from_str(
            r#"{"n_embd": 8, "n_layer": 2, "n_head": 4, "vocab_size": 50, "n_positions": 16}"#,
        )
        .unwrap();
        let llama: Dims = serde_json::from_str(
            r#"{"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 50}"#,
        )
        .unwrap();
        assert_eq!(
            (gpt2.hidden_size, gpt2.num_hidden_layers, gpt2.kv_heads()),
            (8, 2, 4)
        );
        assert_eq!((llama.head_dim(), llama.kv_heads()), (2, 2));
        assert_eq!(gpt2.scale(), 1.0 / 2f64.sqrt());
        let e = serde_json::from_str::<Dims>(r#"{"n_embd": 8, "vocab_size": 50}"#).unwrap_err();
        assert!(
            e.to_string().contains("missing field `num_hidden_layers`"),
            "{e}"
        );
    }

    #[test]
    fn zero_and_huge_sizes_fail_with_the_field_name() {
        assert!(check("x", &[("a", 1), ("b", MAX_DIM)]).is_ok());
        let e = check("cfg.json", &[("num_attention_heads", 0)]).unwrap_err();
        assert!(e
            .to_string()
            .contains("`num_attention_heads` must be at least 1"));
        let e = check("f.gguf", &[("llama.block_count", MAX_DIM + 1)]).unwrap_err();
        assert!(e.to_string().contains("llama.block_count"));
    }
}
