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
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::datasets::{longra_target, Dataset, Skip};
use super::metrics::{metric_rng, Faithfulness, Hard, Soft};
use crate::attribute::{JobProgress, Plan, Targets};
use crate::error::WithPath;

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
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            seed: 42,
            limit: None,
            new_tokens: 10,
            mask_draws: 4,
            ratios: vec![0.05, 0.1, 0.2, 0.3, 0.5],
        }
    }
}

/// A method to evaluate.
pub struct NamedMethod {
    pub method: Box<dyn Attributor>,
}

impl NamedMethod {
    pub fn name(&self) -> &'static str {
        self.method.kind().name()
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

/// Append-only JSONL with resumption: lines that do not parse (a write cut short) are dropped.
fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let f = File::open(path).with_path(path)?;
    let mut good = Vec::new();
    let mut lines = Vec::new();
    let mut bad = false;
    for line in BufReader::new(f).lines() {
        let line = line.with_path(path)?;
        match serde_json::from_str::<T>(&line) {
            Ok(v) => {
                good.push(v);
                lines.push(line);
            }
            Err(_) => bad = true,
        }
    }
    if bad {
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(path, text).with_path(path)?;
    }
    Ok(good)
}

fn append_line<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_path(path)?;
    let mut line = serde_json::to_string(v).map_err(|e| Error::input(e.to_string()))?;
    line.push('\n');
    f.write_all(line.as_bytes()).with_path(path)?;
    f.flush().with_path(path)?;
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
    crate::method::reagent::stopping::top_n(scores, 3)
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
    if cfg.mask_draws == 0 {
        return Err(Error::input("--mask-draws must be at least 1"));
    }
    if cfg.ratios.iter().any(|r| !(*r > 0.0 && *r <= 1.0)) {
        return Err(Error::input("rationale ratios must be in (0, 1]"));
    }
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
            return Err(Error::input(format!(
                "{} holds a different run (model, dataset, methods or settings differ); use another --out folder",
                out.display()
            )));
        }
    } else {
        let text = serde_json::to_string_pretty(&info).map_err(|e| Error::input(e.to_string()))?;
        std::fs::write(&info_path, text).with_path(&info_path)?;
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
                let scores = m.method.attribute(
                    model.model.as_ref(),
                    context,
                    target,
                    i * 1000 + k,
                    progress,
                )?;
                let wall_s = t0.elapsed().as_secs_f64();
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
                let soft = f.soft_mean(&scores.scores, cfg.mask_draws, &mut rng)?;
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
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub level: String,
    pub examples_seen: usize,
    pub examples_used: usize,
    pub methods: Vec<MethodSummary>,
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
        let mut names: Vec<&String> = by_method.keys().collect();
        names.sort_by_key(|n| order.iter().position(|o| o == *n).unwrap_or(usize::MAX));
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
            methods.push(MethodSummary {
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
        Ok(Summary {
            level: level.to_string(),
            examples_seen: examples.len(),
            examples_used: examples.iter().filter(|e| e.usable).count(),
            methods,
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
        s.push_str(",reagent_steps,reagent_converged,seconds_per_token\n");
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
            s.push_str(&format!(
                ",{},{},{:.3}\n",
                fmt(m.reagent_steps),
                fmt(m.reagent_converged),
                m.seconds_per_token
            ));
        }
        s
    }

    /// The Markdown report.
    pub fn to_markdown(&self, title: &str) -> String {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
        let f2 = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
        let mut s = format!(
            "# {title}\n\n{} level; {} examples used of {} checked.\n\n",
            self.level, self.examples_used, self.examples_seen
        );
        s.push_str("| method | examples | tokens | Soft-NS | Soft-NC | ln(NS/random) | ln(NC/random) | hard NS | hard NC | hard NS/random | hard NC/random | antecedent top-3 | s/token |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.methods {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |\n",
                m.method,
                m.examples,
                m.tokens,
                f(m.soft_ns),
                f(m.soft_nc),
                f2(self.ln_ratio(m, |x| x.soft_ns)),
                f2(self.ln_ratio(m, |x| x.soft_nc)),
                f(m.hard_ns_mean),
                f(m.hard_nc_mean),
                f2(self.ratio(m, |x| x.hard_ns_mean)),
                f2(self.ratio(m, |x| x.hard_nc_mean)),
                f(m.antecedent_top3),
                m.seconds_per_token
            ));
        }
        s.push_str(
            "\nSoft-NS / Soft-NC: soft normalized sufficiency and comprehensiveness (higher is more faithful), \
             mean over examples of each example's mean over its attributed tokens. ln(x/random): the paper's \
             log ratio against softmax(U[0,1)) scores. Hard NS/NC: mean over rationale ratios 0.05, 0.1, 0.2, 0.3 \
             (the paper's), compared with random by division. s/token: wall seconds per attributed token.\n",
        );
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
