//! The evaluation runner: attribute every example of a dataset with every method, score each
//! attribution with the faithfulness metrics, and summarize.
//!
//! Output folder:
//! - `run.json` — what was run (model, dataset, methods and their configurations, settings); a
//!   rerun into the same folder must match it;
//! - `examples.jsonl` — per dataset row: used or skipped (and why), and its targets;
//! - `results.jsonl` — one line per (example, method): scores, diagnostics, metrics and timings;
//! - `summary.md`, `summary.csv` — method × metric means, ln-ratios against the random
//!   baseline, counts and seconds per attributed token.
//!
//! Each line is written and flushed when done, so an interrupted run loses at most the
//! (example, method) pair in progress; a rerun skips what is done. Every random draw is keyed by
//! (seed, example, method, target), so a resumed run gives the same results as a clean one.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::datasets::{longra_target, Dataset, Skip};
use super::metrics::{metric_rng, Faithfulness, Hard, Soft};
use super::stats;
use crate::attribute::{JobProgress, Plan, Targets};
use crate::error::WithPath;
use crate::util::stream_key;

/// One rationale ratio's summary: (ratio, mean hard sufficiency, mean hard comprehensiveness).
pub type HardRow = (f64, Option<f64>, Option<f64>);
use crate::method::{check_requirements, Attributor, MethodKind, TargetScores};
use crate::model::LoadedModel;
use crate::{Error, Result};

/// The hard-metric ratios the paper reports (their mean is the "mean" column); 0.5 is also
/// computed.
pub const PAPER_RATIOS: [f64; 4] = [0.05, 0.1, 0.2, 0.3];

/// Settings of an evaluation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    pub seed: u64,
    /// Stop after this many usable examples.
    pub limit: Option<usize>,
    /// Greedy tokens generated per prompt for sequence-level datasets.
    pub new_tokens: usize,
    /// Soft-metric mask draws averaged per attribution.
    pub mask_draws: usize,
    /// Rationale ratios of the hard metrics.
    pub ratios: Vec<f64>,
    /// Run every stochastic method (ReAGent and its variants, gradient SHAP, random) a second
    /// time on an independent random stream and record how well the two runs agree.
    #[serde(default)]
    pub stability: bool,
}

impl EvalConfig {
    /// Every setting in its allowed range; the message names the field.
    pub fn validate(&self) -> Result<()> {
        if self.mask_draws == 0 {
            return Err(Error::input("mask_draws must be at least 1"));
        }
        if self.new_tokens == 0 {
            return Err(Error::input("new_tokens must be at least 1"));
        }
        if self.limit == Some(0) {
            return Err(Error::input("limit must be at least 1"));
        }
        if self.ratios.is_empty() || self.ratios.iter().any(|r| !(*r > 0.0 && *r <= 1.0)) {
            return Err(Error::input("ratios must be in (0, 1]"));
        }
        Ok(())
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            seed: 42,
            limit: None,
            new_tokens: 10,
            mask_draws: 4,
            ratios: vec![0.05, 0.1, 0.2, 0.3, 0.5],
            stability: true,
        }
    }
}

/// A method to evaluate, under a label that is unique in the run (the method's name, or a
/// variant's name such as `reagent-maskdiff`).
pub struct NamedMethod {
    pub label: String,
    pub method: Box<dyn Attributor>,
}

impl NamedMethod {
    /// A method under its own name.
    pub fn new(method: Box<dyn Attributor>) -> Self {
        NamedMethod {
            label: method.kind().name().to_string(),
            method,
        }
    }

    pub fn name(&self) -> &str {
        &self.label
    }
}

/// Whether a method draws random numbers (its second run on another stream can differ).
fn is_stochastic(kind: MethodKind) -> bool {
    matches!(
        kind,
        MethodKind::Reagent | MethodKind::GradientShap | MethodKind::Random
    )
}

/// How two runs of one method on independent random streams agree on one target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Stability {
    /// Spearman's rank correlation of the two score vectors (None when one is constant).
    pub spearman: Option<f64>,
    /// How many of the two runs' top-3 context tokens are shared (0 to 3).
    pub top3_overlap: usize,
}

