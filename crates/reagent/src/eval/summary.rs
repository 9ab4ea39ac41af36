//! The summary of an evaluation: per method, the means of every metric over examples, their
//! bootstrap intervals, ln-ratios against the random baseline, seed agreement and cost, and
//! paired tests of the ReAGent configurations against the other methods. Rendering is in
//! [`super::report`].

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::stats;
use super::store::{read_jsonl, ExampleRecord, ResultRecord, Stability, TargetRecord};
use crate::method::MethodKind;
use crate::util::stream_key;
use crate::Result;

/// One rationale ratio's summary: (ratio, mean hard sufficiency, mean hard comprehensiveness).
pub type HardRow = (f64, Option<f64>, Option<f64>);

/// The hard-metric ratios the paper reports (their mean is the "mean" column); 0.5 is also
/// computed.
pub const PAPER_RATIOS: [f64; 4] = [0.05, 0.1, 0.2, 0.3];

/// The means of one method.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MethodSummary {
    pub method: String,
    pub examples: usize,
    pub tokens: usize,
    pub soft_suff: Option<f64>,
    pub soft_comp: Option<f64>,
    pub soft_ns: Option<f64>,
    pub soft_nc: Option<f64>,
    /// Per ratio: (ratio, mean NS, mean NC).
    pub hard: Vec<HardRow>,
    /// Mean over [`PAPER_RATIOS`] of the hard NS / NC.
    pub hard_ns_mean: Option<f64>,
    pub hard_nc_mean: Option<f64>,
    pub antecedent_top3: Option<f64>,
    /// ReAGent: mean steps and converged-probe fraction.
    pub reagent_steps: Option<f64>,
    pub reagent_converged: Option<f64>,
    pub seconds_per_token: f64,
    /// Mean contexts scored per attributed token, where the method reports it.
    pub forward_rows: Option<f64>,
    /// Bootstrap 95 % intervals (over examples) of the means above.
    pub soft_ns_ci: Option<stats::Interval>,
    pub soft_nc_ci: Option<stats::Interval>,
    pub antecedent_top3_ci: Option<stats::Interval>,
    /// ln(method / random) intervals, resampling examples jointly.
    pub ln_soft_ns_ci: Option<stats::Interval>,
    pub ln_soft_nc_ci: Option<stats::Interval>,
    /// Hard NS / NC means over the paper's ratios, divided by random's: 95% intervals.
    pub hard_ns_ratio_ci: Option<stats::Interval>,
    pub hard_nc_ratio_ci: Option<stats::Interval>,
    /// Agreement of two runs on independent random streams: mean Spearman, and the share of
    /// targets whose top-3 share at least 2 tokens.
    pub stability_spearman: Option<f64>,
    pub stability_top3: Option<f64>,
    /// Erasure metrics (tokens dropped): per ratio (ratio, mean sufficiency, mean
    /// comprehensiveness), their means over [`PAPER_RATIOS`] (ERASER's AOPC; sufficiency lower
    /// is better, comprehensiveness higher) with bootstrap 95% intervals, and the largest error
    /// bound of any value (a served model in top-K mode; 0 otherwise).
    pub erasure: Vec<HardRow>,
    pub aopc_suff: Option<f64>,
    pub aopc_comp: Option<f64>,
    pub aopc_suff_ci: Option<stats::Interval>,
    pub aopc_comp_ci: Option<stats::Interval>,
    pub erasure_error: Option<f64>,
    /// Per-example values (example id → value) behind the intervals and paired tests.
    #[serde(skip)]
    pub per_example: PerExample,
}

/// Per-example means of the metrics that get intervals and paired tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerExample {
    pub soft_ns: Vec<(String, f64)>,
    pub soft_nc: Vec<(String, f64)>,
    /// Hard NS / NC averaged over the paper's ratios.
    pub hard_ns: Vec<(String, f64)>,
    pub hard_nc: Vec<(String, f64)>,
    pub antecedent_top3: Vec<(String, f64)>,
    /// Erasure sufficiency / comprehensiveness averaged over the paper's ratios (AOPC).
    pub aopc_suff: Vec<(String, f64)>,
    pub aopc_comp: Vec<(String, f64)>,
}

/// A paired test of a ReAGent configuration against another method on one metric.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PairedRow {
    pub a: String,
    pub b: String,
    pub metric: &'static str,
    #[serde(flatten)]
    pub test: stats::Paired,
}

