//! Command-line arguments (clap derive). Raw arguments become built objects in each
//! subcommand's `run`, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reagent::method::gradient::Baseline;
use reagent::method::reagent::{
    MlmPick, Objective, ProbeWeighting, Readout, ReagentConfig, SamplerKind,
};
use reagent::result::{Unit, WordAggregation};

/// A unit name, as the library parses it.
fn parse_unit(s: &str) -> Result<Unit, String> {
    Unit::from_name(s).map_err(|e| e.to_string())
}

/// A preset name the library knows (`-` and `_` alike), kept as given.
fn parse_preset(s: &str) -> Result<String, String> {
    ReagentConfig::preset(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// A sampler name, as the library parses it.
fn parse_sampler(s: &str) -> Result<SamplerKind, String> {
    s.parse().map_err(|e: reagent::Error| e.to_string())
}

/// One of a library setting's names (its serde name; `-` and `_` alike), e.g. `mask-diff`.
fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|e| e.to_string())
}

/// Explain what a generative language model's output depends on: for each generated (or given)
/// token, score every context token by importance (ReAGent and the usual baselines).
#[derive(Parser, Debug)]
#[command(name = "reagent", version, about, propagate_version = true)]
pub struct Cli {
    /// Threads for the tensor engine (default: all physical cores).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Token budget of one forward batch of the perturbation methods (rows x context length;
    /// at least one row): bounds memory on long contexts or many probes; results do not change
    /// [default: 8192].
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_tokens: Option<u64>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the most likely next tokens after a text.
    Predict(PredictArgs),
    /// Print a model's architecture, sizes, vocabulary and capabilities.
    Inspect(InspectArgs),
    /// Score every context token's importance for each target token (ReAGent).
    Attribute(AttributeArgs),
    /// Compare attribution methods on a dataset with the paper's faithfulness metrics.
    Evaluate(EvaluateArgs),
    /// Rewrite an evaluation folder's summary.md and summary.csv from the records it holds
    /// (for a run that is still going, or was stopped).
    Summarize(SummarizeArgs),
    /// Turn an evaluation folder into a page with figures (report.html, figures/*.svg).
    Report(ReportArgs),
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The evaluation's output folder.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// The evaluation's output folder (with run.json and results.jsonl).
    pub dir: PathBuf,
}

/// Which model to load.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a .gguf file, a Hugging Face folder (config.json, model.safetensors,
    /// tokenizer.json), a hub id such as HuggingFaceTB/SmolLM2-135M, or a server's address
    /// (http://HOST:PORT/v1: vLLM or llama.cpp's llama-server; needs --tokenizer).
    #[arg(
        long,
        short = 'm',
        default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: String,

    /// Keep GGUF weights in their blocks instead of dequantizing them to f32: less memory (a
    /// fifth to a half), the dense model's numbers (each product decodes its weight a panel at a
    /// time), up to 1.4x slower in f32, and no gradient methods.
    #[arg(long)]
    pub quantized: bool,

    /// The model's arithmetic: f32, or bf16 (the transformer body's weights in bf16 and its
    /// matrix products in bf16 with f32 sums, the LM head in f32; needs AVX512-BF16, detected
    /// at run time; no gradient methods). auto picks bf16 where the CPU has it, for `attribute`
    /// with reagent, occlusion or random, and f32 everywhere else.
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "bf16"])]
    pub precision: String,

    /// A served model: the tokenizer to attribute in (a tokenizer.json, a .gguf file, a model
    /// folder or a hub id), checked against the server's vocabulary.
    #[arg(long, value_name = "SPEC")]
    pub tokenizer: Option<String>,

    /// A served model: which of the server's models (default: the only one it lists).
    #[arg(long, value_name = "NAME")]
    pub served_model: Option<String>,

    /// A served model: the environment variable that holds the API key (sent as a bearer
    /// token; never printed or stored).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,

    /// A served model: requests in flight at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub concurrency: usize,

    /// A served model: how many top log-probabilities to ask for per context (K). With
    /// llama.cpp's server, a target outside the top K enters as the K-th probability, a bound
    /// whose largest error each result reports.
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub top_logprobs: usize,

    /// A served model: seconds one request may take.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub request_timeout: f64,

    /// A served model: retries of a request after a connection error, a 429 or a 5xx (with
    /// exponential backoff and jitter).
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub retries: usize,
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

/// What `--json` writes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// reagent's own result: one object per job (JSON lines with --input).
    Reagent,
    /// inseq's saved FeatureAttributionOutput, one sequence per job: opens with
    /// inseq.FeatureAttributionOutput.load(path).show().
    Inseq,
}

