//! Model sources and architecture dispatch.
//!
//! One `--model SPEC` names a model: a Hugging Face folder (`config.json`, safetensors weights,
//! `tokenizer.json`), a `.gguf` file, or a hub id such as `HuggingFaceTB/SmolLM2-135M`, resolved
//! through the local Hugging Face cache first. The architecture comes from `config.json`'s
//! `architectures` or GGUF's `general.architecture`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::gguf::{self, GgufFile, GgufSource};
use super::weights::{SafetensorsSource, Vb, WeightSource};
use super::{bert, gemma3, llama, CausalLm, MaskedLm};
use crate::error::WithPath;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder with `config.json`, `model.safetensors` (or a sharded index) and `tokenizer.json`.
    HfDir(PathBuf),
    /// A single `.gguf` file (weights, config and tokenizer in one).
    Gguf(PathBuf),
    /// A Hugging Face hub id, `owner/name`.
    HubId(String),
    /// A model served over HTTP, by its address (without credentials).
    Served(String),
}

impl ModelSource {
    /// Interpret a `--model` argument.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::input("the model spec is empty"));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return Ok(ModelSource::Served(spec.to_string()));
        }
        let p = Path::new(spec);
        if p.is_dir() {
            if p.join("config.json").is_file() {
                return Ok(ModelSource::HfDir(p.to_path_buf()));
            }
            let ggufs = gguf_files_in(p);
            return match ggufs.as_slice() {
                [one] => Ok(ModelSource::Gguf(one.clone())),
                [] => Err(Error::ModelSource(format!(
                    "{spec}: this folder has neither config.json nor a .gguf file"
                ))),
                many => Err(Error::ModelSource(format!(
                    "{spec}: this folder has {} .gguf files; name one of them",
                    many.len()
                ))),
            };
        }
        if p.is_file() {
            if spec.ends_with(".gguf") {
                return Ok(ModelSource::Gguf(p.to_path_buf()));
            }
            if p.file_name().is_some_and(|n| n == "config.json") {
                let dir = p.parent().unwrap_or(Path::new("."));
                return Ok(ModelSource::HfDir(dir.to_path_buf()));
            }
            return Err(Error::ModelSource(format!(
                "{spec}: not a model (expected a .gguf file, or a folder with config.json)"
            )));
        }
        // A file name is not a hub id: `models/x.gguf` that does not exist is a missing file.
        if is_hub_id(spec) && !spec.ends_with(".gguf") && !spec.ends_with(".json") {
            return Ok(ModelSource::HubId(spec.to_string()));
        }
        Err(Error::NotFound(format!(
            "{spec}: no such file or folder (a model is a .gguf file, a Hugging Face folder, or a hub id like owner/name)"
        )))
    }

    /// A short name for provenance: the file or folder name, or the hub id.
    pub fn id(&self) -> String {
        match self {
            ModelSource::HfDir(p) | ModelSource::Gguf(p) => p
                .canonicalize()
                .unwrap_or_else(|_| p.clone())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            ModelSource::HubId(id) | ModelSource::Served(id) => id.clone(),
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::HfDir(p) => write!(f, "Hugging Face folder {}", p.display()),
            ModelSource::Gguf(p) => write!(f, "GGUF file {}", p.display()),
            ModelSource::HubId(id) => write!(f, "hub id {id}"),
            ModelSource::Served(url) => write!(f, "served model at {url}"),
        }
    }
}

fn gguf_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('-')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if ok(a) && ok(b))
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Keep GGUF weights in their blocks, decoded a panel at a time into the f32 or bf16
    /// kernel (less memory, no gradients).
    /// Default: dequantize to f32.
    pub quantized: bool,
    /// The model's arithmetic ([`super::Precision`]; with `quantized`, bf16 products on the
    /// blocks unpacked a panel at a time). Default: f32.
    pub precision: super::Precision,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            quantized: false,
            precision: super::Precision::F32,
            device: Device::Cpu,
        }
    }
}

/// A causal LM with its tokenizer.
pub struct LoadedModel {
    pub model: Arc<dyn CausalLm>,
    pub tokenizer: Tokenizer,
    /// Provenance: file/folder name or hub id.
    pub id: String,
    pub source: ModelSource,
}

/// A masked LM with its tokenizer.
pub struct LoadedMaskedModel {
    pub model: Arc<dyn MaskedLm>,
    pub tokenizer: Tokenizer,
    pub id: String,
    pub source: ModelSource,
}

/// The files of a Hugging Face model folder.
struct HfFiles {
    config: PathBuf,
    weights: Vec<PathBuf>,
    tokenizer: PathBuf,
}

