//! BERT and RoBERTa (including DistilRoBERTa) with their masked-LM heads.
//!
//! Papers: Devlin et al. 2019, "BERT" (<https://arxiv.org/abs/1810.04805>); Liu et al. 2019,
//! "RoBERTa" (<https://arxiv.org/abs/1907.11692>). Upstream modelling files: transformers
//! `models/bert/modeling_bert.py` and `models/roberta/modeling_roberta.py`. As in candle's
//! `bert.rs`, the masked LM is composed: an encoder plus an MLM head. RoBERTa differs only in
//! its position ids (offset by `padding_idx + 1`) and its head's names; its head has a bias
//! (STACK-NOTES pitfall 7).

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::model::dims::Dims;
use crate::model::nn::{self, Activation, Embedding, LayerNorm, Linear, Masks, Projections};
use crate::model::weights::{layer_norm, SpecialIds, Vb};
use crate::model::{Hidden, MaskedLm, ModelInfo};
use crate::{Error, Result};

/// `config.json` of a BERT or RoBERTa model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dims: Dims,
    pub intermediate_size: usize,
    #[serde(default = "crate::model::defaults::gelu")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    #[serde(default = "crate::model::defaults::eps_1e12")]
    pub layer_norm_eps: f64,
    #[serde(flatten)]
    pub special: SpecialIds,
    pub position_embedding_type: Option<String>,
}

fn one() -> usize {
    1
}

/// Which of the two families: they differ in names, position ids and head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Bert,
    Roberta,
}

struct Embeddings {
    word: Embedding,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
}

struct Layer {
    /// query, key, value
    qkv: Projections,
    attn_out: Linear,
    attn_ln: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_ln: LayerNorm,
    act: Activation,
    heads: usize,
    scale: f64,
}