/// ReAGent's hyperparameters (a preset, then any flag given overrides it).
#[derive(Args, Debug, Clone)]
pub struct ReagentArgs {
    /// Start from these hyperparameters: inseq (inseq's defaults: 16 probes, keep 5, top-3,
    /// r = 0.3, 3000 steps), paper-token (the paper's token-level setting: 5 probes, keep 8,
    /// top-3, r = 0.1, 5000 steps) or mask-diff (not the reference: 16 probes x 8 steps at
    /// r = 0.1, 128 contexts, read out as the mask difference shrunk by 2 standard errors).
    #[arg(long, default_value = "inseq", value_parser = parse_preset)]
    pub preset: String,
    /// Probes run in parallel [inseq: 16].
    #[arg(long)]
    pub probes: Option<usize>,
    /// Step limit per probe [inseq: 3000].
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Positions the stopping test keeps; 0 uses --keep-ratio [inseq: 5].
    #[arg(long)]
    pub keep_top_n: Option<usize>,
    /// Fraction of positions the stopping test keeps (with --keep-top-n 0).
    #[arg(long)]
    pub keep_ratio: Option<f64>,
    /// Stop when the target is among this many most likely tokens [inseq: 3].
    #[arg(long)]
    pub stop_top_k: Option<usize>,
    /// Probability of replacing each position in an update [inseq: 0.3].
    #[arg(long)]
    pub replacing_ratio: Option<f64>,
    /// What a replacement's effect is measured by: target-prob (p(y|x) - p(y|x~), the
    /// reference) or total-variation (between the whole next-token distributions).
    #[arg(long, default_value = "target-prob", value_parser = parse_name::<Objective>)]
    pub objective: Objective,
    /// Random seed: the same seed gives the same output, whatever the thread count.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where replacement tokens come from: pos (same part-of-speech tag; the paper's), uniform
    /// (any non-special token), mlm (a masked LM's prediction; needs --mlm), causal (the model's
    /// greedy prediction from the prefix), context (a draw from the model's own distribution
    /// given the prefix).
    #[arg(long, default_value = "pos", value_parser = parse_sampler)]
    pub sampler: SamplerKind,
    /// The masked LM for --sampler mlm (a Hugging Face folder or hub id, e.g. distilroberta-base).
    #[arg(long)]
    pub mlm: Option<String>,
    /// How the MLM sampler picks its prediction: argmax or sample.
    #[arg(long, default_value = "argmax", value_parser = parse_name::<MlmPick>)]
    pub mlm_pick: MlmPick,
    /// Variant: how scores are read out of the perturbations: reference, mask-diff (mean change
    /// where replaced minus where kept, over all updates) or regression (ridge regression of the
    /// change on the masks) [reference].
    #[arg(long, value_parser = parse_name::<Readout>)]
    pub readout: Option<Readout>,
    /// Variant: a probe may stop only after this many update steps [0].
    #[arg(long)]
    pub min_steps: Option<usize>,
    /// Variant: how converged probes are combined by the reference read-out: mean, or steps
    /// (weighted by the updates each made) [mean].
    #[arg(long, value_parser = parse_name::<ProbeWeighting>)]
    pub probe_weighting: Option<ProbeWeighting>,
    /// Variant: also stop when the top-n positions have not changed for this many steps [0: off].
    #[arg(long)]
    pub stable_window: Option<usize>,
    /// Variant: choose the replacing ratio per target with pilot draws, halving it until the
    /// median perturbed probability keeps half of the original.
    #[arg(long)]
    pub adaptive_ratio: bool,
    /// Variant: with --readout mask-diff, shrink each effect by this many standard errors [0].
    #[arg(long)]
    pub shrink_z: Option<f64>,
}

