//! One ReAGent update step and one gradient call on SmolLM2-135M: the LongRA row
//! `capital-common-countries-0` (42 tokens) with the target " refrigerator", which no probe's
//! stopping test accepts, so every probe runs exactly `steps` steps (inseq's defaults otherwise:
//! 16 probes, keep 5, top-3, r = 0.3, POS sampler). Prints seconds per step, and seconds per
//! input × gradient and per integrated-gradients call (f32 only: a bf16 model has no gradients).
//!
//!     RAYON_NUM_THREADS=2 [PRECISION=bf16] cargo bench --bench step -- [steps]

use std::time::Instant;

use reagent::method::registry::{self, MethodSettings};
use reagent::model::{load_causal, LoadOptions, Precision};
use reagent::{MethodKind, NoProgress};

mod common;

const PROMPT: &str = "When my flight landed in Greece, I converted my currency and slowly fell asleep. (I had a terrifying dream about my grandmother, but that's a story for another time). I was staying in the capital,";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let path = common::smollm2()?;
    let precision = common::precision()?;
    let m = load_causal(
        path.to_str().ok_or("model path is not UTF-8")?,
        &LoadOptions {
            precision,
            ..LoadOptions::default()
        },
    )?;
    let ctx = m.tokenizer.encode(PROMPT, true)?.ids;
    let target = m.tokenizer.encode(" refrigerator", false)?.ids[0];
    let mut s = MethodSettings::default();
    s.reagent.max_steps = steps;
    let reagent = registry::build(MethodKind::Reagent, &s, &m, None)?;
    let t = Instant::now();
    let out = reagent.attribute(m.model.as_ref(), &ctx, target, 0, &NoProgress)?;
    let secs = t.elapsed().as_secs_f64();
    let done = out.steps.unwrap_or(0).max(1);
    println!(
        "reagent step ({precision}, {} tokens, 16 probes, threads {}): {:.3} s/step over {done} steps, {} converged",
        ctx.len(),
        candle_core::utils::get_num_threads(),
        secs / done as f64,
        out.converged_probes.unwrap_or(0)
    );
    if precision != Precision::F32 {
        return Ok(());
    }
    for kind in [MethodKind::InputXGradient, MethodKind::IntegratedGradients] {
        let method = registry::build(kind, &s, &m, None)?;
        method.attribute(m.model.as_ref(), &ctx, target, 0, &NoProgress)?;
        let t = Instant::now();
        method.attribute(m.model.as_ref(), &ctx, target, 0, &NoProgress)?;
        println!(
            "{} (f32): {:.3} s per call",
            kind.name(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