impl Layer {
    fn load(vb: Vb, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.dims.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps;
        let a = vb.pp("attention");
        Ok(Layer {
            qkv: Projections::separate(vec![
                a.pp("self").pp("query").linear(h, h, true)?,
                a.pp("self").pp("key").linear(h, h, true)?,
                a.pp("self").pp("value").linear(h, h, true)?,
            ]),
            attn_out: a.pp("output").pp("dense").linear(h, h, true)?,
            attn_ln: layer_norm(&a.pp("output").pp("LayerNorm"), h, eps)?,
            intermediate: vb.pp("intermediate").pp("dense").linear(h, i, true)?,
            output: vb.pp("output").pp("dense").linear(i, h, true)?,
            out_ln: layer_norm(&vb.pp("output").pp("LayerNorm"), h, eps)?,
            act: Activation::from_name(&cfg.hidden_act)?,
            heads: cfg.dims.num_attention_heads,
            scale: cfg.dims.scale(),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let [q, k, v] = self.qkv.qkv_heads(x, self.heads, self.heads)?;
        let (a, probs) = nn::attention(&q, &k, &v, mask, self.scale, want)?;
        let x = self.attn_ln.forward(&(self.attn_out.forward(&a)? + x)?)?;
        let m = self
            .output
            .forward(&self.act.forward(&self.intermediate.forward(&x)?)?)?;
        Ok((self.out_ln.forward(&(m + x)?)?, probs))
    }
}

/// The MLM head: dense → activation → LayerNorm → decoder (tied to the word embeddings) + bias.
struct MlmHead {
    dense: Linear,
    act: Activation,
    layer_norm: LayerNorm,
    decoder: Linear,
    bias: Tensor,
}

impl MlmHead {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self
            .layer_norm
            .forward(&self.act.forward(&self.dense.forward(x)?)?)?;
        self.decoder.forward(&x)?.broadcast_add(&self.bias)
    }
}

/// A BERT or RoBERTa masked LM.
pub struct BertMlm {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    head: MlmHead,
    flavor: Flavor,
    pad_id: u32,
    info: ModelInfo,
    device: Device,
}

impl BertMlm {
    pub fn load(vb: Vb, cfg: &Config, flavor: Flavor) -> Result<Self> {
        if let Some(p) = cfg.position_embedding_type.as_deref() {
            if p != "absolute" {
                return Err(Error::Unsupported(format!(
                    "position_embedding_type `{p}` is not supported (only `absolute`)"
                )));
            }
        }
        let (h, eps) = (cfg.dims.hidden_size, cfg.layer_norm_eps);
        let base = match flavor {
            Flavor::Bert => "bert",
            Flavor::Roberta => "roberta",
        };
        let m = if vb.contains(&format!("{base}.embeddings.word_embeddings.weight")) {
            vb.pp(base)
        } else {
            vb.clone()
        };
        let e = m.pp("embeddings");
        let embeddings = Embeddings {
            word: e.pp("word_embeddings").embedding(cfg.dims.vocab_size, h)?,
            position: e
                .pp("position_embeddings")
                .get((cfg.max_position_embeddings, h), "weight")?,
            token_type: e
                .pp("token_type_embeddings")
                .get((cfg.type_vocab_size, h), "weight")?,
            layer_norm: layer_norm(&e.pp("LayerNorm"), h, eps)?,
        };
        let n = cfg.dims.num_hidden_layers;
        let layers = m
            .pp("encoder.layer")
            .layers(n, |vb, _| Layer::load(vb, cfg))?;
        // The head's names: BERT's `cls.predictions` with a `transform` block, RoBERTa's `lm_head`.
        let (p, dense, norm) = match flavor {
            Flavor::Bert => (
                vb.pp("cls.predictions"),
                "transform.dense",
                "transform.LayerNorm",
            ),
            Flavor::Roberta => (vb.pp("lm_head"), "dense", "layer_norm"),
        };
        let decoder = if p.contains("decoder.weight") {
            p.pp("decoder").linear(h, cfg.dims.vocab_size, false)?
        } else {
            e.pp("word_embeddings")
                .tied_linear(&embeddings.word, "weight")?
        };
        let bias = match p.get_opt(cfg.dims.vocab_size, "bias")? {
            Some(b) => b,
            None => p.pp("decoder").get(cfg.dims.vocab_size, "bias")?,
        };
        let head = MlmHead {
            dense: p.pp(dense).linear(h, h, true)?,
            act: Activation::from_name(&cfg.hidden_act)?,
            layer_norm: layer_norm(&p.pp(norm), h, eps)?,
            decoder,
            bias,
        };
        let pad_id = cfg.special.pad_token_id.unwrap_or(match flavor {
            Flavor::Bert => 0,
            Flavor::Roberta => 1,
        });
        let max_positions = match flavor {
            // RoBERTa's positions start after the padding index.
            Flavor::Roberta => cfg
                .max_position_embeddings
                .saturating_sub(pad_id as usize + 1),
            Flavor::Bert => cfg.max_position_embeddings,
        };
        let name = match flavor {
            Flavor::Bert => "BertForMaskedLM",
            Flavor::Roberta => "RobertaForMaskedLM",
        };
        let mut info = ModelInfo::of(name, &cfg.dims, max_positions, &cfg.special);
        info.pad_token_id = Some(pad_id);
        Ok(BertMlm {
            embeddings,
            layers,
            head,
            flavor,
            pad_id,
            info,
            device: vb.device().clone(),
        })
    }
}

impl MaskedLm for BertMlm {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn encode(&self, ids: &Tensor, lengths: &[usize], want: bool) -> Result<Hidden> {
        let t = ids.dim(1)?;
        let first = match self.flavor {
            Flavor::Bert => 0,
            Flavor::Roberta => self.pad_id as usize + 1,
        };
        let e = &self.embeddings;
        let x = e
            .word
            .forward(ids)?
            .broadcast_add(&e.position.narrow(0, first, t)?)?
            .broadcast_add(&e.token_type.narrow(0, 0, 1)?)?;
        let mut x = e.layer_norm.forward(&x)?;
        let mask = Masks::new(lengths, t, &self.device).build(false, None)?;
        let mut attns = want.then(Vec::new);
        for l in &self.layers {
            let (y, p) = l.forward(&x, &mask, want)?;
            x = y;
            if let (Some(a), Some(p)) = (attns.as_mut(), p) {
                a.push(p);
            }
        }
        Ok(Hidden {
            states: x,
            attentions: attns,
        })
    }
    fn mlm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(hidden)?)
    }
}