#[derive(Args, Debug)]
pub struct AttributeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The prompt (context) to attribute.
    #[arg(
        long,
        short = 'p',
        required_unless_present = "input",
        conflicts_with = "input"
    )]
    pub prompt: Option<String>,

    /// A JSONL file of jobs, one per line: {"prompt": "...", "target": "..."} or
    /// {"prompt": "...", "max_new_tokens": N}, optionally with "contrast": "..."; lines without
    /// a target use the flags.
    #[arg(long)]
    pub input: Option<PathBuf>,

    /// Attribute this continuation of the prompt, token by token (forced decoding).
    #[arg(long, short = 't', conflicts_with = "max_new_tokens")]
    pub target: Option<String>,

    /// Attribute the model's greedy continuation of this many tokens [default: 1].
    #[arg(long, short = 'n')]
    pub max_new_tokens: Option<usize>,

    /// Contrastive attribution: explain p(target) - p(contrast), why the model says the target
    /// rather than this text (one contrast token per target token, e.g. -t " Paris" --contrast
    /// " Lyon"). With reagent, occlusion and the gradient methods.
    #[arg(long)]
    pub contrast: Option<String>,

    /// The attribution method: reagent, gradient_norm, input_x_gradient, integrated_gradients,
    /// gradient_shap, attention, last_layer_attention, attention_rollout, occlusion, random.
    #[arg(long, default_value = "reagent")]
    pub method: String,

    #[command(flatten)]
    pub reagent: ReagentArgs,

    #[command(flatten)]
    pub baselines: BaselineArgs,

    /// Also write the results as JSON to this file ("-" for stdout): one object for --prompt,
    /// one line per job for --input.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// What --json writes: reagent's result, or inseq's format (one file for all jobs, which
    /// inseq's FeatureAttributionOutput.load reads).
    #[arg(long, value_enum, default_value = "reagent", requires = "json")]
    pub format: FormatArg,

    /// Also write a self-contained HTML page (no network needed) with the heatmap, the shaded
    /// text and hover cards, one section per job.
    #[arg(long)]
    pub html: Option<PathBuf>,

    /// Show scores per word instead of per token (subword scores summed, or their maximum).
    #[arg(long, value_parser = parse_name::<WordAggregation>, conflicts_with_all = ["unit", "unit_spans"])]
    pub words: Option<WordAggregation>,

    /// What one feature is: token, word or sentence (Unicode boundaries of the text, whatever
    /// the tokenizer). ReAGent and occlusion replace each unit as a whole (40 sentences are 40
    /// features); other methods' token scores are summed per unit. Special tokens (BOS) belong
    /// to no unit and are never replaced.
    #[arg(long, default_value = "token", value_parser = parse_unit, conflicts_with = "unit_spans")]
    pub unit: Unit,

    /// Units given as character spans of the prompt, e.g. the documents of a RAG prompt: a JSON
    /// file holding [[start, end], ...] (end exclusive). Tokens outside every span are kept and
    /// score 0.
    #[arg(long, value_name = "FILE")]
    pub unit_spans: Option<PathBuf>,

    /// Wrap the prompt in the model's chat template as one user turn, with the assistant's turn
    /// opened (as transformers' apply_chat_template with add_generation_prompt). The template's
    /// tokens are never replaced and are hidden in the heatmap (see --show-template).
    #[arg(long)]
    pub chat: bool,

    /// With --chat: a Jinja chat template file to use instead of the model's (for a model
    /// whose files carry none).
    #[arg(long, value_name = "FILE", requires = "chat")]
    pub chat_template: Option<PathBuf>,

    /// With --chat: show the template's tokens in the heatmap.
    #[arg(long, requires = "chat")]
    pub show_template: bool,

    /// No colours in the heatmap (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,

    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Settings of the baseline methods.
#[derive(Args, Debug, Clone)]
pub struct BaselineArgs {
    /// Integrated gradients: steps.
    #[arg(long, default_value_t = 50)]
    pub ig_steps: usize,

    /// Integrated gradients: baseline, zero (all-zero embeddings, Captum's default) or unk (the
    /// UNK token's embedding at every position, inseq's default).
    #[arg(long, default_value = "zero", value_parser = parse_name::<Baseline>)]
    pub ig_baseline: Baseline,

    /// Gradient SHAP: samples.
    #[arg(long, default_value_t = 5)]
    pub shap_samples: usize,

    /// Gradient SHAP: standard deviation of the input noise.
    #[arg(long, default_value_t = 0.1)]
    pub shap_stdev: f64,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The dataset: LongRA rows (.jsonl, token level) or prompts, one per line (.txt, sequence
    /// level: each prompt's greedy continuation is attributed).
    #[arg(long)]
    pub dataset: PathBuf,

    /// Comma-separated methods, or "all": reagent, gradient_norm, input_x_gradient,
    /// integrated_gradients, gradient_shap, attention, last_layer_attention, attention_rollout,
    /// occlusion, random. The random baseline always runs (the ratios need it).
    #[arg(long, default_value = "reagent")]
    pub methods: String,

    /// Output folder (results.jsonl, summary.md, summary.csv); a rerun resumes it.
    #[arg(long)]
    pub out: PathBuf,

    /// Stop after this many usable examples.
    #[arg(long)]
    pub limit: Option<usize>,

    /// Tokens generated per prompt for sequence-level datasets.
    #[arg(long, default_value_t = 10)]
    pub new_tokens: usize,

    /// Soft-metric mask draws averaged per attributed token.
    #[arg(long, default_value_t = 4)]
    pub mask_draws: usize,

    /// Add a ReAGent variant under its own name, starting from the ReAGent flags and changing
    /// the listed settings, e.g. `--variant reagent-md:readout=mask_diff,replacing_ratio=0.1`.
    /// Settings are ReAGent's configuration fields (probes, max_steps, keep_top_n, stop_top_k,
    /// replacing_ratio, objective, readout, min_steps, probe_weighting, stable_window,
    /// adaptive_ratio) and sampler. Repeatable; the name must start with "reagent".
    #[arg(long = "variant", value_name = "NAME:KEY=VALUE,...")]
    pub variants: Vec<String>,

    /// Skip the second run of stochastic methods that measures agreement between random streams.
    #[arg(long)]
    pub no_stability: bool,

    #[command(flatten)]
    pub baselines: BaselineArgs,

    #[command(flatten)]
    pub reagent: ReagentArgs,

    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
