//! Structured fuzzing of everything a user hands us: `config.json`, `tokenizer.json`,
//! safetensors headers, GGUF metadata and tensor tables, and evaluation datasets. Each case
//! mutates a valid fixture (a field set to 0, a huge or negative number, another type, a removed
//! field, a truncated file, flipped bytes, a wrong shape or dtype, a missing tensor) and loads
//! it. Loading must succeed or fail with a one-line error: never a panic, and a loaded model must
//! still answer with finite numbers. Seeded (proptest with a fixed seed), so every run tests the
//! same cases; the counts are printed.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reagent::model::{load_causal, load_masked, LoadOptions};
use serde_json::Value as J;

/// One mutation, interpreted against the document it applies to.
#[derive(Debug, Clone)]
struct Mutation {
    op: u8,
    index: usize,
    kind: u8,
    frac: f64,
    mask: u8,
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        (0u8..6, any::<usize>(), any::<u8>(), 0.0f64..1.0, 1u8..=255).prop_map(
            |(op, index, kind, frac, mask)| Mutation {
                op,
                index,
                kind,
                frac,
                mask,
            },
        ),
        1..4,
    )
}

fn runner(cases: u32, seed: u8) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

/// A replacement value of some kind: zero, negative, huge, fractional, NaN-like, or another type.
fn hostile(kind: u8) -> J {
    match kind % 10 {
        0 => J::from(0),
        1 => J::from(-1),
        2 => J::from(u64::MAX),
        3 => J::from(1u64 << 40),
        4 => J::from(1.5),
        5 => J::from("x"),
        6 => J::Null,
        7 => J::Array(vec![]),
        8 => serde_json::json!({}),
        _ => J::from(1),
    }
}

