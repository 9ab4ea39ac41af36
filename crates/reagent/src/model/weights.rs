//! Where weights come from: safetensors files, a GGUF file, or tensors in memory (tests).
//!
//! Model files ask for tensors by their Hugging Face names through [`Vb`] `pp(..)` chains, so a
//! line of Rust matches a line of `modeling_*.py`. A GGUF source translates those names to
//! llama.cpp's (`model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`) and undoes
//! llama.cpp's storage conventions, in [`super::gguf`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Shape, Tensor};

use super::nn::{Embedding, LayerNorm, Linear, Weight};
use crate::{Error, Result};

/// A store of named tensors.
pub trait WeightSource: Send + Sync {
    /// For error messages: the file (or "memory").
    fn describe(&self) -> String;
    fn contains(&self, name: &str) -> bool;
    /// The tensor as dense f32.
    fn tensor(&self, name: &str, device: &Device) -> Result<Tensor>;
    /// The tensor in its stored quantized form, when the source has one.
    fn qtensor(&self, _name: &str, _device: &Device) -> Option<Result<Arc<QTensor>>> {
        None
    }
}

/// Memory-mapped safetensors files (one, or the shards of an index).
pub struct SafetensorsSource {
    files: candle_core::safetensors::MmapedSafetensors,
    describe: String,
}

impl SafetensorsSource {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        for p in paths {
            if !p.is_file() {
                return Err(Error::ModelSource(format!(
                    "{}: weight file not found",
                    p.display()
                )));
            }
        }
        // SAFETY: the files are mapped read-only; like every mmap user we assume nobody truncates
        // them while the model is loaded.
        let files = unsafe { candle_core::safetensors::MmapedSafetensors::multi(paths) }
            .map_err(|e| Error::ModelSource(format!("cannot read safetensors: {e}")))?;
        let describe = match paths {
            [one] => one.display().to_string(),
            _ => format!(
                "{} safetensors shards in {}",
                paths.len(),
                paths[0].parent().unwrap_or(Path::new(".")).display()
            ),
        };
        Ok(SafetensorsSource { files, describe })
    }
}

impl WeightSource for SafetensorsSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }
    fn contains(&self, name: &str) -> bool {
        self.files.get(name).is_ok()
    }
    fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        if !self.contains(name) {
            return Err(Error::missing(format!("tensor `{name}`"), self.describe()));
        }
        Ok(self.files.load(name, device)?.to_dtype(DType::F32)?)
    }
}

/// Tensors held in memory, for tests and tiny models.
pub struct MemorySource(pub HashMap<String, Tensor>);

impl WeightSource for MemorySource {
    fn describe(&self) -> String {
        "in-memory weights".into()
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let t = self
            .0
            .get(name)
            .ok_or_else(|| Error::missing(format!("tensor `{name}`"), self.describe()))?;
        Ok(t.to_device(device)?.to_dtype(DType::F32)?)
    }
}

/// A view of a weight source under a name prefix, as candle's `VarBuilder`.
#[derive(Clone)]
pub struct Vb {
    src: Arc<dyn WeightSource>,
    prefix: String,
    device: Device,
    quantized: bool,
    precision: super::Precision,
}

impl Vb {
    /// `quantized`: build linear layers from the source's quantized tensors when it has them.
    pub fn new(src: Arc<dyn WeightSource>, device: &Device, quantized: bool) -> Self {
        Vb {
            src,
            prefix: String::new(),
            device: device.clone(),
            quantized,
            precision: super::Precision::F32,
        }
    }

