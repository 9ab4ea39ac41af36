//! A model served elsewhere, over HTTP: the probability-only methods (ReAGent, occlusion with
//! the UNK baseline, random) need next-token probabilities and nothing else, so a server that
//! returns log-probabilities for token-id prompts can be attributed like a local model.
//!
//! [`load_remote`] probes the server once and picks the scoring mode it offers:
//!
//! - **exact** (vLLM's `prompt_logprobs`): each context is sent followed by the target, and the
//!   target's log-probability comes back exactly, with the top K at that position;
//! - **top-K** (llama.cpp's `llama-server`, `n_probs`): only the top K next-token
//!   log-probabilities come back. An id outside them has at most the K-th probability; it
//!   enters as that bound, and [`CausalLm::prob_error`] says by how much it can be wrong. The
//!   stopping test of ReAGent (target among the top k) stays exact while k <= K.
//!
//! Rows go out as concurrent requests (results land in their slots, so the order replies arrive
//! in changes nothing), scored contexts are cached by their ids, and requests retry with backoff
//! (see [`http`]). The attribution runs in the tokenizer given with the server, checked against
//! the server's vocabulary at load.

pub mod http;
pub mod protocol;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{
    check_batch, load_tokenizer, BackendStats, Capabilities, CausalLm, Hidden, LoadedModel,
};
use crate::model::{ModelInfo, ModelSource};
use crate::{Error, Result};
use http::{Client, Failure, HttpSettings};
use protocol::Sparse;

/// How the server gives probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoringMode {
    /// The target's log-probability, exactly (vLLM's `prompt_logprobs`).
    Exact,
    /// The top K next-token log-probabilities only (llama.cpp's `n_probs`).
    TopK,
}

/// Which server dialect was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    LlamaCpp,
    Vllm,
}

/// How to reach and use a served model.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// `http[s]://host:port/v1`.
    pub url: String,
    /// The served model's name (`served_model`); the only one listed when `None`.
    pub served_model: Option<String>,
    /// The bearer token (never shown, logged or stored).
    pub api_key: Option<String>,
    /// The tokenizer the attribution works in (`tokenizer`): a `tokenizer.json`, a `.gguf`
    /// file, a model folder or a hub id.
    pub tokenizer: String,
    /// Requests in flight at once (`concurrency`).
    pub concurrency: usize,
    /// K: how many top log-probabilities to ask for (`top_k`).
    pub top_k: usize,
    /// Timeouts and retries.
    pub http: HttpSettings,
}

impl RemoteOptions {
    /// Options for `url` and `tokenizer` with the defaults: concurrency 4, top 100.
    pub fn new(url: &str, tokenizer: &str) -> Self {
        RemoteOptions {
            url: url.to_string(),
            served_model: None,
            api_key: None,
            tokenizer: tokenizer.to_string(),
            concurrency: 4,
            top_k: 100,
            http: HttpSettings::default(),
        }
    }
}

/// Whether a model spec names a server.
pub fn is_url(spec: &str) -> bool {
    let s = spec.trim_start();
    s.starts_with("http://") || s.starts_with("https://")
}

/// A model behind a server, as a [`CausalLm`] that gives next-token log-probabilities only.
pub struct RemoteLm {
    client: Client,
    api: String,
    served: String,
    dialect: Dialect,
    mode: ScoringMode,
    k: usize,
    /// The token llama.cpp is made to sample (see [`protocol::llama_cpp_request`]).
    anchor: u32,
    concurrency: usize,
    info: ModelInfo,
    device: Device,
    cache: Mutex<HashMap<Vec<u32>, Arc<Sparse>>>,
    requests: AtomicUsize,
    stats: Mutex<BackendStats>,
}

/// Contexts cached at most; the cache starts over beyond it (a row is about K pairs).
const CACHE_ROWS: usize = 200_000;

