//! The model layer: causal and masked language models behind two small traits.
//!
//! A [`CausalLm`] implements four methods (`info`, `embed`, `forward_hidden`, `lm_head`); the
//! trait provides the rest: batched forwards from token ids or from embeddings, next-token
//! log-probabilities at each sequence's last real position, and optional full logits and
//! attention probabilities. Gradients with respect to the input embeddings flow through
//! [`CausalLm::forward_embeds`] when the weights are dense (see [`Capabilities`]).
//!
//! Architectures live one per file; [`load`] builds one from a Hugging Face folder, a GGUF file
//! or a hub id.

pub mod arch;
pub mod architectures;
pub(crate) mod defaults;
pub mod dims;
pub mod gguf;
pub mod load;
pub mod nn;
pub mod weights;

// Each architecture as `model::NAME` (its file in arch/ is all a new one adds here).
pub use arch::*;

use candle_core::{Device, IndexOp, Tensor};
use serde::Serialize;

use crate::{Error, Result};

pub use load::{
    load_causal, load_masked, load_tokenizer, LoadOptions, LoadedMaskedModel, LoadedModel,
    ModelSource, TokenizerSpec,
};

/// The arithmetic of a loaded model's forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// The transformer body's linear layers stored in bf16 and multiplied in bf16 with f32 sums
    /// (AVX512-BF16, detected at run time); norms, attention, the LM head and everything else
    /// in f32. Forwards only: the f32 weights are not kept, so gradient methods refuse.
    Bf16,
}

