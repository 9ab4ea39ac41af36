//! The native half of the Python package `reagent` (`reagent._reagent`).
//!
//! A thin layer: models load and attribute through the library, options arrive as one JSON
//! object (the Python wrapper turns keyword arguments into it) and results leave as the same
//! JSON the command line writes, so a Python result and `reagent attribute --json` agree to the
//! last digit. Long calls release the GIL, report progress to a Python callable, and stop at
//! the next step when Python has a pending signal (Ctrl-C) or the callable raises. Library
//! errors become `ValueError` (bad input), `FileNotFoundError` (a missing file) or
//! `RuntimeError` (the rest), with the library's one-line message; a panic becomes a
//! `RuntimeError` too.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use reagent::eval::datasets::Dataset;
use reagent::eval::runner::{self, EvalConfig, EvalProgress, NamedMethod};
use reagent::method::reagent::SamplerKind;
use reagent::method::registry::{self, MethodSettings};
use reagent::{JobProgress, LoadOptions, LoadedModel, MethodKind, Plan, Progress, Targets};
use serde_json::{Map, Value};

/// A library error as the Python exception of its kind, with the library's message.
fn py_err(e: reagent::Error) -> PyErr {
    use reagent::Error as E;
    let msg = e.to_string();
    match &e {
        E::InvalidInput(_) | E::UnsupportedArchitecture { .. } | E::Unsupported(_) => {
            PyValueError::new_err(msg)
        }
        E::NotFound(_) => PyFileNotFoundError::new_err(msg),
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        _ => PyRuntimeError::new_err(msg),
    }
}

fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// The options object the wrapper sends.
fn options(json: &str) -> PyResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad("options must be a JSON object")),
    }
}

/// Take an optional string option out of `o`.
fn take_str(o: &mut Map<String, Value>, key: &str) -> PyResult<Option<String>> {
    match o.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{key} must be a string"))),
    }
}

/// Take an optional whole-number option out of `o`.
fn take_usize(o: &mut Map<String, Value>, key: &str) -> PyResult<Option<usize>> {
    match o.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| bad(format!("{key} must be a non-negative whole number"))),
    }
}

/// Run `f` without the GIL, turning a panic into a `RuntimeError`, and a cancellation into the
/// Python error that caused it (KeyboardInterrupt, or the progress callable's exception).
fn run_detached<T: Send>(
    py: Python<'_>,
    progress: &PyProgress,
    f: impl FnOnce() -> reagent::Result<T> + Send,
) -> PyResult<T> {
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(progress.take_error().unwrap_or_else(|| py_err(e))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(PyRuntimeError::new_err(format!(
                "internal error (a bug in reagent; please report it): {}",
                what.lines().next().unwrap_or("")
            )))
        }
    }
}

/// Progress to a Python callable, and cancellation by Python.
///
/// The callable gets `("target", index, total, text)` when a target starts,
/// `("step", step, max_steps, converged, probes)` after each ReAGent step and
/// `("units", done, total)` / `("working", example, method)` during an evaluation. Each time
/// the library asks whether to stop, the thread that made the call checks Python's pending
/// signals; a signal handler's exception (KeyboardInterrupt) or the callable's stops the work.
struct PyProgress {
    callback: Option<Py<PyAny>>,
    error: Mutex<Option<PyErr>>,
    stop: AtomicBool,
    caller: ThreadId,
}

