//! `reagent attribute`: ReAGent scores for each target token over its context.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reagent::method::reagent::{build_sampler, Reagent, ReagentConfig, SamplerKind};
use reagent::{attribute, JobProgress, Plan, Progress, Targets};

use crate::args::{AttributeArgs, FormatArg, ReagentArgs};
use crate::render::{Heatmap, Html, InseqJson, Json};

/// One prompt to attribute.
struct Job {
    prompt: String,
    targets: Targets,
    contrast: Option<String>,
}

/// The ReAGent configuration: the preset, then the flags given.
pub fn reagent_config(a: &ReagentArgs) -> Result<ReagentConfig> {
    let mut c = ReagentConfig::preset(&a.preset)?;
    if let Some(v) = a.probes {
        c.probes = v;
    }
    if let Some(v) = a.max_steps {
        c.max_steps = v;
    }
    if let Some(v) = a.keep_top_n {
        c.keep_top_n = v;
    }
    if let Some(v) = a.keep_ratio {
        c.keep_ratio = Some(v);
        if a.keep_top_n.is_none() {
            c.keep_top_n = 0;
        }
    }
    if let Some(v) = a.stop_top_k {
        c.stop_top_k = v;
    }
    if let Some(v) = a.replacing_ratio {
        c.replacing_ratio = v;
    }
    c.objective = a.objective;
    c.seed = a.seed;
    if let Some(v) = a.readout {
        c.readout = v;
    }
    if let Some(v) = a.min_steps {
        c.min_steps = v;
    }
    if let Some(v) = a.probe_weighting {
        c.probe_weighting = v;
    }
    if let Some(v) = a.stable_window {
        c.stable_window = v;
    }
    c.adaptive_ratio |= a.adaptive_ratio;
    if let Some(v) = a.shrink_z {
        c.shrink_z = v;
    }
    c.validate()
        .map_err(|e| anyhow::anyhow!(with_flag(&e.to_string())))?;
    Ok(c)
}

/// A library message names a field (`replacing_ratio must be ...`); add the flag that sets it.
pub fn with_flag(msg: &str) -> String {
    let field: String = msg
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
        .collect();
    if field.contains('_') || ["probes", "readout", "sampler", "limit"].contains(&field.as_str()) {
        format!("--{}: {msg}", field.replace('_', "-"))
    } else {
        msg.to_string()
    }
}

/// Build ReAGent from a configuration, with the sampler the arguments name.
pub fn build_reagent_with(
    cfg: ReagentConfig,
    a: &ReagentArgs,
    model: &reagent::LoadedModel,
) -> Result<Reagent> {
    if a.sampler == SamplerKind::Mlm && a.mlm.is_none() {
        bail!(
            "--sampler mlm needs a masked LM: pass --mlm SPEC (e.g. a distilroberta-base folder)"
        );
    }
    let mlm = super::load_mlm(a)?;
    let pick = a.mlm_pick;
    let sampler = build_sampler(a.sampler, model, mlm.as_ref(), pick)?;
    Ok(Reagent::new(cfg, sampler)?)
}

/// `--unit-spans FILE`: `[[start, end], ...]`, character offsets into the prompt.
fn read_spans(path: &Path) -> Result<Vec<(usize, usize)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spans: Vec<(usize, usize)> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected [[start, end], ...] (character offsets into the prompt)",
            path.display()
        )
    })?;
    if spans.is_empty() {
        bail!("{}: no spans", path.display());
    }
    Ok(spans)
}

fn default_targets(a: &AttributeArgs) -> Targets {
    match (&a.target, a.max_new_tokens) {
        (Some(t), _) => Targets::Text(t.clone()),
        (None, n) => Targets::Generate(n.unwrap_or(1)),
    }
}

fn read_jobs(path: &Path, a: &AttributeArgs) -> Result<Vec<Job>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut jobs = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        let prompt = v["prompt"]
            .as_str()
            .with_context(|| format!("{}:{}: no \"prompt\" string", path.display(), i + 1))?
            .to_string();
        let targets = match (
            v.get("target").and_then(|t| t.as_str()),
            v.get("max_new_tokens"),
        ) {
            (Some(t), _) => Targets::Text(t.to_string()),
            (None, Some(n)) => Targets::Generate(n.as_u64().with_context(|| {
                format!(
                    "{}:{}: max_new_tokens must be a number",
                    path.display(),
                    i + 1
                )
            })? as usize),
            (None, None) => default_targets(a),
        };
        let contrast = match v.get("contrast") {
            None | Some(serde_json::Value::Null) => a.contrast.clone(),
            Some(c) => Some(
                c.as_str()
                    .with_context(|| {
                        format!(
                            "{}:{}: \"contrast\" must be a string",
                            path.display(),
                            i + 1
                        )
                    })?
                    .to_string(),
            ),
        };
        jobs.push(Job {
            prompt,
            targets,
            contrast,
        });
    }
    if jobs.is_empty() {
        bail!("{}: no jobs in the file", path.display());
    }
    Ok(jobs)
}

/// The progress bar: target, step, converged probes.
struct Bar {
    pb: ProgressBar,
    job: String,
}

impl Progress for Bar {
    fn step(&self, step: usize, max_steps: usize, converged: usize, probes: usize) {
        self.pb.set_length(max_steps as u64);
        self.pb.set_position(step as u64);
        self.pb
            .set_message(format!("converged {converged}/{probes}"));
    }
}

impl JobProgress for Bar {
    fn target(&self, index: usize, total: usize, text: &str) {
        self.pb.reset();
        self.pb.set_prefix(format!(
            "{}target {}/{} {:?}",
            self.job,
            index + 1,
            total,
            text
        ));
    }
}