/// Paths to every member of every object in a JSON document.
fn member_paths(v: &J, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        J::Object(m) => {
            for (k, x) in m {
                prefix.push(k.clone());
                out.push(prefix.clone());
                member_paths(x, prefix, out);
                prefix.pop();
            }
        }
        J::Array(a) => {
            // Only the first few elements: enough to reach nested shapes.
            for (i, x) in a.iter().enumerate().take(3) {
                prefix.push(format!("#{i}"));
                member_paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut J, path: &[String]) -> Option<&'a mut J> {
    let mut cur = v;
    for p in path {
        cur = match p.strip_prefix('#') {
            Some(i) => cur.get_mut(i.parse::<usize>().ok()?)?,
            None => cur.get_mut(p)?,
        };
    }
    Some(cur)
}

/// Apply mutations to a JSON text; byte-level ones work on the text.
fn mutate_json(text: &str, ms: &[Mutation]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for m in ms {
        match m.op {
            0..=2 => {
                let Ok(mut v) = serde_json::from_slice::<J>(&bytes) else {
                    continue;
                };
                let mut paths = Vec::new();
                member_paths(&v, &mut Vec::new(), &mut paths);
                if paths.is_empty() {
                    continue;
                }
                let path = &paths[m.index % paths.len()];
                if m.op == 2 {
                    let (last, parent) = path.split_last().expect("non-empty");
                    if let Some(J::Object(obj)) = at_path(&mut v, parent) {
                        obj.remove(last);
                    }
                } else if let Some(slot) = at_path(&mut v, path) {
                    *slot = hostile(m.kind);
                }
                bytes = serde_json::to_vec(&v).expect("serializable");
            }
            3 => bytes.truncate((bytes.len() as f64 * m.frac) as usize),
            _ => {
                if !bytes.is_empty() {
                    let i = (m.frac * bytes.len() as f64) as usize % bytes.len();
                    bytes[i] ^= m.mask;
                }
            }
        }
    }
    bytes
}

/// Run `f` and turn a panic or a multi-line error into a test failure.
fn must_not_panic(
    what: &str,
    f: impl FnOnce() -> reagent::Result<()> + std::panic::UnwindSafe,
) -> Result<(), TestCaseError> {
    let t0 = std::time::Instant::now();
    let r = std::panic::catch_unwind(f);
    let secs = t0.elapsed().as_secs_f64();
    if secs > 20.0 {
        return Err(TestCaseError::fail(format!("{what}: took {secs:.0} s")));
    }
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let msg = e.to_string();
            if msg.trim().is_empty() || msg.contains('\n') {
                Err(TestCaseError::fail(format!(
                    "{what}: not a one-line error: {msg:?}"
                )))
            } else {
                Ok(())
            }
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(TestCaseError::fail(format!("{what}: panicked: {msg}")))
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("reagent-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Load a causal model and ask it for a prediction: finite numbers or an error.
fn load_and_predict(spec: &Path) -> reagent::Result<()> {
    let m = load_causal(spec.to_str().unwrap(), &LoadOptions::default())?;
    let ids = m.tokenizer.encode("The cat sat", false)?.ids;
    let ids: Vec<u32> = if ids.is_empty() { vec![0] } else { ids };
    let lp = m.model.next_token_log_probs(&[ids])?;
    let v: Vec<f32> = lp.flatten_all()?.to_vec1()?;
    if v.iter().any(|x| x.is_nan()) {
        return Err(reagent::Error::input("NaN log-probabilities"));
    }
    Ok(())
}

fn copy_model(src: &str, dst: &Path) {
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "tokenizer_config.json",
    ] {
        let p = fixture(&format!("models/{src}/{f}"));
        if p.exists() {
            std::fs::copy(&p, dst.join(f)).unwrap();
        }
    }
}

const CONFIG_CASES: u32 = 200;
const TOKENIZER_CASES: u32 = 400;
const SAFETENSORS_CASES: u32 = 500;

const CAUSAL: &[&str] = &[
    "gpt2",
    "llama",
    "llama_tied",
    "mistral",
    "qwen2",
    "gemma3",
    "opt",
    "opt_350m_style",
    "gptj",
    "gpt_neox",
    "gpt_neox_seq",
];

#[test]
fn fuzz_config_json() {
    let dir = scratch("config");
    let mut n = 0;
    for (k, model) in CAUSAL.iter().chain(["bert", "roberta"].iter()).enumerate() {
        copy_model(model, &dir);
        let original =
            std::fs::read_to_string(fixture(&format!("models/{model}/config.json"))).unwrap();
        let masked = *model == "bert" || *model == "roberta";
        let mut r = runner(CONFIG_CASES, k as u8);
        r.run(&mutations(), |ms| {
            std::fs::write(dir.join("config.json"), mutate_json(&original, &ms)).unwrap();
            let d = dir.clone();
            must_not_panic(&format!("{model} config {ms:?}"), move || {
                if masked {
                    load_masked(d.to_str().unwrap(), &LoadOptions::default()).map(|_| ())
                } else {
                    load_and_predict(&d)
                }
            })
        })
        .unwrap();
        n += CONFIG_CASES;
    }
    eprintln!(
        "fuzz: {n} config.json cases over {} models",
        CAUSAL.len() + 2
    );
}

#[test]
fn fuzz_tokenizer_json() {
    let dir = scratch("tokenizer");
    let mut n = 0;
    for (k, model) in ["gpt2", "llama_tied", "gemma3"].iter().enumerate() {
        copy_model(model, &dir);
        let original =
            std::fs::read_to_string(fixture(&format!("models/{model}/tokenizer.json"))).unwrap();
        let mut r = runner(TOKENIZER_CASES, 40 + k as u8);
        r.run(&mutations(), |ms| {
            std::fs::write(dir.join("tokenizer.json"), mutate_json(&original, &ms)).unwrap();
            let d = dir.clone();
            must_not_panic(&format!("{model} tokenizer {ms:?}"), move || {
                load_and_predict(&d)
            })
        })
        .unwrap();
        n += TOKENIZER_CASES;
    }
    eprintln!("fuzz: {n} tokenizer.json cases");
}

#[test]
fn fuzz_safetensors_header() {
    let dir = scratch("safetensors");
    let mut n = 0;
    for (k, model) in ["llama_tied", "gpt2"].iter().enumerate() {
        copy_model(model, &dir);
        let bytes = std::fs::read(fixture(&format!("models/{model}/model.safetensors"))).unwrap();
        let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + hlen])
            .unwrap()
            .to_string();
        let body = bytes[8 + hlen..].to_vec();
        let mut r = runner(SAFETENSORS_CASES, 60 + k as u8);
        r.run(&(mutations(), 0u8..4, 0.0f64..1.0), |(ms, whole, frac)| {
            let mut file = Vec::new();
            match whole {
                // Mutate the header JSON, keep the data.
                0 | 1 => {
                    let h = mutate_json(&header, &ms);
                    file.extend((h.len() as u64).to_le_bytes());
                    file.extend(h);
                    file.extend(&body);
                }
                // A wrong header length.
                2 => {
                    file.extend(((hlen as f64 * (frac * 4.0)) as u64).to_le_bytes());
                    file.extend(&bytes[8..]);
                }
                // The file cut short.
                _ => file.extend(&bytes[..(bytes.len() as f64 * frac) as usize]),
            }
            std::fs::write(dir.join("model.safetensors"), file).unwrap();
            let d = dir.clone();
            must_not_panic(
                &format!("{model} safetensors {ms:?} {whole} {frac}"),
                move || load_and_predict(&d),
            )
        })
        .unwrap();
        n += SAFETENSORS_CASES;
    }
    eprintln!("fuzz: {n} safetensors cases");
}