/// The scores as the soft metrics read them: non-negative and summing to 1 over the context
/// (`|s| / sum |s|`; uniform when all are 0). The soft metrics keep each embedding element with
/// probability equal to the score, so every method must enter them on this one scale (the
/// paper's methods already sum to 1; occlusion's raw `|dp|` does not).
pub fn unit_scale(scores: &[f32]) -> Vec<f32> {
    let total: f64 = scores.iter().map(|s| s.abs() as f64).sum();
    if total > 0.0 && total.is_finite() {
        scores
            .iter()
            .map(|s| (s.abs() as f64 / total) as f32)
            .collect()
    } else {
        vec![1.0 / scores.len().max(1) as f32; scores.len()]
    }
}

/// Where the runner reports progress.
pub trait EvalProgress: JobProgress {
    /// `done` of about `total` (example, method) units are finished.
    fn units(&self, _done: usize, _total: usize) {}
    /// Now working on this example with this method.
    fn working(&self, _example: &str, _method: &str) {}
}

impl EvalProgress for crate::method::NoProgress {}

/// One dataset row's fate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExampleRecord {
    pub example: String,
    pub usable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The prompt's tokens followed by the targets (forced or generated).
    #[serde(default)]
    pub ids: Vec<u32>,
    #[serde(default)]
    pub prompt_tokens: usize,
}

/// The metrics of one attributed token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetRecord {
    pub position: usize,
    pub id: u32,
    pub text: String,
    #[serde(flatten)]
    pub scores: TargetScores,
    pub wall_s: f64,
    pub suff0: f32,
    pub soft: Soft,
    pub hard: Vec<Hard>,
    /// LongRA: whether a token of the antecedent is among the 3 highest-scored context tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub antecedent_top3: Option<bool>,
    /// Agreement with a second run on an independent random stream (stochastic methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<Stability>,
}

/// One (example, method) result line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultRecord {
    pub example: String,
    pub method: String,
    pub targets: Vec<TargetRecord>,
}

/// What `run.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct RunInfo {
    model: String,
    weights: String,
    dataset: String,
    level: String,
    methods: Vec<(String, serde_json::Value)>,
    config: EvalConfig,
}

/// Read an append-only JSONL file for resuming. Only a torn final line (a write cut short by a
/// kill: no newline at its end) is dropped, and it is cut off the file so that the next record
/// starts on a line of its own; any other line that does not parse is an error naming the file
/// and line. The file is never rewritten from memory.
fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(path).with_path(path)?;
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    let mut out = Vec::new();
    for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let v = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<T>(text).map_err(|e| e.to_string()))
            .map_err(|e| {
                Error::input(format!(
                    "{}:{}: not a valid record ({e}); the file is damaged, so the run cannot resume from it",
                    path.display(),
                    n + 1
                ))
            })?;
        out.push(v);
    }
    if complete < bytes.len() {
        // A torn last line: drop it from the file (truncation, not a rewrite).
        let f = OpenOptions::new().write(true).open(path).with_path(path)?;
        f.set_len(complete as u64).with_path(path)?;
        f.sync_all().with_path(path)?;
    }
    Ok(out)
}

/// Append one record and make it durable before going on.
fn append_line<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_path(path)?;
    let mut line = serde_json::to_string(v).map_err(|e| Error::input(e.to_string()))?;
    line.push('\n');
    f.write_all(line.as_bytes()).with_path(path)?;
    f.sync_data().with_path(path)?;
    Ok(())
}

/// A rerun into an existing folder may add methods and raise the example limit; everything else
/// (model, weights, dataset, settings, and the configuration of every method already there) must
/// match. Returns what `run.json` then records.
fn merge_runs(old: RunInfo, new: &RunInfo) -> std::result::Result<RunInfo, String> {
    if old.model != new.model || old.weights != new.weights {
        return Err(format!("model {} there, {} here", old.model, new.model));
    }
    if old.dataset != new.dataset || old.level != new.level {
        return Err(format!(
            "dataset {} there, {} here",
            old.dataset, new.dataset
        ));
    }
    let same_settings = EvalConfig {
        limit: None,
        ..old.config.clone()
    } == EvalConfig {
        limit: None,
        ..new.config.clone()
    };
    if !same_settings {
        return Err("the evaluation settings differ".into());
    }
    let mut methods = old.methods.clone();
    for (label, cfg) in &new.methods {
        match old.methods.iter().find(|(l, _)| l == label) {
            Some((_, c)) if c != cfg => {
                return Err(format!("method `{label}` is configured differently"))
            }
            Some(_) => {}
            None => methods.push((label.clone(), cfg.clone())),
        }
    }
    let limit = match (old.config.limit, new.config.limit) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
    Ok(RunInfo {
        methods,
        config: EvalConfig {
            limit,
            ..old.config
        },
        ..old
    })
}

