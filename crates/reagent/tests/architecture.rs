//! The library's layering, enforced: data flows one way, and no module imports one above it.
//!
//! Order, lowest first (each may use only those before it, and itself):
//!
//! | rank | module | what |
//! |---|---|---|
//! | 0 | `util` | numeric helpers (softmax, top-n, stream keys) |
//! | 1 | `error` | the error type |
//! | 2 | `format` | file formats read by both tokenizer and models (GGUF) |
//! | 3 | `tokenizer` | tokenizers from `tokenizer.json` or GGUF metadata |
//! | 4 | `model` | architectures, kernels, weight loading |
//! | 5 | `remote` | a model served over HTTP, as a probability-only `CausalLm` |
//! | 5 | `score` | the probability-only seam: next-token log-probabilities of token-id contexts |
//! | 6 | `method` | attribution methods (ReAGent, baselines, registry) |
//! | 7 | `result` | attribution results |
//! | 8 | `attribute` | the attribution pipeline |
//! | 9 | `eval` | faithfulness metrics and the evaluation runner |
//! | 10 | `render` | results drawn without a terminal (the HTML page) |
//!
//! The terminal heatmap and argument parsing live in the CLI crate; the library has no CLI or
//! terminal dependency.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

const ORDER: &[&str] = &[
    "util",
    "error",
    "format",
    "tokenizer",
    "model",
    "remote",
    "score",
    "method",
    "result",
    "attribute",
    "eval",
    "render",
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|m| *m == module)
}

/// The crate-root re-exports (`crate::Error` and so on) and the modules they come from.
fn root_item(name: &str) -> Option<&'static str> {
    Some(match name {
        "Error" | "Result" | "bail_input" => "error",
        "Tokenizer" | "Encoding" => "tokenizer",
        "attribute" | "JobProgress" | "Plan" | "Targets" => "attribute",
        "Attributor" | "MethodKind" | "NoProgress" | "Progress" => "method",
        "AttributionResult" | "WordAggregation" => "result",
        "load_causal" | "load_masked" | "Capabilities" | "CausalLm" | "LoadOptions"
        | "LoadedModel" | "MaskedLm" | "ModelInfo" | "ModelSource" | "Outputs" => "model",
        m if rank(m).is_some() => return ORDER.iter().copied().find(|o| *o == m),
        _ => return None,
    })
}

/// Every module a source text names through `crate::`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            for item in inner[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            visit(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let src = common::root().join("crates/reagent/src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let own = rank(&module).unwrap_or_else(|| {
            panic!(
                "{}: module `{module}` is not in the documented order",
                rel.display()
            )
        });
        seen.insert(module.clone());
        let text = std::fs::read_to_string(f).unwrap();
        for name in crate_refs(&text) {
            let Some(target) = root_item(&name) else {
                panic!(
                    "{}: `crate::{name}` is not a known module or re-export",
                    rel.display()
                );
            };
            if rank(target).unwrap() > own {
                violations.push(format!(
                    "{} ({module}) uses crate::{name} ({target})",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that run back up:\n{}",
        violations.join("\n")
    );
    assert_eq!(seen.len(), ORDER.len(), "every layer exists: {seen:?}");
}

#[test]
fn the_library_has_no_cli_dependencies() {
    let toml = std::fs::read_to_string(common::root().join("crates/reagent/Cargo.toml")).unwrap();
    let deps = toml.split("[dependencies]").nth(1).unwrap();
    let deps = deps.split("\n[").next().unwrap();
    for cli in ["clap", "indicatif", "anyhow", "console", "crossterm"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(cli)),
            "the library depends on {cli}"
        );
    }
}

/// Inside `model/`: the kernels (`nn/`) use nothing else of the model layer, and no
/// architecture file uses another (shared code lives in `nn/`, `weights` or `model/mod.rs`).
#[test]
fn model_concerns_stay_apart() {
    let model = common::root().join("crates/reagent/src/model");
    let arch_names = ["bert", "gemma3", "gpt2", "gpt_neox", "gptj", "llama", "opt"];
    let mut bad = Vec::new();
    let mut files = Vec::new();
    visit(&model.join("nn"), &mut files);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for other in ["arch", "architectures", "load", "gguf", "weights"] {
            if text.contains(&format!("crate::model::{other}"))
                || text.contains(&format!("super::{other}"))
            {
                bad.push(format!("{} uses model::{other}", f.display()));
            }
        }
    }
    let mut files = Vec::new();
    visit(&model.join("arch"), &mut files);
    for f in &files {
        let own = f.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        for other in arch_names.iter().filter(|a| **a != own) {
            for path in [
                format!("crate::model::{other}::"),
                format!("super::{other}::"),
            ] {
                if text.contains(&path) {
                    bad.push(format!("{} uses {path}", f.display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