impl RemoteLm {
    pub fn mode(&self) -> ScoringMode {
        self.mode
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The name the server serves the model under.
    pub fn served_model(&self) -> &str {
        &self.served
    }

    /// HTTP requests sent so far that returned a scored row.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Score one context (one request per id of `focus` in exact mode).
    fn fetch(&self, context: &[u32], focus: &[u32]) -> Result<Sparse> {
        match self.mode {
            ScoringMode::TopK => {
                let v = self.client.post(
                    "/completion",
                    &protocol::llama_cpp_request(context, self.k, self.anchor),
                )?;
                self.requests.fetch_add(1, Ordering::Relaxed);
                protocol::llama_cpp_reply(&v, self.k, self.info.vocab_size)
            }
            ScoringMode::Exact => {
                let mut out: Option<Sparse> = None;
                let firsts = if focus.is_empty() { &[0][..] } else { focus };
                for &next in firsts {
                    if out.as_ref().is_some_and(|s| s.get(next).is_some()) {
                        continue;
                    }
                    let v = self.client.post(
                        &format!("{}/completions", self.api),
                        &protocol::vllm_request(&self.served, context, next, self.k),
                    )?;
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    let s = protocol::vllm_reply(
                        &v,
                        context.len() + 1,
                        next,
                        self.k,
                        self.info.vocab_size,
                    )?;
                    match &mut out {
                        None => out = Some(s),
                        Some(o) => o.exact.extend(s.exact),
                    }
                }
                Ok(out.expect("one request at least"))
            }
        }
    }

    /// Sparse rows for `seqs`: from the cache, or fetched by up to `concurrency` threads, each
    /// result in its slot.
    fn rows(&self, seqs: &[Vec<u32>], focus: &[u32]) -> Result<Vec<Arc<Sparse>>> {
        let key = |s: &Vec<u32>| -> Vec<u32> {
            let mut k = s.clone();
            if self.mode == ScoringMode::Exact {
                k.push(u32::MAX);
                k.extend_from_slice(focus);
            }
            k
        };
        let mut out: Vec<Option<Arc<Sparse>>> = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            seqs.iter().map(|s| cache.get(&key(s)).cloned()).collect()
        };
        let hits = out.iter().filter(|o| o.is_some()).count();
        let requests_before = self.requests();
        let missing: Vec<usize> = (0..seqs.len()).filter(|&i| out[i].is_none()).collect();
        let fetched: Vec<Mutex<Option<Result<Sparse>>>> =
            missing.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let workers = self.concurrency.clamp(1, missing.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = missing.get(j) else { break };
                    let r = self.fetch(&seqs[i], focus);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *fetched[j].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                });
            }
        });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (j, &i) in missing.iter().enumerate() {
            let r = fetched[j].lock().unwrap_or_else(|e| e.into_inner()).take();
            match r {
                Some(Ok(s)) => {
                    let s = Arc::new(s);
                    if cache.len() >= CACHE_ROWS {
                        cache.clear();
                    }
                    cache.insert(key(&seqs[i]), s.clone());
                    out[i] = Some(s);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        drop(cache);
        // A worker stopped early only after some request failed, and that error returned above.
        let rows: Vec<Arc<Sparse>> = out.into_iter().flatten().collect();
        if rows.len() != seqs.len() {
            return Err(Error::Remote("a request failed".into()));
        }
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.rows += seqs.len();
        st.cache_hits += hits;
        st.requests += self.requests() - requests_before;
        if self.mode == ScoringMode::TopK {
            for r in &rows {
                if focus.iter().any(|&id| r.get(id).is_none()) {
                    st.bounded_rows += 1;
                    st.max_prob_error = st.max_prob_error.max(r.kth().exp());
                }
            }
        }
        Ok(rows)
    }

    /// A dense row: the known log-probabilities in place, every other id just below the K-th
    /// (its bound), so that an id outside the top K never ranks inside it.
    fn dense(&self, s: &Sparse) -> Vec<f32> {
        let known_min = s
            .top
            .iter()
            .chain(&s.exact)
            .map(|(_, l)| *l)
            .fold(s.kth(), f32::min);
        let floor = next_down(known_min);
        let mut row = vec![floor; self.info.vocab_size];
        for &(id, lp) in s.top.iter().chain(&s.exact) {
            row[id as usize] = lp;
        }
        row
    }

    fn no_weights<T>(&self) -> Result<T> {
        Err(Error::Unsupported(
            "a served model gives only next-token probabilities: no embeddings, hidden states or attentions".into(),
        ))
    }
}

/// The largest f32 below `x` (x finite).
fn next_down(x: f32) -> f32 {
    if x == 0.0 {
        return -f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b - 1 } else { b + 1 })
}

impl CausalLm for RemoteLm {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn embed(&self, _ids: &Tensor) -> Result<Tensor> {
        self.no_weights()
    }

    fn forward_hidden(&self, _e: &Tensor, _l: &[usize], _a: bool) -> Result<Hidden> {
        self.no_weights()
    }