impl PyProgress {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        PyProgress {
            callback,
            error: Mutex::new(None),
            stop: AtomicBool::new(false),
            caller: std::thread::current().id(),
        }
    }

    fn fail(&self, e: PyErr) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn take_error(&self) -> Option<PyErr> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Call the callable with `args` (when there is one and nothing failed yet).
    fn emit<A>(&self, args: impl FnOnce(Python<'_>) -> A)
    where
        A: for<'py> pyo3::call::PyCallArgs<'py>,
    {
        let Some(cb) = &self.callback else { return };
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        Python::attach(|py| {
            if let Err(e) = cb.bind(py).call1(args(py)) {
                self.fail(e);
            }
        });
    }
}

impl Progress for PyProgress {
    fn step(&self, step: usize, max_steps: usize, converged: usize, probes: usize) {
        self.emit(|_| ("step", step, max_steps, converged, probes));
    }

    fn cancelled(&self) -> bool {
        if !self.stop.load(Ordering::SeqCst) && std::thread::current().id() == self.caller {
            Python::attach(|py| {
                if let Err(e) = py.check_signals() {
                    self.fail(e);
                }
            });
        }
        self.stop.load(Ordering::SeqCst)
    }
}

impl JobProgress for PyProgress {
    fn target(&self, index: usize, total: usize, text: &str) {
        let text = text.to_string();
        self.emit(move |_| ("target", index, total, text));
    }
}

impl EvalProgress for PyProgress {
    fn units(&self, done: usize, total: usize) {
        self.emit(|_| ("units", done, total));
    }
    fn working(&self, example: &str, method: &str) {
        let (e, m) = (example.to_string(), method.to_string());
        self.emit(move |_| ("working", e, m));
    }
}

/// What to load: checked options, ready to run without the GIL.
enum LoadPlan {
    Local(String, LoadOptions),
    Served(reagent::remote::RemoteOptions),
}

impl LoadPlan {
    fn load(self) -> reagent::Result<LoadedModel> {
        match self {
            LoadPlan::Local(spec, opts) => reagent::load_causal(&spec, &opts),
            LoadPlan::Served(opts) => reagent::remote::load_remote(&opts),
        }
    }
}

/// Check the wrapper's options for loading `spec` (the command line's model flags).
fn load_plan(spec: &str, o: &mut Map<String, Value>) -> PyResult<LoadPlan> {
    let quantized = match o.remove("quantized") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("quantized must be True or False")),
    };
    let precision = match take_str(o, "precision")? {
        None => reagent::model::Precision::F32,
        Some(p) => reagent::model::Precision::parse(&p).map_err(|e| bad(e.to_string()))?,
    };
    let tokenizer = take_str(o, "tokenizer")?;
    let served_model = take_str(o, "served_model")?;
    let api_key = take_str(o, "api_key")?;
    let api_key_env = take_str(o, "api_key_env")?;
    let concurrency = take_usize(o, "concurrency")?;
    let top_logprobs = take_usize(o, "top_logprobs")?;
    let retries = take_usize(o, "retries")?;
    let timeout = match o.remove("request_timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| bad("request_timeout must be a number of seconds"))?,
        ),
    };
    if let Some(k) = o.keys().next() {
        return Err(bad(format!("unknown option `{k}` of load()")));
    }
    if !reagent::remote::is_url(spec) {
        for (set, name) in [
            (tokenizer.is_some(), "tokenizer"),
            (served_model.is_some(), "served_model"),
            (api_key.is_some() || api_key_env.is_some(), "api_key"),
        ] {
            if set {
                return Err(bad(format!(
                    "{name} applies to a served model (http://HOST:PORT/v1)"
                )));
            }
        }
        let opts = LoadOptions {
            quantized,
            precision,
            ..LoadOptions::default()
        };
        return Ok(LoadPlan::Local(spec.to_string(), opts));
    }
    let Some(tokenizer) = tokenizer else {
        return Err(bad(
            "a served model needs tokenizer= (a tokenizer.json, .gguf file, model folder or hub id of the served model)",
        ));
    };
    if quantized {
        return Err(bad(
            "quantized applies to local GGUF weights, not to a served model",
        ));
    }
    if precision != reagent::model::Precision::F32 {
        return Err(bad(
            "precision applies to local weights; a served model computes in the server's precision",
        ));
    }
    let mut opts = reagent::remote::RemoteOptions::new(spec, &tokenizer);
    opts.served_model = served_model;
    opts.api_key = match (api_key, api_key_env) {
        (Some(_), Some(_)) => return Err(bad("give api_key or api_key_env, not both")),
        (Some(k), None) => Some(k),
        (None, Some(var)) => Some(std::env::var(&var).map_err(|_| {
            bad(format!(
                "api_key_env names {var}, but the environment has no such variable"
            ))
        })?),
        (None, None) => None,
    };
    if let Some(v) = concurrency {
        opts.concurrency = v;
    }
    if let Some(v) = top_logprobs {
        opts.top_k = v;
    }
    if let Some(v) = retries {
        opts.http.retries = v;
    }
    if let Some(v) = timeout {
        opts.http.timeout_s = v;
    }
    Ok(LoadPlan::Served(opts))
}

