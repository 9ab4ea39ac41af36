//! GGUF files: metadata, configs and weights in Hugging Face layout.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`) renames tensors and changes two storage
//! conventions. This module undoes them so that the model files see transformers' layout:
//! - names: `blk.N.attn_q.weight` ← `model.layers.N.self_attn.q_proj.weight`, etc.;
//! - Llama q/k rows are permuted for llama.cpp's adjacent-pair RoPE: the Llama model rotates
//!   adjacent pairs instead ([`super::llama::Flavor::Gguf`]); attention scores are unchanged;
//! - Gemma RMSNorm weights are stored as `1 + w`: we subtract the 1 back.
//!
//! A missing metadata key is an error that names the key (as candle's `quantized_llama.rs`).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::weights::SpecialIds;
use super::weights::WeightSource;
pub use crate::format::gguf::GgufFile;
use crate::{Error, Result};

/// The GGUF architectures we translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Arch::Llama),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(Error::unsupported_architecture(
                format!("gguf:{other}"),
                super::architectures::supported(),
            )),
        }
    }

    /// The GGUF name of a Hugging Face tensor name, or `None` when there is no counterpart.
    pub fn gguf_name(self, hf: &str) -> Option<String> {
        match hf {
            "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
            "model.norm.weight" => return Some("output_norm.weight".into()),
            "lm_head.weight" => return Some("output.weight".into()),
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (n, rest) = rest.split_once('.')?;
        let (stem, kind) = rest.rsplit_once('.')?;
        let g = match (self, stem) {
            (_, "input_layernorm") => "attn_norm",
            (_, "self_attn.q_proj") => "attn_q",
            (_, "self_attn.k_proj") => "attn_k",
            (_, "self_attn.v_proj") => "attn_v",
            (_, "self_attn.o_proj") => "attn_output",
            (_, "mlp.gate_proj") => "ffn_gate",
            (_, "mlp.up_proj") => "ffn_up",
            (_, "mlp.down_proj") => "ffn_down",
            (Arch::Llama, "post_attention_layernorm") => "ffn_norm",
            (Arch::Gemma3, "post_attention_layernorm") => "post_attention_norm",
            (Arch::Gemma3, "pre_feedforward_layernorm") => "ffn_norm",
            (Arch::Gemma3, "post_feedforward_layernorm") => "post_ffw_norm",
            (Arch::Gemma3, "self_attn.q_norm") => "attn_q_norm",
            (Arch::Gemma3, "self_attn.k_norm") => "attn_k_norm",
            _ => return None,
        };
        Some(format!("blk.{n}.{g}.{kind}"))
    }
}

/// The weights of a GGUF file under Hugging Face names.
pub struct GgufSource {
    file: Arc<GgufFile>,
    arch: Arch,
}

impl GgufSource {
    pub fn new(file: Arc<GgufFile>, arch: Arch) -> Self {
        GgufSource { file, arch }
    }

    fn name(&self, hf: &str) -> Result<String> {
        self.arch.gguf_name(hf).ok_or_else(|| {
            Error::missing(
                format!("tensor `{hf}` (no GGUF counterpart)"),
                self.file.describe(),
            )
        })
    }
}

impl WeightSource for GgufSource {
    fn describe(&self) -> String {
        self.file.describe()
    }

    fn contains(&self, name: &str) -> bool {
        self.arch
            .gguf_name(name)
            .is_some_and(|g| self.file.has_tensor(&g))
    }

    fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let g = self.name(name)?;
        let t = self.file.qtensor(&g, device)?.dequantize(device)?;
        // llama.cpp stores Gemma's RMSNorm weights as `1 + w`; the model adds the 1 itself.
        if self.arch == Arch::Gemma3 && g.ends_with("norm.weight") {
            return Ok((t - 1.0)?);
        }
        Ok(t)
    }

    fn qtensor(&self, name: &str, device: &Device) -> Option<Result<Arc<QTensor>>> {
        let g = self.arch.gguf_name(name)?;
        if !self.file.has_tensor(&g) {
            return None;
        }
        Some(self.file.qtensor(&g, device).map(Arc::new))
    }
}

