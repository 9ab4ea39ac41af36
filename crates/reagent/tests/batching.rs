//! Memory is bounded by splitting the perturbation methods' forwards to a token budget; the
//! results must not depend on the split beyond float rounding. (Its own test binary: the budget is process-wide.)

mod common;

use std::sync::Arc;

use common::*;
use reagent::method::occlusion::Occlusion;
use reagent::method::reagent::{Readout, Reagent, ReagentConfig, UniformSampler};
use reagent::method::{set_batch_tokens, Attributor, NoProgress, DEFAULT_BATCH_TOKENS};
use reagent::model::{load_causal, LoadOptions};

fn run_all(path: &str, ctx: &[u32], target: u32) -> Vec<Vec<f32>> {
    let model = load_causal(path, &LoadOptions::default()).unwrap();
    let m = model.model.as_ref();
    let sampler = || Arc::new(UniformSampler::new(&model.tokenizer, m.vocab_size()).unwrap());
    let reference = Reagent::new(
        ReagentConfig {
            probes: 6,
            max_steps: 12,
            ..ReagentConfig::default()
        },
        sampler(),
    )
    .unwrap();
    let pooled = Reagent::new(
        ReagentConfig {
            probes: 6,
            max_steps: 6,
            min_steps: 6,
            readout: Readout::MaskDiff,
            ..ReagentConfig::default()
        },
        sampler(),
    )
    .unwrap();
    let occlusion = Occlusion::new(model.tokenizer.unk_id());
    let methods: [&dyn Attributor; 3] = [&reference, &pooled, &occlusion];
    methods
        .iter()
        .map(|a| a.attribute(m, ctx, target, 0, &NoProgress).unwrap().scores)
        .collect()
}

#[test]
fn results_do_not_depend_on_the_batch_budget() {
    let cases: Vec<(String, Vec<u32>, u32)> = {
        let mut v = vec![(
            fixture("models/llama_tied").to_string_lossy().into_owned(),
            vec![5, 17, 42, 9, 33, 21, 8, 60, 12, 27, 3, 44],
            7,
        )];
        // A real model too, where products are large enough to take other kernel paths.
        if let Some(p) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") {
            // "The capital of France is" -> " Paris"
            v.push((
                p.to_string_lossy().into_owned(),
                vec![504, 3575, 282, 4649, 314],
                7042,
            ));
        }
        v
    };
    for (path, ctx, target) in cases {
        set_batch_tokens(DEFAULT_BATCH_TOKENS);
        let whole = run_all(&path, &ctx, target);
        // One context per forward, then three.
        for budget in [1, 3 * ctx.len()] {
            set_batch_tokens(budget);
            let split = run_all(&path, &ctx, target);
            // A batched matrix product rounds differently at other batch sizes (1e-7 here), so
            // equal up to that rounding, with the same ranking.
            for (a, b) in whole.iter().zip(&split) {
                let d = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "{path}: budget {budget} changed a score by {d}");
                assert_eq!(
                    reagent::util::top_n(a, 3),
                    reagent::util::top_n(b, 3),
                    "{path}: budget {budget} changed the top 3"
                );
            }
        }
    }
    set_batch_tokens(DEFAULT_BATCH_TOKENS);
}