/// The method settings and the masked LM (for the MLM sampler) from the wrapper's options.
fn settings(
    o: &mut Map<String, Value>,
) -> PyResult<(MethodSettings, Option<reagent::model::LoadedMaskedModel>)> {
    let preset = take_str(o, "preset")?.unwrap_or_else(|| "inseq".into());
    let mlm = take_str(o, "mlm")?;
    let s = MethodSettings::from_options(&preset, o).map_err(py_err)?;
    match (s.sampler == SamplerKind::Mlm, &mlm) {
        (true, None) => return Err(bad(
            "sampler 'mlm' needs mlm= (a masked LM such as a distilroberta-base folder or hub id)",
        )),
        (false, Some(_)) => return Err(bad("mlm is only used with sampler='mlm'")),
        _ => {}
    }
    let mlm = mlm
        .map(|spec| reagent::load_masked(&spec, &LoadOptions::default()))
        .transpose()
        .map_err(py_err)?;
    Ok((s, mlm))
}

/// A loaded model: local weights or a served model.
#[pyclass(frozen, module = "reagent._reagent")]
struct Model {
    inner: Arc<LoadedModel>,
}

#[pymethods]
impl Model {
    /// Load `spec` (a .gguf file, a Hugging Face folder, a hub id or a server's address) with
    /// the options in `options_json`.
    #[staticmethod]
    fn load(py: Python<'_>, spec: String, options_json: &str) -> PyResult<Model> {
        let mut o = options(options_json)?;
        if spec.trim().is_empty() {
            return Err(bad("the model spec is empty"));
        }
        let template = take_str(&mut o, "chat_template")?;
        let plan = load_plan(&spec, &mut o)?;
        let progress = PyProgress::new(None);
        let m = run_detached(py, &progress, move || {
            let mut m = plan.load()?;
            if let Some(path) = template {
                let t = std::fs::read_to_string(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        reagent::Error::NotFound(format!("{path}: no such chat template file"))
                    } else {
                        reagent::Error::input(format!("{path}: {e}"))
                    }
                })?;
                m.tokenizer = m.tokenizer.clone().with_chat_template(t);
            }
            Ok(m)
        })?;
        Ok(Model { inner: Arc::new(m) })
    }

    /// The model's id, architecture, sizes and capabilities, as JSON.
    fn info(&self) -> PyResult<String> {
        let m = &self.inner;
        let info = m.model.info();
        let caps = m.model.capabilities();
        let v = serde_json::json!({
            "id": m.id,
            "architecture": info.architecture,
            "weights": info.weights,
            "vocab_size": m.model.vocab_size(),
            "max_positions": info.max_positions,
            "served": matches!(m.source, reagent::ModelSource::Served(_)),
            "gradients": caps.gradients,
            "attentions": caps.attentions,
        });
        Ok(v.to_string())
    }

    /// The `k` most likely next tokens after `text`: a JSON list of {id, token, prob, logprob}.
    fn predict(&self, py: Python<'_>, text: String, k: usize) -> PyResult<String> {
        if text.trim().is_empty() {
            return Err(bad("the text is empty"));
        }
        let vocab = self.inner.model.vocab_size();
        if k == 0 || k > vocab {
            return Err(bad(format!(
                "k must be between 1 and the vocabulary size ({vocab}), got {k}"
            )));
        }
        let m = self.inner.clone();
        let progress = PyProgress::new(None);
        run_detached(py, &progress, move || {
            let enc = m.tokenizer.encode(&text, true)?;
            let lp = m
                .model
                .next_token_log_probs(std::slice::from_ref(&enc.ids))?;
            let row: Vec<f32> = lp.squeeze(0)?.to_vec1()?;
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&x, &y| row[y].total_cmp(&row[x]).then(x.cmp(&y)));
            // f32 fields, written as the command line writes them (shortest f32 digits).
            #[derive(serde::Serialize)]
            struct Prediction {
                id: usize,
                token: String,
                prob: f32,
                logprob: f32,
            }
            let out: Vec<Prediction> = order[..k]
                .iter()
                .map(|&id| Prediction {
                    id,
                    token: m.tokenizer.token_text(id as u32),
                    prob: row[id].exp(),
                    logprob: row[id],
                })
                .collect();
            serde_json::to_string(&out).map_err(|e| reagent::Error::input(e.to_string()))
        })
    }

    /// Attribute `prompt`'s targets with `method` (options: the method settings, `preset`,
    /// `mlm`, `target`, `max_new_tokens`, `contrast`, `words`); the result as the command
    /// line's JSON.
    #[pyo3(signature = (prompt, method, options_json, progress=None))]
    fn attribute(
        &self,
        py: Python<'_>,
        prompt: String,
        method: &str,
        options_json: &str,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let mut o = options(options_json)?;
        let target = take_str(&mut o, "target")?;
        let max_new = take_usize(&mut o, "max_new_tokens")?;
        let contrast = take_str(&mut o, "contrast")?;
        let words = take_str(&mut o, "words")?;
        let chat = match o.remove("chat") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(bad("chat must be True or False")),
        };
        let unit = take_str(&mut o, "unit")?;
        let spans = o.remove("unit_spans").filter(|v| !v.is_null());
        let unit = match (unit.as_deref(), spans) {
            (_, Some(Value::Array(spans))) => {
                let spans: Vec<(usize, usize)> = serde_json::from_value(Value::Array(spans))
                    .map_err(|_| {
                        bad("unit_spans must be a list of (start, end) character offsets")
                    })?;
                if spans.is_empty() {
                    return Err(bad("unit_spans is empty"));
                }
                if unit.as_deref().is_some_and(|u| u != "token") {
                    return Err(bad("give unit or unit_spans, not both"));
                }
                reagent::result::Unit::Spans(spans)
            }
            (None | Some("token"), None) => reagent::result::Unit::Token,
            (_, Some(_)) => {
                return Err(bad(
                    "unit_spans must be a list of (start, end) character offsets",
                ))
            }
            (Some("word"), None) => reagent::result::Unit::Word,
            (Some("sentence"), None) => reagent::result::Unit::Sentence,
            (Some(u), None) => {
                return Err(bad(format!(
                    "unit must be 'token', 'word' or 'sentence', got '{u}'"
                )))
            }
        };
        if words.is_some() && unit != reagent::result::Unit::Token {
            return Err(bad(
                "words applies to token-level results; give words or unit, not both",
            ));
        }
        let targets = match (target, max_new) {
            (Some(_), Some(_)) => return Err(bad("give target or max_new_tokens, not both")),
            (Some(t), None) => {
                if t.is_empty() {
                    return Err(bad("the target text is empty"));
                }
                Targets::Text(t)
            }
            (None, n) => Targets::Generate(n.unwrap_or(1)),
        };
        let words = match words.as_deref() {
            None => None,
            Some("sum") => Some(reagent::WordAggregation::Sum),
            Some("max") => Some(reagent::WordAggregation::Max),
            Some(w) => return Err(bad(format!("words must be 'sum' or 'max', got '{w}'"))),
        };
        let kind = MethodKind::from_name(method.trim()).map_err(py_err)?;
        let (s, mlm) = settings(&mut o)?;
        let m = self.inner.clone();
        let progress = PyProgress::new(progress);
        let pr = &progress;
        run_detached(py, &progress, move || {
            let mlm = if kind == MethodKind::Reagent {
                mlm
            } else {
                None
            };
            let method = registry::build(kind, &s, &m, mlm.as_ref())?;
            let mut plan = if chat {
                Plan::chat(&m, &prompt, &targets)?
            } else {
                Plan::new(&m, &prompt, &targets)?
            };
            if let Some(c) = &contrast {
                plan = plan.with_contrast(&m, c)?;
            }
            plan = plan.with_units(unit)?;
            let mut r = reagent::attribute(&m, method.as_ref(), plan, pr)?;
            if let Some(w) = words {
                r.aggregate_words(w);
            }
            serde_json::to_string(&r).map_err(|e| reagent::Error::input(e.to_string()))
        })
    }
}