/// Write a JSON file through a temporary file and a rename, so a kill leaves the old or the new.
fn write_atomically<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::input(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_path(&tmp)?;
    std::fs::rename(&tmp, path).with_path(path)?;
    Ok(())
}

/// Row identifiers of a dataset, with their prompts and (LongRA) rows.
fn rows(dataset: &Dataset) -> Vec<(String, String)> {
    match dataset {
        Dataset::Longra(r) => r.iter().map(|r| (r.id.clone(), r.prompt.clone())).collect(),
        Dataset::Prompts { name, prompts } => prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("{name}-{i}"), p.clone()))
            .collect(),
    }
}

/// Decide whether a row is usable and fix its targets.
fn prepare(
    model: &LoadedModel,
    dataset: &Dataset,
    i: usize,
    id: &str,
    prompt: &str,
    cfg: &EvalConfig,
) -> Result<ExampleRecord> {
    let skip = |why: String| ExampleRecord {
        example: id.to_string(),
        usable: false,
        skipped: Some(why),
        ids: Vec::new(),
        prompt_tokens: 0,
    };
    let plan = match dataset {
        Dataset::Longra(rows) => {
            let row = &rows[i];
            match longra_target(model, row)? {
                Err(Skip::MultiToken(n)) => return Ok(skip(format!("target is {n} tokens"))),
                Err(Skip::WrongWithDistractor) => {
                    return Ok(skip(
                        "greedy prediction with the distractor is not the target".into(),
                    ))
                }
                Err(Skip::WrongWithoutDistractor) => {
                    return Ok(skip(
                        "greedy prediction without the distractor is not the target".into(),
                    ))
                }
                Ok(_) => Plan::new(model, &row.prompt, &Targets::Text(row.target.clone()))?,
            }
        }
        Dataset::Prompts { .. } => {
            match Plan::new(model, prompt, &Targets::Generate(cfg.new_tokens)) {
                Ok(p) => p,
                Err(Error::InvalidInput(why)) => return Ok(skip(why)),
                Err(e) => return Err(e),
            }
        }
    };
    Ok(ExampleRecord {
        example: id.to_string(),
        usable: true,
        skipped: None,
        ids: plan.tokens.iter().map(|t| t.id).collect(),
        prompt_tokens: plan.prompt_tokens,
    })
}

/// Whether any token overlapping the character span is among the top 3 scores.
fn antecedent_hit(scores: &[f32], offsets: &[(usize, usize)], span: (usize, usize)) -> bool {
    crate::util::top_n(scores, 3)
        .into_iter()
        .any(|i| offsets[i].0 < span.1 && span.0 < offsets[i].1)
}