/// A metric's name and two methods' per-example values.
type MetricPair<'a> = (&'static str, &'a [(String, f64)], &'a [(String, f64)]);

/// Values of both sides on the examples they share, in a fixed order.
fn align(a: &[(String, f64)], b: &[(String, f64)]) -> (Vec<f64>, Vec<f64>) {
    let bm: HashMap<&str, f64> = b.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    a.iter()
        .filter_map(|(k, v)| bm.get(k.as_str()).map(|w| (*v, *w)))
        .unzip()
}

/// `a` with its soft and hard means recomputed over the examples `b` also has, where the two
/// cover different examples (else `a` as it is).
fn shared_means(a: &MethodSummary, b: &MethodSummary) -> MethodSummary {
    let mut out = a.clone();
    let (pa, pb) = (&a.per_example, &b.per_example);
    type Field = fn(&PerExample) -> &Vec<(String, f64)>;
    let fields: [(Field, &mut Option<f64>); 4] = [
        (|p| &p.soft_ns, &mut out.soft_ns),
        (|p| &p.soft_nc, &mut out.soft_nc),
        (|p| &p.hard_ns, &mut out.hard_ns_mean),
        (|p| &p.hard_nc, &mut out.hard_nc_mean),
    ];
    for (field, value) in fields {
        let keys = |v: &Vec<(String, f64)>| -> Vec<String> {
            let mut k: Vec<String> = v.iter().map(|(e, _)| e.clone()).collect();
            k.sort();
            k
        };
        if keys(field(pa)) != keys(field(pb)) {
            let (mine, _) = align(field(pa), field(pb));
            *value = mean(&mine);
        }
    }
    out
}

/// Where a label sorts: by the method it names (longest known prefix), then by the label.
fn label_order(label: &str) -> (usize, String) {
    let pos = MethodKind::ALL
        .iter()
        .enumerate()
        .filter(|(_, k)| label.starts_with(k.name()))
        .max_by_key(|(_, k)| k.name().len())
        .map(|(i, _)| i)
        .unwrap_or(usize::MAX);
    (pos, label.to_string())
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub level: String,
    pub examples_seen: usize,
    pub examples_used: usize,
    pub methods: Vec<MethodSummary>,
    /// Each ReAGent configuration (a label starting with `reagent`) against every baseline, and
    /// each variant against the reference `reagent`.
    pub paired: Vec<PairedRow>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Mean over examples of each example's mean over its targets (the paper's sequence-level
/// aggregation; token-level examples have one target).
fn mean_of_means(per_example: &[Vec<Option<f32>>]) -> Option<f64> {
    let means: Vec<f64> = per_example
        .iter()
        .filter_map(|v| {
            let xs: Vec<f64> = v.iter().flatten().map(|&x| x as f64).collect();
            mean(&xs)
        })
        .collect();
    mean(&means)
}

/// Each example's mean over its targets, keyed by example id (examples with no value skipped).
fn example_means(ids: &[&str], per_example: &[Vec<Option<f32>>]) -> Vec<(String, f64)> {
    ids.iter()
        .zip(per_example)
        .filter_map(|(id, v)| {
            let xs: Vec<f64> = v.iter().flatten().map(|&x| x as f64).collect();
            mean(&xs).map(|m| (id.to_string(), m))
        })
        .collect()
}

/// A target's hard metric averaged over the paper's ratios (`None` when one is undefined).
fn paper_mean(t: &TargetRecord, pick: fn(&super::metrics::Hard) -> Option<f32>) -> Option<f32> {
    let v: Option<Vec<f32>> = t
        .hard
        .iter()
        .filter(|h| PAPER_RATIOS.contains(&h.ratio))
        .map(pick)
        .collect();
    v.filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f32>() / v.len() as f32)
}

/// A target's erasure metric averaged over the paper's ratios (ERASER's AOPC).
fn aopc(t: &TargetRecord, pick: fn(&super::metrics::Erasure) -> f32) -> Option<f32> {
    let v: Vec<f32> = t
        .erasure
        .iter()
        .filter(|e| PAPER_RATIOS.contains(&e.ratio))
        .map(pick)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
}

/// A fixed seed per (method, metric) for the summary's resampling.
fn ci_seed(label: &str, metric: &str) -> u64 {
    stream_key(&[label, metric], &[])
}

