//! Forward-pass benchmark: SmolLM2-135M (f32, dequantized from the GGUF), batch 16 x 48 tokens,
//! last-position log-probabilities only. Prints the median of the timed runs in milliseconds.
//!
//!     RAYON_NUM_THREADS=2 [PRECISION=bf16] [QUANTIZED=1] cargo bench --bench forward -- [iterations]
//!
//! `scripts/bench-forward.sh` runs it alternately with transformers' forward on the same shape.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use reagent::model::{load_causal, LoadOptions};

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let iters: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let path = common::smollm2()?;
    let opts = LoadOptions {
        quantized: std::env::var_os("QUANTIZED").is_some(),
        precision: common::precision()?,
        ..LoadOptions::default()
    };
    let m = load_causal(path.to_str().ok_or("model path is not UTF-8")?, &opts)?;
    let vocab = m.model.vocab_size() as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let batch: Vec<Vec<u32>> = (0..16)
        .map(|_| (0..48).map(|_| rng.random_range(17..vocab)).collect())
        .collect();
    // Warm-up.
    m.model.next_token_log_probs(&batch)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let lp = m.model.next_token_log_probs(&batch)?;
        let _ = lp.sum_all()?.to_scalar::<f32>()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "reagent forward 16x48 ({}, threads {}): median {:.1} ms, min {:.1} ms over {iters} runs",
        m.model.info().weights,
        candle_core::utils::get_num_threads(),
        times[iters / 2],
        times[0]
    );
    Ok(())
}
