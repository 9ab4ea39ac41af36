//! OPT.
//!
//! Paper: Zhang et al. 2022, "OPT: Open Pre-trained Transformer Language Models"
//! (<https://arxiv.org/abs/2205.01068>). Upstream modelling file: transformers
//! `models/opt/modeling_opt.py`. Learned positions offset by 2, ReLU MLP, pre- or post-LayerNorm
//! (`do_layer_norm_before`; OPT-350m is post-LN and projects 512-wide embeddings in and out).

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::model::nn::{self, Activation, Embedding, LayerNorm, Linear};
use crate::model::weights::layer_norm;
use crate::model::weights::SpecialIds;
use crate::model::weights::Vb;
use crate::model::{decode, decoder_accessors, CausalLm, Hidden, ModelInfo};
use crate::Result;

/// OPT's learned position table starts at this offset (a fairseq legacy).
const POSITION_OFFSET: usize = 2;

/// `config.json` of an OPT model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub ffn_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub vocab_size: usize,
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
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
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
        let (h, b) = (cfg.hidden_size, cfg.enable_bias);
        let a = vb.pp("self_attn");
        Ok(Layer {
            q_proj: a.pp("q_proj").linear(h, h, b)?,
            k_proj: a.pp("k_proj").linear(h, h, b)?,
            v_proj: a.pp("v_proj").linear(h, h, b)?,
            out_proj: a.pp("out_proj").linear(h, h, b)?,
            self_attn_layer_norm: layer_norm(&vb.pp("self_attn_layer_norm"), h, LN_EPS)?,
            fc1: vb.pp("fc1").linear(h, cfg.ffn_dim, b)?,
            fc2: vb.pp("fc2").linear(cfg.ffn_dim, h, b)?,
            final_layer_norm: layer_norm(&vb.pp("final_layer_norm"), h, LN_EPS)?,
            act: Activation::from_name(&cfg.activation_function)?,
            heads: cfg.num_attention_heads,
            scale: 1.0 / ((h / cfg.num_attention_heads) as f64).sqrt(),
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
        let q = nn::split_heads(&self.q_proj.forward(&h)?, self.heads)?;
        let k = nn::split_heads(&self.k_proj.forward(&h)?, self.heads)?;
        let v = nn::split_heads(&self.v_proj.forward(&h)?, self.heads)?;
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
        let h = cfg.hidden_size;
        let proj = cfg.word_embed_proj_dim.unwrap_or(h);
        let embed_tokens =
            Embedding::new(d.pp("embed_tokens").get((cfg.vocab_size, proj), "weight")?);
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
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(d.pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let head = vb.lm_head("lm_head", false, &d.pp("embed_tokens"), &embed_tokens, proj)?;
        let info = ModelInfo::dense(
            "OPTForCausalLM",
            cfg.num_hidden_layers,
            h,
            cfg.num_attention_heads,
            cfg.num_attention_heads,
            cfg.vocab_size,
            cfg.max_position_embeddings,
        )
        .with_specials(&cfg.special);
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
