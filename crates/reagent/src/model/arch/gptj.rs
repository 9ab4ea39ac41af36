//! GPT-J.
//!
//! Model: Wang & Komatsuzaki 2021, "GPT-J-6B: A 6 Billion Parameter Autoregressive Language Model"
//! (<https://github.com/kingoflolz/mesh-transformer-jax>). Upstream modelling file: transformers
//! `models/gptj/modeling_gptj.py`. Parallel attention and MLP from one LayerNorm, rotary
//! embedding on the first `rotary_dim` channels of each head with adjacent pairs rotated, untied
//! head with a bias.

use candle_core::Tensor;
use serde::Deserialize;

use crate::model::dims::Dims;
use crate::model::nn::{self, Activation, LayerNorm, Linear, Projections, RopeScaling, Rotary};
use crate::model::weights::{layer_norm, SpecialIds, Vb};
use crate::model::{FinalNorm, ModelInfo, RotaryDecoder, RotaryLayer};
use crate::Result;

/// `config.json` of a GPT-J model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dims: Dims,
    pub n_positions: usize,
    pub n_inner: Option<usize>,
    pub rotary_dim: Option<usize>,
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
    /// q_proj, k_proj, v_proj
    qkv: Projections,
    out_proj: Linear,
    fc_in: Linear,
    fc_out: Linear,
    act: Activation,
    heads: usize,
    scale: f64,
}

impl Block {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let h = cfg.dims.hidden_size;
        let inner = cfg.n_inner.unwrap_or(4 * h);
        let a = vb.pp("attn");
        Ok(Block {
            ln_1: layer_norm(&vb.pp("ln_1"), h, cfg.layer_norm_epsilon)?,
            qkv: Projections::separate(vec![
                a.pp("q_proj").linear(h, h, false)?,
                a.pp("k_proj").linear(h, h, false)?,
                a.pp("v_proj").linear(h, h, false)?,
            ]),
            out_proj: a.pp("out_proj").linear(h, h, false)?,
            fc_in: vb.pp("mlp").pp("fc_in").linear(h, inner, true)?,
            fc_out: vb.pp("mlp").pp("fc_out").linear(inner, h, true)?,
            act: Activation::from_name(&cfg.activation_function)?,
            heads: cfg.dims.num_attention_heads,
            scale: cfg.dims.scale(),
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
        let [q, k, v] = self.qkv.qkv_heads(&h, self.heads, self.heads)?;
        let (q, k) = (rotary.apply(&q)?, rotary.apply(&k)?);
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
        let (h, head_dim) = (cfg.dims.hidden_size, cfg.dims.head_dim());
        let (wte, blocks) = t.body("wte", "h", &cfg.dims, |vb, _| Block::load(vb, cfg))?;
        let ln_f = layer_norm(&t.pp("ln_f"), h, cfg.layer_norm_epsilon)?;
        let head = vb
            .pp("lm_head")
            .f32()
            .linear(h, cfg.dims.vocab_size, true)?;
        let rot_dim = cfg.rotary_dim.unwrap_or(head_dim);
        if rot_dim > head_dim {
            return Err(crate::Error::input(format!(
                "rotary_dim {rot_dim} is wider than the heads ({head_dim})"
            )));
        }
        let positions = cfg.n_positions;
        let rotary = Rotary::new(
            rot_dim,
            10_000.0,
            &RopeScaling::None,
            positions,
            true,
            vb.device(),
        )?;
        let info = ModelInfo::of("GPTJForCausalLM", &cfg.dims, positions, &cfg.special);
        let norm = FinalNorm::Layer(ln_f);
        Ok(GptJ::new(wte, blocks, norm, head, rotary, None, info))
    }
}
