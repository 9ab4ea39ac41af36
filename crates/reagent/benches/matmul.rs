//! Matrix-product benchmark: `x [m, k] @ w [n, k]^T` in f32 (`nn::matmul_f32`, what the f32
//! forward runs) and in bf16 (`reagent::model::nn::bf16`, where the CPU has AVX512-BF16),
//! on the shapes of a SmolLM2-135M forward over 16 × 48 tokens. Prints GFLOP/s per shape.
//!
//!     RAYON_NUM_THREADS=1 cargo bench --bench matmul -- [iterations]

use std::time::Instant;

use reagent::model::nn::bf16::{self, PackedBf16};
use reagent::model::nn::matmul_f32;

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let iters: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let threads = rayon::current_num_threads();
    println!("threads {threads}, AVX512-BF16 {}", bf16::available());
    println!(
        "{:>16} {:>12} {:>12}",
        "m x n x k", "f32 GFLOP/s", "bf16 GFLOP/s"
    );
    for &(m, n, k) in &[
        (768, 960, 576),
        (768, 576, 576),
        (768, 3072, 576),
        (768, 576, 1536),
    ] {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let flop = 2.0 * (m * n * k) as f64;
        let mut t32 = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            std::hint::black_box(matmul_f32(&x, &w, m, n, k, threads));
            t32.push(t.elapsed().as_secs_f64());
        }
        let packed = PackedBf16::pack(&w, n, k);
        let mut t16 = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            if std::hint::black_box(packed.matmul(&x, m, threads > 1)).is_none() {
                break;
            }
            t16.push(t.elapsed().as_secs_f64());
        }
        let bf = if t16.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", flop / median(t16) / 1e9)
        };
        println!(
            "{:>16} {:>12.1} {:>12}",
            format!("{m}x{n}x{k}"),
            flop / median(t32) / 1e9,
            bf
        );
    }
}
