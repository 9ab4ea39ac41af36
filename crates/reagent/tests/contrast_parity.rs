//! Contrastive attribution (`--contrast`) against inseq 0.7.1's own contrastive attributions.
//!
//! Reference: `scripts/make_inseq_fixtures.py` runs inseq itself with
//! `attributed_fn="contrast_prob_diff"` (`p(target) - p(contrast)`, both read from the one
//! forward pass on the original context) on the tiny fixture models, recorded in
//! `fixtures/inseq/contrast_<model>.json`: saliency, input × gradient, integrated gradients
//! (inseq's UNK baseline, 50 steps; inseq 0.7.1 needs Captum's `internal_batch_size=1` for a
//! contrast, which changes nothing but the batching) and occlusion, after inseq's default
//! aggregation. The first case also holds the plain (non-contrastive) scores, so the test shows
//! that the contrast changes them. Tolerances as the baseline parity: gradients 1e-3 relative,
//! occlusion 1e-5.

mod common;

use candle_core::Tensor;
use common::*;
use reagent::method::gradient::{
    gradients, l2_normalized, Attributed, Baseline, Gradient, GradientMethod,
};
use reagent::method::occlusion::Occlusion;
use reagent::method::{Attributor, Goal, NoProgress};

const MODELS: &[&str] = &["llama_tied", "gpt2", "gemma3"];
const GRAD_TOL: f32 = 1e-3;

/// max |a - b| / max |b|.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    max_abs_diff_vec(a, b) / scale.max(f32::MIN_POSITIVE)
}

#[test]
fn contrastive_attributions_match_inseq() -> TestResult {
    for name in MODELS {
        let fx = read_json(&fixture(&format!("inseq/contrast_{name}.json")));
        assert_eq!(fx["inseq"], "0.7.1");
        let m = tiny_model(name);
        let model = m.model.as_ref();
        let unk = m.tokenizer.unk_id();
        let cases = fx["cases"].as_array().unwrap();
        assert!(cases.len() >= 2, "{name}: cases");
        for case in cases {
            let ctx = ids_of(&case["context_ids"]);
            let target = case["target_id"].as_u64().unwrap() as u32;
            let contrast = case["contrast_id"].as_u64().unwrap() as u32;
            assert_ne!(target, contrast);
            let tag = format!("{name}/{}", case["name"].as_str().unwrap());
            // The text round-trips to the ids inseq attributed.
            assert_eq!(
                m.tokenizer
                    .encode(case["context_text"].as_str().unwrap(), false)?
                    .ids,
                ctx,
                "{tag}: context ids"
            );
            let goals: Vec<(&str, Goal)> = {
                let mut g = vec![(
                    "methods",
                    Goal {
                        target,
                        contrast: Some(contrast),
                    },
                )];
                if case.get("methods_plain").is_some() {
                    g.push(("methods_plain", Goal::from(target)));
                }
                g
            };
            for (key, goal) in goals {
                let want = &case[key];
                let tag = format!("{tag} ({key})");
                let run = |method: &dyn Attributor| -> reagent::Result<Vec<f32>> {
                    match goal.contrast {
                        Some(_) => method
                            .attribute_contrastive(model, &ctx, goal, 0, &NoProgress)
                            .expect("the method has a contrastive form")
                            .map(|s| s.scores),
                        None => method
                            .attribute(model, &ctx, goal.target, 0, &NoProgress)
                            .map(|s| s.scores),
                    }
                };
                // Saliency: |∂f/∂x|, L2 over the hidden dimension, summing to 1.
                let x = model.embed(&Tensor::new(ctx.as_slice(), model.device())?.unsqueeze(0)?)?;
                let g = gradients(model, &x, goal, Attributed::Probability)?.squeeze(0)?;
                let sal = l2_normalized(&g.abs()?)?;
                let r = rel(&sal, &floats_of(&want["saliency"]["scores"]));
                assert!(r < GRAD_TOL, "{tag}: saliency differs by {r}");
                for (method, gm) in [
                    ("input_x_gradient", GradientMethod::InputXGradient),
                    (
                        "integrated_gradients",
                        GradientMethod::IntegratedGradients {
                            n_steps: 50,
                            baseline: Baseline::Unk,
                        },
                    ),
                ] {
                    let s = run(&Gradient::new(gm, unk, 0)?)?;
                    let r = rel(&s, &floats_of(&want[method]["scores"]));
                    assert!(r < GRAD_TOL, "{tag}: {method} differs by {r}");
                }
                let occ = run(&Occlusion::new(unk))?;
                let d = max_abs_diff_vec(&occ, &floats_of(&want["occlusion"]["scores"]));
                assert!(d < 1e-5, "{tag}: occlusion differs by {d}");
            }
            // The contrast changes the answer: the plain scores are not the contrastive ones
            // (occlusion's drops by a third or more here; the normalized gradient scores of
            // these random models by 2 to 42 %).
            if let Some(plain) = case.get("methods_plain") {
                for (method, least) in [("occlusion", 0.3), ("input_x_gradient", 0.02)] {
                    let (a, b) = (
                        floats_of(&case["methods"][method]["scores"]),
                        floats_of(&plain[method]["scores"]),
                    );
                    assert!(
                        rel(&a, &b) > least,
                        "{tag}: the contrast changes {method} too little"
                    );
                }
            }
        }
    }
    Ok(())
}