    /// The same view, building dense linear layers for `precision` (see [`super::Precision`]).
    pub fn with_precision(mut self, precision: super::Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The same view, building f32 layers whatever the model's precision (the LM heads:
    /// log-probabilities are the methods' signal, and a head applied at the last position
    /// costs little).
    pub fn f32(&self) -> Vb {
        self.clone().with_precision(super::Precision::F32)
    }

    /// A dense linear layer in the view's precision.
    fn reduced(&self, l: Linear) -> Result<Linear> {
        Ok(match self.precision {
            super::Precision::F32 => l,
            super::Precision::Bf16 => l.into_bf16()?,
        })
    }

    /// The same source one level down: `vb.pp("model").pp("layers").pp(3)`.
    pub fn pp(&self, s: impl ToString) -> Vb {
        let s = s.to_string();
        let prefix = if self.prefix.is_empty() {
            s
        } else {
            format!("{}.{s}", self.prefix)
        };
        Vb {
            prefix,
            ..self.clone()
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The full name of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.src.contains(&self.path(name))
    }

    /// The tensor `name`, checked against `shape`.
    pub fn get(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        let path = self.path(name);
        let t = self.src.tensor(&path, &self.device)?;
        let shape = shape.into();
        if t.shape() != &shape {
            return Err(Error::ModelSource(format!(
                "tensor `{path}` in {} has shape {:?}, the config implies {:?}",
                self.src.describe(),
                t.dims(),
                shape.dims()
            )));
        }
        Ok(t)
    }

    /// `get`, or `None` when the tensor is absent.
    pub fn get_opt(&self, shape: impl Into<Shape>, name: &str) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(shape, name).map(Some)
        } else {
            Ok(None)
        }
    }

    fn weight(&self, out_dim: usize, in_dim: usize) -> Result<Weight> {
        if self.quantized {
            if let Some(q) = self.src.qtensor(&self.path("weight"), &self.device) {
                let q = q?;
                if q.shape().dims() != [out_dim, in_dim] {
                    return Err(Error::ModelSource(format!(
                        "tensor `{}` has shape {:?}, the config implies [{out_dim}, {in_dim}]",
                        self.path("weight"),
                        q.shape().dims()
                    )));
                }
                // The blocks stay in memory and are decoded a panel at a time for the bf16
                // kernel or, in f32, for the f32 one. Formats without a decoder here (F16, BF16
                // tensors) fall back to candle's quantized product.
                if let Some(p) = super::nn::bf16::QuantBf16::new(q.clone()) {
                    let p = Arc::new(p);
                    return Ok(if self.precision == super::Precision::Bf16 {
                        Weight::QuantBf16(p)
                    } else {
                        Weight::QuantF32(p)
                    });
                }
                return Ok(Weight::Quantized(Arc::new(QMatMul::from_arc(q)?)));
            }
        }
        Ok(Weight::Dense(self.get((out_dim, in_dim), "weight")?))
    }

    /// A linear layer stored as `weight: [out, in]` (+ `bias: [out]`).
    pub fn linear(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let w = self.weight(out_dim, in_dim)?;
        let b = if bias {
            Some(self.get(out_dim, "bias")?)
        } else {
            None
        };
        self.reduced(Linear::new(w, b, out_dim))
    }

    /// A linear layer whose bias may or may not be present.
    pub fn linear_opt_bias(&self, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let w = self.weight(out_dim, in_dim)?;
        self.reduced(Linear::new(w, self.get_opt(out_dim, "bias")?, out_dim))
    }

    /// GPT-2's `Conv1D`: `weight: [in, out]`, transposed relative to `nn.Linear`.
    pub fn conv1d(&self, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let w = self.get((in_dim, out_dim), "weight")?.t()?.contiguous()?;
        let b = self.get(out_dim, "bias")?;
        self.reduced(Linear::new(Weight::Dense(w), Some(b), out_dim))
    }

    /// `n` layers stored under this view's `0`, `1`, ...: `load(view, index)` builds each.
    pub fn layers<T>(
        &self,
        n: usize,
        mut load: impl FnMut(Vb, usize) -> Result<T>,
    ) -> Result<Vec<T>> {
        (0..n).map(|i| load(self.pp(i), i)).collect()
    }

