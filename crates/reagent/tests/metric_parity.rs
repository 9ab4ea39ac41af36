//! Parity of the faithfulness metrics with the ReAGent paper's evaluation code.
//!
//! Reference: `scripts/make_metric_fixtures.py` — a port of the paper's evaluators
//! (`src/evaluation/evaluator/`), checked bit for bit against the original classes there — on
//! `fixtures/models/llama_tied` with recorded masks, in `fixtures/metrics/*.json`. Metrics must
//! match within 1e-5.

mod common;

use common::*;
use reagent::eval::metrics::{Faithfulness, SoftMasks};
use reagent::model::{load_causal, LoadOptions};

const CASES: &[&str] = &[
    "a_peaked",
    "b_uniform",
    "c_random_softmax",
    "d_out_of_range",
    "e_all_zero",
];
const TOL: f32 = 1e-5;

fn f(v: &serde_json::Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn close(a: Option<f32>, want: &serde_json::Value, what: &str) {
    let a = a.unwrap_or_else(|| panic!("{what}: undefined"));
    let w = f(want);
    assert!((a - w).abs() < TOL, "{what}: {a} vs {w}");
}

#[test]
fn metrics_match_the_paper_evaluators() -> TestResult {
    let m = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    for case in CASES {
        let fx = read_json(&fixture(&format!("metrics/{case}.json")));
        let ctx = ids_of(&fx["context_ids"]);
        let faith = Faithfulness::new(m.model.as_ref(), &ctx)?;
        close(
            Some(faith.suff0),
            &fx["suff0"]["value"],
            &format!("{case}: suff0"),
        );
        for which in ["method", "random"] {
            let scores = floats_of(&fx["scores"][which]);
            let draws = fx["soft"][which]["draws"].as_array().unwrap();
            let masks: Vec<SoftMasks> = draws
                .iter()
                .map(|d| SoftMasks {
                    suff: matrix_of(&d["suff_keep_mask"]),
                    comp: matrix_of(&d["comp_keep_mask"]),
                })
                .collect();
            let got = faith.soft(&masks)?;
            for (i, (g, d)) in got.iter().zip(draws).enumerate() {
                let tag = format!("{case}/{which}/draw {i}");
                close(
                    Some(g.soft_suff),
                    &d["soft_suff"],
                    &format!("{tag}: soft suff"),
                );
                close(
                    Some(g.soft_comp),
                    &d["soft_comp"],
                    &format!("{tag}: soft comp"),
                );
                close(g.soft_ns, &d["soft_ns"], &format!("{tag}: soft NS"));
                close(g.soft_nc, &d["soft_nc"], &format!("{tag}: soft NC"));
            }
            // Our masks follow the same rule: kept iff u < score.
            let hard = &fx["hard"][which];
            let ratios: Vec<f64> = hard
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["ratio"].as_f64().unwrap())
                .collect();
            let got = faith.hard(&scores, &ratios)?;
            for (g, h) in got.iter().zip(hard.as_array().unwrap()) {
                let tag = format!("{case}/{which}/hard {}", g.ratio);
                assert_eq!(g.k, h["k"].as_u64().unwrap() as usize, "{tag}: k");
                close(Some(g.suff), &h["suff"], &format!("{tag}: suff"));
                close(Some(g.comp), &h["comp"], &format!("{tag}: comp"));
                close(g.ns, &h["norm_suff"], &format!("{tag}: NS"));
                close(g.nc, &h["norm_comp"], &format!("{tag}: NC"));
            }
        }
        eprintln!("{case}: ok");
    }
    Ok(())
}

/// The masks we draw keep each element with the token's probability.
#[test]
fn drawn_masks_follow_the_scores() -> TestResult {
    use rand::SeedableRng;
    let m = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    let ctx = vec![290, 267, 281, 262, 281, 308];
    let faith = Faithfulness::new(m.model.as_ref(), &ctx)?;
    let scores = [1.0, 0.0, 0.5, 0.5, 0.25, 2.0];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let masks = faith.draw_masks(&scores, &mut rng)?;
    let per_token: Vec<f32> = masks.suff.mean(1)?.to_vec1()?;
    assert_eq!(per_token[0], 1.0);
    assert_eq!(per_token[1], 0.0);
    assert_eq!(per_token[5], 1.0);
    assert!(per_token[2] > 0.2 && per_token[2] < 0.8);
    let comp: Vec<f32> = masks.comp.mean(1)?.to_vec1()?;
    assert_eq!(comp[0], 0.0);
    assert_eq!(comp[1], 1.0);
    Ok(())
}

/// The erasure metrics (tokens dropped; next-token probabilities only) against
/// `scripts/make_erasure_fixtures.py` (transformers, float32) on the same tiny model: the
/// contexts kept and dropped at each ratio are the same ids, and the probabilities agree.
#[test]
fn erasure_metrics_match_the_reference() -> TestResult {
    use reagent::eval::metrics::{erasure, erasure_contexts};
    use reagent::score::LmTarget;
    let m = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    let fx = read_json(&fixture("metrics/erasure.json"));
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let ctx = ids_of(&c["context"]);
        let scores = floats_of(&c["scores"]);
        let fixed: Vec<bool> = c["fixed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        let ratios: Vec<f64> = c["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        let target = c["target"].as_u64().unwrap() as u32;
        let want = c["erasure"].as_array().unwrap();
        let plan = erasure_contexts(&ctx, &scores, &fixed, &ratios)?;
        assert_eq!(plan.len(), want.len(), "{name}");
        for ((k, kept, dropped), w) in plan.iter().zip(want) {
            assert_eq!(*k as u64, w["k"].as_u64().unwrap(), "{name}: k");
            assert_eq!(kept, &ids_of(&w["kept"]), "{name}: kept");
            assert_eq!(dropped, &ids_of(&w["dropped"]), "{name}: dropped");
        }
        let (p0, rows) = erasure(
            &LmTarget(m.model.as_ref()),
            &ctx,
            target,
            &scores,
            &fixed,
            &ratios,
        )?;
        let p0_want = f(&c["p0"]);
        assert!(
            (p0 - p0_want).abs() <= 1e-5 * p0_want,
            "{name}: p0 {p0} vs {p0_want}"
        );
        for (r, w) in rows.iter().zip(want) {
            // Within 1e-5 of the probabilities the difference is made of (p0 and p0 - value).
            for (got, key) in [(r.suff, "suff"), (r.comp, "comp")] {
                let want = f(&w[key]);
                assert!(
                    (got - want).abs() <= 1e-5 * (p0_want + (p0_want - want).abs()),
                    "{name} @ {}: {key} {got} vs {want}",
                    r.ratio
                );
            }
            assert_eq!(r.error, 0.0, "a local model is exact");
        }
    }
    // Mismatched lengths and an empty context are errors, not panics.
    assert!(erasure_contexts(&[1, 2, 3], &[0.1, 0.2], &[false; 3], &[0.1]).is_err());
    assert!(erasure(&LmTarget(m.model.as_ref()), &[], 3, &[], &[], &[0.1]).is_err());
    Ok(())
}