/// The special token ids GGUF metadata declares.
pub(crate) fn special_ids(f: &GgufFile) -> (Option<u32>, Vec<u32>, Option<u32>) {
    let id = |k: &str| f.usize_opt(k).map(|x| x as u32);
    (
        id("tokenizer.ggml.bos_token_id"),
        id("tokenizer.ggml.eos_token_id").into_iter().collect(),
        id("tokenizer.ggml.padding_token_id"),
    )
}

fn vocab_size(f: &GgufFile, arch: &str) -> Result<usize> {
    match f.usize_opt(&format!("{arch}.vocab_size")) {
        Some(v) => Ok(v),
        None => Ok(f.strings("tokenizer.ggml.tokens")?.len()),
    }
}

/// The size keys of an architecture's metadata, each in `1..=MAX_DIM` where present.
fn check_sizes(f: &GgufFile, arch: &str) -> Result<()> {
    let keys = [
        "attention.head_count",
        "attention.head_count_kv",
        "embedding_length",
        "feed_forward_length",
        "block_count",
        "context_length",
        "rope.dimension_count",
        "attention.key_length",
        "attention.sliding_window",
        "vocab_size",
    ];
    let dims: Vec<(String, usize)> = keys
        .iter()
        .filter_map(|k| {
            let key = format!("{arch}.{k}");
            f.usize_opt(&key).map(|v| (key, v))
        })
        .collect();
    let named: Vec<(&str, usize)> = dims.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    super::dims::check(&f.describe(), &named)?;
    let (h, n) = (
        f.usize_opt(&format!("{arch}.embedding_length")),
        f.usize_opt(&format!("{arch}.attention.head_count")),
    );
    if let (Some(h), Some(n)) = (h, n) {
        let has_dim = f
            .usize_opt(&format!("{arch}.rope.dimension_count"))
            .is_some()
            || f.usize_opt(&format!("{arch}.attention.key_length"))
                .is_some();
        if !has_dim && h % n != 0 {
            return Err(Error::input(format!(
                "{}: the embedding length {h} is not a multiple of the {n} attention heads",
                f.describe()
            )));
        }
    }
    Ok(())
}

/// A Llama config from `llama.*` metadata.
pub fn llama_config(f: &GgufFile) -> Result<super::llama::Config> {
    let k = |s: &str| format!("llama.{s}");
    check_sizes(f, "llama")?;
    let heads = f.usize(&k("attention.head_count"))?;
    let hidden = f.usize(&k("embedding_length"))?;
    let head_dim = f
        .usize_opt(&k("rope.dimension_count"))
        .unwrap_or(hidden / heads);
    if f.has_tensor("rope_freqs.weight") {
        return Err(Error::Unsupported(format!(
            "{}: GGUF rope frequency factors (`rope_freqs.weight`, Llama 3.1 scaling) are not supported yet; load the Hugging Face folder instead",
            f.describe()
        )));
    }
    let (bos, eos, pad) = special_ids(f);
    Ok(super::llama::Config {
        dims: dims(f, "llama", hidden, heads)?,
        intermediate_size: f.usize(&k("feed_forward_length"))?,
        head_dim: Some(head_dim),
        rms_norm_eps: f.f64(&k("attention.layer_norm_rms_epsilon"))?,
        rope_theta: Some(f.f64_opt(&k("rope.freq_base")).unwrap_or(10_000.0)),
        rope_parameters: None,
        rope_scaling: rope_scaling_json(f, "llama"),
        max_position_embeddings: f.usize(&k("context_length"))?,
        tie_word_embeddings: !f.has_tensor("output.weight"),
        attention_bias: false,
        mlp_bias: false,
        hidden_act: "silu".into(),
        sliding_window: None,
        use_sliding_window: None,
        special: SpecialIds {
            bos_token_id: bos,
            eos_token_id: Some(serde_json::json!(eos)),
            pad_token_id: pad,
        },
        flavor: super::llama::Flavor::Gguf,
    })
}