/// A tiny but complete GGUF (llama architecture, the llama_tied fixture's weights and BPE
/// tokenizer), as metadata and tensors that a case can change before writing.
fn tiny_gguf() -> (Vec<(String, Value)>, Vec<Entry>) {
    let dir = fixture("models/llama_tied");
    let cfg: J =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tok: J =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let mut vocab: Vec<(String, u64)> = tok["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    for a in tok["added_tokens"].as_array().unwrap() {
        vocab.push((
            a["content"].as_str().unwrap().to_string(),
            a["id"].as_u64().unwrap(),
        ));
    }
    vocab.sort_by_key(|(_, id)| *id);
    let n_vocab = u("vocab_size") as usize;
    let mut tokens: Vec<Value> = vocab
        .iter()
        .map(|(t, _)| Value::String(t.clone()))
        .collect();
    // The model has rows for the base vocabulary only.
    tokens.truncate(n_vocab);
    let types: Vec<Value> = (0..tokens.len()).map(|_| Value::I32(1)).collect();
    let known: std::collections::HashSet<&str> = vocab
        .iter()
        .take(n_vocab)
        .map(|(t, _)| t.as_str())
        .collect();
    // Merges whose parts and result are all in the (truncated) vocabulary.
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            J::String(s) => s.clone(),
            J::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            _ => unreachable!(),
        })
        .filter(|m| {
            let (a, b) = m.split_once(' ').unwrap();
            known.contains(a) && known.contains(b) && known.contains(format!("{a}{b}").as_str())
        })
        .map(Value::String)
        .collect();
    let meta = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "llama.embedding_length".into(),
            Value::U32(u("hidden_size")),
        ),
        (
            "llama.feed_forward_length".into(),
            Value::U32(u("intermediate_size")),
        ),
        (
            "llama.block_count".into(),
            Value::U32(u("num_hidden_layers")),
        ),
        (
            "llama.attention.head_count".into(),
            Value::U32(u("num_attention_heads")),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(u("num_key_value_heads")),
        ),
        (
            "llama.context_length".into(),
            Value::U32(u("max_position_embeddings")),
        ),
        ("llama.vocab_size".into(), Value::U32(n_vocab as u32)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(100000.0)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
    ];
    let st = load_tensors(&dir.join("model.safetensors"));
    let name = |hf: &str| -> String {
        let hf = hf.strip_prefix("model.").unwrap_or(hf);
        if hf == "embed_tokens.weight" {
            return "token_embd.weight".into();
        }
        if hf == "norm.weight" {
            return "output_norm.weight".into();
        }
        let rest = hf.strip_prefix("layers.").unwrap();
        let (i, rest) = rest.split_once('.').unwrap();
        let part = match rest {
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            other => panic!("unexpected tensor {other}"),
        };
        format!("blk.{i}.{part}")
    };
    let mut tensors: Vec<Entry> = st
        .iter()
        .filter(|(k, _)| !k.starts_with("lm_head"))
        .map(|(k, t)| (name(k), t.clone(), GgmlDType::F32))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (meta, tensors)
}

/// A tensor to write: name, f32 values, the dtype to store them in.
type Entry = (String, Tensor, GgmlDType);

