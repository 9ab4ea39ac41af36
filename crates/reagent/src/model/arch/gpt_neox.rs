//! GPT-NeoX and Pythia.
//!
//! Paper: Black et al. 2022, "GPT-NeoX-20B: An Open-Source Autoregressive Language Model"
//! (<https://arxiv.org/abs/2204.06745>); Biderman et al. 2023, "Pythia". Upstream modelling file:
//! transformers `models/gpt_neox/modeling_gpt_neox.py`. Fused QKV projection laid out per head,
//! rotary embedding on a fraction (`rotary_pct`) of each head, parallel or sequential residual.

use candle_core::Tensor;
use serde::Deserialize;

use crate::model::dims::Dims;
use crate::model::nn::{self, Activation, LayerNorm, Linear, RopeScaling, Rotary};
use crate::model::weights::{layer_norm, SpecialIds, Vb};
use crate::model::{FinalNorm, ModelInfo, RotaryDecoder, RotaryLayer};
use crate::Result;

/// `config.json` of a GPT-NeoX model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dims: Dims,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub rotary_pct: Option<f64>,
    pub rotary_emb_base: Option<f64>,
    /// transformers v5 moves the rotary settings here (`rope_theta`, `partial_rotary_factor`).
    pub rope_parameters: Option<serde_json::Value>,
    pub partial_rotary_factor: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "crate::model::defaults::eps_1e5")]
    pub layer_norm_eps: f64,
    #[serde(default = "crate::model::defaults::gelu")]
    pub hidden_act: String,
    #[serde(default = "crate::model::defaults::yes")]
    pub use_parallel_residual: bool,
    #[serde(default = "crate::model::defaults::yes")]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(flatten)]
    pub special: SpecialIds,
}

impl Config {
    fn rope(&self) -> Result<(f64, f64, RopeScaling)> {
        let p = self.rope_parameters.as_ref().filter(|p| p.is_object());
        let get = |k: &str| p.and_then(|p| p.get(k)).and_then(|v| v.as_f64());
        let theta = get("rope_theta")
            .or(self.rotary_emb_base)
            .unwrap_or(10_000.0);
        let pct = get("partial_rotary_factor")
            .or(self.partial_rotary_factor)
            .or(self.rotary_pct)
            .unwrap_or(0.25);
        let scaling = match p {
            Some(p) => RopeScaling::from_json(Some(p))?,
            None => RopeScaling::from_json(self.rope_scaling.as_ref())?,
        };
        Ok((theta, pct, scaling))
    }
}

/// One GPT-NeoX layer: attention and MLP, in parallel or in sequence (`use_parallel_residual`).
pub struct Layer {
    input_layernorm: LayerNorm,
    post_attention_layernorm: LayerNorm,
    query_key_value: Linear,
    dense: Linear,
    dense_h_to_4h: Linear,
    dense_4h_to_h: Linear,
    act: Activation,
    heads: usize,
    scale: f64,
    parallel: bool,
}

impl Layer {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.dims.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps;
        let (a, m, b) = (vb.pp("attention"), vb.pp("mlp"), cfg.attention_bias);
        Ok(Layer {
            input_layernorm: layer_norm(&vb.pp("input_layernorm"), h, eps)?,
            post_attention_layernorm: layer_norm(&vb.pp("post_attention_layernorm"), h, eps)?,
            query_key_value: a.pp("query_key_value").linear(h, 3 * h, b)?,
            dense: a.pp("dense").linear(h, h, b)?,
            dense_h_to_4h: m.pp("dense_h_to_4h").linear(h, i, true)?,
            dense_4h_to_h: m.pp("dense_4h_to_h").linear(i, h, true)?,
            act: Activation::from_name(&cfg.hidden_act)?,
            heads: cfg.dims.num_attention_heads,
            scale: cfg.dims.scale(),
            parallel: cfg.use_parallel_residual,
        })
    }
}

impl RotaryLayer for Layer {
    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (b, t, h) = x.dims3()?;
        let d = h / self.heads;
        // The fused projection is laid out [heads, (q | k | v), head_dim].
        let qkv = self
            .query_key_value
            .forward(&self.input_layernorm.forward(x)?)?
            .reshape((b, t, self.heads, 3 * d))?
            .transpose(1, 2)?; // [b, heads, t, 3d]
        let q = rotary.apply(&qkv.narrow(3, 0, d)?)?;
        let k = rotary.apply(&qkv.narrow(3, d, d)?)?;
        let v = qkv.narrow(3, 2 * d, d)?;
        let (a, probs) = nn::attention(&q, &k, &v, mask, self.scale, want)?;
        let a = self.dense.forward(&a)?;
        let mlp = |y: &Tensor| -> candle_core::Result<Tensor> {
            let y = self.post_attention_layernorm.forward(y)?;
            self.dense_4h_to_h
                .forward(&self.act.forward(&self.dense_h_to_4h.forward(&y)?)?)
        };
        let out = if self.parallel {
            ((x + &a)? + mlp(x)?)?
        } else {
            let y = (x + &a)?;
            (&y + mlp(&y)?)?
        };
        Ok((out, probs))
    }
}

/// GPT-NeoX with its LM head (`embed_out`).
pub type GptNeoX = RotaryDecoder<Layer>;

impl GptNeoX {
    pub fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let g = vb.pp("gpt_neox");
        let (h, head_dim) = (cfg.dims.hidden_size, cfg.dims.head_dim());
        let (embed_in, layers) = g.body("embed_in", "layers", &cfg.dims, |vb, _| {
            Layer::load(vb, cfg)
        })?;
        let final_layer_norm = layer_norm(&g.pp("final_layer_norm"), h, cfg.layer_norm_eps)?;
        let tied = cfg.tie_word_embeddings;
        let head = vb.lm_head("embed_out", tied, &g.pp("embed_in"), &embed_in, h)?;
        let (theta, pct, scaling) = cfg.rope()?;
        if !(pct > 0.0 && pct <= 1.0) {
            return Err(crate::Error::input(format!(
                "rotary_pct must be in (0, 1], got {pct}"
            )));
        }
        let rot_dim = (head_dim as f64 * pct) as usize;
        let positions = cfg.max_position_embeddings;
        let rotary = Rotary::new(rot_dim, theta, &scaling, positions, false, vb.device())?;
        let info = ModelInfo::of("GPTNeoXForCausalLM", &cfg.dims, positions, &cfg.special);
        let norm = FinalNorm::Layer(final_layer_norm);
        Ok(GptNeoX::new(
            embed_in, layers, norm, head, rotary, None, info,
        ))
    }
}