    fn lm_head(&self, _hidden: &Tensor) -> Result<Tensor> {
        self.no_weights()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn next_token_log_probs(&self, seqs: &[Vec<u32>]) -> Result<Tensor> {
        self.next_token_log_probs_for(seqs, &[])
    }

    fn next_token_log_probs_for(&self, seqs: &[Vec<u32>], focus: &[u32]) -> Result<Tensor> {
        // Exact mode sends one more token than the context.
        let reserve = usize::from(self.mode == ScoringMode::Exact);
        check_batch(seqs, &self.info, reserve)?;
        if let Some(&bad) = focus
            .iter()
            .find(|&&id| id as usize >= self.info.vocab_size)
        {
            return Err(Error::input(format!(
                "token id {bad} is outside the model's vocabulary of {} ids",
                self.info.vocab_size
            )));
        }
        let rows = self.rows(seqs, focus)?;
        let mut flat = Vec::with_capacity(rows.len() * self.info.vocab_size);
        for r in &rows {
            flat.extend(self.dense(r));
        }
        Ok(Tensor::from_vec(
            flat,
            (rows.len(), self.info.vocab_size),
            &self.device,
        )?)
    }

    fn prob_error(&self, row: &[f32], id: u32) -> f32 {
        if self.mode == ScoringMode::Exact {
            return 0.0;
        }
        let Some(&v) = row.get(id as usize) else {
            return 0.0;
        };
        let min = row.iter().copied().fold(f32::INFINITY, f32::min);
        // The filled bound is the row's minimum; the K-th probability is one step above it.
        if v <= min {
            let kth = row
                .iter()
                .copied()
                .filter(|&x| x > min)
                .fold(f32::INFINITY, f32::min);
            if kth.is_finite() {
                kth.exp()
            } else {
                v.exp()
            }
        } else {
            0.0
        }
    }

    fn take_backend_stats(&self) -> Option<BackendStats> {
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let out = *st;
        *st = BackendStats::default();
        Some(out)
    }
}

/// Connect to a served model: list its models, find the dialect and mode, check the tokenizer
/// against the server's vocabulary, and return it as a loaded model.
pub fn load_remote(opts: &RemoteOptions) -> Result<LoadedModel> {
    let (root, api) = http::split_url(&opts.url)?;
    let shown = format!("{root}{api}");
    if opts.concurrency == 0 || opts.concurrency > 256 {
        return Err(Error::input(format!(
            "concurrency must be between 1 and 256, got {}",
            opts.concurrency
        )));
    }
    if opts.top_k == 0 || opts.top_k > 10_000 {
        return Err(Error::input(format!(
            "top_k must be between 1 and 10000, got {}",
            opts.top_k
        )));
    }
    if !(opts.http.timeout_s > 0.0 && opts.http.timeout_s.is_finite()) {
        return Err(Error::input(
            "request_timeout must be a positive number of seconds",
        ));
    }
    if opts.tokenizer.trim().is_empty() {
        return Err(Error::input(
            "a served model needs a tokenizer to attribute in (tokenizer: a tokenizer.json, .gguf file, model folder or hub id)",
        ));
    }
    let tok = load_tokenizer(&opts.tokenizer)?;
    let client = Client::new(root.clone(), opts.api_key.clone(), opts.http.clone());

    // 1. The served models.
    let models = client.get(&format!("{api}/models")).map_err(|e| match e {
        Error::Remote(m) => Error::Remote(format!("cannot list the served models: {m}")),
        e => e,
    })?;
    let listed: Vec<&Value> = models
        .get("data")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names: Vec<String> = listed
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(String::from))
        .collect();
    let served = match &opts.served_model {
        Some(name) if names.contains(name) => name.clone(),
        Some(name) => {
            return Err(Error::input(format!(
                "{shown} does not serve `{name}` (it serves: {})",
                list_or_none(&names)
            )))
        }
        None => match names.as_slice() {
            [one] => one.clone(),
            [] => return Err(Error::Remote(format!("{shown}/models lists no model"))),
            many => {
                return Err(Error::input(format!(
                    "{shown} serves {} models; pick one with served_model (one of: {})",
                    many.len(),
                    many.join(", ")
                )))
            }
        },
    };
    let entry = listed
        .iter()
        .find(|m| m.get("id").and_then(Value::as_str) == Some(served.as_str()));
    let meta = |k: &str| -> Option<usize> {
        entry.and_then(|m| {
            m.get("meta")
                .and_then(|x| x.get(k))
                .or_else(|| m.get(k))
                .and_then(Value::as_u64)
                .map(|x| x as usize)
        })
    };

