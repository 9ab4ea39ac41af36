//! What bf16 matrix products cost in accuracy, against f32, on the LongRA rows:
//!
//! 1. next-token probabilities of each prompt and of 16 perturbed copies (30 % of the tokens
//!    replaced by uniform draws, as ReAGent's probes): the largest absolute error of any
//!    probability, the error of log p(target), and whether the top-1 and top-5 agree;
//! 2. attribution scores (same seed in both precisions) of occlusion, ReAGent with inseq's
//!    preset (capped steps) and the mask-diff variant of the evaluation: Spearman rank
//!    correlation and top-3 overlap against f32, next to the same figures for f32 with another
//!    seed, the variation the method has anyway.
//!
//!     cargo run --release --example precision_cost -- [model.gguf] [rows] [inseq-steps]
//!
//! Needs a CPU with AVX512-BF16. `docs/results/speed.md` records its output.

use rand::{Rng, SeedableRng};
use reagent::method::registry::{self, MethodSettings};
use reagent::model::{load_causal, LoadOptions, Precision};
use reagent::{LoadedModel, MethodKind, NoProgress};

fn ranks(x: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return if va == vb { 1.0 } else { 0.0 };
    }
    cov / (va * vb).sqrt()
}

fn top(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn overlap(a: &[f32], b: &[f32], k: usize) -> f64 {
    let (ta, tb) = (top(a, k), top(b, k));
    ta.iter().filter(|i| tb.contains(i)).count() as f64 / k as f64
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

fn scores(
    kind: MethodKind,
    s: &MethodSettings,
    m: &LoadedModel,
    ctx: &[u32],
    target: u32,
) -> reagent::Result<Vec<f32>> {
    let method = registry::build(kind, s, m, None)?;
    Ok(method
        .attribute(m.model.as_ref(), ctx, target, 0, &NoProgress)?
        .scores)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .cloned()
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let rows: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let inseq_steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let load = |precision| {
        load_causal(
            &path,
            &LoadOptions {
                precision,
                ..LoadOptions::default()
            },
        )
    };
    let f32m = load(Precision::F32)?;
    let bf16m = load(Precision::Bf16)?;
    let vocab = f32m.model.vocab_size() as u32;
    let data = std::fs::read_to_string("data/longra.jsonl")?;

    let mut inseq = MethodSettings {
        reagent: reagent::method::reagent::ReagentConfig::preset("inseq")?,
        ..MethodSettings::default()
    };
    inseq.reagent.max_steps = inseq_steps;
    let mut maskdiff = MethodSettings::from_options(
        "inseq",
        serde_json::json!({"readout": "mask_diff", "shrink_z": 2, "replacing_ratio": 0.1,
            "probes": 16, "max_steps": 8, "min_steps": 8})
        .as_object()
        .ok_or_else(|| reagent::Error::input("options"))?,
    )?;
    maskdiff.reagent.seed = inseq.reagent.seed;
    let occlusion = MethodSettings::default();
    let configs: [(&str, MethodKind, &MethodSettings); 3] = [
        ("occlusion", MethodKind::Occlusion, &occlusion),
        ("reagent (inseq preset)", MethodKind::Reagent, &inseq),
        (
            "reagent (mask-diff, shrink 2)",
            MethodKind::Reagent,
            &maskdiff,
        ),
    ];

    let (mut max_abs, mut lp_err) = (0f64, Vec::new());
    let (mut top1, mut top5, mut n_ctx) = (0usize, 0f64, 0usize);
    let mut agree: Vec<[Vec<f64>; 4]> = vec![Default::default(); configs.len()];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (i, line) in data.lines().take(rows).enumerate() {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let (prompt, target) = (
            row["prompt"].as_str().unwrap_or_default(),
            row["target"].as_str().unwrap_or_default(),
        );
        let ctx = f32m.tokenizer.encode(prompt, true)?.ids;
        let target = f32m.tokenizer.encode(target, false)?.ids[0];
        let mut batch = vec![ctx.clone()];
        for _ in 0..16 {
            let mut c = ctx.clone();
            for t in c.iter_mut().skip(1) {
                if rng.random::<f64>() < 0.3 {
                    *t = rng.random_range(0..vocab);
                }
            }
            batch.push(c);
        }
        let a = f32m.model.next_token_log_probs(&batch)?.to_vec2::<f32>()?;
        let b = bf16m.model.next_token_log_probs(&batch)?.to_vec2::<f32>()?;
        for (a, b) in a.iter().zip(&b) {
            let pa: Vec<f32> = a.iter().map(|x| x.exp()).collect();
            let pb: Vec<f32> = b.iter().map(|x| x.exp()).collect();
            for (x, y) in pa.iter().zip(&pb) {
                max_abs = max_abs.max((x - y).abs() as f64);
            }
            lp_err.push((a[target as usize] - b[target as usize]).abs() as f64);
            top1 += (top(&pa, 1) == top(&pb, 1)) as usize;
            top5 += overlap(&pa, &pb, 5);
            n_ctx += 1;
        }
        for (c, (name, kind, s)) in configs.iter().enumerate() {
            let x = scores(*kind, s, &f32m, &ctx, target)?;
            let y = scores(*kind, s, &bf16m, &ctx, target)?;
            agree[c][0].push(spearman(&x, &y));
            agree[c][1].push(overlap(&x, &y, 3));
            if *kind == MethodKind::Reagent {
                let mut other = (*s).clone();
                other.reagent.seed += 1;
                let z = scores(*kind, &other, &f32m, &ctx, target)?;
                agree[c][2].push(spearman(&x, &z));
                agree[c][3].push(overlap(&x, &z, 3));
            }
            eprintln!(
                "row {i} {name}: rho {:.3}",
                agree[c][0].last().unwrap_or(&0.0)
            );
        }
    }
    lp_err.sort_by(f64::total_cmp);
    println!(
        "model {path}, {rows} LongRA rows, {n_ctx} contexts (each prompt and 16 perturbed copies)"
    );
    println!("next-token probabilities, bf16 against f32:");
    println!("  largest |p_bf16 - p_f32| over the whole vocabulary: {max_abs:.4}");
    println!(
        "  |log p(target)| error: median {:.4}, largest {:.4}",
        lp_err[lp_err.len() / 2],
        lp_err[lp_err.len() - 1]
    );
    println!(
        "  top-1 agrees in {top1} of {n_ctx}; top-5 overlap {:.3}",
        top5 / n_ctx as f64
    );
    println!(
        "attribution scores, same seed (inseq preset capped at {inseq_steps} steps; POS sampler):"
    );
    println!(
        "  {:<32} {:>12} {:>12} {:>14} {:>14}",
        "method", "rho bf16/f32", "top3 bf16/f32", "rho seed/seed", "top3 seed/seed"
    );
    for (c, (name, _, _)) in configs.iter().enumerate() {
        let seed = |v: &Vec<f64>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}", mean(v))
            }
        };
        println!(
            "  {:<32} {:>12.3} {:>12.3} {:>14} {:>14}",
            name,
            mean(&agree[c][0]),
            mean(&agree[c][1]),
            seed(&agree[c][2]),
            seed(&agree[c][3])
        );
    }
    Ok(())
}