fn write_gguf(path: &Path, meta: &[(String, Value)], tensors: &[Entry]) {
    let mut f = std::io::Cursor::new(Vec::new());
    let m: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let q: Vec<(&str, QTensor)> = tensors
        .iter()
        .map(|(k, t, d)| {
            let q = QTensor::quantize(t, *d)
                .or_else(|_| QTensor::quantize(t, GgmlDType::F32))
                .unwrap();
            (k.as_str(), q)
        })
        .collect();
    let t: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut f, &m, &t).unwrap();
    std::fs::write(path, f.into_inner()).unwrap();
}

fn hostile_value(kind: u8) -> Value {
    match kind % 9 {
        0 => Value::U32(0),
        1 => Value::U64(u64::MAX),
        2 => Value::U32(1 << 30),
        3 => Value::I32(-1),
        4 => Value::F32(f32::NAN),
        5 => Value::String("x".into()),
        6 => Value::Array(vec![]),
        7 => Value::Array(vec![Value::String("a b".into()); 3]),
        _ => Value::U32(1),
    }
}

#[test]
fn fuzz_gguf() {
    let dir = scratch("gguf");
    let path = dir.join("model.gguf");
    let (meta, tensors) = tiny_gguf();
    // The unmutated file loads and predicts: the mutations start from a valid model.
    write_gguf(&path, &meta, &tensors);
    load_and_predict(&path).expect("the base GGUF loads");
    let base = std::fs::read(&path).unwrap();
    let cases = 1500;
    let mut r = runner(cases, 90);
    r.run(&mutations(), |ms| {
        let (mut meta, mut tensors) = (meta.clone(), tensors.clone());
        let mut bytes: Option<Vec<u8>> = None;
        for m in &ms {
            match m.op {
                // A metadata value replaced or removed.
                0 => {
                    let i = m.index % meta.len();
                    meta[i].1 = hostile_value(m.kind);
                }
                1 => {
                    let i = m.index % meta.len();
                    meta.remove(i);
                }
                // A tensor removed, reshaped or given another dtype.
                2 => {
                    let i = m.index % tensors.len();
                    match m.kind % 4 {
                        0 => {
                            tensors.remove(i);
                        }
                        1 => {
                            // Half the elements, one dimension.
                            let n = tensors[i].1.elem_count();
                            tensors[i].1 = Tensor::zeros(
                                n.div_ceil(2).max(1),
                                candle_core::DType::F32,
                                &Device::Cpu,
                            )
                            .unwrap();
                        }
                        2 => tensors[i].1 = tensors[i].1.flatten_all().unwrap(),
                        _ => tensors[i].2 = GgmlDType::F16,
                    }
                }
                // Bytes flipped in the header, or the file cut short.
                3 | 4 => {
                    let b = bytes.get_or_insert_with(|| base.clone());
                    let header = b.len().min(16 * 1024);
                    let i = (m.frac * header as f64) as usize % header;
                    b[i] ^= m.mask;
                }
                _ => {
                    let b = bytes.get_or_insert_with(|| base.clone());
                    b.truncate((b.len() as f64 * m.frac) as usize);
                }
            }
        }
        match bytes {
            Some(b) => std::fs::write(&path, b).unwrap(),
            None => write_gguf(&path, &meta, &tensors),
        }
        let p = path.clone();
        must_not_panic(&format!("gguf {ms:?}"), move || load_and_predict(&p))
    })
    .unwrap();
    eprintln!("fuzz: {cases} GGUF cases");
}

#[test]
fn fuzz_datasets() {
    let dir = scratch("datasets");
    let rows = std::fs::read_to_string(root().join("data/longra.jsonl")).unwrap();
    let first: Vec<&str> = rows.lines().take(3).collect();
    let cases = 1000;
    let mut r = runner(cases, 120);
    r.run(&(mutations(), 0usize..3), |(ms, which)| {
        let mut lines: Vec<Vec<u8>> = first.iter().map(|l| l.as_bytes().to_vec()).collect();
        lines[which] = mutate_json(first[which], &ms);
        let mut text = lines.join(&b'\n');
        text.push(b'\n');
        let p = dir.join("rows.jsonl");
        std::fs::write(&p, &text).unwrap();
        let t = dir.join("prompts.txt");
        std::fs::write(&t, &text).unwrap();
        must_not_panic(&format!("dataset {ms:?}"), move || {
            let _ = reagent::eval::datasets::Dataset::read(&t)?;
            reagent::eval::datasets::Dataset::read(&p).map(|_| ())
        })
    })
    .unwrap();
    eprintln!("fuzz: {cases} dataset cases");
}
