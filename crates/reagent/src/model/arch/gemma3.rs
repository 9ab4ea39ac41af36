//! Gemma 3 (text).
//!
//! Paper: Gemma Team 2025, "Gemma 3 Technical Report" (<https://arxiv.org/abs/2503.19786>).
//! Upstream modelling file: transformers `models/gemma3/modeling_gemma3.py`. Scaled embeddings,
//! RMSNorm with a `(1 + w)` weight, q/k norms, sandwich norms around attention and MLP,
//! interleaved sliding-window (local RoPE base) and global (global RoPE base) layers, attention
//! scale `query_pre_attn_scalar^-1/2`, tied head.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::model::dims::Dims;
use crate::model::nn::{
    self, Activation, Embedding, Linear, Masks, Projections, RmsNorm, RopeScaling, Rotary,
};
use crate::model::weights::{SpecialIds, Vb};
use crate::model::{decoder_accessors, CausalLm, Hidden, ModelInfo};
use crate::{Error, Result};

/// `config.json` of a Gemma 3 text model (`Gemma3TextConfig`; a multimodal config's
/// `text_config` has the same shape).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dims: Dims,
    pub intermediate_size: usize,
    pub head_dim: usize,
    #[serde(default = "crate::model::defaults::eps_1e6")]
    pub rms_norm_eps: f64,
    #[serde(default = "crate::model::defaults::positions_131072")]
    pub max_position_embeddings: usize,
    pub query_pre_attn_scalar: Option<f64>,
    pub sliding_window: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub sliding_window_pattern: Option<usize>,
    pub rope_theta: Option<f64>,
    pub rope_local_base_freq: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers v5: `{"full_attention": {...}, "sliding_attention": {...}}`.
    pub rope_parameters: Option<serde_json::Value>,
    pub final_logit_softcapping: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default = "crate::model::defaults::gelu_pytorch_tanh")]
    pub hidden_activation: String,
    #[serde(default = "crate::model::defaults::yes")]
    pub tie_word_embeddings: bool,
    #[serde(flatten)]
    pub special: SpecialIds,
}

impl Config {
    /// Whether layer `i` uses the sliding window. transformers' default pattern is five local
    /// layers then one global.
    pub fn is_sliding(&self, i: usize) -> Result<bool> {
        if let Some(types) = &self.layer_types {
            return match types.get(i).map(String::as_str) {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                Some(other) => Err(Error::Unsupported(format!("Gemma 3 layer type `{other}`"))),
                None => Err(Error::missing(format!("`layer_types[{i}]`"), "config.json")),
            };
        }
        let pattern = self.sliding_window_pattern.unwrap_or(6);
        Ok(!(i + 1).is_multiple_of(pattern))
    }

    /// (base, scaling) for global and local layers.
    fn ropes(&self) -> Result<((f64, RopeScaling), (f64, RopeScaling))> {
        if let Some(p) = self.rope_parameters.as_ref().filter(|p| p.is_object()) {
            let read = |key: &str, fallback: Option<f64>| -> Result<(f64, RopeScaling)> {
                let sub = p.get(key).filter(|v| v.is_object());
                let theta = sub
                    .and_then(|s| s.get("rope_theta"))
                    .and_then(|v| v.as_f64())
                    .or(fallback)
                    .ok_or_else(|| {
                        Error::missing(format!("`rope_parameters.{key}.rope_theta`"), "config.json")
                    })?;
                Ok((theta, RopeScaling::from_json(sub)?))
            };
            if p.get("full_attention").is_some() {
                return Ok((
                    read("full_attention", self.rope_theta)?,
                    read("sliding_attention", self.rope_local_base_freq)?,
                ));
            }
            // A flat rope_parameters object describes the global layers.
            let theta = p
                .get("rope_theta")
                .and_then(|v| v.as_f64())
                .or(self.rope_theta);
            let theta = theta.ok_or_else(|| Error::missing("`rope_theta`", "config.json"))?;
            let local = self.rope_local_base_freq.unwrap_or(10_000.0);
            return Ok((
                (theta, RopeScaling::from_json(Some(p))?),
                (local, RopeScaling::None),
            ));
        }
        let theta = self
            .rope_theta
            .ok_or_else(|| Error::missing("`rope_theta`", "config.json"))?;
        Ok((
            (theta, RopeScaling::from_json(self.rope_scaling.as_ref())?),
            (
                self.rope_local_base_freq.unwrap_or(10_000.0),
                RopeScaling::None,
            ),
        ))
    }
}

fn gemma_norm(vb: &Vb, dim: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new((vb.get(dim, "weight")? + 1.0)?, eps))
}

struct Attention {
    /// q_proj, k_proj, v_proj
    qkv: Projections,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    scale: f64,
    softcap: Option<f64>,
}

struct Mlp {
    /// gate_proj, up_proj
    gate_up: Projections,
    down_proj: Linear,
    act: Activation,
}

struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: Mlp,
    post_feedforward_layernorm: RmsNorm,
    sliding: bool,
}