impl Precision {
    pub const NAMES: &'static [&'static str] = &["f32", "bf16"];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `f32` or `bf16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(Error::input(format!(
                "unknown precision `{other}`; expected one of: {}",
                Precision::NAMES.join(", ")
            ))),
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            Precision::F32 => true,
            Precision::Bf16 => nn::bf16::available(),
        }
    }

    /// The fastest precision this CPU runs whose cost in accuracy was measured to be negligible
    /// for `probability_only` work (methods that read next-token probabilities only; see
    /// `docs/results/speed.md`); f32 for everything else.
    pub fn auto(probability_only: bool) -> Self {
        if probability_only && Precision::Bf16.available() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a loaded model can do beyond forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Gradients with respect to the input embeddings (false when weights are quantized).
    pub gradients: bool,
    /// Per-layer attention probabilities.
    pub attentions: bool,
    /// Weights this process holds: input embeddings (the soft metrics, gradient methods) and a
    /// forward from them. False for a model served elsewhere, which gives only next-token
    /// probabilities.
    pub weights: bool,
}

impl ModelInfo {
    /// A dense (f32) model's description, with gradients and attentions; special tokens are
    /// added with [`ModelInfo::with_special`].
    pub fn dense(
        architecture: &str,
        n_layers: usize,
        hidden_size: usize,
        n_heads: usize,
        n_kv_heads: usize,
        vocab_size: usize,
        max_positions: usize,
    ) -> Self {
        ModelInfo {
            architecture: architecture.to_string(),
            n_layers,
            hidden_size,
            n_heads,
            n_kv_heads,
            vocab_size,
            max_positions,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            weights: "f32".into(),
            capabilities: Capabilities {
                gradients: true,
                attentions: true,
                weights: true,
            },
        }
    }

    /// [`ModelInfo::dense`] from a config's sizes and special ids.
    pub fn of(
        architecture: &str,
        d: &dims::Dims,
        max_positions: usize,
        special: &weights::SpecialIds,
    ) -> Self {
        let (layers, hidden, heads) = (d.num_hidden_layers, d.hidden_size, d.num_attention_heads);
        ModelInfo::dense(
            architecture,
            layers,
            hidden,
            heads,
            d.kv_heads(),
            d.vocab_size,
            max_positions,
        )
        .with_specials(special)
    }

    /// [`ModelInfo::with_special`] from a config's special ids.
    pub fn with_specials(self, s: &weights::SpecialIds) -> Self {
        self.with_special(
            s.bos_token_id,
            weights::eos_ids(&s.eos_token_id),
            s.pad_token_id,
        )
    }

    pub fn with_special(mut self, bos: Option<u32>, eos: Vec<u32>, pad: Option<u32>) -> Self {
        self.bos_token_id = bos;
        self.eos_token_ids = eos;
        self.pad_token_id = pad;
        self
    }
}

/// Sizes and identity of a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Architecture name, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    pub n_layers: usize,
    pub hidden_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Rows of the embedding / output head.
    pub vocab_size: usize,
    /// The longest context the model accepts.
    pub max_positions: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// `f32`, or a description of the quantized formats in use, and of a reduced precision.
    pub weights: String,
    pub capabilities: Capabilities,
}

/// What a forward pass should return besides last-position log-probabilities.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outputs {
    /// Logits at every position, `[batch, len, vocab]`.
    pub logits: bool,
    /// Attention probabilities per layer, `[batch, heads, len, len]`.
    pub attentions: bool,
}

/// What a causal forward returns.
pub struct LmOutput {
    /// `[batch, vocab]`: log-softmax of the logits at each sequence's last real position.
    pub last_log_probs: Tensor,
    /// `[batch, len, vocab]` when requested (padded positions hold garbage).
    pub logits: Option<Tensor>,
    /// Per layer, `[batch, heads, len, len]`, when requested.
    pub attentions: Option<Vec<Tensor>>,
}

/// The body's output: final (normalized) hidden states and optional attentions.
pub struct Hidden {
    /// `[batch, len, hidden]`
    pub states: Tensor,
    pub attentions: Option<Vec<Tensor>>,
}

/// A decoder-only language model.
pub trait CausalLm: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// The description, to complete at load time (the loader names the weights' formats).
    fn info_mut(&mut self) -> &mut ModelInfo;

    /// The input embeddings of `ids: [batch, len]` (u32): what transformers'
    /// `get_input_embeddings()(ids)` returns and what `inputs_embeds` expects.
    fn embed(&self, ids: &Tensor) -> Result<Tensor>;

    /// The transformer body on `embeds: [batch, len, hidden]`, right-padded, with each row's
    /// real length. Returns the final normalized hidden states.
    fn forward_hidden(
        &self,
        embeds: &Tensor,
        lengths: &[usize],
        attentions: bool,
    ) -> Result<Hidden>;

    /// The output head on hidden states `[.., hidden]` → logits `[.., vocab]`.
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor>;

    fn device(&self) -> &Device;

    fn capabilities(&self) -> Capabilities {
        self.info().capabilities
    }

    fn vocab_size(&self) -> usize {
        self.info().vocab_size
    }

    /// Forward from embeddings. The head runs only at the last real positions unless full
    /// logits are requested.
    fn forward_embeds(
        &self,
        embeds: &Tensor,
        lengths: &[usize],
        want: Outputs,
    ) -> Result<LmOutput> {
        let (b, t, _) = embeds.dims3()?;
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
            return Err(Error::input(format!(
                "lengths {lengths:?} do not fit a batch of {b} rows of {t} positions"
            )));
        }
        check_len(self.info(), t)?;
        let hidden = self.forward_hidden(embeds, lengths, want.attentions)?;
        let (last_logits, logits) = if want.logits {
            let logits = self.lm_head(&hidden.states)?;
            (gather_last(&logits, lengths)?, Some(logits))
        } else {
            let last = gather_last(&hidden.states, lengths)?;
            (self.lm_head(&last)?, None)
        };
        Ok(LmOutput {
            last_log_probs: nn::log_softmax_last(&last_logits)?,
            logits,
            attentions: hidden.attentions,
        })
    }

    /// Forward from token ids; sequences may differ in length (they are right-padded).
    fn forward(&self, seqs: &[Vec<u32>], want: Outputs) -> Result<LmOutput> {
        let (ids, lengths) = pad_batch(seqs, self.info(), self.device())?;
        let embeds = self.embed(&ids)?;
        self.forward_embeds(&embeds, &lengths, want)
    }

    /// Next-token log-probabilities `[batch, vocab]` after each sequence.
    fn next_token_log_probs(&self, seqs: &[Vec<u32>]) -> Result<Tensor> {
        Ok(self.forward(seqs, Outputs::default())?.last_log_probs)
    }

    /// [`CausalLm::next_token_log_probs`] where the caller will read the ids in `focus` (the
    /// target, a contrast token): a model served elsewhere may give every other id only as a
    /// bound (see [`CausalLm::prob_error`]). A local model computes every id exactly.
    fn next_token_log_probs_for(&self, seqs: &[Vec<u32>], focus: &[u32]) -> Result<Tensor> {
        let _ = focus;
        self.next_token_log_probs(seqs)
    }

    /// The largest error of `exp(row[id])` for a row this model returned: 0 for a local model;
    /// for a served model in top-K mode, the K-th probability when `id` fell outside the top K.
    fn prob_error(&self, row: &[f32], id: u32) -> f32 {
        let _ = (row, id);
        0.0
    }

    /// Counters of a served model's scoring since the last call (requests, cache hits, rows
    /// whose target fell outside the top K), reset by the call; `None` for a local model.
    fn take_backend_stats(&self) -> Option<BackendStats> {
        None
    }
}

/// What scoring against a served model cost and how exact it was, over some span of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct BackendStats {
    /// HTTP requests that returned a scored row (retries not counted).
    pub requests: usize,
    /// Rows served from the cache of scored contexts.
    pub cache_hits: usize,
    /// Rows the caller asked for.
    pub rows: usize,
    /// Rows whose focus token (the target) fell outside the server's top K, so that its
    /// probability entered as the bound.
    pub bounded_rows: usize,
    /// The largest error any such probability can have (the largest K-th probability used as
    /// a bound); 0 when every probability was exact.
    pub max_prob_error: f32,
}

/// Fails with a clear message when a sequence is longer than the model accepts.
fn check_len(info: &ModelInfo, len: usize) -> Result<()> {
    if len > info.max_positions {
        return Err(Error::input(format!(
            "the context has {len} tokens, more than the model's maximum of {}",
            info.max_positions
        )));
    }
    Ok(())
}

/// Check a batch of token-id sequences against `info`: not empty, no empty sequence, none
/// longer than the model's maximum less `reserve` positions (a served model in exact mode
/// appends the target), every id inside the vocabulary.
pub fn check_batch(seqs: &[Vec<u32>], info: &ModelInfo, reserve: usize) -> Result<()> {
    if seqs.is_empty() {
        return Err(Error::input("empty batch"));
    }
    if seqs.iter().any(Vec::is_empty) {
        return Err(Error::input("cannot run the model on an empty sequence"));
    }
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    if t + reserve > info.max_positions {
        return Err(Error::input(format!(
            "the context has {t} tokens, more than the model's maximum of {}",
            info.max_positions.saturating_sub(reserve)
        )));
    }
    for s in seqs {
        if let Some(&bad) = s.iter().find(|&&id| id as usize >= info.vocab_size) {
            return Err(Error::input(format!(
                "token id {bad} is outside the model's vocabulary of {} ids",
                info.vocab_size
            )));
        }
    }
    Ok(())
}

/// Right-pad `seqs` into a `[batch, max_len]` u32 tensor, checking ids and lengths.
pub fn pad_batch(
    seqs: &[Vec<u32>],
    info: &ModelInfo,
    device: &Device,
) -> Result<(Tensor, Vec<usize>)> {
    check_batch(seqs, info, 0)?;
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let pad = info.pad_token_id.unwrap_or(0);
    let mut flat = Vec::with_capacity(seqs.len() * t);
    for s in seqs {
        flat.extend_from_slice(s);
        flat.extend(std::iter::repeat_n(pad, t - s.len()));
    }
    let ids = Tensor::from_vec(flat, (seqs.len(), t), device)?;
    Ok((ids, seqs.iter().map(Vec::len).collect()))
}

/// Rows `x[i, lengths[i] - 1]` of `x: [batch, len, d]` → `[batch, d]`.
pub fn gather_last(x: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let (_, t, _) = x.dims3()?;
    if lengths.iter().all(|&l| l == t) {
        return Ok(x.i((.., t - 1))?.contiguous()?);
    }
    let rows: Vec<Tensor> = lengths
        .iter()
        .enumerate()
        .map(|(i, &l)| x.i((i, l - 1)))
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}

/// A bidirectional encoder with a masked-LM head (BERT, RoBERTa).
pub trait MaskedLm: Send + Sync {
    fn info(&self) -> &ModelInfo;
    fn device(&self) -> &Device;

    /// Encoder output `[batch, len, hidden]` for right-padded `ids` with the rows' lengths.
    fn encode(&self, ids: &Tensor, lengths: &[usize], attentions: bool) -> Result<Hidden>;

    /// The MLM head on hidden states `[.., hidden]` → logits `[.., vocab]`.
    fn mlm_head(&self, hidden: &Tensor) -> Result<Tensor>;

    /// Logits at every position, `[batch, len, vocab]`, and attentions on request.
    fn forward(
        &self,
        seqs: &[Vec<u32>],
        attentions: bool,
    ) -> Result<(Tensor, Option<Vec<Tensor>>)> {
        let (ids, lengths) = pad_batch(seqs, self.info(), self.device())?;
        let h = self.encode(&ids, &lengths, attentions)?;
        Ok((self.mlm_head(&h.states)?, h.attentions))
    }

    /// Logits `[n, vocab]` at the given `(row, position)` pairs only.
    fn logits_at(&self, seqs: &[Vec<u32>], at: &[(usize, usize)]) -> Result<Tensor> {
        let (ids, lengths) = pad_batch(seqs, self.info(), self.device())?;
        for &(r, p) in at {
            if r >= seqs.len() || p >= seqs[r].len() {
                return Err(Error::input(format!(
                    "position ({r}, {p}) is outside the batch"
                )));
            }
        }
        let h = self.encode(&ids, &lengths, false)?.states;
        let rows: Vec<Tensor> = at
            .iter()
            .map(|&(r, p)| h.i((r, p)))
            .collect::<candle_core::Result<_>>()?;
        self.mlm_head(&Tensor::stack(&rows, 0)?)
    }
}

/// The accessors every decoder shares, for a struct with `info: ModelInfo` and
/// `device: Device` fields: `info()`, `device()`, and, when the modules are named,
/// `embed()` and `lm_head()` through them (`decoder_accessors!(embed_tokens, lm_head)`).
macro_rules! decoder_accessors {
    () => {
        fn info(&self) -> &$crate::model::ModelInfo {
            &self.info
        }
        fn info_mut(&mut self) -> &mut $crate::model::ModelInfo {
            &mut self.info
        }
        fn device(&self) -> &candle_core::Device {
            &self.device
        }
    };
    ($embed:ident, $head:ident) => {
        decoder_accessors!();
        fn embed(&self, ids: &candle_core::Tensor) -> $crate::Result<candle_core::Tensor> {
            Ok(self.$embed.forward(ids)?)
        }
        fn lm_head(&self, hidden: &candle_core::Tensor) -> $crate::Result<candle_core::Tensor> {
            Ok(self.$head.forward(hidden)?)
        }
    };
}
pub(crate) use decoder_accessors;

/// One layer of a [`RotaryDecoder`]: the hidden states after it, and its attention
/// probabilities when `want` is set.
pub(crate) trait RotaryLayer: Send + Sync {
    fn forward(
        &self,
        x: &Tensor,
        rotary: &nn::Rotary,
        mask: &Tensor,
        want: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)>;
}

/// The final norm of a decoder.
pub(crate) enum FinalNorm {
    Rms(nn::RmsNorm),
    Layer(nn::LayerNorm),
}

impl FinalNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            FinalNorm::Rms(n) => n.forward(x),
            FinalNorm::Layer(n) => n.forward(x),
        }
    }
}

/// A decoder with rotary positions: token embeddings, its layers under one causal mask (with a
/// sliding window when set), a final norm and the LM head. Llama, GPT-J and GPT-NeoX are this
/// with a layer of their own (`llama::Llama` = `RotaryDecoder<llama::Block>`, ...).
pub struct RotaryDecoder<L> {
    embed: nn::Embedding,
    layers: Vec<L>,
    norm: FinalNorm,
    head: nn::Linear,
    rotary: nn::Rotary,
    window: Option<usize>,
    info: ModelInfo,
    device: Device,
}

impl<L> RotaryDecoder<L> {
    /// Assembled from its parts; the device is the embeddings'.
    pub(crate) fn new(
        embed: nn::Embedding,
        layers: Vec<L>,
        norm: FinalNorm,
        head: nn::Linear,
        rotary: nn::Rotary,
        window: Option<usize>,
        info: ModelInfo,
    ) -> Self {
        let device = embed.device().clone();
        RotaryDecoder {
            embed,
            layers,
            norm,
            head,
            rotary,
            window,
            info,
            device,
        }
    }
}

impl<L: RotaryLayer> CausalLm for RotaryDecoder<L> {
    decoder_accessors!(embed, head);

    fn forward_hidden(&self, embeds: &Tensor, lengths: &[usize], want: bool) -> Result<Hidden> {
        decode(
            embeds.clone(),
            lengths,
            self.window,
            &self.layers,
            want,
            |l, x, mask| l.forward(x, &self.rotary, mask, want),
            |x| Ok(self.norm.forward(x)?),
        )
    }
}

/// The body of a decoder with one causal mask (with a sliding window when given): the layers
/// from `x`, then `last` (the final norm, and any projection) on the result.
pub(crate) fn decode<L, E>(
    x: Tensor,
    lengths: &[usize],
    window: Option<usize>,
    layers: &[L],
    want: bool,
    layer: impl Fn(&L, &Tensor, &Tensor) -> std::result::Result<(Tensor, Option<Tensor>), E>,
    last: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Hidden>
where
    Error: From<E>,
{
    let t = x.dim(1)?;
    let mask = nn::Masks::new(lengths, t, x.device()).build(true, window)?;
    let (x, attentions) = run_layers(x, layers, want, |l, x| layer(l, x, &mask))?;
    Ok(Hidden {
        states: last(&x)?,
        attentions,
    })
}

/// The decoder loop every architecture shares: run `layer` over `layers` in order from `x`, and
/// collect each layer's attention probabilities when `want` is set.
pub(crate) fn run_layers<L, E>(
    x: Tensor,
    layers: &[L],
    want: bool,
    mut layer: impl FnMut(&L, &Tensor) -> std::result::Result<(Tensor, Option<Tensor>), E>,
) -> Result<(Tensor, Option<Vec<Tensor>>)>
where
    Error: From<E>,
{
    let mut x = x;
    let mut attns = want.then(Vec::new);
    for l in layers {
        let (y, p) = layer(l, &x)?;
        x = y;
        if let (Some(a), Some(p)) = (attns.as_mut(), p) {
            a.push(p);
        }
    }
    Ok((x, attns))
}
