//! # reagent
//!
//! Feature attribution for generative language models, on [candle]. For each generated (or
//! given) token, score every context token by how much the prediction depends on it.
//!
//! The headline method is ReAGent (Zhao & Shan 2024, "ReAGent: A Model-agnostic Feature
//! Attribution Method for Generative Language Models", <https://arxiv.org/abs/2402.00794>),
//! which needs no gradients and no access to weights; the usual gradient and attention
//! baselines and the paper's faithfulness metrics come with it.
//!
//! Data flows one way: [`model`] → [`method`] → [`result`] → [`render`] (HTML here; the terminal
//! heatmap in the CLI).
//!
//! ```
//! use reagent::method::reagent::{build_sampler, MlmPick, Reagent, ReagentConfig, SamplerKind};
//! use reagent::{attribute, load_causal, LoadOptions, NoProgress, Plan, Targets};
//!
//! # fn main() -> reagent::Result<()> {
//! // Any Hugging Face folder, .gguf file or hub id; here a tiny test model.
//! let model = load_causal("../../fixtures/models/llama_tied", &LoadOptions::default())?;
//! let sampler = build_sampler(SamplerKind::Uniform, &model, None, MlmPick::Argmax)?;
//! let method = Reagent::new(ReagentConfig { probes: 4, max_steps: 30, ..Default::default() }, sampler)?;
//! let plan = Plan::new(&model, "The cat sat on the", &Targets::Text(" mat".into()))?;
//! let result = attribute(&model, &method, plan, &NoProgress)?;
//! for t in &result.targets {
//!     // One score per context token; they sum to one.
//!     assert_eq!(t.scores.scores.len(), t.position);
//!     assert!((t.scores.scores.iter().sum::<f32>() - 1.0).abs() < 1e-4);
//! }
//! # Ok(()) }
//! ```
//!
//! [candle]: https://github.com/huggingface/candle

pub mod attribute;
pub mod error;
pub mod eval;
pub mod format;
pub mod method;
pub mod model;
pub mod remote;
pub mod render;
pub mod result;
pub mod score;
pub mod tokenizer;
pub mod util;

pub use attribute::{attribute, JobProgress, Plan, Targets};
pub use error::{Error, Result};
pub use method::{Attributor, MethodKind, NoProgress, Progress};
pub use model::{
    load_causal, load_masked, Capabilities, CausalLm, LoadOptions, LoadedModel, MaskedLm,
    ModelInfo, ModelSource, Outputs,
};
pub use result::{AttributionResult, WordAggregation};
pub use tokenizer::{Encoding, Tokenizer};