    /// A decoder's body as most store it: the token embedding `[vocab, hidden]` under `embed`
    /// and the layers under `layers` (`layers.0`, `layers.1`, ...), each built by `load`.
    pub fn body<L>(
        &self,
        embed: &str,
        layers: &str,
        d: &super::dims::Dims,
        load: impl FnMut(Vb, usize) -> Result<L>,
    ) -> Result<(Embedding, Vec<L>)> {
        let e = self.pp(embed).embedding(d.vocab_size, d.hidden_size)?;
        Ok((e, self.pp(layers).layers(d.num_hidden_layers, load)?))
    }

    /// The LM head: this view's separate `head` weight (`[vocab, in_dim]`, no bias, in f32 as
    /// every head is) where the model has one and `tied` is false, else the input embedding
    /// (`embed`, stored under `embed_vb`) reused as the head.
    pub fn lm_head(
        &self,
        head: &str,
        tied: bool,
        embed_vb: &Vb,
        embed: &Embedding,
        in_dim: usize,
    ) -> Result<Linear> {
        let (vocab, _) = embed.dims()?;
        if !tied && self.contains(&format!("{head}.weight")) {
            self.pp(head).f32().linear(in_dim, vocab, false)
        } else {
            embed_vb.tied_linear(embed, "weight")
        }
    }

    /// A linear layer that reuses an embedding's `[out, in]` table (tied embeddings). In
    /// quantized mode the table's stored quantized form under `name` is used when there is one.
    pub fn tied_linear(&self, embed: &Embedding, name: &str) -> Result<Linear> {
        let (out_dim, _) = embed.dims()?;
        if self.quantized {
            if let Some(q) = self.src.qtensor(&self.path(name), &self.device) {
                let q = q?;
                // The head stays f32 in every precision (as a dense model's does): its blocks
                // are decoded a panel at a time for the f32 kernel.
                let weight = match super::nn::bf16::QuantBf16::new(q.clone()) {
                    Some(p) => Weight::QuantF32(Arc::new(p)),
                    None => Weight::Quantized(Arc::new(QMatMul::from_arc(q)?)),
                };
                return Ok(Linear::new(weight, None, out_dim));
            }
        }
        let table = embed.table().ok_or_else(|| {
            Error::ModelSource(format!(
                "`{}` is kept quantized and has no dense form for a tied head",
                self.path(name)
            ))
        })?;
        Ok(Linear::new(Weight::Dense(table.clone()), None, out_dim))
    }

    /// An embedding table `[rows, dim]` stored as `weight`; in quantized mode kept in its blocks
    /// when the source has them in a format with a block decoder.
    pub fn embedding(&self, rows: usize, dim: usize) -> Result<Embedding> {
        if self.quantized {
            if let Some(q) = self.src.qtensor(&self.path("weight"), &self.device) {
                let q = q?;
                if q.shape().dims() != [rows, dim] {
                    return Err(Error::ModelSource(format!(
                        "tensor `{}` has shape {:?}, the config implies [{rows}, {dim}]",
                        self.path("weight"),
                        q.shape().dims()
                    )));
                }
                if let Some(b) = super::nn::bf16::QuantBf16::new(q) {
                    return Ok(Embedding::quantized(Arc::new(b), &self.device));
                }
            }
        }
        Ok(Embedding::new(self.get((rows, dim), "weight")?))
    }

    /// Whether linear layers will run quantized.
    pub fn is_quantized(&self) -> bool {
        self.quantized
    }
}

/// The special token ids a `config.json` declares (flattened into each architecture's config).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SpecialIds {
    pub bos_token_id: Option<u32>,
    /// An int or a list.
    pub eos_token_id: Option<serde_json::Value>,
    pub pad_token_id: Option<u32>,
}

/// `eos_token_id` may be an int or a list.
pub(crate) fn eos_ids(v: &Option<serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

/// A LayerNorm's `weight` and `bias` under `vb`.
pub(crate) fn layer_norm(vb: &Vb, dim: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(dim, "weight")?,
        vb.get(dim, "bias")?,
        eps,
    ))
}
