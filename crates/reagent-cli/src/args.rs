//! Command-line arguments (clap derive). Raw arguments become built objects in each
//! subcommand's `run`, in one place.

use clap::{Args, Parser, Subcommand};

/// Explain what a generative language model's output depends on: for each generated (or given)
/// token, score every context token by importance (ReAGent and the usual baselines).
#[derive(Parser, Debug)]
#[command(name = "reagent", version, about, propagate_version = true)]
pub struct Cli {
    /// Threads for the tensor engine (default: all physical cores).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the most likely next tokens after a text.
    Predict(PredictArgs),
    /// Print a model's architecture, sizes, vocabulary and capabilities.
    Inspect(InspectArgs),
}

/// Which model to load.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a .gguf file, a Hugging Face folder (config.json, model.safetensors,
    /// tokenizer.json) or a hub id such as HuggingFaceTB/SmolLM2-135M.
    #[arg(
        long,
        short = 'm',
        default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: String,

    /// Run GGUF weights quantized instead of dequantizing them to f32 (faster; no gradients).
    #[arg(long)]
    pub quantized: bool,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// How many next tokens to list.
    #[arg(long, short = 'k', default_value_t = 5)]
    pub top_k: usize,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The text to continue.
    pub text: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