/// Run (or resume) an evaluation into `out`.
pub fn run(
    model: &LoadedModel,
    dataset: &Dataset,
    dataset_name: &str,
    methods: &[NamedMethod],
    cfg: &EvalConfig,
    out: &Path,
    progress: &dyn EvalProgress,
) -> Result<Summary> {
    if methods.is_empty() {
        return Err(Error::input("no methods to evaluate"));
    }
    let mut labels: Vec<&str> = methods.iter().map(|m| m.name()).collect();
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::input(format!(
            "method label `{}` appears twice; give each variant its own name",
            w[0]
        )));
    }
    cfg.validate()?;
    for m in methods {
        check_requirements(
            m.method.kind(),
            m.method.requirements(),
            model.model.as_ref(),
        )?;
    }
    std::fs::create_dir_all(out).with_path(out)?;
    let info = RunInfo {
        model: model.id.clone(),
        weights: model.model.info().weights.clone(),
        dataset: dataset_name.to_string(),
        level: dataset.level().to_string(),
        methods: methods
            .iter()
            .map(|m| (m.name().to_string(), m.method.config()))
            .collect(),
        config: cfg.clone(),
    };
    let info_path = out.join("run.json");
    if info_path.exists() {
        let text = std::fs::read_to_string(&info_path).with_path(&info_path)?;
        let old: RunInfo = serde_json::from_str(&text).with_path(&info_path)?;
        if old != info {
            let merged = merge_runs(old, &info).map_err(|why| {
                Error::input(format!(
                    "{} holds a different run ({why}); use another output folder",
                    out.display()
                ))
            })?;
            write_atomically(&info_path, &merged)?;
        }
    } else {
        write_atomically(&info_path, &info)?;
    }

    let examples_path = out.join("examples.jsonl");
    let results_path = out.join("results.jsonl");
    let mut examples: HashMap<String, ExampleRecord> = read_jsonl::<ExampleRecord>(&examples_path)?
        .into_iter()
        .map(|e| (e.example.clone(), e))
        .collect();
    let done: HashSet<(String, String)> = read_jsonl::<ResultRecord>(&results_path)?
        .into_iter()
        .map(|r| (r.example, r.method))
        .collect();

    let all = rows(dataset);
    let wanted = cfg.limit.unwrap_or(usize::MAX).min(all.len());
    let total_units = wanted * methods.len();
    let mut units = 0;
    let mut usable = 0;
    progress.units(0, total_units);
    for (i, (id, prompt)) in all.iter().enumerate() {
        if usable >= wanted {
            break;
        }
        let ex = match examples.get(id) {
            Some(e) => e.clone(),
            None => {
                progress.working(id, "checking");
                let e = prepare(model, dataset, i, id, prompt, cfg)?;
                append_line(&examples_path, &e)?;
                examples.insert(id.clone(), e.clone());
                e
            }
        };
        if !ex.usable {
            continue;
        }
        usable += 1;
        let key = i as u64;
        // Offsets and metric state shared by the methods.
        let mut faith: Vec<Option<Faithfulness<'_>>> = Vec::new();
        let offsets: Option<Vec<(usize, usize)>> = match dataset {
            Dataset::Longra(rows) => {
                let full = format!("{}{}", rows[i].prompt, rows[i].target);
                Some(model.tokenizer.encode(&full, true)?.offsets)
            }
            Dataset::Prompts { .. } => None,
        };
        for m in methods {
            units += 1;
            if done.contains(&(id.clone(), m.name().to_string())) {
                progress.units(units, total_units);
                continue;
            }
            progress.working(id, m.name());
            let n_targets = ex.ids.len() - ex.prompt_tokens;
            if faith.is_empty() {
                faith = (0..n_targets).map(|_| None).collect();
            }
            let mut targets = Vec::with_capacity(n_targets);
            for (k, slot) in faith.iter_mut().enumerate() {
                let pos = ex.prompt_tokens + k;
                let context = &ex.ids[..pos];
                let target = ex.ids[pos];
                progress.target(k, n_targets, &model.tokenizer.token_text(target));
                let t0 = Instant::now();
                let stream = stream_key(&[id, m.name()], &[k as u64]) as usize;
                let scores =
                    m.method
                        .attribute(model.model.as_ref(), context, target, stream, progress)?;
                let wall_s = t0.elapsed().as_secs_f64();
                let stability = if cfg.stability && is_stochastic(m.method.kind()) {
                    let again = stream_key(&[id, m.name(), "second stream"], &[k as u64]);
                    let other = m.method.attribute(
                        model.model.as_ref(),
                        context,
                        target,
                        again as usize,
                        progress,
                    )?;
                    Some(Stability {
                        spearman: stats::spearman(&scores.scores, &other.scores),
                        top3_overlap: stats::top_k_overlap(&scores.scores, &other.scores, 3),
                    })
                } else {
                    None
                };
                if scores.scores.iter().any(|s| !s.is_finite()) {
                    return Err(Error::input(format!(
                        "{} gave a non-finite score on {id}",
                        m.name()
                    )));
                }
                if slot.is_none() {
                    *slot = Some(Faithfulness::new(model.model.as_ref(), context)?);
                }
                let f = slot.as_ref().expect("set above");
                let mut rng = metric_rng(cfg.seed ^ key, id, m.name(), k);
                let soft = f.soft_mean(&unit_scale(&scores.scores), cfg.mask_draws, &mut rng)?;
                let hard = f.hard(&scores.scores, &cfg.ratios)?;
                let antecedent_top3 = match (dataset, &offsets) {
                    (Dataset::Longra(rows), Some(off)) => Some(antecedent_hit(
                        &scores.scores,
                        &off[..pos],
                        rows[i].antecedent_char_span,
                    )),
                    _ => None,
                };
                targets.push(TargetRecord {
                    position: pos,
                    id: target,
                    text: model.tokenizer.token_text(target),
                    scores,
                    wall_s,
                    suff0: f.suff0,
                    soft,
                    hard,
                    antecedent_top3,
                    stability,
                });
            }
            append_line(
                &results_path,
                &ResultRecord {
                    example: id.clone(),
                    method: m.name().to_string(),
                    targets,
                },
            )?;
            progress.units(units, total_units);
        }
    }
    let summary = Summary::from_files(out, dataset.level())?;
    summary.write(out)?;
    Ok(summary)
}