/// The sizes under `{arch}.*`; key/value heads default to the query heads, as llama.cpp reads them.
fn dims(f: &GgufFile, arch: &str, hidden: usize, heads: usize) -> Result<super::dims::Dims> {
    let kv = f.usize_opt(&format!("{arch}.attention.head_count_kv"));
    Ok(super::dims::Dims {
        hidden_size: hidden,
        num_hidden_layers: f.usize(&format!("{arch}.block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv.unwrap_or(heads)),
        vocab_size: vocab_size(f, arch)?,
    })
}

fn rope_scaling_json(f: &GgufFile, arch: &str) -> Option<serde_json::Value> {
    let kind = f
        .meta_opt(&format!("{arch}.rope.scaling.type"))
        .and_then(|v| v.to_string().ok().cloned())?;
    let factor = f.f64_opt(&format!("{arch}.rope.scaling.factor"))?;
    match kind.as_str() {
        "none" => None,
        _ => Some(serde_json::json!({"rope_type": kind, "factor": factor})),
    }
}

/// A Gemma 3 config from `gemma3.*` metadata, completed with what llama.cpp hard-codes for this
/// architecture (and the Hugging Face config states): five sliding-window layers then one
/// global, a local RoPE base of 10 000, and the attention scale `head_dim^-1/2`.
pub fn gemma3_config(f: &GgufFile) -> Result<super::gemma3::Config> {
    let k = |s: &str| format!("gemma3.{s}");
    check_sizes(f, "gemma3")?;
    let heads = f.usize(&k("attention.head_count"))?;
    let hidden = f.usize(&k("embedding_length"))?;
    let head_dim = f.usize(&k("attention.key_length"))?;
    let n_layers = f.usize(&k("block_count"))?;
    let (bos, eos, pad) = special_ids(f);
    // llama.cpp (src/llama-model.cpp, LLM_ARCH_GEMMA3): swa pattern 6; the 27B model scales by
    // hidden/heads instead of head_dim.
    let pattern = 6;
    let query_pre_attn_scalar = if n_layers == 62 {
        (hidden / heads) as f64
    } else {
        head_dim as f64
    };
    Ok(super::gemma3::Config {
        dims: dims(f, "gemma3", hidden, heads)?,
        intermediate_size: f.usize(&k("feed_forward_length"))?,
        head_dim,
        rms_norm_eps: f.f64(&k("attention.layer_norm_rms_epsilon"))?,
        max_position_embeddings: f.usize(&k("context_length"))?,
        query_pre_attn_scalar: Some(query_pre_attn_scalar),
        sliding_window: Some(f.usize(&k("attention.sliding_window"))?),
        layer_types: Some(
            (0..n_layers)
                .map(|i| {
                    if (i + 1) % pattern != 0 {
                        "sliding_attention".to_string()
                    } else {
                        "full_attention".to_string()
                    }
                })
                .collect(),
        ),
        sliding_window_pattern: None,
        rope_theta: Some(f.f64_opt(&k("rope.freq_base")).unwrap_or(1_000_000.0)),
        rope_local_base_freq: Some(10_000.0),
        rope_scaling: rope_scaling_json(f, "gemma3"),
        rope_parameters: None,
        final_logit_softcapping: f.f64_opt(&k("final_logit_softcapping")),
        attn_logit_softcapping: f.f64_opt(&k("attn_logit_softcapping")),
        hidden_activation: "gelu_pytorch_tanh".into(),
        tie_word_embeddings: !f.has_tensor("output.weight"),
        special: SpecialIds {
            bos_token_id: bos,
            eos_token_id: Some(serde_json::json!(eos)),
            pad_token_id: pad,
        },
    })
}
