//! ReAGent parity with the reference, on a recorded random stream.
//!
//! Reference: `scripts/reagent_reference.py` — a port of inseq 0.7.1's `reagent_core`, checked
//! bit for bit against inseq itself — ran on `fixtures/models/llama_tied` with the initial
//! scores, replacement masks and sampled tokens recorded in `fixtures/reagent/*.json`. Our
//! ReAGent, fed the same stream through [`RecordedStream`], must reach the same decisions
//! (steps, converged probes, the step each probe stopped) and the same scores within 1e-5.

mod common;

use std::sync::Arc;

use common::*;
use reagent::method::reagent::{Reagent, ReagentConfig, RecordedStream};
use reagent::method::{LmTarget, NoProgress};
use reagent::model::{load_causal, LoadOptions};

const CASES: &[&str] = &[
    "a_converge",
    "b_partial",
    "c_none",
    "d_keep_ratio",
    "e_short_context",
];

#[test]
fn reagent_matches_reference_on_recorded_streams() -> TestResult {
    let model = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    for case in CASES {
        let path = fixture(&format!("reagent/{case}.json"));
        let fx = read_json(&path);
        let h = &fx["hyper"];
        assert_eq!(h["invert_keep"], false, "{case}");
        let cfg = ReagentConfig {
            probes: h["num_probes"].as_u64().unwrap() as usize,
            max_steps: h["max_steps"].as_u64().unwrap() as usize,
            keep_top_n: h["keep_top_n"].as_u64().unwrap() as usize,
            keep_ratio: h["keep_ratio"].as_f64(),
            stop_top_k: h["stop_top_k"].as_u64().unwrap() as usize,
            replacing_ratio: h["replacing_ratio"].as_f64().unwrap(),
            ..ReagentConfig::default()
        };
        let stream = Arc::new(RecordedStream::from_file(&path)?);
        let reagent = Reagent::with_stream(cfg, stream)?;
        let context = ids_of(&fx["context_ids"]);
        let target = fx["target_id"].as_u64().unwrap() as u32;
        let t = reagent.trace(
            &LmTarget(model.model.as_ref()),
            &context,
            target,
            0,
            &NoProgress,
        )?;

        let e = &fx["expected"];
        let p0 = e["p0"].as_f64().unwrap() as f32;
        assert!((t.p0 - p0).abs() < 1e-5, "{case}: p0 {} vs {p0}", t.p0);
        assert_eq!(
            t.steps,
            e["steps_taken"].as_u64().unwrap() as usize,
            "{case}: steps"
        );
        let want_steps: Vec<Option<usize>> = e["converged_step"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize))
            .collect();
        assert_eq!(t.converged_step, want_steps, "{case}: converged steps");
        assert_eq!(
            t.converged_probes(),
            e["converged_probes"].as_u64().unwrap() as usize,
            "{case}: converged probes"
        );
        for (p, want) in e["final_scores"].as_array().unwrap().iter().enumerate() {
            let d = max_abs_diff_vec(&t.final_scores[p], &floats_of(want));
            assert!(d < 1e-5, "{case}: probe {p} scores differ by {d}");
        }
        let d = max_abs_diff_vec(&t.mean, &floats_of(&e["mean_importance"]));
        assert!(d < 1e-5, "{case}: mean importance differs by {d}");
        assert!(
            t.mean.iter().all(|v| v.is_finite()),
            "{case}: NaN in the result"
        );
        eprintln!(
            "{case}: steps {} converged {} ok (max mean diff {d:e})",
            t.steps,
            t.converged_probes()
        );
    }
    Ok(())
}
