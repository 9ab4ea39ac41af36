//! bf16 precision (`LoadOptions::precision`), on every causal architecture's tiny model: where the
//! CPU has AVX512-BF16, next-token log-probabilities (over the whole vocabulary) stay within 0.15
//! of f32's (the largest seen on these random models is 0.07) and differ from them (the kernel
//! ran), gradient methods give f32's exact scores (gradients never use bf16),
//! and results name the precision; where it has not, loading in bf16 fails with one line.
//! The accuracy on the real models is measured by `examples/precision_cost.rs`
//! (`docs/results/speed.md`).

mod common;

use common::*;
use reagent::method::registry::{self, MethodSettings};
use reagent::model::{load_causal, LoadOptions, Precision};
use reagent::{MethodKind, NoProgress};

fn opts(precision: Precision) -> LoadOptions {
    LoadOptions {
        precision,
        ..LoadOptions::default()
    }
}

#[test]
fn bf16_forwards_are_close_to_f32_and_gradients_are_refused() {
    for name in CAUSAL {
        let path = fixture(&format!("models/{name}"));
        let path = path.to_str().unwrap();
        if !Precision::Bf16.available() {
            let e = load_causal(path, &opts(Precision::Bf16))
                .err()
                .expect("bf16 loaded");
            let msg = e.to_string();
            assert!(msg.contains("AVX512-BF16") && !msg.contains('\n'), "{msg}");
            continue;
        }
        let a = load_causal(path, &opts(Precision::F32)).unwrap();
        let b = load_causal(path, &opts(Precision::Bf16)).unwrap();
        assert!(b.model.info().weights.contains("bf16"), "{name}");
        assert!(!a.model.info().weights.contains("bf16"), "{name}");
        let vocab = a.model.vocab_size() as u32;
        let seqs: Vec<Vec<u32>> = (0..5u32)
            .map(|r| (0..7 + r).map(|i| (i * 31 + r * 7 + 3) % vocab).collect())
            .collect();
        let la = a.model.next_token_log_probs(&seqs).unwrap();
        let lb = b.model.next_token_log_probs(&seqs).unwrap();
        let d = max_abs_diff(&la, &lb);
        assert!(d < 0.15, "{name}: bf16 log-probs differ from f32 by {d}");
        assert!(
            d > 0.0,
            "{name}: bf16 gave f32's exact log-probs: the kernel did not run"
        );

        // Gradient methods are refused in one line (a bf16 model keeps no f32 weights);
        // attention methods run.
        let s = MethodSettings::default();
        let e = registry::build(MethodKind::InputXGradient, &s, &b, None)
            .unwrap()
            .attribute(b.model.as_ref(), &seqs[2], 5, 0, &NoProgress);
        let Some(msg) = e.err().map(|e| e.to_string()) else {
            panic!(
                "{name}: a gradient method accepted {}",
                b.model.info().weights
            )
        };
        assert!(
            msg.contains("no backward pass") && !msg.contains('\n'),
            "{name}: {msg}"
        );
        registry::build(MethodKind::Attention, &s, &b, None)
            .unwrap()
            .attribute(b.model.as_ref(), &seqs[2], 5, 0, &NoProgress)
            .unwrap();
    }
}

/// bf16 results do not depend on the thread count (each output sums its products in one
/// fixed order).
#[test]
fn bf16_is_the_same_with_any_thread_count() {
    let path = fixture("models/llama");
    let loaded = load_causal(path.to_str().unwrap(), &opts(Precision::Bf16));
    if !Precision::Bf16.available() {
        let msg = loaded
            .err()
            .expect("bf16 loaded without AVX512-BF16")
            .to_string();
        assert!(msg.contains("AVX512-BF16"), "{msg}");
        return;
    }
    let m = loaded.unwrap();
    let seqs: Vec<Vec<u32>> = (0..40u32)
        .map(|r| (0..30).map(|i| (i * 13 + r) % 50).collect())
        .collect();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                m.model
                    .next_token_log_probs(&seqs)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap()
            })
    };
    assert_eq!(run(1), run(3));
}

/// Quantized weights in f32 (`--quantized`, any CPU): the blocks stay in memory and are decoded
/// a panel at a time into the f32 kernel (`nn::matmul_quant_f32`), so the next-token
/// log-probabilities on the real GGUF models are the dense (dequantized) model's, up to the order
/// of the sums: every id of the vocabulary within 1e-3 (measured 0.0000 at four decimals over the
/// top 20), and the same most likely token.
#[test]
fn quantized_weights_in_f32_equal_the_dense_model() {
    for file in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let Some(path) = real_model(file) else {
            continue;
        };
        let path = path.to_str().unwrap();
        let dense = load_causal(path, &opts(Precision::F32)).unwrap();
        let quant = load_causal(
            path,
            &LoadOptions {
                quantized: true,
                ..opts(Precision::F32)
            },
        )
        .unwrap();
        let w = &quant.model.info().weights;
        assert!(w.contains("quantized"), "{w}");
        let seqs: Vec<Vec<u32>> = [
            "The Eiffel Tower is a famous landmark in the city of",
            "My cousin moved to France last year. Yesterday she visited the capital city,",
        ]
        .iter()
        .map(|p| dense.tokenizer.encode(p, true).unwrap().ids)
        .collect();
        let lp = |m: &reagent::LoadedModel| {
            m.model
                .next_token_log_probs(&seqs)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        let (a, c) = (lp(&dense), lp(&quant));
        let mut worst = 0f32;
        for (r, row) in a.iter().enumerate() {
            assert_eq!(
                reagent::util::top_n(row, 1),
                reagent::util::top_n(&c[r], 1),
                "{file}: row {r}'s most likely token"
            );
            for (x, y) in row.iter().zip(&c[r]) {
                // Ids of vanishing probability may sit at -inf-like values on both sides.
                if x.exp() > 1e-6 {
                    worst = worst.max((x - y).abs());
                }
            }
        }
        eprintln!("{file}: quantized f32 against dense f32, max |Δ log p| {worst:.6}");
        assert!(
            worst < 1e-3,
            "{file}: quantized f32 differs from dense f32 by {worst}"
        );
    }
}