/// The means of one method.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    /// Agreement of two runs on independent random streams: mean Spearman, and the share of
    /// targets whose top-3 share at least 2 tokens.
    pub stability_spearman: Option<f64>,
    pub stability_top3: Option<f64>,
    /// Per-example values (example id → value) behind the intervals and paired tests.
    #[serde(skip)]
    pub per_example: PerExample,
}

/// Per-example means of the metrics that get intervals and paired tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerExample {
    pub soft_ns: Vec<(String, f64)>,
    pub soft_nc: Vec<(String, f64)>,
    pub antecedent_top3: Vec<(String, f64)>,
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
        let order: Vec<String> = MethodKind::ALL
            .iter()
            .map(|k| k.name().to_string())
            .collect();
        let _ = &order;
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
            let tokens: Vec<&TargetRecord> = recs.iter().flat_map(|r| r.targets.iter()).collect();
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
                soft_ns: example_means(&ids, &per(&|t| t.soft.soft_ns)),
                soft_nc: example_means(&ids, &per(&|t| t.soft.soft_nc)),
                antecedent_top3: example_means(
                    &ids,
                    &per(&|t| t.antecedent_top3.map(|h| if h { 1.0 } else { 0.0 })),
                ),
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
                ln_soft_ns_ci: None,
                ln_soft_nc_ci: None,
                stability_spearman: mean(&rhos),
                stability_top3: mean(&agree),
                per_example,
                method: name.clone(),
                examples: recs.len(),
                tokens: tokens.len(),
                soft_suff: mean_of_means(&per(&|t| Some(t.soft.soft_suff))),
                soft_comp: mean_of_means(&per(&|t| Some(t.soft.soft_comp))),
                soft_ns: mean_of_means(&per(&|t| t.soft.soft_ns)),
                soft_nc: mean_of_means(&per(&|t| t.soft.soft_nc)),
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
            }
        }
        let mut paired = Vec::new();
        for a in methods.iter().filter(|m| m.method.starts_with("reagent")) {
            // Against every baseline, and a variant also against the reference.
            let others = methods.iter().filter(|b| {
                b.method != a.method && (!b.method.starts_with("reagent") || b.method == "reagent")
            });
            for b in others {
                let metrics: [MetricPair<'_>; 3] = [
                    ("soft_nc", &a.per_example.soft_nc, &b.per_example.soft_nc),
                    ("soft_ns", &a.per_example.soft_ns, &b.per_example.soft_ns),
                    (
                        "antecedent_top3",
                        &a.per_example.antecedent_top3,
                        &b.per_example.antecedent_top3,
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

    /// `ln(method / random)` of a metric, when both are positive.
    pub fn ln_ratio(
        &self,
        m: &MethodSummary,
        pick: fn(&MethodSummary) -> Option<f64>,
    ) -> Option<f64> {
        let r = pick(self.random()?)?;
        let v = pick(m)?;
        (r > 0.0 && v > 0.0).then(|| (v / r).ln())
    }

    /// `method / random` of a metric (the paper compares hard metrics this way).
    pub fn ratio(&self, m: &MethodSummary, pick: fn(&MethodSummary) -> Option<f64>) -> Option<f64> {
        let r = pick(self.random()?)?;
        let v = pick(m)?;
        (r > 0.0).then(|| v / r)
    }

    /// The CSV table: one row per method.
    pub fn to_csv(&self) -> String {
        let fmt = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
        let ratios: Vec<f64> = self
            .methods
            .first()
            .map(|m| m.hard.iter().map(|h| h.0).collect())
            .unwrap_or_default();
        let mut s = String::from(
            "method,examples,tokens,soft_suff,soft_comp,soft_ns,soft_nc,ln_soft_ns_vs_random,ln_soft_nc_vs_random,hard_ns_mean,hard_nc_mean,hard_ns_vs_random,hard_nc_vs_random,antecedent_top3",
        );
        for r in &ratios {
            s.push_str(&format!(",hard_ns@{r},hard_nc@{r}"));
        }
        s.push_str(",reagent_steps,reagent_converged,seconds_per_token,forward_rows_per_token,soft_ns_lo,soft_ns_hi,soft_nc_lo,soft_nc_hi,ln_soft_ns_lo,ln_soft_ns_hi,ln_soft_nc_lo,ln_soft_nc_hi,antecedent_top3_lo,antecedent_top3_hi,stability_spearman,stability_top3\n");
        for m in &self.methods {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                m.method,
                m.examples,
                m.tokens,
                fmt(m.soft_suff),
                fmt(m.soft_comp),
                fmt(m.soft_ns),
                fmt(m.soft_nc),
                fmt(self.ln_ratio(m, |x| x.soft_ns)),
                fmt(self.ln_ratio(m, |x| x.soft_nc)),
                fmt(m.hard_ns_mean),
                fmt(m.hard_nc_mean),
                fmt(self.ratio(m, |x| x.hard_ns_mean)),
                fmt(self.ratio(m, |x| x.hard_nc_mean)),
                fmt(m.antecedent_top3),
            ));
            for h in &m.hard {
                s.push_str(&format!(",{},{}", fmt(h.1), fmt(h.2)));
            }
            let lo = |c: Option<stats::Interval>| fmt(c.map(|c| c.0));
            let hi = |c: Option<stats::Interval>| fmt(c.map(|c| c.1));
            s.push_str(&format!(
                ",{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                fmt(m.reagent_steps),
                fmt(m.reagent_converged),
                m.seconds_per_token,
                fmt(m.forward_rows),
                lo(m.soft_ns_ci),
                hi(m.soft_ns_ci),
                lo(m.soft_nc_ci),
                hi(m.soft_nc_ci),
                lo(m.ln_soft_ns_ci),
                hi(m.ln_soft_ns_ci),
                lo(m.ln_soft_nc_ci),
                hi(m.ln_soft_nc_ci),
                lo(m.antecedent_top3_ci),
                hi(m.antecedent_top3_ci),
                fmt(m.stability_spearman),
                fmt(m.stability_top3),
            ));
        }
        s
    }

    /// The Markdown report.
    pub fn to_markdown(&self, title: &str) -> String {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
        let f2 = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
        let ci = |c: Option<stats::Interval>| {
            c.map(|(lo, hi)| format!(" [{lo:.2}, {hi:.2}]"))
                .unwrap_or_default()
        };
        let mut s = format!(
            "# {title}\n\n{} level; {} examples used of {} checked.\n\n",
            self.level, self.examples_used, self.examples_seen
        );
        s.push_str("| method | examples | tokens | Soft-NS | ln(NS/random) [95% CI] | Soft-NC | ln(NC/random) [95% CI] | hard NS/random | hard NC/random | antecedent top-3 [95% CI] | seed agreement ρ / top-3 | contexts/token | s/token |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.methods {
            let agreement = match (m.stability_spearman, m.stability_top3) {
                (Some(r), Some(t)) => format!("{r:.2} / {:.0}%", 100.0 * t),
                (None, Some(t)) => format!("– / {:.0}%", 100.0 * t),
                _ => "–".into(),
            };
            let ante = m
                .antecedent_top3
                .map(|a| {
                    format!(
                        "{:.0}%{}",
                        100.0 * a,
                        m.antecedent_top3_ci
                            .map(|(lo, hi)| format!(" [{:.0}, {:.0}]", 100.0 * lo, 100.0 * hi))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "–".into());
            s.push_str(&format!(
                "| {} | {} | {} | {} | {}{} | {} | {}{} | {} | {} | {} | {} | {} | {:.2} |\n",
                m.method,
                m.examples,
                m.tokens,
                f(m.soft_ns),
                f2(self.ln_ratio(m, |x| x.soft_ns)),
                ci(m.ln_soft_ns_ci),
                f(m.soft_nc),
                f2(self.ln_ratio(m, |x| x.soft_nc)),
                ci(m.ln_soft_nc_ci),
                f2(self.ratio(m, |x| x.hard_ns_mean)),
                f2(self.ratio(m, |x| x.hard_nc_mean)),
                ante,
                agreement,
                m.forward_rows
                    .map(|r| format!("{r:.0}"))
                    .unwrap_or_else(|| "–".into()),
                m.seconds_per_token
            ));
        }
        s.push_str(
            "\nSoft-NS / Soft-NC: soft normalized sufficiency and comprehensiveness (higher is more faithful), \
             mean over examples of each example's mean over its attributed tokens; every method's scores enter \
             them as |s| / sum |s| (non-negative, summing to 1 over the context). ln(x/random): the paper's \
             log ratio against softmax(U[0,1)) scores, with a bootstrap 95% interval (2,000 resamples of the \
             examples). Hard NS/NC: mean over rationale ratios 0.05, 0.1, 0.2, 0.3 (the paper's), divided by \
             random's. Seed agreement: a second run on an independent random stream; mean Spearman ρ, and the \
             share of tokens whose two top-3 sets share at least 2 tokens. Contexts/token: contexts the model \
             scored per attributed token (gradient methods: forward and backward passes). s/token: wall \
             seconds per attributed token.\n",
        );
        if !self.paired.is_empty() {
            s.push_str("\nPaired comparisons (per example; mean difference a − b with its bootstrap 95% interval, and the sign-flip permutation p-value):\n\n| a | b | metric | n | mean a − b | 95% CI | p |\n|---|---|---|---:|---:|---:|---:|\n");
            for p in &self.paired {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {:+.4} | {} | {:.4} |\n",
                    p.a,
                    p.b,
                    p.metric,
                    p.test.n,
                    p.test.mean_diff,
                    p.test
                        .interval
                        .map(|(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]"))
                        .unwrap_or_else(|| "–".into()),
                    p.test.p_value
                ));
            }
        }
        let any_steps = self.methods.iter().any(|m| m.reagent_steps.is_some());
        if any_steps {
            for m in self.methods.iter().filter(|m| m.reagent_steps.is_some()) {
                s.push_str(&format!(
                    "\n{}: {} steps per token on average; {:.0}% of probes converged.\n",
                    m.method,
                    f2(m.reagent_steps),
                    100.0 * m.reagent_converged.unwrap_or(0.0)
                ));
            }
        }
        if let Some(first) = self.methods.first() {
            s.push_str("\nHard metrics per ratio (NS / NC):\n\n| method |");
            for h in &first.hard {
                s.push_str(&format!(" {} |", h.0));
            }
            s.push_str("\n|---|");
            s.push_str(&"---:|".repeat(first.hard.len()));
            s.push('\n');
            for m in &self.methods {
                s.push_str(&format!("| {} |", m.method));
                for h in &m.hard {
                    s.push_str(&format!(" {} / {} |", f(h.1), f(h.2)));
                }
                s.push('\n');
            }
        }
        s
    }

    /// Write `summary.md` and `summary.csv`.
    pub fn write(&self, out: &Path) -> Result<()> {
        let title = std::fs::read_to_string(out.join("run.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| {
                format!(
                    "{} on {}",
                    v["model"].as_str().unwrap_or("?"),
                    v["dataset"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "Evaluation".into());
        let md: PathBuf = out.join("summary.md");
        std::fs::write(&md, self.to_markdown(&title)).with_path(&md)?;
        let csv = out.join("summary.csv");
        std::fs::write(&csv, self.to_csv()).with_path(&csv)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reagent-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_from_the_file() {
        let p = tmp("torn.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":");
        let v: Vec<serde_json::Value> = read_jsonl(&p).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        append_line(&p, &serde_json::json!({"a": 3})).unwrap();
        let v: Vec<serde_json::Value> = read_jsonl(&p).unwrap();
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn a_corrupt_middle_line_is_an_error_and_the_file_is_kept() {
        let text = "{\"a\":1}\n{\"a\" 2}\n{\"a\":3}\n";
        let p = tmp("corrupt.jsonl", text);
        let e = read_jsonl::<serde_json::Value>(&p).unwrap_err().to_string();
        assert!(e.contains("corrupt.jsonl:2:"), "{e}");
        assert_eq!(e.lines().count(), 1);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }

    #[test]
    fn labels_sort_next_to_their_method() {
        let mut v = vec!["random", "reagent-b", "occlusion", "reagent", "reagent-a"];
        v.sort_by_key(|l| label_order(l));
        assert_eq!(
            v,
            ["reagent", "reagent-a", "reagent-b", "occlusion", "random"]
        );
    }
}
