//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The tiny random causal models under `fixtures/models/` (made by `scripts/make_fixtures.py`).
pub const CAUSAL: &[&str] = &[
    "llama",
    "llama_tied",
    "qwen2",
    "mistral",
    "gemma3",
    "gpt2",
    "opt",
    "opt_350m_style",
    "gptj",
    "gpt_neox",
    "gpt_neox_seq",
];

/// A tiny fixture model (`fixtures/models/NAME`), loaded with the default options.
pub fn tiny_model(name: &str) -> reagent::LoadedModel {
    let dir = fixture(&format!("models/{name}"));
    reagent::model::load_causal(
        dir.to_str().unwrap(),
        &reagent::model::LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// Where the real models are: `$REAGENT_MODELS_DIR`, as `scripts/fetch-models.sh` reads it, or
/// `<repo>/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("REAGENT_MODELS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => root().join("models"),
    }
}

/// Whether a missing real model must fail the test: under CI (`CI` set) or with
/// `REAGENT_REQUIRE_MODELS` set.
pub fn models_required() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|x| !x.is_empty() && x != "0" && x != "false");
    set("CI") || set("REAGENT_REQUIRE_MODELS")
}

/// A real model, or `None` (with a visible message) when it is missing and not required. Under
/// CI or `REAGENT_REQUIRE_MODELS`, a missing model fails the test with its path.
pub fn real_model(file: &str) -> Option<PathBuf> {
    let p = models_dir().join(file);
    if p.is_file() {
        return Some(p);
    }
    if models_required() {
        panic!(
            "{} is missing, and real models are required here (CI or REAGENT_REQUIRE_MODELS); \
             run scripts/fetch-models.sh",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing; run scripts/fetch-models.sh to run this test",
        p.display()
    );
    None
}

pub fn load_tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// max |a - b| over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a - b| / max |b|.
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    max_abs_diff(a, b) / scale.max(f32::MIN_POSITIVE)
}

pub fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A JSON list of numbers as f32.
pub fn floats_of(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("number list")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// A JSON list of equal-length number lists as a `[rows, cols]` tensor.
pub fn matrix_of(v: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<f32>> = v.as_array().expect("rows").iter().map(floats_of).collect();
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (r, c), &Device::Cpu).unwrap()
}

/// max |a - b| over two equal-length vectors.
pub fn max_abs_diff_vec(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// llama.cpp's `llama-server`: `$REAGENT_LLAMA_SERVER`, as `scripts/test.sh` sets it from
/// `scripts/build-llama-server.sh`, or the cached build. `None` (visibly) when missing and not
/// required; a failure under CI or `REAGENT_REQUIRE_MODELS`.
pub fn llama_server_binary() -> Option<PathBuf> {
    let p = match std::env::var_os("REAGENT_LLAMA_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let cache = std::env::var_os("REAGENT_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("reagent"))
                })
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/reagent"))
                })
                .unwrap_or_default();
            cache.join("llama-server-0.3.36-avx2/llama-server")
        }
    };
    if p.is_file() {
        return Some(p);
    }
    if models_required() {
        panic!(
            "{} is missing, and the real server is required here; run scripts/build-llama-server.sh",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing; run scripts/build-llama-server.sh to run this test",
        p.display()
    );
    None
}

/// A free loopback port (bound and released: another process could take it in between, which
/// the server's start-up then reports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `llama-server` on a GGUF file, stopped when dropped.
pub struct LlamaServer {
    child: std::process::Child,
    pub port: u16,
}

impl LlamaServer {
    /// Start the server on `model` with `slots` parallel slots and wait until it answers.
    pub fn start(binary: &Path, model: &Path, slots: usize) -> LlamaServer {
        Self::start_on(binary, model, slots, free_port())
    }

    /// [`LlamaServer::start`] on a given port (a restart where the last one ran).
    pub fn start_on(binary: &Path, model: &Path, slots: usize, port: u16) -> LlamaServer {
        let log = std::env::temp_dir().join(format!("llama-server-{port}.log"));
        let out = std::fs::File::create(&log).expect("server log");
        let child = std::process::Command::new(binary)
            .args(["-m"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", &slots.to_string(), "-c", &(2048 * slots).to_string()])
            .args(["-t", "2", "--no-webui", "--log-disable"])
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let mut server = LlamaServer { child, port };
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "llama-server exited at start ({status}); its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if ureq::get(&format!("{}/health", server.root()))
                .timeout(std::time::Duration::from_secs(2))
                .call()
                .is_ok()
            {
                return server;
            }
            assert!(
                t0.elapsed().as_secs() < 120,
                "llama-server did not answer /health within 2 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn root(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The OpenAI-compatible address users give: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("{}/v1", self.root())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Replaces a token by the next id (mod 8): always a different token.
pub struct NextId;

impl reagent::method::reagent::Sampler for NextId {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"kind": "next-id"})
    }
    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        _draws: &mut [reagent::method::reagent::Draw<'_>],
    ) -> reagent::Result<Vec<Vec<u32>>> {
        Ok(replace
            .iter()
            .map(|m| {
                context
                    .iter()
                    .zip(m)
                    .map(|(&id, &r)| if r { (id + 1) % 8 } else { id })
                    .collect()
            })
            .collect())
    }
}
