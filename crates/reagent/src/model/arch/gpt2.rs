//! GPT-2.
//!
//! Paper: Radford et al. 2019, "Language Models are Unsupervised Multitask Learners".
//! Upstream modelling file: transformers `models/gpt2/modeling_gpt2.py`. Learned absolute
//! positions, pre-LayerNorm blocks, `Conv1D` projections (weights stored `[in, out]`), tied head.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::model::dims::Dims;
use crate::model::nn::{self, Activation, Embedding, LayerNorm, Linear};
use crate::model::weights::{layer_norm, SpecialIds, Vb};
use crate::model::{decode, decoder_accessors, CausalLm, Hidden, ModelInfo};
use crate::Result;

/// `config.json` of a GPT-2 model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dims: Dims,
    pub n_positions: usize,
    pub n_inner: Option<usize>,
    #[serde(default = "crate::model::defaults::eps_1e5")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "crate::model::defaults::gelu_new")]
    pub activation_function: String,
    #[serde(default = "crate::model::defaults::yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(flatten)]
    pub special: SpecialIds,
}

struct Attention {
    c_attn: Linear,
    c_proj: Linear,
    heads: usize,
    scale: f64,
}

struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: Vb, cfg: &Config, layer: usize) -> Result<Self> {
        let h = cfg.dims.hidden_size;
        let inner = cfg.n_inner.unwrap_or(4 * h);
        let mut scale = if cfg.scale_attn_weights {
            cfg.dims.scale()
        } else {
            1.0
        };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        Ok(Block {
            ln_1: layer_norm(&vb.pp("ln_1"), h, cfg.layer_norm_epsilon)?,
            attn: Attention {
                c_attn: vb.pp("attn").pp("c_attn").conv1d(h, 3 * h)?,
                c_proj: vb.pp("attn").pp("c_proj").conv1d(h, h)?,
                heads: cfg.dims.num_attention_heads,
                scale,
            },
            ln_2: layer_norm(&vb.pp("ln_2"), h, cfg.layer_norm_epsilon)?,
            mlp: Mlp {
                c_fc: vb.pp("mlp").pp("c_fc").conv1d(h, inner)?,
                c_proj: vb.pp("mlp").pp("c_proj").conv1d(inner, h)?,
                act: Activation::from_name(&cfg.activation_function)?,
            },
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let h = x.dim(2)?;
        let qkv = self.attn.c_attn.forward(&self.ln_1.forward(x)?)?;
        let q = nn::split_heads(&qkv.narrow(2, 0, h)?, self.attn.heads)?;
        let k = nn::split_heads(&qkv.narrow(2, h, h)?, self.attn.heads)?;
        let v = nn::split_heads(&qkv.narrow(2, 2 * h, h)?, self.attn.heads)?;
        let (a, probs) = nn::attention(&q, &k, &v, mask, self.attn.scale, want)?;
        let x = (x + self.attn.c_proj.forward(&a)?)?;
        let m = self.mlp.c_fc.forward(&self.ln_2.forward(&x)?)?;
        let m = self.mlp.c_proj.forward(&self.mlp.act.forward(&m)?)?;
        Ok(((x + m)?, probs))
    }
}

/// GPT-2 with its (tied) LM head.
pub struct Gpt2 {
    wte: Embedding,
    /// Learned positions `[n_positions, hidden]`.
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    info: ModelInfo,
    device: Device,
}

impl Gpt2 {
    pub fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        // Checkpoints saved by transformers prefix the body with `transformer.`; OpenAI's
        // original conversion does not.
        let t = if vb.contains("transformer.wte.weight") {
            vb.pp("transformer")
        } else {
            vb.clone()
        };
        let h = cfg.dims.hidden_size;
        let (wte, blocks) = t.body("wte", "h", &cfg.dims, |vb, i| Block::load(vb, cfg, i))?;
        let wpe = t.pp("wpe").get((cfg.n_positions, h), "weight")?;
        let ln_f = layer_norm(&t.pp("ln_f"), h, cfg.layer_norm_epsilon)?;
        let head = vb.lm_head("lm_head", false, &t.pp("wte"), &wte, h)?;
        let info = ModelInfo::of("GPT2LMHeadModel", &cfg.dims, cfg.n_positions, &cfg.special);
        Ok(Gpt2 {
            wte,
            wpe,
            blocks,
            ln_f,
            head,
            info,
            device: vb.device().clone(),
        })
    }
}

impl CausalLm for Gpt2 {
    decoder_accessors!(wte, head);
    fn forward_hidden(&self, embeds: &Tensor, lengths: &[usize], want: bool) -> Result<Hidden> {
        let pos = self.wpe.narrow(0, 0, embeds.dim(1)?)?;
        let x = embeds.broadcast_add(&pos)?;
        decode(
            x,
            lengths,
            None,
            &self.blocks,
            want,
            |b, x, mask| b.forward(x, mask, want),
            |x| Ok(self.ln_f.forward(x)?),
        )
    }
}
