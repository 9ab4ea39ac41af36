//! `reagent evaluate`: methods × faithfulness metrics on a dataset, resumable.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reagent::eval::datasets::Dataset;
use reagent::eval::runner::{self, EvalConfig, EvalProgress, NamedMethod};
use reagent::{JobProgress, MethodKind, Progress};

use crate::args::EvaluateArgs;

/// The methods named by `--methods` (plus the random baseline), built for this model.
fn build_methods(a: &EvaluateArgs, model: &reagent::LoadedModel) -> Result<Vec<NamedMethod>> {
    let served = !model.model.info().capabilities.weights;
    let (kinds, left_out) = MethodKind::evaluation_list(&a.methods, served).context("--methods")?;
    // "all" against a served model: the methods it can run.
    if !left_out.is_empty() {
        let names: Vec<&str> = left_out.iter().map(|k| k.name()).collect();
        eprintln!(
            "left out {} (they need the model's weights; the server gives next-token probabilities only)",
            names.join(", ")
        );
    }
    let mut methods: Vec<NamedMethod> = kinds
        .into_iter()
        .map(|k| {
            Ok(NamedMethod::new(super::build_method(
                k,
                &a.reagent,
                &a.baselines,
                model,
            )?))
        })
        .collect::<Result<_>>()?;
    for spec in &a.variants {
        methods.push(build_variant(spec, &a.reagent, model)?);
    }
    Ok(methods)
}

/// `NAME:key=value,key=value`: a ReAGent variant of the command line's ReAGent settings.
fn build_variant(
    spec: &str,
    base: &crate::args::ReagentArgs,
    model: &reagent::LoadedModel,
) -> Result<NamedMethod> {
    let (name, settings) = spec
        .split_once(':')
        .with_context(|| format!("--variant `{spec}`: expected NAME:KEY=VALUE,..."))?;
    let name = name.trim();
    if !name.starts_with("reagent") || name.chars().any(|c| c.is_whitespace() || c == ',') {
        bail!(
            "--variant `{spec}`: the name must start with \"reagent\" and have no spaces or commas"
        );
    }
    let mut cfg = super::attribute::reagent_config(base)?;
    let mut sampler = base.sampler;
    for kv in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--variant {name}: `{kv}` is not KEY=VALUE"))?;
        let (k, v) = (k.trim(), v.trim());
        if k == "sampler" {
            sampler = v
                .parse()
                .map_err(|e| anyhow::anyhow!("--variant {name}: unknown sampler: {e}"))?;
            continue;
        }
        let value = serde_json::from_str::<serde_json::Value>(v)
            .unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        // Each setting is checked as it comes, so the error names it.
        cfg.set(k, value)
            .map_err(|e| anyhow::anyhow!("--variant {name}: {e}"))?;
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--variant {name}: {e}"))?;
    let args = crate::args::ReagentArgs {
        sampler,
        ..base.clone()
    };
    let method = super::attribute::build_reagent_with(cfg, &args, model)?;
    Ok(NamedMethod {
        label: name.to_string(),
        method: Box::new(method),
    })
}

/// Progress bar over (example, method) units, with the current target and ReAGent step.
struct Bar {
    pb: ProgressBar,
}

impl Progress for Bar {
    fn step(&self, step: usize, max_steps: usize, converged: usize, probes: usize) {
        if step.is_multiple_of(5) || step == max_steps {
            self.pb.set_message(format!(
                "step {step}/{max_steps}, converged {converged}/{probes}"
            ));
        }
    }
}

impl JobProgress for Bar {
    fn target(&self, index: usize, total: usize, text: &str) {
        self.pb
            .set_message(format!("target {}/{} {:?}", index + 1, total, text));
    }
}

impl EvalProgress for Bar {
    fn units(&self, done: usize, total: usize) {
        self.pb.set_length(total as u64);
        self.pb.set_position(done as u64);
    }
    fn working(&self, example: &str, method: &str) {
        self.pb.set_prefix(format!("{example} · {method}"));
    }
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    let dataset = Dataset::read(&a.dataset)
        .with_context(|| format!("cannot read dataset {}", a.dataset.display()))?;
    super::attribute::reagent_config(&a.reagent)?;
    let model = super::load_model(&a.model, false)?;
    let methods = build_methods(&a, &model)?;
    let cfg = EvalConfig {
        seed: a.reagent.seed,
        limit: a.limit,
        new_tokens: a.new_tokens,
        mask_draws: a.mask_draws,
        stability: !a.no_stability,
        ..EvalConfig::default()
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!(super::attribute::with_flag(&e.to_string())))?;
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} (eta {eta}) {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb
    };
    let name = a
        .dataset
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let summary = runner::run(
        &model,
        &dataset,
        &name,
        &methods,
        &cfg,
        &a.out,
        &Bar { pb: pb.clone() },
    )?;
    pb.finish_and_clear();
    print!(
        "{}",
        summary.to_markdown(&format!("{} on {name}", model.id))
    );
    eprintln!("wrote {}", a.out.join("summary.md").display());
    Ok(())
}

/// `reagent summarize DIR`: the summary of the records an evaluation folder holds so far.
pub fn summarize(a: crate::args::SummarizeArgs) -> Result<()> {
    let run = a.dir.join("run.json");
    let text = std::fs::read_to_string(&run)
        .with_context(|| format!("{} is not an evaluation folder", a.dir.display()))?;
    let info: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", run.display()))?;
    let level = info["level"]
        .as_str()
        .with_context(|| format!("{}: no `level`", run.display()))?;
    let summary = runner::Summary::from_files(&a.dir, level)?;
    summary.write(&a.dir)?;
    print!(
        "{}",
        summary.to_markdown(&format!(
            "{} on {}",
            info["model"].as_str().unwrap_or("?"),
            info["dataset"].as_str().unwrap_or("?")
        ))
    );
    eprintln!("wrote {}", a.dir.join("summary.md").display());
    Ok(())
}