impl HfFiles {
    fn in_dir(dir: &Path) -> Result<Self> {
        let config = dir.join("config.json");
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(Error::ModelSource(format!(
                "{}: tokenizer.json is missing (only fast tokenizers are supported)",
                dir.display()
            )));
        }
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let weights = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shards_of(&index)?
                .into_iter()
                .map(|s| dir.join(s))
                .collect()
        } else if dir.join("pytorch_model.bin").is_file() {
            return Err(Error::ModelSource(format!(
                "{}: only safetensors weights are supported, this folder has pytorch_model.bin",
                dir.display()
            )));
        } else {
            return Err(Error::ModelSource(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        };
        Ok(HfFiles {
            config,
            weights,
            tokenizer,
        })
    }
}

/// Shard file names listed in a safetensors index, deduplicated, in order.
fn shards_of(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).with_path(index)?;
    let v: serde_json::Value = serde_json::from_str(&text).with_path(index)?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::missing("`weight_map`", index.display().to_string()))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

#[cfg(feature = "hub")]
fn hub_files(id: &str) -> Result<HfFiles> {
    use hf_hub::{Cache, Repo};
    let repo = Repo::model(id.to_string());
    let cache = Cache::from_env();
    let cached = cache.repo(repo.clone());
    let want_single = ["config.json", "tokenizer.json", "model.safetensors"];
    if want_single.iter().all(|f| cached.get(f).is_some()) {
        let get = |f: &str| cached.get(f).expect("checked above");
        return Ok(HfFiles {
            config: get("config.json"),
            weights: vec![get("model.safetensors")],
            tokenizer: get("tokenizer.json"),
        });
    }
    let offline = |e: &dyn std::fmt::Display| {
        Error::ModelSource(format!(
            "cannot fetch `{id}` from the Hugging Face hub ({e}), and it is not in the local cache ({}). \
             Use a local model instead: a folder with config.json, model.safetensors and tokenizer.json, \
             or a .gguf file (scripts/fetch-models.sh puts two in models/)",
            cache.path().display()
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| offline(&e))?;
    let remote = api.repo(repo);
    let config = remote.get("config.json").map_err(|e| offline(&e))?;
    let tokenizer = remote.get("tokenizer.json").map_err(|e| offline(&e))?;
    // Optional: names the UNK token (used by the UNK baseline of gradient methods).
    let _ = remote.get("tokenizer_config.json");
    let weights = match remote.get("model.safetensors") {
        Ok(p) => vec![p],
        Err(_) => {
            let index = remote
                .get("model.safetensors.index.json")
                .map_err(|e| offline(&e))?;
            shards_of(&index)?
                .iter()
                .map(|s| remote.get(s).map_err(|e| offline(&e)))
                .collect::<Result<Vec<_>>>()?
        }
    };
    Ok(HfFiles {
        config,
        weights,
        tokenizer,
    })
}

#[cfg(not(feature = "hub"))]
fn hub_files(id: &str) -> Result<HfFiles> {
    Err(Error::ModelSource(format!(
        "`{id}` looks like a hub id, but this build has no hub support (feature `hub`); use a local folder or .gguf file"
    )))
}

fn read_config(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    serde_json::from_str(&text).with_path(path)
}

/// A typed config from `config.json`, after the size checks.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    cfg: &serde_json::Value,
    path: &Path,
) -> Result<T> {
    check_config(cfg, path)?;
    serde_json::from_value(cfg.clone()).with_path(path)
}

/// The size fields of the configs we read, across architectures.
const SIZE_FIELDS: &[&str] = &[
    "hidden_size",
    "n_embd",
    "d_model",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "num_hidden_layers",
    "n_layer",
    "intermediate_size",
    "ffn_dim",
    "n_inner",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "n_positions",
    "sliding_window_pattern",
    "rotary_dim",
    "word_embed_proj_dim",
];

/// Fail in one line on sizes no model can have (0, or past [`super::dims::MAX_DIM`]), before
/// any of them divides or allocates.
fn check_config(cfg: &serde_json::Value, path: &Path) -> Result<()> {
    let mut dims = Vec::new();
    for &k in SIZE_FIELDS {
        match cfg.get(k) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) => dims.push((k, n as usize)),
                None => {
                    return Err(Error::input(format!(
                        "{}: `{k}` must be a positive integer, got {v}",
                        path.display()
                    )))
                }
            },
        }
    }
    super::dims::check(&path.display().to_string(), &dims)?;
    // Heads must split the hidden size when no head_dim is given.
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|k| cfg.get(*k).and_then(|v| v.as_u64()))
    };
    if let (Some(h), Some(n)) = (
        get(&["hidden_size", "n_embd", "d_model"]),
        get(&["num_attention_heads", "n_head"]),
    ) {
        if cfg.get("head_dim").and_then(|v| v.as_u64()).is_none() && h % n != 0 {
            return Err(Error::input(format!(
                "{}: the hidden size {h} is not a multiple of the {n} attention heads",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The architecture name of a config: `architectures[0]`, else derived from `model_type`.
fn architecture(cfg: &serde_json::Value, path: &Path) -> Result<String> {
    if let Some(a) = cfg
        .get("architectures")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str())
    {
        return Ok(a.to_string());
    }
    let mt = cfg
        .get("model_type")
        .and_then(|m| m.as_str())
        .ok_or_else(|| {
            Error::missing(
                "`architectures` and `model_type`",
                path.display().to_string(),
            )
        })?;
    super::architectures::name_of_model_type(mt)
        .map(str::to_string)
        .ok_or_else(|| {
            Error::unsupported_architecture(
                format!("model_type {mt}"),
                super::architectures::supported(),
            )
        })
}

fn causal_from_hf(files: &HfFiles, opts: &LoadOptions) -> Result<Arc<dyn CausalLm>> {
    let cfg = read_config(&files.config)?;
    let arch = architecture(&cfg, &files.config)?;
    let src: Arc<dyn WeightSource> = Arc::new(SafetensorsSource::open(&files.weights)?);
    let vb = Vb::new(src, &opts.device, false).with_precision(opts.precision);
    use super::architectures::{by_name, supported, Role};
    match by_name(&arch).map(|a| a.role) {
        Some(Role::Causal(build)) => {
            let mut m = build(vb, &cfg, &files.config, &arch)?;
            describe_weights(&mut m, "f32".into(), opts.precision);
            Ok(m)
        }
        Some(Role::Masked) => Err(Error::input(format!(
            "{arch} is a masked LM, not a causal LM; it can serve as the MLM sampler's model (mlm), not as the attributed model"
        ))),
        None => Err(Error::unsupported_architecture(arch, supported())),
    }
}

fn causal_from_gguf(path: &Path, opts: &LoadOptions) -> Result<(Arc<dyn CausalLm>, Tokenizer)> {
    let file = Arc::new(GgufFile::open(path)?);
    let arch_name = file.string("general.architecture")?;
    let arch = gguf::Arch::from_name(&arch_name)?;
    let src: Arc<dyn WeightSource> = Arc::new(GgufSource::new(file.clone(), arch));
    let vb = Vb::new(src, &opts.device, opts.quantized).with_precision(opts.precision);
    let weights = if opts.quantized {
        format!("quantized ({})", file.dtypes())
    } else {
        format!("f32 (dequantized from {})", file.dtypes())
    };
    let mut model: Arc<dyn CausalLm> = match arch {
        gguf::Arch::Llama => Arc::new(llama::Llama::load(
            vb,
            &gguf::llama_config(&file)?,
            "LlamaForCausalLM",
        )?),
        gguf::Arch::Gemma3 => Arc::new(gemma3::Gemma3::load(vb, &gguf::gemma3_config(&file)?)?),
    };
    describe_weights(&mut model, weights, opts.precision);
    let tokenizer = Tokenizer::from_gguf(&file)?;
    Ok((model, tokenizer))
}

/// Name the weights' formats and the precision in a freshly built model's description.
fn describe_weights(m: &mut Arc<dyn CausalLm>, weights: String, precision: super::Precision) {
    if let Some(m) = Arc::get_mut(m) {
        let info = m.info_mut();
        match precision {
            super::Precision::F32 => info.weights = weights,
            super::Precision::Bf16 => {
                info.weights = format!("{weights}; body in bf16 (AVX512-BF16)");
                info.capabilities.gradients = false;
            }
        }
    }
}

/// Load a causal LM and its tokenizer from a `--model` spec.
pub fn load_causal(spec: &str, opts: &LoadOptions) -> Result<LoadedModel> {
    if opts.precision != super::Precision::F32 && !opts.precision.available() {
        return Err(Error::Unsupported(format!(
            "precision {} needs a CPU with AVX512-BF16 (AMD Zen 4 or later, Intel Cooper Lake or Sapphire Rapids or later); this one lacks it, use f32",
            opts.precision
        )));
    }
    let source = ModelSource::parse(spec)?;
    let (model, tokenizer) = match &source {
        ModelSource::Gguf(p) => causal_from_gguf(p, opts)?,
        ModelSource::HfDir(dir) => {
            let files = HfFiles::in_dir(dir)?;
            let m = causal_from_hf(&files, opts)?;
            (m, Tokenizer::from_file(&files.tokenizer)?)
        }
        ModelSource::HubId(id) => {
            let files = hub_files(id)?;
            let m = causal_from_hf(&files, opts)?;
            (m, Tokenizer::from_file(&files.tokenizer)?)
        }
        ModelSource::Served(url) => {
            return Err(Error::input(format!(
                "{url} is a server: load it with reagent::remote::load_remote, which needs a tokenizer too"
            )))
        }
    };
    check_vocab(model.vocab_size(), &tokenizer, &source.id())?;
    Ok(LoadedModel {
        model,
        tokenizer,
        id: source.id(),
        source,
    })
}

/// A tokenizer with the special ids the model declares: what a served model is attributed in.
pub struct TokenizerSpec {
    pub tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    /// Provenance: the file or folder name, or the hub id.
    pub id: String,
}

/// Load a tokenizer from a spec: a `tokenizer.json`, a `.gguf` file, a model folder or a hub id
/// (BOS and EOS from the GGUF metadata or the `config.json` beside the tokenizer).
pub fn load_tokenizer(spec: &str) -> Result<TokenizerSpec> {
    let p = Path::new(spec.trim());
    if p.is_file() && p.extension().is_some_and(|e| e == "json") {
        let tokenizer = Tokenizer::from_file(p)?;
        let (bos, eos) = specials_from_config(&p.with_file_name("config.json"));
        return Ok(TokenizerSpec {
            tokenizer,
            bos,
            eos,
            id: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
    }
    let source = ModelSource::parse(spec)?;
    let id = source.id();
    let files = match &source {
        ModelSource::Gguf(path) => {
            let file = GgufFile::open(path)?;
            let (bos, eos, _) = gguf::special_ids(&file);
            return Ok(TokenizerSpec {
                tokenizer: Tokenizer::from_gguf(&file)?,
                bos,
                eos,
                id,
            });
        }
        ModelSource::HfDir(dir) => HfFiles::in_dir(dir)?,
        ModelSource::HubId(hub) => hub_files(hub)?,
        ModelSource::Served(url) => {
            return Err(Error::input(format!(
                "the tokenizer must be local (a tokenizer.json, .gguf file, folder or hub id), not {url}"
            )))
        }
    };
    let (bos, eos) = specials_from_config(&files.config);
    Ok(TokenizerSpec {
        tokenizer: Tokenizer::from_file(&files.tokenizer)?,
        bos,
        eos,
        id,
    })
}

fn specials_from_config(path: &Path) -> (Option<u32>, Vec<u32>) {
    let Ok(cfg) = read_config(path) else {
        return (None, Vec::new());
    };
    let bos = cfg["bos_token_id"].as_u64().map(|x| x as u32);
    (
        bos,
        super::weights::eos_ids(&Some(cfg["eos_token_id"].clone())),
    )
}

/// Load a masked LM (BERT, RoBERTa) and its tokenizer from a spec.
pub fn load_masked(spec: &str, opts: &LoadOptions) -> Result<LoadedMaskedModel> {
    let source = ModelSource::parse(spec)?;
    let files = match &source {
        ModelSource::HfDir(dir) => HfFiles::in_dir(dir)?,
        ModelSource::HubId(id) => hub_files(id)?,
        ModelSource::Served(url) => {
            return Err(Error::input(format!(
                "the MLM sampler's model must be local, not the server {url}"
            )))
        }
        ModelSource::Gguf(p) => {
            return Err(Error::input(format!(
                "{}: a GGUF file holds a causal LM; the MLM sampler needs a masked LM such as distilroberta-base",
                p.display()
            )))
        }
    };
    let cfg = read_config(&files.config)?;
    let arch = architecture(&cfg, &files.config)?;
    let flavor = match arch.as_str() {
        "BertForMaskedLM" => bert::Flavor::Bert,
        "RobertaForMaskedLM" => bert::Flavor::Roberta,
        other => {
            return Err(Error::input(format!(
                "{}: {other} is not a masked LM (supported: BertForMaskedLM, RobertaForMaskedLM)",
                source.id()
            )))
        }
    };
    let src: Arc<dyn WeightSource> = Arc::new(SafetensorsSource::open(&files.weights)?);
    let vb = Vb::new(src, &opts.device, false);
    let model = bert::BertMlm::load(vb, &parse_config(&cfg, &files.config)?, flavor)?;
    let tokenizer = Tokenizer::from_file(&files.tokenizer)?;
    check_vocab(model.info().vocab_size, &tokenizer, &source.id())?;
    Ok(LoadedMaskedModel {
        model: Arc::new(model),
        tokenizer,
        id: source.id(),
        source,
    })
}

/// The tokenizer must not produce ids the model has no row for.
fn check_vocab(model_vocab: usize, tok: &Tokenizer, id: &str) -> Result<()> {
    let max = tok.max_id();
    if max as usize >= model_vocab {
        return Err(Error::ModelSource(format!(
            "{id}: vocabulary mismatch: the tokenizer can produce id {max}, but the model has only {model_vocab} rows"
        )));
    }
    Ok(())
}