impl Summary {
    /// Summarize the records in an output folder.
    pub fn from_files(out: &Path, level: &str) -> Result<Self> {
        let examples = read_jsonl::<ExampleRecord>(&out.join("examples.jsonl"))?;
        let results = read_jsonl::<ResultRecord>(&out.join("results.jsonl"))?;
        let mut by_method: HashMap<String, Vec<&ResultRecord>> = HashMap::new();
        for r in &results {
            by_method.entry(r.method.clone()).or_default().push(r);
        }
        let mut methods: Vec<MethodSummary> = Vec::new();
        let mut names: Vec<&String> = by_method.keys().collect();
        names.sort_by_key(|n| label_order(n));
        for name in names {
            let mut recs = by_method[name].clone();
            recs.sort_by(|a, b| a.example.cmp(&b.example));
            let per = |f: &dyn Fn(&TargetRecord) -> Option<f32>| -> Vec<Vec<Option<f32>>> {
                recs.iter()
                    .map(|r| r.targets.iter().map(f).collect())
                    .collect()
            };
            let ratios: Vec<f64> = recs
                .iter()
                .flat_map(|r| r.targets.iter())
                .next()
                .map(|t| t.hard.iter().map(|h| h.ratio).collect())
                .unwrap_or_default();
            let hard: Vec<HardRow> = ratios
                .iter()
                .enumerate()
                .map(|(j, &ratio)| {
                    (
                        ratio,
                        mean_of_means(&per(&|t| t.hard.get(j).and_then(|h| h.ns))),
                        mean_of_means(&per(&|t| t.hard.get(j).and_then(|h| h.nc))),
                    )
                })
                .collect();
            let paper: Vec<&HardRow> = hard
                .iter()
                .filter(|h| PAPER_RATIOS.contains(&h.0))
                .collect();
            let hard_mean = |pick: fn(&HardRow) -> Option<f64>| -> Option<f64> {
                let v: Option<Vec<f64>> = paper.iter().map(|h| pick(h)).collect();
                v.and_then(|v| mean(&v))
            };
            let erasure_ratios: Vec<f64> = recs
                .iter()
                .flat_map(|r| r.targets.iter())
                .find(|t| !t.erasure.is_empty())
                .map(|t| t.erasure.iter().map(|e| e.ratio).collect())
                .unwrap_or_default();
            let erasure: Vec<HardRow> = erasure_ratios
                .iter()
                .map(|&ratio| {
                    let at =
                        |t: &TargetRecord| t.erasure.iter().find(|e| e.ratio == ratio).copied();
                    (
                        ratio,
                        mean_of_means(&per(&|t| at(t).map(|e| e.suff))),
                        mean_of_means(&per(&|t| at(t).map(|e| e.comp))),
                    )
                })
                .collect();
            let tokens: Vec<&TargetRecord> = recs.iter().flat_map(|r| r.targets.iter()).collect();
            let erasure_error = tokens
                .iter()
                .flat_map(|t| t.erasure.iter().map(|e| e.error as f64))
                .reduce(f64::max);
            let hits: Vec<f64> = tokens
                .iter()
                .filter_map(|t| t.antecedent_top3)
                .map(|h| if h { 1.0 } else { 0.0 })
                .collect();
            let steps: Vec<f64> = tokens
                .iter()
                .filter_map(|t| t.scores.steps)
                .map(|s| s as f64)
                .collect();
            let conv: Vec<f64> = tokens
                .iter()
                .filter_map(|t| Some(t.scores.converged_probes? as f64 / t.scores.probes? as f64))
                .collect();
            let secs: Vec<f64> = tokens.iter().map(|t| t.wall_s).collect();
            let rows: Vec<f64> = tokens
                .iter()
                .filter_map(|t| t.scores.forward_rows)
                .map(|r| r as f64)
                .collect();
            let stab: Vec<&Stability> =
                tokens.iter().filter_map(|t| t.stability.as_ref()).collect();
            let rhos: Vec<f64> = stab.iter().filter_map(|s| s.spearman).collect();
            let agree: Vec<f64> = stab
                .iter()
                .map(|s| if s.top3_overlap >= 2 { 1.0 } else { 0.0 })
                .collect();
            let ids: Vec<&str> = recs.iter().map(|r| r.example.as_str()).collect();
            let per_example = PerExample {
                soft_ns: example_means(&ids, &per(&|t| t.soft.and_then(|s| s.soft_ns))),
                soft_nc: example_means(&ids, &per(&|t| t.soft.and_then(|s| s.soft_nc))),
                antecedent_top3: example_means(
                    &ids,
                    &per(&|t| t.antecedent_top3.map(|h| if h { 1.0 } else { 0.0 })),
                ),
                hard_ns: example_means(&ids, &per(&|t| paper_mean(t, |h| h.ns))),
                hard_nc: example_means(&ids, &per(&|t| paper_mean(t, |h| h.nc))),
                aopc_suff: example_means(&ids, &per(&|t| aopc(t, |e| e.suff))),
                aopc_comp: example_means(&ids, &per(&|t| aopc(t, |e| e.comp))),
            };
            let ci = |v: &[(String, f64)], metric: &str| {
                let xs: Vec<f64> = v.iter().map(|(_, x)| *x).collect();
                stats::mean_interval(&xs, ci_seed(name, metric))
            };
            methods.push(MethodSummary {
                forward_rows: mean(&rows),
                soft_ns_ci: ci(&per_example.soft_ns, "soft_ns"),
                soft_nc_ci: ci(&per_example.soft_nc, "soft_nc"),
                antecedent_top3_ci: ci(&per_example.antecedent_top3, "antecedent"),
                aopc_suff_ci: ci(&per_example.aopc_suff, "aopc_suff"),
                aopc_comp_ci: ci(&per_example.aopc_comp, "aopc_comp"),
                ln_soft_ns_ci: None,
                ln_soft_nc_ci: None,
                hard_ns_ratio_ci: None,
                hard_nc_ratio_ci: None,
                stability_spearman: mean(&rhos),
                stability_top3: mean(&agree),
                per_example,
                method: name.clone(),
                examples: recs.len(),
                tokens: tokens.len(),
                soft_suff: mean_of_means(&per(&|t| t.soft.map(|s| s.soft_suff))),
                soft_comp: mean_of_means(&per(&|t| t.soft.map(|s| s.soft_comp))),
                soft_ns: mean_of_means(&per(&|t| t.soft.and_then(|s| s.soft_ns))),
                soft_nc: mean_of_means(&per(&|t| t.soft.and_then(|s| s.soft_nc))),
                aopc_suff: mean_of_means(&per(&|t| aopc(t, |e| e.suff))),
                aopc_comp: mean_of_means(&per(&|t| aopc(t, |e| e.comp))),
                erasure,
                erasure_error,
                hard_ns_mean: hard_mean(|h| h.1),
                hard_nc_mean: hard_mean(|h| h.2),
                hard,
                antecedent_top3: mean(&hits),
                reagent_steps: mean(&steps),
                reagent_converged: mean(&conv),
                seconds_per_token: mean(&secs).unwrap_or(0.0),
            });
        }
        // ln-ratio intervals against random, and the paired tests.
        let random = methods.iter().find(|m| m.method == "random").cloned();
        if let Some(r) = &random {
            for m in &mut methods {
                let (a, b) = align(&m.per_example.soft_ns, &r.per_example.soft_ns);
                m.ln_soft_ns_ci = stats::ln_ratio_interval(&a, &b, ci_seed(&m.method, "ln_ns"));
                let (a, b) = align(&m.per_example.soft_nc, &r.per_example.soft_nc);
                m.ln_soft_nc_ci = stats::ln_ratio_interval(&a, &b, ci_seed(&m.method, "ln_nc"));
                let exp = |c: Option<stats::Interval>| c.map(|(lo, hi)| (lo.exp(), hi.exp()));
                let (a, b) = align(&m.per_example.hard_ns, &r.per_example.hard_ns);
                m.hard_ns_ratio_ci = exp(stats::ln_ratio_interval(
                    &a,
                    &b,
                    ci_seed(&m.method, "hard_ns"),
                ));
                let (a, b) = align(&m.per_example.hard_nc, &r.per_example.hard_nc);
                m.hard_nc_ratio_ci = exp(stats::ln_ratio_interval(
                    &a,
                    &b,
                    ci_seed(&m.method, "hard_nc"),
                ));
            }
        }
        let mut paired = Vec::new();
        for a in methods.iter().filter(|m| m.method.starts_with("reagent")) {
            // Against every baseline, and a variant also against the reference.
            let others = methods.iter().filter(|b| {
                b.method != a.method && (!b.method.starts_with("reagent") || b.method == "reagent")
            });
            for b in others {
                let metrics: [MetricPair<'_>; 5] = [
                    ("soft_nc", &a.per_example.soft_nc, &b.per_example.soft_nc),
                    ("soft_ns", &a.per_example.soft_ns, &b.per_example.soft_ns),
                    (
                        "antecedent_top3",
                        &a.per_example.antecedent_top3,
                        &b.per_example.antecedent_top3,
                    ),
                    (
                        "aopc_comp",
                        &a.per_example.aopc_comp,
                        &b.per_example.aopc_comp,
                    ),
                    (
                        "aopc_suff",
                        &a.per_example.aopc_suff,
                        &b.per_example.aopc_suff,
                    ),
                ];
                for (metric, va, vb) in metrics {
                    let (x, y) = align(va, vb);
                    let seed = stream_key(&[&a.method, &b.method, metric], &[]);
                    if let Some(test) = stats::paired(&x, &y, seed) {
                        paired.push(PairedRow {
                            a: a.method.clone(),
                            b: b.method.clone(),
                            metric,
                            test,
                        });
                    }
                }
            }
        }
        Ok(Summary {
            level: level.to_string(),
            examples_seen: examples.len(),
            examples_used: examples.iter().filter(|e| e.usable).count(),
            methods,
            paired,
        })
    }

