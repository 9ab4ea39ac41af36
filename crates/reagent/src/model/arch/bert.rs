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

use crate::model::nn::{self, Activation, Embedding, LayerNorm, Linear, Masks};
use crate::model::weights::layer_norm;
use crate::model::weights::SpecialIds;
use crate::model::weights::Vb;
use crate::model::{Hidden, MaskedLm, ModelInfo};
use crate::{Error, Result};

/// `config.json` of a BERT or RoBERTa model.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
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
    query: Linear,
    key: Linear,
    value: Linear,
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
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let a = vb.pp("attention");
        Ok(Layer {
            query: a.pp("self").pp("query").linear(h, h, true)?,
            key: a.pp("self").pp("key").linear(h, h, true)?,
            value: a.pp("self").pp("value").linear(h, h, true)?,
            attn_out: a.pp("output").pp("dense").linear(h, h, true)?,
            attn_ln: layer_norm(&a.pp("output").pp("LayerNorm"), h, eps)?,
            intermediate: vb.pp("intermediate").pp("dense").linear(h, i, true)?,
            output: vb.pp("output").pp("dense").linear(i, h, true)?,
            out_ln: layer_norm(&vb.pp("output").pp("LayerNorm"), h, eps)?,
            act: Activation::from_name(&cfg.hidden_act)?,
            heads: cfg.num_attention_heads,
            scale: 1.0 / ((h / cfg.num_attention_heads) as f64).sqrt(),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let q = nn::split_heads(&self.query.forward(x)?, self.heads)?;
        let k = nn::split_heads(&self.key.forward(x)?, self.heads)?;
        let v = nn::split_heads(&self.value.forward(x)?, self.heads)?;
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
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
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
            word: Embedding::new(e.pp("word_embeddings").get((cfg.vocab_size, h), "weight")?),
            position: e
                .pp("position_embeddings")
                .get((cfg.max_position_embeddings, h), "weight")?,
            token_type: e
                .pp("token_type_embeddings")
                .get((cfg.type_vocab_size, h), "weight")?,
            layer_norm: layer_norm(&e.pp("LayerNorm"), h, eps)?,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(m.pp("encoder").pp("layer").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let act = Activation::from_name(&cfg.hidden_act)?;
        let head = match flavor {
            Flavor::Bert => {
                let p = vb.pp("cls").pp("predictions");
                let decoder = if p.contains("decoder.weight") {
                    p.pp("decoder").linear(h, cfg.vocab_size, false)?
                } else {
                    e.pp("word_embeddings")
                        .tied_linear(&embeddings.word, "weight")?
                };
                let bias = match p.get_opt(cfg.vocab_size, "bias")? {
                    Some(b) => b,
                    None => p.pp("decoder").get(cfg.vocab_size, "bias")?,
                };
                MlmHead {
                    dense: p.pp("transform").pp("dense").linear(h, h, true)?,
                    act,
                    layer_norm: layer_norm(&p.pp("transform").pp("LayerNorm"), h, eps)?,
                    decoder,
                    bias,
                }
            }
            Flavor::Roberta => {
                let p = vb.pp("lm_head");
                let decoder = if p.contains("decoder.weight") {
                    p.pp("decoder").linear(h, cfg.vocab_size, false)?
                } else {
                    e.pp("word_embeddings")
                        .tied_linear(&embeddings.word, "weight")?
                };
                let bias = match p.get_opt(cfg.vocab_size, "bias")? {
                    Some(b) => b,
                    None => p.pp("decoder").get(cfg.vocab_size, "bias")?,
                };
                MlmHead {
                    dense: p.pp("dense").linear(h, h, true)?,
                    act,
                    layer_norm: layer_norm(&p.pp("layer_norm"), h, eps)?,
                    decoder,
                    bias,
                }
            }
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
        let info = ModelInfo::dense(
            match flavor {
                Flavor::Bert => "BertForMaskedLM",
                Flavor::Roberta => "RobertaForMaskedLM",
            },
            cfg.num_hidden_layers,
            h,
            cfg.num_attention_heads,
            cfg.num_attention_heads,
            cfg.vocab_size,
            max_positions,
        )
        .with_special(
            cfg.special.bos_token_id,
            crate::model::weights::eos_ids(&cfg.special.eos_token_id),
            Some(pad_id),
        );
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