impl Block {
    fn load(vb: Vb, cfg: &Config, i: usize) -> Result<Self> {
        let (h, d) = (cfg.dims.hidden_size, cfg.head_dim);
        let (nh, kv) = (cfg.dims.num_attention_heads, cfg.dims.kv_heads());
        let eps = cfg.rms_norm_eps;
        let a = vb.pp("self_attn");
        let m = vb.pp("mlp");
        Ok(Block {
            input_layernorm: gemma_norm(&vb.pp("input_layernorm"), h, eps)?,
            self_attn: Attention {
                qkv: Projections::new(vec![
                    a.pp("q_proj").linear(h, nh * d, false)?,
                    a.pp("k_proj").linear(h, kv * d, false)?,
                    a.pp("v_proj").linear(h, kv * d, false)?,
                ])?,
                o_proj: a.pp("o_proj").linear(nh * d, h, false)?,
                q_norm: gemma_norm(&a.pp("q_norm"), d, eps)?,
                k_norm: gemma_norm(&a.pp("k_norm"), d, eps)?,
                heads: nh,
                kv_heads: kv,
                scale: 1.0 / cfg.query_pre_attn_scalar.unwrap_or(d as f64).sqrt(),
                softcap: cfg.attn_logit_softcapping,
            },
            post_attention_layernorm: gemma_norm(&vb.pp("post_attention_layernorm"), h, eps)?,
            pre_feedforward_layernorm: gemma_norm(&vb.pp("pre_feedforward_layernorm"), h, eps)?,
            mlp: Mlp {
                gate_up: Projections::new(vec![
                    m.pp("gate_proj").linear(h, cfg.intermediate_size, false)?,
                    m.pp("up_proj").linear(h, cfg.intermediate_size, false)?,
                ])?,
                down_proj: m.pp("down_proj").linear(cfg.intermediate_size, h, false)?,
                act: Activation::from_name(&cfg.hidden_activation)?,
            },
            post_feedforward_layernorm: gemma_norm(&vb.pp("post_feedforward_layernorm"), h, eps)?,
            sliding: cfg.is_sliding(i)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let a = &self.self_attn;
        let h = self.input_layernorm.forward(x)?;
        let [q, k, v] = a.qkv.qkv_heads(&h, a.heads, a.kv_heads)?;
        let q = rotary.apply(&a.q_norm.forward(&q)?)?;
        let k = rotary.apply(&a.k_norm.forward(&k)?)?;
        let (o, probs) = nn::attention_softcapped(&q, &k, &v, mask, a.scale, a.softcap, want)?;
        let o = self
            .post_attention_layernorm
            .forward(&a.o_proj.forward(&o)?)?;
        let x = (x + o)?;
        let h = self.pre_feedforward_layernorm.forward(&x)?;
        let m = nn::gated(&self.mlp.gate_up.forward_cat(&h)?, self.mlp.act)?;
        let m = self.mlp.down_proj.forward(&m)?;
        let m = self.post_feedforward_layernorm.forward(&m)?;
        Ok(((x + m)?, probs))
    }
}

/// A Gemma 3 causal LM.
pub struct Gemma3 {
    embed_tokens: Embedding,
    embed_scale: f64,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary_global: Rotary,
    rotary_local: Rotary,
    window: usize,
    final_softcap: Option<f64>,
    info: ModelInfo,
    device: Device,
}

impl Gemma3 {
    pub fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let m = if vb.contains("model.language_model.embed_tokens.weight") {
            vb.pp("model").pp("language_model")
        } else {
            vb.pp("model")
        };
        let h = cfg.dims.hidden_size;
        if cfg.dims.num_key_value_heads.is_none() {
            return Err(Error::missing("`num_key_value_heads`", "config.json"));
        }
        let (embed_tokens, layers) = m.body("embed_tokens", "layers", &cfg.dims, |vb, i| {
            Block::load(vb, cfg, i)
        })?;
        let norm = gemma_norm(&m.pp("norm"), h, cfg.rms_norm_eps)?;
        let tied = cfg.tie_word_embeddings;
        let lm_head = vb.lm_head("lm_head", tied, &m.pp("embed_tokens"), &embed_tokens, h)?;
        let ((g_theta, g_scaling), (l_theta, l_scaling)) = cfg.ropes()?;
        let max_pos = cfg.max_position_embeddings;
        let rotary =
            |theta, scaling| Rotary::new(cfg.head_dim, theta, scaling, max_pos, false, vb.device());
        let (rotary_global, rotary_local) =
            (rotary(g_theta, &g_scaling)?, rotary(l_theta, &l_scaling)?);
        let window = cfg
            .sliding_window
            .ok_or_else(|| Error::missing("`sliding_window`", "config.json"))?;
        let mut info = ModelInfo::of("Gemma3ForCausalLM", &cfg.dims, max_pos, &cfg.special);
        info.capabilities.gradients = !vb.is_quantized();
        Ok(Gemma3 {
            embed_tokens,
            // transformers keeps the scale as an f32 tensor: sqrt(hidden) rounded to f32.
            embed_scale: (h as f32).sqrt() as f64,
            layers,
            norm,
            lm_head,
            rotary_global,
            rotary_local,
            window,
            final_softcap: cfg.final_logit_softcapping,
            info,
            device: vb.device().clone(),
        })
    }

    pub fn set_weights_description(&mut self, s: String) {
        self.info.weights = s;
    }
}

impl CausalLm for Gemma3 {
    decoder_accessors!();
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok((self.embed_tokens.forward(ids)? * self.embed_scale)?)
    }
    fn forward_hidden(&self, embeds: &Tensor, lengths: &[usize], want: bool) -> Result<Hidden> {
        let t = embeds.dim(1)?;
        let masks = Masks::new(lengths, t, &self.device);
        let global = masks.build(true, None)?;
        let local = masks.build(true, Some(self.window))?;
        let (x, attns) = crate::model::run_layers(embeds.clone(), &self.layers, want, |l, x| {
            let (rot, mask) = if l.sliding {
                (&self.rotary_local, &local)
            } else {
                (&self.rotary_global, &global)
            };
            l.forward(x, rot, mask, want)
        })?;
        Ok(Hidden {
            states: self.norm.forward(&x)?,
            attentions: attns,
        })
    }
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(hidden)?;
        Ok(match self.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }
}