pub fn run(a: AttributeArgs) -> Result<()> {
    let jobs = match (&a.prompt, &a.input) {
        (Some(p), _) => vec![Job {
            prompt: p.clone(),
            targets: default_targets(&a),
            contrast: a.contrast.clone(),
        }],
        (None, Some(path)) => read_jobs(path, &a)?,
        (None, None) => bail!("give --prompt TEXT or --input FILE.jsonl"),
    };
    if let Some(Targets::Text(t)) = jobs.first().map(|j| &j.targets) {
        if t.is_empty() {
            bail!("the target text is empty");
        }
    }
    if a.reagent.sampler != SamplerKind::Mlm && a.reagent.mlm.is_some() {
        bail!("--mlm is only used with --sampler mlm");
    }
    if a.reagent.sampler == SamplerKind::Mlm && a.reagent.mlm.is_none() {
        bail!("--sampler mlm needs --mlm SPEC: a masked LM such as a distilroberta-base folder or hub id");
    }
    reagent_config(&a.reagent)?;
    for j in &jobs {
        if j.prompt.trim().is_empty() {
            bail!("the prompt is empty");
        }
    }

    let unit = match &a.unit_spans {
        Some(p) => reagent::result::Unit::Spans(read_spans(p)?),
        None => a.unit.clone(),
    };
    let kind = reagent::MethodKind::from_name(a.method.trim())?;
    let mut model = super::load_model(&a.model, kind.probability_only())?;
    if let Some(p) = &a.chat_template {
        let t = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the chat template {}", p.display()))?;
        model.tokenizer = model.tokenizer.clone().with_chat_template(t);
    }
    let model_args_k = a.model.top_logprobs;
    let method = super::build_method(kind, &a.reagent, &a.baselines, &model)?;

    let color =
        !a.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let heatmap = Heatmap {
        color,
        words: a.words.is_some() || unit != reagent::result::Unit::Token,
        top: 5,
        show_template: a.show_template,
    };
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:25}] step {pos}/{len} {msg} {elapsed_precise}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb
    };
    let mut json_out: Option<Box<dyn Write>> = match &a.json {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ))),
    };
    let json = Json {
        lines: a.input.is_some(),
    };
    let stdout = std::io::stdout();
    let n_jobs = jobs.len();
    let mut for_html = Vec::new();
    let mut for_inseq = Vec::new();
    // Created now, so that a bad path fails before any work.
    let html_file = match &a.html {
        Some(p) => Some(File::create(p).with_context(|| format!("cannot create {}", p.display()))?),
        None => None,
    };
    let (mut n_targets, mut total_s) = (0usize, 0f64);
    let mut served = reagent::model::BackendStats::default();
    let mut any_served = false;
    for (i, job) in jobs.into_iter().enumerate() {
        let bar = Arc::new(Bar {
            pb: pb.clone(),
            job: if n_jobs > 1 {
                format!("job {}/{} ", i + 1, n_jobs)
            } else {
                String::new()
            },
        });
        let what = || {
            if n_jobs > 1 {
                format!("job {}", i + 1)
            } else {
                "cannot attribute".into()
            }
        };
        let mut plan = if a.chat {
            Plan::chat(&model, &job.prompt, &job.targets)
        } else {
            Plan::new(&model, &job.prompt, &job.targets)
        }
        .with_context(what)?;
        if let Some(c) = &job.contrast {
            plan = plan.with_contrast(&model, c).with_context(what)?;
        }
        plan = plan.with_units(unit.clone()).with_context(what)?;
        let mut result = attribute(&model, method.as_ref(), plan, bar.as_ref())?;
        n_targets += result.targets.len();
        total_s += result.wall_s;
        for t in &result.targets {
            if let Some(b) = t.backend {
                served.requests += b.requests;
                served.cache_hits += b.cache_hits;
                served.rows += b.rows;
                served.bounded_rows += b.bounded_rows;
                served.max_prob_error = served.max_prob_error.max(b.max_prob_error);
                any_served = true;
            }
        }
        if let Some(w) = a.words {
            result.aggregate_words(w);
        }
        pb.suspend(|| -> Result<()> {
            if !matches!(&a.json, Some(p) if p.as_os_str() == "-") {
                heatmap.render(&result, stdout.lock())?;
            }
            Ok(())
        })?;
        if a.format == FormatArg::Inseq {
            for_inseq.push(result.clone());
        } else if let Some(w) = json_out.as_mut() {
            json.render(&result, w)?;
        }
        if a.html.is_some() {
            for_html.push(result);
        }
    }
    pb.finish_and_clear();
    if let Some(f) = html_file {
        let mut w = BufWriter::new(f);
        Html.render(&for_html, &mut w)?;
        w.flush()?;
    }
    if !a.quiet {
        eprintln!(
            "attributed {n_targets} target token{} in {:.1} s ({:.2} s per token)",
            if n_targets == 1 { "" } else { "s" },
            total_s,
            total_s / n_targets.max(1) as f64
        );
        if any_served {
            eprintln!(
                "served: {} requests for {} contexts ({} from the cache); {} with the target outside the top {} (its probability entered as a bound, off by at most {:.2e})",
                served.requests,
                served.rows,
                served.cache_hits,
                served.bounded_rows,
                model_args_k,
                served.max_prob_error
            );
        }
    }
    if let Some(mut w) = json_out {
        if a.format == FormatArg::Inseq {
            InseqJson
                .render(&for_inseq, &mut w)
                .context("cannot write inseq's format")?;
        }
        w.flush()?;
    }
    Ok(())
}