/// Quantized weights in bf16 (`--quantized --precision bf16`): the blocks stay in memory and are
/// unpacked a panel at a time (`nn::bf16::QuantBf16`, whose product equals the packed
/// dequantized weight's bit for bit, a unit test). On the real GGUF models the next-token
/// log-probabilities equal the dense bf16 model's (the head, f32 in both, sums in another
/// order), the most likely token is the dense f32 model's; gradients are
/// refused; the weights' description says what ran; the quantized token embedding gives the
/// dense table's rows exactly.
#[test]
fn quantized_weights_in_bf16_on_the_real_models() {
    for file in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let Some(path) = real_model(file) else {
            continue;
        };
        let path = path.to_str().unwrap();
        let q = LoadOptions {
            quantized: true,
            ..opts(Precision::Bf16)
        };
        if !Precision::Bf16.available() {
            let msg = load_causal(path, &q)
                .err()
                .expect("bf16 loaded")
                .to_string();
            assert!(msg.contains("AVX512-BF16"), "{msg}");
            continue;
        }
        let f32_model = load_causal(path, &opts(Precision::F32)).unwrap();
        let dense = load_causal(path, &opts(Precision::Bf16)).unwrap();
        let quant = load_causal(path, &q).unwrap();
        let w = &quant.model.info().weights;
        assert!(w.contains("quantized") && w.contains("bf16"), "{w}");
        let tok = &f32_model.tokenizer;
        let seqs: Vec<Vec<u32>> = [
            "The Eiffel Tower is a famous landmark in the city of",
            "My cousin moved to France last year. Yesterday she visited the capital city,",
            "Water boils at a temperature of one hundred degrees",
        ]
        .iter()
        .map(|p| tok.encode(p, true).unwrap().ids)
        .collect();
        let lp = |m: &reagent::LoadedModel| {
            m.model
                .next_token_log_probs(&seqs)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        // The token embedding stays in its blocks too; its rows are the dense table's exactly.
        let ids = candle_core::Tensor::new(seqs[1].as_slice(), f32_model.model.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let (ea, ec) = (
            f32_model.model.embed(&ids).unwrap(),
            quant.model.embed(&ids).unwrap(),
        );
        assert_eq!(max_abs_diff(&ea, &ec), 0.0, "{file}: embedding rows");
        let (a, b, c) = (lp(&f32_model), lp(&dense), lp(&quant));
        // Over each row's 20 most likely tokens under f32.
        let gap = |x: &[Vec<f32>]| -> f32 {
            let mut worst = 0f32;
            for (r, row) in a.iter().enumerate() {
                for i in reagent::util::top_n(row, 20) {
                    worst = worst.max((row[i] - x[r][i]).abs());
                }
            }
            worst
        };
        // The blocks decoded a panel at a time give the dense model's products, up to the
        // order of the sums: quantized bf16 is dense bf16 (measured 0.0000 on both models).
        let gc = gap(&c);
        let same = (0..a.len())
            .flat_map(|r| {
                reagent::util::top_n(&a[r], 20)
                    .into_iter()
                    .map(move |i| (r, i))
            })
            .map(|(r, i)| (b[r][i] - c[r][i]).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{file}: top-20 |Δ log p| vs dense f32: dense bf16 {:.4}, quantized bf16 {gc:.4}; quantized bf16 vs dense bf16 {same:.5}",
            gap(&b)
        );
        assert!(
            same < 1e-3,
            "{file}: quantized bf16 differs from dense bf16 by {same}"
        );
        for (r, row) in a.iter().enumerate() {
            assert_eq!(
                reagent::util::top_n(row, 1),
                reagent::util::top_n(&c[r], 1),
                "{file}: row {r}'s most likely token"
            );
        }
        let e = registry::build(
            MethodKind::InputXGradient,
            &MethodSettings::default(),
            &quant,
            None,
        )
        .unwrap()
        .attribute(quant.model.as_ref(), &seqs[0], 5, 0, &NoProgress);
        assert!(
            e.is_err(),
            "{file}: a gradient method ran on quantized bf16 weights"
        );
    }
}