    fn random(&self) -> Option<&MethodSummary> {
        self.methods.iter().find(|m| m.method == "random")
    }

    /// `m` and the random baseline, each with its soft and hard means taken over the examples
    /// both have (as their intervals and paired tests are). Unchanged when both cover the same
    /// examples; a method run on part of a dataset (a run still going) is compared on that part.
    fn with_random(&self, m: &MethodSummary) -> Option<(MethodSummary, MethodSummary)> {
        let r = self.random()?;
        Some((shared_means(m, r), shared_means(r, m)))
    }

    /// `ln(method / random)` of a metric, when both are positive.
    pub fn ln_ratio(
        &self,
        m: &MethodSummary,
        pick: fn(&MethodSummary) -> Option<f64>,
    ) -> Option<f64> {
        let (m, r) = self.with_random(m)?;
        let (v, r) = (pick(&m)?, pick(&r)?);
        (r > 0.0 && v > 0.0).then(|| (v / r).ln())
    }

    /// `method / random` of a metric (the paper compares hard metrics this way).
    pub fn ratio(&self, m: &MethodSummary, pick: fn(&MethodSummary) -> Option<f64>) -> Option<f64> {
        let (m, r) = self.with_random(m)?;
        let (v, r) = (pick(&m)?, pick(&r)?);
        (r > 0.0).then(|| v / r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_next_to_their_method() {
        let mut v = vec!["random", "reagent-b", "occlusion", "reagent", "reagent-a"];
        v.sort_by_key(|l| label_order(l));
        assert_eq!(
            v,
            ["reagent", "reagent-a", "reagent-b", "occlusion", "random"]
        );
    }

    /// A method that has run on two of random's three examples is compared with random on
    /// those two, as its interval is; a method on all three, with random's full mean.
    #[test]
    fn ratios_to_random_use_the_shared_examples() {
        let per = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
            v.iter().map(|(e, x)| (e.to_string(), *x)).collect()
        };
        let summary = |method: &str, v: &[(&str, f64)]| MethodSummary {
            method: method.into(),
            soft_nc: mean(&v.iter().map(|(_, x)| *x).collect::<Vec<_>>()),
            hard_nc_mean: mean(&v.iter().map(|(_, x)| *x).collect::<Vec<_>>()),
            per_example: PerExample {
                soft_nc: per(v),
                hard_nc: per(v),
                ..PerExample::default()
            },
            ..MethodSummary::default()
        };
        let s = Summary {
            level: "token".into(),
            examples_seen: 3,
            examples_used: 3,
            methods: vec![
                summary("partial", &[("a", 0.2), ("b", 0.2)]),
                summary("full", &[("a", 0.2), ("b", 0.2), ("c", 0.4)]),
                summary("random", &[("a", 0.1), ("b", 0.1), ("c", 0.4)]),
            ],
            paired: Vec::new(),
        };
        let ln = |i: usize| s.ln_ratio(&s.methods[i], |m| m.soft_nc).unwrap();
        assert!((ln(0) - 2f64.ln()).abs() < 1e-12, "{}", ln(0));
        assert!((ln(1) - (0.8f64 / 0.6).ln()).abs() < 1e-12, "{}", ln(1));
        let r = s.ratio(&s.methods[0], |m| m.hard_nc_mean).unwrap();
        assert!((r - 2.0).abs() < 1e-12, "{r}");
    }
}
