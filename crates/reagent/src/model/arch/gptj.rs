//! GPT-J.
//!
//! Model: Wang & Komatsuzaki 2021, "GPT-J-6B: A 6 Billion Parameter Autoregressive Language Model"
//! (<https://github.com/kingoflolz/mesh-transformer-jax>). Upstream modelling file: transformers
//! `models/gptj/modeling_gptj.py`. Parallel attention and MLP from one LayerNorm, rotary
//! embedding on the first `rotary_dim` channels of each head with adjacent pairs rotated, untied
//! head with a bias.

use candle_core::Tensor;
use serde::Deserialize;

use crate::model::nn::{self, Activation, Embedding, LayerNorm, Linear, RopeScaling, Rotary};
use crate::model::weights::layer_norm;
use crate::model::weights::SpecialIds;
use crate::model::weights::Vb;
use crate::model::{FinalNorm, ModelInfo, RotaryDecoder, RotaryLayer};
use crate::Result;

/// `config.json` of a GPT-J model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    pub n_positions: usize,
    pub n_inner: Option<usize>,
    pub rotary_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "crate::model::defaults::eps_1e5")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "crate::model::defaults::gelu_new")]
    pub activation_function: String,
    #[serde(flatten)]
    pub special: SpecialIds,
}

/// One GPT-J layer: attention and MLP in parallel from one LayerNorm.
pub struct Block {
    ln_1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    fc_in: Linear,
    fc_out: Linear,
    act: Activation,
    heads: usize,
    scale: f64,
}

impl Block {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let h = cfg.n_embd;
        let inner = cfg.n_inner.unwrap_or(4 * h);
        let a = vb.pp("attn");
        Ok(Block {
            ln_1: layer_norm(&vb.pp("ln_1"), h, cfg.layer_norm_epsilon)?,
            q_proj: a.pp("q_proj").linear(h, h, false)?,
            k_proj: a.pp("k_proj").linear(h, h, false)?,
            v_proj: a.pp("v_proj").linear(h, h, false)?,
            out_proj: a.pp("out_proj").linear(h, h, false)?,
            fc_in: vb.pp("mlp").pp("fc_in").linear(h, inner, true)?,
            fc_out: vb.pp("mlp").pp("fc_out").linear(inner, h, true)?,
            act: Activation::from_name(&cfg.activation_function)?,
            heads: cfg.n_head,
            scale: 1.0 / ((h / cfg.n_head) as f64).sqrt(),
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
        let h = self.ln_1.forward(x)?;
        let q = rotary.apply(&nn::split_heads(&self.q_proj.forward(&h)?, self.heads)?)?;
        let k = rotary.apply(&nn::split_heads(&self.k_proj.forward(&h)?, self.heads)?)?;
        let v = nn::split_heads(&self.v_proj.forward(&h)?, self.heads)?;
        let (a, probs) = nn::attention(&q, &k, &v, mask, self.scale, want)?;
        let a = self.out_proj.forward(&a)?;
        let m = self
            .fc_out
            .forward(&self.act.forward(&self.fc_in.forward(&h)?)?)?;
        Ok(((x + a)? + m)?).map(|y| (y, probs))
    }
}

/// GPT-J with its LM head.
pub type GptJ = RotaryDecoder<Block>;

impl GptJ {
    pub fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let t = vb.pp("transformer");
        let h = cfg.n_embd;
        let head_dim = h / cfg.n_head;
        let wte = Embedding::new(t.pp("wte").get((cfg.vocab_size, h), "weight")?);
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(t.pp("h").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = layer_norm(&t.pp("ln_f"), h, cfg.layer_norm_epsilon)?;
        let head = vb.pp("lm_head").f32().linear(h, cfg.vocab_size, true)?;
        let rot_dim = cfg.rotary_dim.unwrap_or(head_dim);
        if rot_dim > head_dim {
            return Err(crate::Error::input(format!(
                "rotary_dim {rot_dim} is wider than the heads ({head_dim})"
            )));
        }
        let rotary = Rotary::new(
            rot_dim,
            10_000.0,
            &RopeScaling::None,
            cfg.n_positions,
            true,
            vb.device(),
        )?;
        let info = ModelInfo::dense(
            "GPTJForCausalLM",
            cfg.n_layer,
            h,
            cfg.n_head,
            cfg.n_head,
            cfg.vocab_size,
            cfg.n_positions,
        )
        .with_specials(&cfg.special);
        let norm = FinalNorm::Layer(ln_f);
        Ok(GptJ::new(wte, blocks, norm, head, rotary, None, info))
    }
}