/// Results given as JSON strings (what `Model.attribute` returns), parsed.
fn parse_results(results: &[String]) -> PyResult<Vec<reagent::AttributionResult>> {
    results
        .iter()
        .map(|s| {
            serde_json::from_str::<reagent::AttributionResult>(s)
                .map_err(|e| bad(format!("not an attribution result: {e}")))
        })
        .collect()
}

/// One self-contained HTML page (no network) of the results given as JSON strings.
#[pyfunction]
fn render_html(results: Vec<String>) -> PyResult<String> {
    Ok(reagent::render::Html.page(&parse_results(&results)?))
}

/// The results given as JSON strings in inseq's format (one `FeatureAttributionOutput`, which
/// `inseq.FeatureAttributionOutput.load` reads).
#[pyfunction]
fn render_inseq(results: Vec<String>) -> PyResult<String> {
    let v = reagent::render::InseqJson
        .to_value(&parse_results(&results)?)
        .map_err(py_err)?;
    serde_json::to_string_pretty(&v).map_err(|e| bad(e.to_string()))
}

/// Run (or resume) an evaluation: `model` on `dataset` with the methods and ReAGent variants
/// named in the options, writing into `out`; the summary as JSON.
#[pyfunction]
#[pyo3(signature = (model, dataset, out, options_json, progress=None))]
fn evaluate(
    py: Python<'_>,
    model: &Model,
    dataset: String,
    out: String,
    options_json: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let mut o = options(options_json)?;
    let methods = take_str(&mut o, "methods")?.unwrap_or_else(|| "reagent".into());
    let limit = take_usize(&mut o, "limit")?;
    let new_tokens = take_usize(&mut o, "new_tokens")?.unwrap_or(10);
    let mask_draws = take_usize(&mut o, "mask_draws")?.unwrap_or(4);
    let stability = match o.remove("stability") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("stability must be True or False")),
    };
    let variants = match o.remove("variants") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("variants must be a dict of name -> dict of settings")),
    };
    let base = o.clone();
    let (s, mlm) = settings(&mut o)?;
    // Against a served model, "all" means the methods it can run (the others need the weights).
    let served = !model.inner.model.info().capabilities.weights;
    let (kinds, _) = MethodKind::evaluation_list(&methods, served).map_err(py_err)?;
    // Each variant: the base options, then its own.
    let mut variant_settings = Vec::new();
    for (name, v) in variants {
        if !name.starts_with("reagent") || name.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(bad(format!(
                "variant `{name}`: the name must start with \"reagent\" and have no spaces or commas"
            )));
        }
        let Value::Object(own) = v else {
            return Err(bad(format!("variant {name}: its settings must be a dict")));
        };
        let mut merged = base.clone();
        merged.extend(own);
        let (vs, vmlm) =
            settings(&mut merged).map_err(|e| bad(format!("variant {name}: {}", e.value(py))))?;
        variant_settings.push((name, vs, vmlm));
    }
    let cfg = EvalConfig {
        seed: s.reagent.seed,
        limit,
        new_tokens,
        mask_draws,
        stability,
        ..EvalConfig::default()
    };
    let m = model.inner.clone();
    let progress = PyProgress::new(progress);
    let pr = &progress;
    run_detached(py, &progress, move || {
        cfg.validate()?;
        let path = Path::new(&dataset);
        let data = Dataset::read(path)?;
        let mut named = Vec::new();
        for k in kinds {
            let mlm = if k == MethodKind::Reagent {
                mlm.as_ref()
            } else {
                None
            };
            named.push(NamedMethod::new(registry::build(k, &s, &m, mlm)?));
        }
        for (name, vs, vmlm) in &variant_settings {
            named.push(NamedMethod {
                label: name.clone(),
                method: registry::build(MethodKind::Reagent, vs, &m, vmlm.as_ref())?,
            });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let summary = runner::run(&m, &data, &name, &named, &cfg, Path::new(&out), pr)?;
        serde_json::to_string(&summary).map_err(|e| reagent::Error::input(e.to_string()))
    })
}

/// Set the number of threads the tensor engine uses. Takes effect only before the first model
/// runs in this process (the thread pools are sized once).
#[pyfunction]
fn set_threads(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(bad("threads must be at least 1"));
    }
    // SAFETY-free: the variable is read once, when candle first sizes its pools.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    Ok(())
}

/// Set the token budget of one forward batch of the perturbation methods.
#[pyfunction]
fn set_batch_tokens(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(bad("batch_tokens must be at least 1"));
    }
    reagent::method::set_batch_tokens(n);
    Ok(())
}

/// The method names, in the library's order.
#[pyfunction]
fn methods() -> Vec<&'static str> {
    MethodKind::ALL.iter().map(|k| k.name()).collect()
}

#[pymodule]
fn _reagent(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(render_html, m)?)?;
    m.add_function(wrap_pyfunction!(render_inseq, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_batch_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    Ok(())
}
