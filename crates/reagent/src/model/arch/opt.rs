//! OPT.
//!
//! Paper: Zhang et al. 2022, "OPT: Open Pre-trained Transformer Language Models"
//! (<https://arxiv.org/abs/2205.01068>). Upstream modelling file: transformers
//! `models/opt/modeling_opt.py`. Learned positions offset by 2, ReLU MLP, pre- or post-LayerNorm
//! (`do_layer_norm_before`; OPT-350m is post-LN and projects 512-wide embeddings in and out).

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::model::dims::Dims;
use crate::model::nn::{self, Activation, Embedding, LayerNorm, Linear, Projections};
use crate::model::weights::{layer_norm, SpecialIds, Vb};
use crate::model::{decode, decoder_accessors, CausalLm, Hidden, ModelInfo};
use crate::Result;

/// OPT's learned position table starts at this offset (a fairseq legacy).
const POSITION_OFFSET: usize = 2;

/// `config.json` of an OPT model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dims: Dims,
    pub ffn_dim: usize,
    pub max_position_embeddings: usize,
    pub word_embed_proj_dim: Option<usize>,
    #[serde(default = "crate::model::defaults::yes")]
    pub do_layer_norm_before: bool,
    #[serde(default = "crate::model::defaults::yes")]
    pub enable_bias: bool,
    #[serde(default = "crate::model::defaults::yes")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default = "crate::model::defaults::relu")]
    pub activation_function: String,
    #[serde(flatten)]
    pub special: SpecialIds,
}

const LN_EPS: f64 = 1e-5;

struct Layer {
    /// q_proj, k_proj, v_proj
    qkv: Projections,
    out_proj: Linear,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    act: Activation,
    heads: usize,
    scale: f64,
    pre_ln: bool,
}

impl Layer {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let (h, b) = (cfg.dims.hidden_size, cfg.enable_bias);
        let a = vb.pp("self_attn");
        Ok(Layer {
            qkv: Projections::separate(vec![
                a.pp("q_proj").linear(h, h, b)?,
                a.pp("k_proj").linear(h, h, b)?,
                a.pp("v_proj").linear(h, h, b)?,
            ]),
            out_proj: a.pp("out_proj").linear(h, h, b)?,
            self_attn_layer_norm: layer_norm(&vb.pp("self_attn_layer_norm"), h, LN_EPS)?,
            fc1: vb.pp("fc1").linear(h, cfg.ffn_dim, b)?,
            fc2: vb.pp("fc2").linear(cfg.ffn_dim, h, b)?,
            final_layer_norm: layer_norm(&vb.pp("final_layer_norm"), h, LN_EPS)?,
            act: Activation::from_name(&cfg.activation_function)?,
            heads: cfg.dims.num_attention_heads,
            scale: cfg.dims.scale(),
            pre_ln: cfg.do_layer_norm_before,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let h = if self.pre_ln {
            self.self_attn_layer_norm.forward(x)?
        } else {
            x.clone()
        };
        let [q, k, v] = self.qkv.qkv_heads(&h, self.heads, self.heads)?;
        let (a, probs) = nn::attention(&q, &k, &v, mask, self.scale, want)?;
        let mut x = (x + self.out_proj.forward(&a)?)?;
        if !self.pre_ln {
            x = self.self_attn_layer_norm.forward(&x)?;
        }
        let h = if self.pre_ln {
            self.final_layer_norm.forward(&x)?
        } else {
            x.clone()
        };
        let m = self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(&h)?)?)?;
        let mut x = (x + m)?;
        if !self.pre_ln {
            x = self.final_layer_norm.forward(&x)?;
        }
        Ok((x, probs))
    }
}

/// OPT with its (tied) LM head.
pub struct Opt {
    embed_tokens: Embedding,
    embed_positions: Tensor,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    final_layer_norm: Option<LayerNorm>,
    layers: Vec<Layer>,
    head: Linear,
    info: ModelInfo,
    device: Device,
}

impl Opt {
    pub fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        if !cfg.layer_norm_elementwise_affine {
            return Err(crate::Error::Unsupported(
                "OPT without elementwise-affine layer norms is not supported".into(),
            ));
        }
        let d = if vb.contains("model.decoder.embed_tokens.weight") {
            vb.pp("model").pp("decoder")
        } else {
            vb.pp("decoder")
        };
        let h = cfg.dims.hidden_size;
        let proj = cfg.word_embed_proj_dim.unwrap_or(h);
        let embed_tokens = d.pp("embed_tokens").embedding(cfg.dims.vocab_size, proj)?;
        let embed_positions = d
            .pp("embed_positions")
            .get((cfg.max_position_embeddings + POSITION_OFFSET, h), "weight")?;
        let (project_in, project_out) = if proj != h {
            (
                Some(d.pp("project_in").linear(proj, h, false)?),
                Some(d.pp("project_out").linear(h, proj, false)?),
            )
        } else {
            (None, None)
        };
        let final_layer_norm = if d.contains("final_layer_norm.weight") {
            Some(layer_norm(&d.pp("final_layer_norm"), h, LN_EPS)?)
        } else {
            None
        };
        let layers = d
            .pp("layers")
            .layers(cfg.dims.num_hidden_layers, |vb, _| Layer::load(vb, cfg))?;
        let head = vb.lm_head("lm_head", false, &d.pp("embed_tokens"), &embed_tokens, proj)?;
        let positions = cfg.max_position_embeddings;
        let info = ModelInfo::of("OPTForCausalLM", &cfg.dims, positions, &cfg.special);
        Ok(Opt {
            embed_tokens,
            embed_positions,
            project_in,
            project_out,
            final_layer_norm,
            layers,
            head,
            info,
            device: vb.device().clone(),
        })
    }
}

impl CausalLm for Opt {
    decoder_accessors!(embed_tokens, head);
    fn forward_hidden(&self, embeds: &Tensor, lengths: &[usize], want: bool) -> Result<Hidden> {
        let t = embeds.dim(1)?;
        let x = match &self.project_in {
            Some(p) => p.forward(embeds)?,
            None => embeds.clone(),
        };
        // Right padding: real tokens sit at positions 0..len, as transformers computes them from
        // the attention mask's cumulative sum.
        let pos = self.embed_positions.narrow(0, POSITION_OFFSET, t)?;
        let x = x.broadcast_add(&pos)?;
        decode(
            x,
            lengths,
            None,
            &self.layers,
            want,
            |l, x, mask| l.forward(x, mask, want),
            |x| {
                let mut x = x.clone();
                if let Some(n) = &self.final_layer_norm {
                    x = n.forward(&x)?;
                }
                if let Some(p) = &self.project_out {
                    x = p.forward(&x)?;
                }
                Ok(x)
            },
        )
    }
}
