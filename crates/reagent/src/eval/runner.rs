//! The evaluation runner: attribute every example of a dataset with every method, score each
//! attribution with the faithfulness metrics, and summarize.
//!
//! Output folder:
//! - `run.json` — what was run (model, dataset, methods and their configurations, settings); a
//!   rerun into the same folder may add methods or raise the limit, and must match otherwise;
//! - `examples.jsonl` — per dataset row: used or skipped (and why), and its targets;
//! - `results.jsonl` — one line per (example, method): scores, diagnostics, metrics and timings;
//! - `summary.md`, `summary.csv` — method × metric means, ln-ratios against the random
//!   baseline, counts and seconds per attributed token.
//!
//! Each line is appended and synced when done ([`super::store`]), so an interrupted run loses at
//! most the (example, method) pair in progress; a rerun skips what is done. Every random draw is
//! keyed by a hash of (seed, example, method label, target), so a resumed run gives the same
//! results as a clean one.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::datasets::{longra_target, Dataset, Skip};
use super::metrics::{erasure, metric_rng, Faithfulness};
use super::stats;
use super::store::{append_line, read_jsonl, write_atomically};
pub use super::store::{ExampleRecord, ResultRecord, Stability, TargetRecord};
pub use super::summary::{HardRow, MethodSummary, PairedRow, PerExample, Summary, PAPER_RATIOS};
use crate::attribute::{JobProgress, Plan, Targets};
use crate::error::WithPath;
use crate::method::{check_requirements, Attributor, MethodKind};
use crate::model::LoadedModel;
use crate::score::LmTarget;
use crate::util::stream_key;
use crate::{Error, Result};

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
    // The paper's metrics zero input embeddings: only where this process holds the weights. The
    // erasure metrics need next-token probabilities only and run everywhere.
    let embedding_metrics = model.model.info().capabilities.weights;
    let specials = model.tokenizer.special_ids().to_vec();
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
                if progress.cancelled() {
                    return Err(crate::Error::Cancelled);
                }
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
                let (suff0, soft, hard) = if embedding_metrics {
                    if slot.is_none() {
                        *slot = Some(Faithfulness::new(model.model.as_ref(), context)?);
                    }
                    let f = slot.as_ref().expect("set above");
                    let mut rng = metric_rng(cfg.seed ^ key, id, m.name(), k);
                    let soft =
                        f.soft_mean(&unit_scale(&scores.scores), cfg.mask_draws, &mut rng)?;
                    (
                        Some(f.suff0),
                        Some(soft),
                        f.hard(&scores.scores, &cfg.ratios)?,
                    )
                } else {
                    (None, None, Vec::new())
                };
                let fixed: Vec<bool> = context.iter().map(|i| specials.contains(i)).collect();
                let (p_target, erasure) = erasure(
                    &LmTarget(model.model.as_ref()),
                    context,
                    target,
                    &scores.scores,
                    &fixed,
                    &cfg.ratios,
                )?;
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
                    suff0,
                    soft,
                    hard,
                    p_target: Some(p_target),
                    erasure,
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
