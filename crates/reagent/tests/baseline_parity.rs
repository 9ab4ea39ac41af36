//! Parity of the baseline methods with Captum / inseq.
//!
//! Reference: `scripts/make_baseline_fixtures.py` — Captum 0.9 as inseq 0.7.1 calls it, checked
//! bit for bit against inseq itself there — on the tiny fixture models, recorded in
//! `fixtures/baselines/<model>.json` (gradient SHAP with its random draws recorded, replayed
//! here). Tolerances: gradients 1e-3 relative, attention 1e-5.

mod common;

use candle_core::Tensor;
use common::*;
use reagent::method::attention::{Attention, AttentionMethod};
use reagent::method::gradient::{
    gauss_legendre, gradients, l2_normalized, Attributed, Baseline, Gradient, GradientMethod,
    ShapDraws,
};
use reagent::method::occlusion::Occlusion;
use reagent::method::{Attributor, NoProgress};

const MODELS: &[&str] = &["llama_tied", "gpt2", "gemma3"];
const GRAD_TOL: f32 = 1e-3;
const ATTN_TOL: f32 = 1e-5;

fn tensor3(v: &serde_json::Value) -> Tensor {
    let mats: Vec<Tensor> = v.as_array().unwrap().iter().map(matrix_of).collect();
    Tensor::stack(&mats, 0).unwrap()
}

/// max |a - b| / max |b| over vectors.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    max_abs_diff_vec(a, b) / scale.max(f32::MIN_POSITIVE)
}

#[test]
fn gauss_legendre_matches_numpy() {
    let fx = read_json(&fixture("baselines/llama_tied.json"));
    let ig = &fx["cases"][0]["methods"]["integrated_gradients"];
    let (a, w) = gauss_legendre(50);
    let a: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
    assert!(max_abs_diff_vec(&a, &floats_of(&ig["alphas"])) < 1e-7);
    assert!(max_abs_diff_vec(&w, &floats_of(&ig["step_sizes"])) < 1e-7);
}

#[test]
fn baselines_match_captum_and_inseq() -> TestResult {
    for name in MODELS {
        let fx = read_json(&fixture(&format!("baselines/{name}.json")));
        let m = tiny_model(name);
        let model = m.model.as_ref();
        let unk = m.tokenizer.unk_id();
        assert_eq!(
            unk.map(u64::from),
            fx["special_ids"]["unk"].as_u64(),
            "{name}: UNK id"
        );
        for case in fx["cases"].as_array().unwrap() {
            let ctx = ids_of(&case["context_ids"]);
            let y = case["target_id"].as_u64().unwrap() as u32;
            let meth = &case["methods"];
            let tag = format!("{name}/{}", case["name"].as_str().unwrap_or("?"));

            // The gradient of p(y|x) with respect to the input embeddings.
            let ids = Tensor::new(ctx.as_slice(), model.device())?.unsqueeze(0)?;
            let x = model.embed(&ids)?;
            let g = gradients(model, &x, y, Attributed::Probability)?.squeeze(0)?;
            let r = rel_diff(&g, &matrix_of(&case["gradient"]));
            assert!(r < GRAD_TOL, "{tag}: gradient differs by {r}");

            // Saliency (|grad|, reduced) and gradient norm (of log p, the paper's `norm`).
            let sal = l2_normalized(&g.abs()?)?;
            assert!(
                rel(&sal, &floats_of(&meth["saliency"]["scores"])) < GRAD_TOL,
                "{tag}: saliency"
            );
            let gn = Gradient::new(GradientMethod::GradientNorm, unk, 0)?
                .attribute(model, &ctx, y, 0, &NoProgress)?
                .scores;
            let norms = floats_of(&case["reagent_paper"]["norm"]["raw"]);
            let sum: f32 = norms.iter().sum();
            let want: Vec<f32> = norms.iter().map(|v| v / sum).collect();
            assert!(
                rel(&gn, &want) < GRAD_TOL,
                "{tag}: gradient norm {gn:?} vs {want:?}"
            );

            let ixg = Gradient::new(GradientMethod::InputXGradient, unk, 0)?
                .attribute(model, &ctx, y, 0, &NoProgress)?
                .scores;
            assert!(
                rel(&ixg, &floats_of(&meth["input_x_gradient"]["scores"])) < GRAD_TOL,
                "{tag}: input x gradient"
            );

            // Integrated gradients, with inseq's UNK baseline and with zeros.
            for (key, baseline) in [
                ("integrated_gradients", Baseline::Unk),
                ("integrated_gradients_zero_baseline", Baseline::Zero),
            ] {
                let ig = Gradient::new(GradientMethod::integrated_gradients(), unk, 0)?;
                let (raw, delta) = ig.integrated_gradients(model, &ctx, y, 50, baseline)?;
                let want = &meth[key];
                let r = rel_diff(&raw, &matrix_of(&want["raw"]));
                assert!(r < GRAD_TOL, "{tag}: {key} raw differs by {r}");
                assert!(
                    rel(&l2_normalized(&raw)?, &floats_of(&want["scores"])) < GRAD_TOL,
                    "{tag}: {key} scores"
                );
                let want_delta = want["convergence_delta"].as_f64().unwrap() as f32;
                let f_diff = (want["f_input"].as_f64().unwrap()
                    - want["f_baseline"].as_f64().unwrap()) as f32;
                assert!(
                    (delta - want_delta).abs() <= GRAD_TOL * f_diff.abs().max(1e-6),
                    "{tag}: {key} delta {delta} vs {want_delta}"
                );
            }

            // Gradient SHAP, replaying Captum's recorded draws.
            for (key, baselines) in [
                ("gradient_shap", vec![Baseline::Unk]),
                ("gradient_shap_replay", vec![Baseline::Zero, Baseline::Unk]),
            ] {
                let want = &meth[key];
                let d = &want["draws"];
                let noise = if d["noise"].is_array() {
                    Some(tensor3(&d["noise"]))
                } else {
                    None
                };
                let draws = ShapDraws {
                    baseline_indices: d["baseline_indices"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as usize)
                        .collect(),
                    noise,
                    coefficients: floats_of(&d["rand_coefficients"]),
                };
                let shap = Gradient::new(GradientMethod::gradient_shap(), unk, 0)?;
                let (raw, scores) = shap.gradient_shap(model, &ctx, y, &baselines, &draws)?;
                let r = rel_diff(&raw, &matrix_of(&want["raw"]));
                assert!(r < GRAD_TOL, "{tag}: {key} raw differs by {r}");
                assert!(
                    rel(&scores, &floats_of(&want["scores"])) < GRAD_TOL,
                    "{tag}: {key} scores"
                );
            }

            // Attention methods.
            for (key, method) in [
                ("attention", AttentionMethod::Mean),
                ("last_layer_attention", AttentionMethod::LastLayer),
                ("attention_rollout", AttentionMethod::Rollout),
            ] {
                let s = Attention(method).scores(model, &ctx)?;
                let d = max_abs_diff_vec(&s, &floats_of(&meth[key]["scores"]));
                assert!(d < ATTN_TOL, "{tag}: {key} differs by {d}");
            }

            // Occlusion with inseq's UNK baseline: |p - p_occluded|.
            let occ = Occlusion::new(unk)
                .attribute(model, &ctx, y, 0, &NoProgress)?
                .scores;
            let d = max_abs_diff_vec(&occ, &floats_of(&meth["occlusion"]["scores"]));
            assert!(d < 1e-5, "{tag}: occlusion differs by {d}");
            eprintln!("{tag}: ok");
        }
    }
    Ok(())
}
