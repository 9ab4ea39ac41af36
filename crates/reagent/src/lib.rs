//! # reagent
//!
//! Feature attribution for generative language models, on [candle]. For each generated (or
//! given) token, score every context token by how much the prediction depends on it.
//!
//! The headline method is ReAGent (Zhao & Shan 2024, "ReAGent: A Model-agnostic Feature
//! Attribution Method for Generative Language Models", <https://arxiv.org/abs/2402.00794>),
//! which needs no gradients and no access to weights.
//!
//! Data flows one way: [`model`] → method → result → render (in the CLI).
//!
//! [candle]: https://github.com/huggingface/candle

pub mod attribute;
pub mod error;
pub mod eval;
pub mod method;
pub mod model;
pub mod result;
pub mod tokenizer;

pub use attribute::{attribute, JobProgress, Plan, Targets};
pub use error::{Error, Result};
pub use method::{Attributor, MethodKind, NoProgress, Progress};
pub use model::{
    load_causal, load_masked, Capabilities, CausalLm, LoadOptions, LoadedModel, MaskedLm,
    ModelInfo, ModelSource, Outputs,
};
pub use result::{AttributionResult, WordAggregation};
pub use tokenizer::{Encoding, Tokenizer};