    // 2. The dialect: llama.cpp answers /props; vLLM gives prompt log-probabilities.
    let tok_vocab = tok.tokenizer.max_id() as usize + 1;
    let (dialect, mode, n_ctx) = match client.get_once("/props") {
        Ok(p) if p.get("default_generation_settings").is_some() => {
            let n_ctx = p["default_generation_settings"]["n_ctx"]
                .as_u64()
                .or_else(|| p["n_ctx"].as_u64())
                .map(|x| x as usize);
            (Dialect::LlamaCpp, ScoringMode::TopK, n_ctx)
        }
        _ => {
            let first = first_id(&tok.tokenizer);
            let probe = protocol::vllm_request(&served, &[first], first, 1);
            match client.post_once(&format!("{api}/completions"), &probe) {
                Ok(v) if v["choices"][0]["prompt_logprobs"].is_array() => (
                    Dialect::Vllm,
                    ScoringMode::Exact,
                    meta("max_model_len"),
                ),
                Ok(_) => {
                    return Err(Error::Unsupported(format!(
                        "{shown} returned no prompt log-probabilities and is not llama.cpp's server; \
                         reagent needs token-id prompts with vLLM's prompt_logprobs or llama.cpp's n_probs"
                    )))
                }
                Err(Failure::Status(s @ (400 | 422), body)) => {
                    return Err(Error::Unsupported(format!(
                        "{shown} refused a token-id prompt with prompt_logprobs (HTTP {s}: {body}); \
                         reagent needs vLLM or llama.cpp's llama-server (llama-cpp-python's server takes text prompts only)"
                    )))
                }
                Err(e) => return Err(Error::Remote(format!("{shown}: {e}"))),
            }
        }
    };
    let vocab = meta("n_vocab").unwrap_or(tok_vocab);
    if vocab < tok_vocab {
        return Err(Error::input(format!(
            "the tokenizer does not match the served model: it has ids up to {}, the server's vocabulary {vocab}",
            tok_vocab - 1
        )));
    }
    let max_positions = n_ctx.or(meta("n_ctx_train")).unwrap_or(4096);
    if max_positions < 2 {
        return Err(Error::Remote(format!(
            "{shown} reports a context of {max_positions} tokens: too short to score anything"
        )));
    }

    // 3. The tokenizer against the server's: a few ids decoded on both sides.
    check_vocabulary(&client, dialect, &served, &tok.tokenizer)?;

    let mut info = ModelInfo::dense("remote", 0, 0, 0, 0, vocab, max_positions).with_special(
        tok.bos,
        tok.eos.clone(),
        None,
    );
    info.weights = format!(
        "served by {} at {shown} ({})",
        match dialect {
            Dialect::LlamaCpp => "llama.cpp's llama-server",
            Dialect::Vllm => "vLLM",
        },
        match mode {
            ScoringMode::Exact => format!("exact target log-probabilities, top {}", opts.top_k),
            ScoringMode::TopK => format!("top {} log-probabilities", opts.top_k),
        }
    );
    info.capabilities = Capabilities {
        gradients: false,
        attentions: false,
        weights: false,
    };
    info.architecture = format!("served:{served}");
    let lm = RemoteLm {
        client,
        api,
        served: served.clone(),
        dialect,
        mode,
        k: opts.top_k,
        anchor: first_id(&tok.tokenizer),
        concurrency: opts.concurrency,
        info,
        device: Device::Cpu,
        cache: Mutex::new(HashMap::new()),
        requests: AtomicUsize::new(0),
        stats: Mutex::new(BackendStats::default()),
    };
    Ok(LoadedModel {
        model: Arc::new(lm),
        tokenizer: tok.tokenizer,
        id: served,
        source: ModelSource::Served(shown),
    })
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The first id of "The", a harmless probe prompt.
fn first_id(tok: &crate::Tokenizer) -> u32 {
    tok.encode("The", false)
        .ok()
        .and_then(|e| e.ids.first().copied())
        .unwrap_or(0)
}

/// Decode a few ids on the server and here: a tokenizer of another vocabulary disagrees.
fn check_vocabulary(
    client: &Client,
    dialect: Dialect,
    served: &str,
    tok: &crate::Tokenizer,
) -> Result<()> {
    let probe = "The quick brown fox jumps over the lazy dog. Paris, 1889: 42";
    let ids = tok.encode(probe, false)?.ids;
    let local = tok.decode(&ids)?;
    let body = match dialect {
        Dialect::LlamaCpp => json!({ "tokens": ids }),
        Dialect::Vllm => json!({ "model": served, "tokens": ids }),
    };
    let reply = match client.post_once("/detokenize", &body) {
        Ok(v) => v,
        // A server without /detokenize cannot be checked this way; the scores still are
        // checked for ids inside the vocabulary.
        Err(Failure::Status(404, _)) => return Ok(()),
        Err(e) => return Err(Error::Remote(format!("{}: {e}", client.url("/detokenize")))),
    };
    let remote = reply
        .get("content")
        .or_else(|| reply.get("prompt"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if remote.trim() != local.trim() {
        return Err(Error::input(format!(
            "the tokenizer does not match the served model: ids {:?} decode to {:?} here and to {:?} on the server",
            &ids[..ids.len().min(8)],
            local.chars().take(60).collect::<String>(),
            remote.chars().take(60).collect::<String>()
        )));
    }
    Ok(())
}
