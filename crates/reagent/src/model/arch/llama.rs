//! The Llama family: Llama 2/3, SmolLM2, Mistral, Qwen2.
//!
//! Paper: Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models"
//! (<https://arxiv.org/abs/2302.13971>). Upstream modelling file:
//! transformers `models/llama/modeling_llama.py` (Qwen2 adds q/k/v biases, Mistral a sliding
//! window). RoPE, grouped-query attention, RMSNorm, SwiGLU MLP, tied or untied head.

use candle_core::Tensor;
use serde::Deserialize;

use crate::model::dims::Dims;
use crate::model::nn::{self, Activation, Linear, Projections, RmsNorm, RopeScaling, Rotary};
use crate::model::weights::{SpecialIds, Vb};
use crate::model::{FinalNorm, ModelInfo, RotaryDecoder, RotaryLayer};
use crate::Result;

/// `config.json` of a Llama-family model (only the keys we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dims: Dims,
    pub intermediate_size: usize,
    pub head_dim: Option<usize>,
    #[serde(default = "crate::model::defaults::eps_1e6")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    /// transformers v5 moves `rope_theta` and the scaling into this object.
    pub rope_parameters: Option<serde_json::Value>,
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "crate::model::defaults::positions_2048")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "crate::model::defaults::silu")]
    pub hidden_act: String,
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(flatten)]
    pub special: SpecialIds,
    /// Set by the loader, not by config.json.
    #[serde(skip)]
    pub flavor: Flavor,
}

/// Which member of the family, and where its weights came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flavor {
    #[default]
    Llama,
    Mistral,
    /// q/k/v projections carry biases.
    Qwen2,
    /// Weights converted by llama.cpp: q/k rows are permuted so that RoPE rotates adjacent
    /// channel pairs; we rotate the same way instead of permuting back.
    Gguf,
}

impl Config {
    fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.dims.head_dim())
    }
    /// `rope_theta` from v5's `rope_parameters`, or the top level, or Llama's documented 10000.
    pub fn rope(&self) -> Result<(f64, RopeScaling)> {
        if let Some(p) = self.rope_parameters.as_ref().filter(|p| p.is_object()) {
            let theta = p
                .get("rope_theta")
                .and_then(|v| v.as_f64())
                .or(self.rope_theta);
            let theta = theta.ok_or_else(|| {
                crate::Error::missing("`rope_theta` (in `rope_parameters`)", "config.json")
            })?;
            return Ok((theta, RopeScaling::from_json(Some(p))?));
        }
        Ok((
            self.rope_theta.unwrap_or(10_000.0),
            RopeScaling::from_json(self.rope_scaling.as_ref())?,
        ))
    }
    fn window(&self) -> Option<usize> {
        match self.flavor {
            Flavor::Qwen2 if self.use_sliding_window != Some(true) => None,
            _ => self.sliding_window,
        }
    }
}

struct Attention {
    /// q_proj, k_proj, v_proj
    qkv: Projections,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let (h, kv, d) = (
            cfg.dims.num_attention_heads,
            cfg.dims.kv_heads(),
            cfg.head_dim(),
        );
        let hidden = cfg.dims.hidden_size;
        let qkv_bias = cfg.attention_bias || cfg.flavor == Flavor::Qwen2;
        Ok(Attention {
            qkv: Projections::new(vec![
                vb.pp("q_proj").linear(hidden, h * d, qkv_bias)?,
                vb.pp("k_proj").linear(hidden, kv * d, qkv_bias)?,
                vb.pp("v_proj").linear(hidden, kv * d, qkv_bias)?,
            ])?,
            o_proj: vb.pp("o_proj").linear(h * d, hidden, cfg.attention_bias)?,
            heads: h,
            kv_heads: kv,
            scale: 1.0 / (d as f64).sqrt(),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        if !want && x.track_op() {
            let qkv = self.qkv.forward_cat(x)?;
            let (h, kv) = (self.heads, self.kv_heads);
            if let Some(out) = nn::fused_qkv_attention(&qkv, mask, rotary, h, kv, self.scale)? {
                return Ok((self.o_proj.forward(&out)?, None));
            }
        }
        let [q, k, v] = self.qkv.qkv_heads(x, self.heads, self.kv_heads)?;
        let (q, k) = (rotary.apply(&q)?, rotary.apply(&k)?);
        let (out, probs) = nn::attention(&q, &k, &v, mask, self.scale, want)?;
        Ok((self.o_proj.forward(&out)?, probs))
    }
}

struct Mlp {
    /// gate_proj, up_proj
    gate_up: Projections,
    down_proj: Linear,
    act: Activation,
}

impl Mlp {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.dims.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_up: Projections::new(vec![
                vb.pp("gate_proj").linear(h, i, cfg.mlp_bias)?,
                vb.pp("up_proj").linear(h, i, cfg.mlp_bias)?,
            ])?,
            down_proj: vb.pp("down_proj").linear(i, h, cfg.mlp_bias)?,
            act: Activation::from_name(&cfg.hidden_act)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = nn::gated(&self.gate_up.forward_cat(x)?, self.act)?;
        self.down_proj.forward(&h)
    }
}

/// One Llama layer: attention and MLP, each after an RMSNorm, with residuals.
pub struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let h = cfg.dims.hidden_size;
        Ok(Block {
            input_layernorm: RmsNorm::new(
                vb.pp("input_layernorm").get(h, "weight")?,
                cfg.rms_norm_eps,
            ),
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::new(
                vb.pp("post_attention_layernorm").get(h, "weight")?,
                cfg.rms_norm_eps,
            ),
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }
}

impl RotaryLayer for Block {
    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (a, probs) =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, rotary, mask, want)?;
        let x = (x + a)?;
        let m = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok(((x + m)?, probs))
    }
}

/// A Llama-family causal LM.
pub type Llama = RotaryDecoder<Block>;

impl Llama {
    pub fn load(vb: Vb, cfg: &Config, architecture: &str) -> Result<Self> {
        let (m, h) = (vb.pp("model"), cfg.dims.hidden_size);
        let (embed_tokens, layers) = m.body("embed_tokens", "layers", &cfg.dims, |vb, _| {
            Block::load(vb, cfg)
        })?;
        let norm = RmsNorm::new(m.pp("norm").get(h, "weight")?, cfg.rms_norm_eps);
        let tied = cfg.tie_word_embeddings;
        let lm_head = vb.lm_head("lm_head", tied, &m.pp("embed_tokens"), &embed_tokens, h)?;
        let (theta, scaling) = cfg.rope()?;
        let rotary = Rotary::new(
            cfg.head_dim(),
            theta,
            &scaling,
            cfg.max_position_embeddings,
            cfg.flavor == Flavor::Gguf,
            vb.device(),
        )?;
        let positions = cfg.max_position_embeddings;
        let mut info = ModelInfo::of(architecture, &cfg.dims, positions, &cfg.special);
        info.capabilities.gradients = !vb.is_quantized();
        let norm = FinalNorm::Rms(norm);
        let window = cfg.window();
        Ok(Llama::new(
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
            window,
            info,
        ))
    }
}
