//! Write a synthetic Llama-shaped GGUF model with random weights, to measure how `reagent`
//! scales with the model's size (peak memory, seconds per ReAGent step) where no real model of
//! that size can be downloaded.
//!
//!     cargo run --release --example synthetic_gguf -- TOKENIZER.gguf OUT.gguf [preset]
//!
//! The tokenizer (every `tokenizer.*` key) comes from a real GGUF file, such as
//! `models/SmolLM2-135M-Instruct.Q4_1.gguf`, so prompts encode as they would for that model.
//! Presets (Llama shape: RMSNorm, SwiGLU, RoPE, tied embeddings, vocabulary of the tokenizer):
//!
//! - `1.5b` (default): hidden 2048, 24 layers, MLP 7168, 16 heads: about 1.56 B parameters;
//! - `tiny`: hidden 256, 2 layers, MLP 512, 4 heads (for trying the script quickly).
//!
//! Linear weights are Q4_0 (as llama.cpp quantizes a model with `Q4_0`), the token embedding
//! Q8_0, norms F32. Weights are N(0, 0.02²) from a fixed seed, so the file is the same on every
//! run; the model's predictions are meaningless, its costs are a real model's.

use std::io::BufWriter;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Shape {
    hidden: usize,
    layers: usize,
    mlp: usize,
    heads: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(tok), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: synthetic_gguf TOKENIZER.gguf OUT.gguf [1.5b|tiny]");
        std::process::exit(2);
    };
    let shape = match args.get(2).map(String::as_str).unwrap_or("1.5b") {
        "1.5b" => Shape {
            hidden: 2048,
            layers: 24,
            mlp: 7168,
            heads: 16,
        },
        "tiny" => Shape {
            hidden: 256,
            layers: 2,
            mlp: 512,
            heads: 4,
        },
        other => return Err(format!("unknown preset {other:?} (1.5b or tiny)").into()),
    };
    let mut f = std::fs::File::open(tok)?;
    let src = gguf_file::Content::read(&mut f)?;
    let mut meta: Vec<(String, Value)> = src
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vocab = match src.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        _ => return Err(format!("{tok}: no tokenizer.ggml.tokens").into()),
    };
    let h = shape.hidden;
    let u = |v: usize| Value::U32(v as u32);
    meta.extend([
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String("synthetic".into())),
        ("llama.context_length".into(), u(2048)),
        ("llama.embedding_length".into(), u(h)),
        ("llama.block_count".into(), u(shape.layers)),
        ("llama.feed_forward_length".into(), u(shape.mlp)),
        ("llama.attention.head_count".into(), u(shape.heads)),
        ("llama.attention.head_count_kv".into(), u(shape.heads)),
        ("llama.rope.freq_base".into(), Value::F32(10_000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.vocab_size".into(), u(vocab)),
    ]);

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let dev = Device::Cpu;
    let mut random = |rows: usize, cols: usize, dtype: GgmlDType| -> candle_core::Result<QTensor> {
        // Box-Muller normals, scaled to 0.02.
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| {
                let (a, b): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
                0.02 * (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
            })
            .collect();
        QTensor::quantize(&Tensor::from_vec(data, (rows, cols), &dev)?, dtype)
    };
    let ones = |n: usize| {
        QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &dev)?,
            GgmlDType::F32,
        )
    };
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            random(vocab, h, GgmlDType::Q8_0)?,
        ),
        ("output_norm.weight".into(), ones(h)?),
    ];
    let mut params = vocab * h + h;
    for l in 0..shape.layers {
        eprint!("\rlayer {}/{}", l + 1, shape.layers);
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        for (name, rows, cols) in [
            ("attn_q", h, h),
            ("attn_k", h, h),
            ("attn_v", h, h),
            ("attn_output", h, h),
            ("ffn_gate", shape.mlp, h),
            ("ffn_up", shape.mlp, h),
            ("ffn_down", h, shape.mlp),
        ] {
            tensors.push((b(name), random(rows, cols, GgmlDType::Q4_0)?));
            params += rows * cols;
        }
        tensors.push((b("attn_norm"), ones(h)?));
        tensors.push((b("ffn_norm"), ones(h)?));
        params += 2 * h;
    }
    eprintln!();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut w = BufWriter::new(std::fs::File::create(out)?);
    gguf_file::write(&mut w, &meta_refs, &tensor_refs)?;
    drop(w);
    let bytes = std::fs::metadata(out)?.len();
    eprintln!(
        "{out}: {:.2} B parameters, {:.2} GB",
        params as f64 / 1e9,
        bytes as f64 / 1e9
    );
    Ok(())
}
