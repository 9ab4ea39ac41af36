//! The evaluation summary's aggregation against the paper-style reference in
//! `fixtures/metrics/summary.json` (written by `scripts/make_metric_fixtures.py`): per-case
//! Soft-NS / Soft-NC and hard normalized sufficiency / comprehensiveness of a method and the
//! random baseline go through `Summary::from_files` as result records, and the dataset means,
//! ratios and ln-ratios must match the reference's.

mod common;

use common::*;
use reagent::eval::runner::Summary;
use serde_json::{json, Value};

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn close(a: Option<f64>, b: Option<f64>, what: &str) {
    match (a, b) {
        (Some(a), Some(b)) => assert!((a - b).abs() < 1e-6 * (1.0 + b.abs()), "{what}: {a} vs {b}"),
        (None, None) => {}
        _ => panic!("{what}: {a:?} vs {b:?}"),
    }
}

#[test]
fn summary_means_and_ratios_match_the_reference() {
    let fx = read_json(&fixture("metrics/summary.json"));
    let cases: Vec<String> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let per_case = &fx["soft"]["mean_of_draws"]["per_case"];
    let dir = std::env::temp_dir().join(format!("reagent-summary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut examples = String::new();
    let mut results = String::new();
    for (i, case) in cases.iter().enumerate() {
        examples.push_str(&format!(
            "{}\n",
            json!({"example": case, "usable": true, "ids": [1, 2], "prompt_tokens": 1})
        ));
        let doc = read_json(&fixture(&format!("metrics/{case}.json")));
        for (who, method) in [("method", "reagent"), ("random", "random")] {
            let hard: Vec<Value> = doc["hard"][who]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    json!({"ratio": h["ratio"], "k": h["k"], "suff": h["suff"], "comp": h["comp"],
                           "ns": h["norm_suff"], "nc": h["norm_comp"]})
                })
                .collect();
            let soft_ns = &per_case[who]["soft_ns"][i];
            let soft_nc = &per_case[who]["soft_nc"][i];
            let record = json!({
                "example": case,
                "method": method,
                "targets": [{
                    "position": 1, "id": 2, "text": "x", "scores": [1.0], "wall_s": 0.0,
                    "suff0": 0.5,
                    "soft": {"soft_suff": 0.0, "soft_comp": 0.0, "soft_ns": soft_ns, "soft_nc": soft_nc},
                    "hard": hard,
                }],
            });
            results.push_str(&format!("{record}\n"));
        }
    }
    std::fs::write(dir.join("examples.jsonl"), examples).unwrap();
    std::fs::write(dir.join("results.jsonl"), results).unwrap();
    let s = Summary::from_files(&dir, "token").unwrap();
    let m = s.methods.iter().find(|m| m.method == "reagent").unwrap();
    let r = s.methods.iter().find(|m| m.method == "random").unwrap();
    let mean = &fx["soft"]["mean_of_draws"]["mean"];
    close(m.soft_ns, f(&mean["method"]["soft_ns"]), "method soft_ns");
    close(m.soft_nc, f(&mean["method"]["soft_nc"]), "method soft_nc");
    close(r.soft_nc, f(&mean["random"]["soft_nc"]), "random soft_nc");
    let ln = &fx["soft"]["mean_of_draws"]["ln_ratio"];
    close(
        s.ln_ratio(m, |x| x.soft_nc),
        f(&ln["soft_nc"]),
        "ln soft_nc",
    );
    close(
        s.ln_ratio(m, |x| x.soft_ns),
        f(&ln["soft_ns"]),
        "ln soft_ns",
    );
    for row in fx["hard"]["per_ratio"].as_array().unwrap() {
        let ratio = row["ratio"].as_f64().unwrap();
        let got = m.hard.iter().find(|h| (h.0 - ratio).abs() < 1e-12).unwrap();
        close(
            got.1,
            f(&row["method"]["norm_suff"]),
            &format!("hard ns @{ratio}"),
        );
        close(
            got.2,
            f(&row["method"]["norm_comp"]),
            &format!("hard nc @{ratio}"),
        );
    }
    let hm = &fx["hard"]["mean_over_paper_ratios"];
    close(
        m.hard_ns_mean,
        f(&hm["method"]["norm_suff"]),
        "hard ns mean",
    );
    close(
        m.hard_nc_mean,
        f(&hm["method"]["norm_comp"]),
        "hard nc mean",
    );
    close(
        s.ratio(m, |x| x.hard_nc_mean),
        f(&hm["ratio_to_random"]["norm_comp"]),
        "hard nc / random",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
