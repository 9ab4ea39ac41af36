//! The real `reagent` binary against the tiny fixture models (`fixtures/models/`).
//!
//! Outputs are compared exactly with `tests/golden/*.txt`; run with `UPDATE_GOLDEN=1` to rewrite
//! them after an intended change (and review the diff). Bad input must fail with a one-line
//! error and a non-zero exit, never a panic.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tiny model's folder, relative to the repository root (the binary runs there, so outputs
/// do not depend on where the repository is checked out).
fn tiny(name: &str) -> String {
    format!("fixtures/models/{name}")
}

/// Run the CLI. `attribute` runs in f32 unless the test names a precision: the golden outputs
/// are f32 numbers, and `--precision auto` would pick bf16 on CPUs with AVX512-BF16.
fn reagent(args: &[&str]) -> Output {
    let mut args: Vec<&str> = args.to_vec();
    if args.first() == Some(&"attribute") && !args.contains(&"--precision") {
        args.insert(1, "--precision");
        args.insert(2, "f32");
    }
    Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(&args)
        .current_dir(root())
        .env("RAYON_NUM_THREADS", "2")
        .env("NO_COLOR", "1")
        .env(
            "REAGENT_CACHE",
            std::env::temp_dir().join("reagent-cli-test-cache"),
        )
        .output()
        .expect("run reagent")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Compare with (or, with UPDATE_GOLDEN=1, write) `tests/golden/<name>.txt`.
fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "reagent failed: {}", stderr(o));
    stdout(o)
}

#[test]
fn predict_lists_top_tokens() {
    let m = tiny("llama_tied");
    golden(
        "predict",
        &ok(&reagent(&[
            "predict",
            "-m",
            &m,
            "-k",
            "3",
            "The cat sat on the",
        ])),
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&reagent(&[
        "predict",
        "-m",
        &m,
        "--json",
        "The cat sat on the",
    ])))
    .unwrap();
    let preds = json["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 5);
    let probs: Vec<f64> = preds.iter().map(|p| p["prob"].as_f64().unwrap()).collect();
    assert!(
        probs.windows(2).all(|w| w[0] >= w[1]),
        "sorted by probability"
    );
}

#[test]
fn inspect_describes_the_model() {
    golden(
        "inspect",
        &ok(&reagent(&["inspect", "-m", &tiny("gpt_neox")])),
    );
}

#[test]
fn attribute_forced_target_heatmap() {
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &tiny("llama_tied"),
        "-p",
        "The cat sat on the",
        "-t",
        " mat.",
        "--probes",
        "4",
        "--max-steps",
        "40",
        "--seed",
        "7",
    ]));
    golden("attribute_forced", &out);
}

#[test]
fn attribute_words_and_uniform_sampler() {
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &tiny("gpt2"),
        "-p",
        "Hello world, the cat",
        "-n",
        "2",
        "--probes",
        "3",
        "--max-steps",
        "30",
        "--sampler",
        "uniform",
        "--words",
        "sum",
    ]));
    golden("attribute_words_uniform", &out);
}

/// The JSON result: provenance, shapes, finite scores summing to one; same seed, same output,
/// whatever the thread count.
#[test]
fn attribute_json_is_complete_and_reproducible() {
    let dir = std::env::temp_dir().join(format!("reagent-cli-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |threads: &str, file: &str| {
        let path = dir.join(file);
        let o = Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args([
                "attribute",
                "-m",
                &tiny("llama_tied"),
                "-p",
                "The cat sat on the mat",
                "-n",
                "3",
                "--probes",
                "4",
                "--max-steps",
                "60",
                "--seed",
                "3",
                "-q",
                "--json",
            ])
            .arg(&path)
            .current_dir(root())
            .env("RAYON_NUM_THREADS", threads)
            .env("REAGENT_CACHE", dir.join("cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // Timings differ between runs; everything else must not.
        v["wall_s"] = 0.into();
        for t in v["targets"].as_array_mut().unwrap() {
            t["wall_s"] = 0.into();
        }
        v
    };
    let a = run("1", "a.json");
    let b = run("2", "b.json");
    assert_eq!(a, b, "different output with 1 and 2 threads");

    assert_eq!(a["provenance"]["method"], "reagent");
    assert_eq!(a["provenance"]["model"], "llama_tied");
    assert_eq!(a["provenance"]["config"]["seed"], 3);
    assert_eq!(a["provenance"]["config"]["probes"], 4);
    assert_eq!(a["provenance"]["config"]["sampler"]["kind"], "pos");
    assert_eq!(a["target_mode"], "generated");
    let targets = a["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    let prompt_tokens = a["prompt_tokens"].as_u64().unwrap() as usize;
    for (k, t) in targets.iter().enumerate() {
        let scores = t["scores"].as_array().unwrap();
        assert_eq!(t["position"].as_u64().unwrap() as usize, prompt_tokens + k);
        assert_eq!(scores.len(), prompt_tokens + k);
        let sum: f64 = scores.iter().map(|s| s.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "scores sum to {sum}");
        assert!(t["steps"].as_u64().unwrap() >= 1);
        assert!(t["converged_probes"].as_u64().unwrap() <= 4);
        assert!(t["prob"].as_f64().unwrap() > 0.0);
    }
    let text = a["text"].as_str().unwrap();
    for tok in a["tokens"].as_array().unwrap() {
        let (s, e) = (
            tok["start"].as_u64().unwrap() as usize,
            tok["end"].as_u64().unwrap() as usize,
        );
        assert!(s <= e && e <= text.chars().count());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attribute_reads_a_jsonl_input() {
    let dir = std::env::temp_dir().join(format!("reagent-cli-jsonl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("jobs.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"The cat sat on the\", \"target\": \" mat\"}\n\n{\"prompt\": \"Hello\", \"max_new_tokens\": 2}\n",
    )
    .unwrap();
    let out = reagent(&[
        "attribute",
        "-m",
        &tiny("gpt2"),
        "--input",
        input.to_str().unwrap(),
        "--probes",
        "2",
        "--max-steps",
        "10",
        "-q",
        "--json",
        "-",
    ]);
    let text = ok(&out);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["target_mode"], "forced");
    assert_eq!(lines[1]["target_mode"], "generated");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One line on stderr, starting with `error:`, non-zero exit, no panic.
fn fails(args: &[&str], needle: &str) {
    let o = reagent(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

#[test]
fn bad_input_gets_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("reagent-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let llama = tiny("llama_tied");
    let gpt2 = tiny("gpt2");

    // Model sources.
    fails(
        &["predict", "-m", "no/such/dir/model.gguf", "hi"],
        "no such file",
    );
    let corrupt = dir.join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    fails(&["predict", "-m", corrupt.to_str().unwrap(), "hi"], "GGUF");
    let unknown = dir.join("unknown");
    std::fs::create_dir_all(&unknown).unwrap();
    std::fs::write(
        unknown.join("config.json"),
        r#"{"architectures": ["FooForCausalLM"]}"#,
    )
    .unwrap();
    std::fs::copy(
        root().join("fixtures/models/gpt2/tokenizer.json"),
        unknown.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        root().join("fixtures/models/gpt2/model.safetensors"),
        unknown.join("model.safetensors"),
    )
    .unwrap();
    fails(
        &["predict", "-m", unknown.to_str().unwrap(), "hi"],
        "unsupported architecture `FooForCausalLM`",
    );
    let no_weights = dir.join("noweights");
    std::fs::create_dir_all(&no_weights).unwrap();
    std::fs::copy(
        root().join("fixtures/models/gpt2/config.json"),
        no_weights.join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        root().join("fixtures/models/gpt2/tokenizer.json"),
        no_weights.join("tokenizer.json"),
    )
    .unwrap();
    fails(
        &["predict", "-m", no_weights.to_str().unwrap(), "hi"],
        "model.safetensors",
    );

    // Text and options.
    fails(&["predict", "-m", &llama, ""], "empty");
    fails(&["predict", "-m", &llama, "-k", "0", "hi"], "--top-k");
    fails(&["predict", "-m", &llama, "-k", "100000", "hi"], "--top-k");
    let long = "the cat sat on the mat ".repeat(40);
    fails(&["predict", "-m", &gpt2, &long], "maximum");
    fails(&["attribute", "-m", &llama, "-p", "   "], "prompt is empty");
    fails(
        &["attribute", "-m", &llama, "-p", "The ca", "-t", "t"],
        "boundary",
    );
    fails(
        &["attribute", "-m", &gpt2, "-p", &long, "-t", " x"],
        "maximum",
    );
    fails(
        &[
            "attribute",
            "-m",
            &llama,
            "-p",
            "hi",
            "--replacing-ratio",
            "1.5",
        ],
        "--replacing-ratio",
    );
    fails(
        &["attribute", "-m", &llama, "-p", "hi", "--probes", "0"],
        "--probes",
    );
    fails(
        &["attribute", "-m", &llama, "-p", "hi", "--sampler", "mlm"],
        "--mlm",
    );
    fails(
        &[
            "attribute",
            "-m",
            &llama,
            "-p",
            "hi",
            "--sampler",
            "mlm",
            "--mlm",
            &gpt2,
        ],
        "not a masked LM",
    );
    fails(&["attribute", "-m", &tiny("bert"), "-p", "hi"], "masked LM");
    fails(
        &[
            "attribute",
            "-m",
            &llama,
            "-p",
            "hi",
            "--min-steps",
            "50",
            "--max-steps",
            "10",
        ],
        "--min-steps",
    );
    let out = dir.join("ev");
    let out = out.to_str().unwrap();
    let ev = |variant: &str| -> Vec<String> {
        [
            "evaluate",
            "-m",
            &llama,
            "--dataset",
            "data/wikibio.txt",
            "--out",
            out,
            "--variant",
            variant,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let check = |variant: &str, needle: &str| {
        let args = ev(variant);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        fails(&args, needle);
    };
    check("reagent-x:bogus=1", "unknown ReAGent setting `bogus`");
    check("other:readout=mask_diff", "must start with");
    check("reagent-x:readout=nope", "readout");
    check(
        "reagent-x:replacing_ratio=2",
        "replacing_ratio must be in (0, 1]",
    );
    check("reagent-x:sampler=nope", "unknown sampler");
    check("reagent:probes=3", "appears twice");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Variants run beside the reference under their own names, with intervals and paired tests.
#[test]
fn evaluate_runs_variants_with_paired_tests() {
    let out = std::env::temp_dir().join(format!("reagent-cli-variants-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let report = ok(&reagent(&[
        "evaluate",
        "-m",
        &tiny("llama_tied"),
        "--dataset",
        "data/wikibio.txt",
        "--methods",
        "reagent,occlusion",
        "--variant",
        "reagent-md:readout=mask_diff,min_steps=4,max_steps=4",
        "--variant",
        "reagent-ctx:readout=regression,sampler=context,max_steps=4,min_steps=4",
        "--probes",
        "3",
        "--max-steps",
        "10",
        "--limit",
        "3",
        "--new-tokens",
        "2",
        "-q",
        "--out",
        out.to_str().unwrap(),
    ]));
    for row in [
        "| reagent |",
        "| reagent-md |",
        "| reagent-ctx |",
        "| occlusion |",
        "| random |",
    ] {
        assert!(report.contains(row), "{row} missing:\n{report}");
    }
    assert!(report.contains("Paired comparisons"), "{report}");
    // Every local run also has the erasure metrics (and the paper's).
    assert!(
        report.contains("| method | AOPC-Suff ↓ [95% CI] | AOPC-Comp ↑ [95% CI] |")
            && report.contains("| reagent-md | 0.")
            && !report.contains("not computed"),
        "{report}"
    );
    assert!(
        report.contains("| reagent-md | occlusion | soft_nc | 3 |"),
        "{report}"
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let methods = run["methods"].as_array().unwrap();
    let md = methods.iter().find(|m| m[0] == "reagent-md").unwrap();
    assert_eq!(md[1]["readout"], "mask_diff");
    assert_eq!(md[1]["probes"], 3);
    // `summarize` rewrites the same summary from the records.
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    std::fs::remove_file(out.join("summary.csv")).unwrap();
    ok(&reagent(&["summarize", out.to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(out.join("summary.csv")).unwrap(),
        csv
    );
    // `report` turns the folder into a page with six inline SVG figures.
    ok(&reagent(&["report", out.to_str().unwrap()]));
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(page.matches("<svg").count(), 6, "six figures");
    for f in [
        "soft_nc.svg",
        "soft_ns.svg",
        "hard.svg",
        "aopc_comp.svg",
        "aopc_suff.svg",
        "seconds.svg",
    ] {
        assert!(out.join("figures").join(f).is_file(), "{f}");
    }
    assert!(
        page.contains(">reagent-md<")
            && !page.contains("src=\"http")
            && !page.contains("href=\"http"),
        "table rows, no network"
    );
    // Every stochastic method was run twice and its agreement recorded.
    let records = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    for line in records.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let stochastic =
            v["method"].as_str().unwrap().starts_with("reagent") || v["method"] == "random";
        for t in v["targets"].as_array().unwrap() {
            assert_eq!(t.get("stability").is_some(), stochastic, "{line}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The MLM sampler on tiny BERT/RoBERTa fixtures: text mapping and shared-vocabulary mapping.
#[test]
fn attribute_with_mlm_sampler() {
    for mlm in ["bert", "roberta"] {
        let out = ok(&reagent(&[
            "attribute",
            "-m",
            &tiny("gpt2"),
            "-p",
            "The cat sat on the",
            "-t",
            " mat",
            "--probes",
            "3",
            "--max-steps",
            "20",
            "--sampler",
            "mlm",
            "--mlm",
            &tiny(mlm),
            "--json",
            "-",
            "-q",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["provenance"]["config"]["sampler"]["kind"], "mlm");
        let scores = v["targets"][0]["scores"].as_array().unwrap();
        assert!(scores.iter().all(|s| s.as_f64().unwrap().is_finite()));
    }
}

/// A hub id resolves through the local Hugging Face cache first, with no network.
#[test]
fn hub_ids_resolve_through_the_local_cache() {
    let home = std::env::temp_dir().join(format!("reagent-cli-hub-{}", std::process::id()));
    let repo = home.join("hub/models--tiny--gpt2");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(root().join("fixtures/models/gpt2").join(f), snap.join(f)).unwrap();
    }
    let run = |model: &str| {
        Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args(["predict", "-m", model, "Hello world"])
            .current_dir(root())
            .env("HF_HOME", &home)
            .output()
            .unwrap()
    };
    let hub = run("tiny/gpt2");
    assert!(hub.status.success(), "{}", stderr(&hub));
    let local = run(&tiny("gpt2"));
    // Same predictions; only the model name in the header differs.
    let body = |o: &Output| stdout(o).lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&hub), body(&local));
    // An id that is not cached fails with one line that names the local alternatives.
    let missing = run("tiny/absent");
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not in the local cache"),
        "{}",
        stderr(&missing)
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// `reagent evaluate` on the tiny Llama and WikiBio prompts with `extra` settings, into `out`.
fn eval_args(extra: &[&str], out: &std::path::Path) -> Vec<String> {
    let model = tiny("llama_tied");
    [
        "evaluate",
        "-m",
        model.as_str(),
        "--dataset",
        "data/wikibio.txt",
        "-q",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .chain(["--out".to_string(), out.to_string_lossy().into_owned()])
    .collect()
}

/// Run an evaluation to completion and return its report.
fn eval_run(args: &[String]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// `summary.csv` without its timing column, and the result records without wall times.
fn comparable(dir: &std::path::Path) -> (String, Vec<serde_json::Value>) {
    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let timing = header
        .iter()
        .position(|h| *h == "seconds_per_token")
        .expect("a timing column");
    let csv: String = csv
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(timing);
            cells.join(",") + "\n"
        })
        .collect();
    let mut records: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for t in v["targets"].as_array_mut().unwrap() {
                t["wall_s"] = 0.into();
            }
            v
        })
        .collect();
    records.sort_by_key(|v| {
        (
            v["example"].as_str().unwrap().to_string(),
            v["method"].as_str().unwrap().to_string(),
        )
    });
    (csv, records)
}

/// An evaluation killed midway and rerun ends with the same summary as a clean run.
#[test]
fn evaluate_resumes_after_a_kill() {
    let base = std::env::temp_dir().join(format!("reagent-cli-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let args = |out: &std::path::Path| {
        eval_args(
            &[
                "--methods",
                "reagent,integrated_gradients,attention,occlusion",
                "--limit",
                "3",
                "--new-tokens",
                "2",
                "--max-steps",
                "15",
                "--probes",
                "3",
                "--ig-steps",
                "20",
            ],
            out,
        )
    };
    let run = |out: &std::path::Path| eval_run(&args(out));
    let clean = base.join("clean");
    let report = run(&clean);
    assert!(
        report.contains("| reagent |") && report.contains("| random |"),
        "{report}"
    );

    // Start again elsewhere, kill it once a few results are written, add a torn line, resume.
    let resumed = base.join("resumed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(args(&resumed))
        .current_dir(root())
        .spawn()
        .unwrap();
    let results = resumed.join("results.jsonl");
    let start = std::time::Instant::now();
    loop {
        let n = std::fs::read_to_string(&results)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 4 || start.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read_to_string(&results).unwrap().lines().count();
    assert!(
        before < 15,
        "the run finished before it could be killed ({before} lines)"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&results)
        .unwrap()
        .write_all(b"{\"example\": \"wikibio-9\", \"meth")
        .unwrap();
    run(&resumed);
    assert_eq!(comparable(&clean), comparable(&resumed));
    let _ = std::fs::remove_dir_all(&base);
}

/// A real model (under `$REAGENT_MODELS_DIR` or `models/`); missing fails under CI or
/// `REAGENT_REQUIRE_MODELS`, and skips visibly otherwise.
fn real_model(file: &str) -> Option<String> {
    let dir = std::env::var_os("REAGENT_MODELS_DIR")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    let p = dir.join(file);
    if p.is_file() {
        return Some(p.to_string_lossy().into_owned());
    }
    let required = ["CI", "REAGENT_REQUIRE_MODELS"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|x| !x.is_empty() && x != "0" && x != "false"));
    assert!(
        !required,
        "{} is missing; run scripts/fetch-models.sh",
        p.display()
    );
    eprintln!("SKIPPED: {} is missing", p.display());
    None
}

/// On SmolLM2 the matrix products are large enough to be split across threads; the same seed
/// must still give the same output with 1 and 2 threads.
#[test]
fn real_model_output_is_the_same_with_one_and_two_threads() {
    let Some(model) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let run = |threads: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args([
                "--threads",
                threads,
                "attribute",
                "-m",
                &model,
                "-p",
                "The Eiffel Tower is a famous landmark in the city of",
                "-t",
                " Paris",
                "--probes",
                "4",
                "--max-steps",
                "8",
                "-q",
                "--json",
                "-",
            ])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let mut v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v["wall_s"] = 0.into();
        for t in v["targets"].as_array_mut().unwrap() {
            t["wall_s"] = 0.into();
        }
        v
    };
    assert_eq!(
        run("1"),
        run("2"),
        "SmolLM2: different output with 1 and 2 threads"
    );
}

/// `--preset paper-token` sets the paper's hyperparameters, flags override it, and
/// `--words max` gives each word the maximum of its tokens' scores.
#[test]
fn paper_preset_and_word_maximum() {
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &tiny("gpt2"),
        "-p",
        "Hello world, the cat",
        "-n",
        "1",
        "--preset",
        "paper-token",
        "--max-steps",
        "7",
        "--words",
        "max",
        "--sampler",
        "uniform",
        "--json",
        "-",
        "-q",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cfg = &v["provenance"]["config"];
    assert_eq!(cfg["probes"], 5);
    assert_eq!(cfg["keep_top_n"], 8);
    assert_eq!(cfg["stop_top_k"], 3);
    assert_eq!(cfg["replacing_ratio"], 0.1);
    assert_eq!(cfg["max_steps"], 7, "a flag overrides the preset");
    let words = &v["words"];
    assert_eq!(words["aggregation"], "max", "{words}");
    let scores: Vec<f64> = v["targets"][0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let position = v["targets"][0]["position"].as_u64().unwrap() as usize;
    let mut checked = 0;
    for (w, s) in words["words"]
        .as_array()
        .unwrap()
        .iter()
        .zip(words["scores"][0].as_array().unwrap())
    {
        let (a, b) = (
            w["tokens"][0].as_u64().unwrap() as usize,
            w["tokens"][1].as_u64().unwrap() as usize,
        );
        let b = b.min(position);
        if a >= b {
            continue;
        }
        let max = scores[a..b]
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (s.as_f64().unwrap() - max).abs() < 1e-6,
            "word {w}: {s} vs max {max}"
        );
        checked += 1;
    }
    assert!(checked >= 3);
}

/// Kill an evaluation after each record in turn, sometimes leaving a half-written line behind
/// (seeded), resume it, and require the same summary and records as a clean run every time.
#[test]
fn evaluate_survives_a_kill_at_every_record() {
    let base = std::env::temp_dir().join(format!("reagent-cli-killall-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let args = |out: &std::path::Path| {
        eval_args(
            &[
                "--methods",
                "reagent,attention,occlusion",
                "--limit",
                "2",
                "--new-tokens",
                "2",
                "--max-steps",
                "10",
                "--probes",
                "3",
            ],
            out,
        )
    };
    let run = |out: &std::path::Path| {
        eval_run(&args(out));
    };
    let clean = base.join("clean");
    run(&clean);
    let want = comparable(&clean);
    let records: Vec<String> = std::fs::read_to_string(clean.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut seed: u64 = 7;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for k in 1..=records.len() {
        let out = base.join(format!("kill-{k}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args(args(&out))
            .current_dir(root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let results = out.join("results.jsonl");
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&results)
            .map(|t| t.lines().count())
            .unwrap_or(0)
            < k
            && start.elapsed().as_secs() < 60
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Sometimes a write cut short: part of a record with no newline.
        match next() % 3 {
            0 => {
                let r = &records[next() % records.len()];
                let cut = 1 + next() % (r.len() - 1);
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&results)
                    .unwrap();
                f.write_all(&r.as_bytes()[..cut]).unwrap();
            }
            1 => {
                let ex = out.join("examples.jsonl");
                let text = std::fs::read_to_string(&ex).unwrap_or_default();
                if let Some(last) = text.trim_end().lines().last() {
                    let mut f = std::fs::OpenOptions::new().append(true).open(&ex).unwrap();
                    f.write_all(&last.as_bytes()[..last.len() / 2]).unwrap();
                }
            }
            _ => {}
        }
        run(&out);
        assert_eq!(comparable(&out), want, "killed after record {k}");
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// `--contrast`: the JSON records the contrast token and its probability; a contrast of another
/// length or a method without a contrastive form fails in one line.
#[test]
fn contrastive_attribution_from_the_command_line() {
    let llama = tiny("llama_tied");
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &llama,
        "-p",
        "The cat sat on the",
        "-t",
        " mat",
        "--contrast",
        " cat",
        "--probes",
        "3",
        "--max-steps",
        "10",
        "--json",
        "-",
        "-q",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &v["targets"][0];
    assert_eq!(t["contrast"]["text"], " c");
    assert!(t["contrast"]["prob"].as_f64().unwrap() > 0.0);
    let sum: f64 = t["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-4);
    // A prompt with multi-byte characters: offsets count characters, not bytes.
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &llama,
        "-p",
        "The café is naïve, the",
        "-t",
        " cat",
        "--contrast",
        " mat",
        "--probes",
        "2",
        "--max-steps",
        "3",
        "--json",
        "-",
        "-q",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["targets"][0]["contrast"]["text"], " m");
    fails(
        &[
            "attribute",
            "-m",
            &llama,
            "-p",
            "The cat sat on the",
            "-t",
            " mat",
            "--contrast",
            " big dog",
        ],
        "pair one to one",
    );
    fails(
        &[
            "attribute",
            "-m",
            &llama,
            "-p",
            "The cat sat on the",
            "-t",
            " mat",
            "--contrast",
            " cat",
            "--method",
            "attention",
        ],
        "no contrastive form",
    );
}

/// `--format inseq`: one inseq `FeatureAttributionOutput` for all jobs, holding the same scores
/// and probabilities as reagent's own JSON (the structure is checked against a file inseq wrote,
/// in the library's `tests/inseq_format.rs`).
#[test]
fn inseq_format_from_the_command_line() {
    use base64::Engine;
    let dir = std::env::temp_dir().join(format!("reagent-cli-inseq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("jobs.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"The cat sat on the\", \"target\": \" mat\", \"contrast\": \" cat\"}\n{\"prompt\": \"Hello there\", \"target\": \" my friend\", \"contrast\": \" my fiend\"}\n",
    )
    .unwrap();
    let llama = tiny("llama_tied");
    let run = |format: &str, out: &std::path::Path| {
        ok(&reagent(&[
            "attribute",
            "-m",
            &llama,
            "--input",
            input.to_str().unwrap(),
            "--method",
            "input_x_gradient",
            "--format",
            format,
            "--json",
            out.to_str().unwrap(),
            "-q",
        ]));
        std::fs::read_to_string(out).unwrap()
    };
    let ours: Vec<serde_json::Value> = run("reagent", &dir.join("ours.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let inseq: serde_json::Value =
        serde_json::from_str(&run("inseq", &dir.join("inseq.json"))).unwrap();
    assert_eq!(
        inseq["__instance_type__"],
        serde_json::json!(["inseq.data.attribution", "FeatureAttributionOutput"])
    );
    let info = &inseq["attributes"]["info"];
    assert_eq!(info["attribution_method"], "input_x_gradient");
    assert_eq!(info["attributed_fn"], "contrast_prob_diff_fn");
    assert_eq!(info["input_texts"][1], "Hello there");
    assert_eq!(info["generated_texts"][1], "Hello there my friend");
    let seqs = inseq["attributes"]["sequence_attributions"]
        .as_array()
        .unwrap();
    assert_eq!(seqs.len(), 2);
    let tensor = |v: &serde_json::Value| -> (Vec<usize>, Vec<f32>) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("attribution").unwrap();
        let data = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (t.shape().to_vec(), data)
    };
    for (s, r) in seqs.iter().zip(&ours) {
        let a = &s["attributes"];
        let targets = r["targets"].as_array().unwrap();
        let n = r["tokens"].as_array().unwrap().len();
        assert_eq!(a["target"].as_array().unwrap().len(), n);
        assert_eq!(
            a["source"].as_array().unwrap().len(),
            r["prompt_tokens"].as_u64().unwrap() as usize
        );
        let (shape, m) = tensor(&a["target_attributions"]);
        assert_eq!(shape, vec![n, targets.len()]);
        for (j, t) in targets.iter().enumerate() {
            let scores = t["scores"].as_array().unwrap();
            for (i, x) in scores.iter().enumerate() {
                assert_eq!(
                    m[i * targets.len() + j],
                    x.as_f64().unwrap() as f32,
                    "[{i}, {j}]"
                );
            }
            assert!(m[scores.len() * targets.len() + j].is_nan());
        }
        let (_, p) = tensor(&a["step_scores"]["probability"]);
        let (_, d) = tensor(&a["step_scores"]["contrast_prob_diff"]);
        for (j, t) in targets.iter().enumerate() {
            let (pt, pc) = (
                t["prob"].as_f64().unwrap() as f32,
                t["contrast"]["prob"].as_f64().unwrap() as f32,
            );
            assert_eq!(p[j], pt);
            assert_eq!(d[j], pt - pc);
        }
    }
    fails(
        &[
            "attribute",
            "-m",
            &llama,
            "-p",
            "The cat",
            "--format",
            "inseq",
        ],
        "--json",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--html`: one self-contained page (no network) whose embedded data is the JSON result and
/// whose text view has one shaded span per token.
#[test]
fn attribute_writes_a_self_contained_html_page() {
    let dir = std::env::temp_dir().join(format!("reagent-cli-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("out.html");
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &tiny("llama_tied"),
        "-p",
        "The cat <sat> & \"ran\"",
        "-n",
        "2",
        "--probes",
        "3",
        "--max-steps",
        "10",
        "--words",
        "sum",
        "--json",
        "-",
        "-q",
        "--html",
        page.to_str().unwrap(),
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for bad in ["http://", "https://", "<script src", "<link"] {
        assert!(
            !html.contains(bad),
            "the page must not load anything: {bad}"
        );
    }
    let spans = html.matches("<span class=\"tok").count();
    assert_eq!(spans, json["tokens"].as_array().unwrap().len());
    // The text is escaped; the embedded data is the result itself.
    let text = &html[html.find("<div class=\"text\">").unwrap()..];
    let text = &text[..text.find("</div>").unwrap()];
    assert!(
        text.contains("&lt;") && text.contains("&amp;") && !text.contains("<sat"),
        "{text}"
    );
    let start = html
        .find("<script type=\"application/json\" class=\"data\">")
        .unwrap();
    let data = &html[start..];
    let data = &data[data.find('>').unwrap() + 1..data.find("</script>").unwrap()];
    let mut embedded: serde_json::Value =
        serde_json::from_str(&data.replace("<\\/", "</")).unwrap();
    let mut printed = json.clone();
    for v in [&mut embedded, &mut printed] {
        v["wall_s"] = 0.into();
        for t in v["targets"].as_array_mut().unwrap() {
            t["wall_s"] = 0.into();
        }
    }
    assert_eq!(embedded, printed);
    assert!(
        html.contains("name=\"unit0\" value=\"word\""),
        "word toggle"
    );
    fails(
        &[
            "attribute",
            "-m",
            &tiny("llama_tied"),
            "-p",
            "hi",
            "--html",
            "/no/such/dir/x.html",
        ],
        "cannot create",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The HTML page in a real browser (Debian's chromium, headless): the script runs without
/// console errors, fills the target line and sizes the heatmap canvas, and the screenshot is not
/// blank. A missing chromium fails the test, unless `REAGENT_SKIP_BROWSER` says to skip it.
#[test]
fn html_page_renders_in_chromium() {
    let browser = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(browser) = browser else {
        let skip = std::env::var("REAGENT_SKIP_BROWSER")
            .is_ok_and(|x| !x.is_empty() && x != "0" && x != "false");
        assert!(
            skip,
            "chromium is not installed: apt-get install chromium (or set REAGENT_SKIP_BROWSER=1 to skip this test)"
        );
        eprintln!("SKIPPED: chromium is not installed and REAGENT_SKIP_BROWSER is set");
        return;
    };
    let dir = std::env::temp_dir().join(format!("reagent-cli-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.html");
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &tiny("llama_tied"),
        "-p",
        "The cat sat on the mat",
        "-n",
        "3",
        "--probes",
        "3",
        "--max-steps",
        "10",
        "--json",
        "-",
        "-q",
        "--html",
        page.to_str().unwrap(),
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n_tokens = json["tokens"].as_array().unwrap().len();
    let url = format!("file://{}", page.display());
    let headless = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1200,800",
    ];
    let dom = Command::new(browser)
        .args(headless)
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom", &url])
        .output()
        .unwrap();
    assert!(dom.status.success(), "{}", stderr(&dom));
    let html = String::from_utf8_lossy(&dom.stdout);
    let logs = String::from_utf8_lossy(&dom.stderr);
    assert!(!logs.contains("Uncaught"), "console errors: {logs}");
    // The script ran: it wrote the selected target and sized the canvas.
    assert!(html.contains("class=\"selected\">target 3 of 3"), "{html}");
    let canvas = &html[html.find("<canvas").unwrap()..];
    let canvas = &canvas[..canvas.find('>').unwrap()];
    assert!(
        canvas.contains("width=\"") && !canvas.contains("width=\"0\""),
        "{canvas}"
    );
    assert_eq!(html.matches("<span class=\"tok").count(), n_tokens);
    // A screenshot with content: the PNG of a blank page is a few hundred bytes.
    let shot = dir.join("page.png");
    let o = Command::new(browser)
        .args(headless)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 5_000, "screenshot of {size} bytes looks blank");

    // The sentence view (`#view=sentence`): every token of a sentence takes the sentence's
    // colour, and the two sentences differ.
    let page2 = dir.join("sentences.html");
    ok(&reagent(&[
        "attribute",
        "-m",
        &tiny("llama_tied"),
        "-p",
        "The cat sat on the mat. Then the dog ran",
        "-t",
        " off",
        "--method",
        "input_x_gradient",
        "-q",
        "--html",
        page2.to_str().unwrap(),
    ]));
    let dom = Command::new(browser)
        .args(headless)
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("file://{}#view=sentence", page2.display()))
        .output()
        .unwrap();
    assert!(dom.status.success(), "{}", stderr(&dom));
    assert!(!String::from_utf8_lossy(&dom.stderr).contains("Uncaught"));
    let html = String::from_utf8_lossy(&dom.stdout);
    // Each token's background, as written (the script's "rgb(1, 2, 3)" or the page's
    // "rgb(1,2,3)").
    let backgrounds: Vec<String> = html
        .split("<span class=\"tok")
        .skip(1)
        .map(|s| {
            let s = &s[s.find("background:").unwrap() + 11..];
            s[..s.find([';', '"']).unwrap()].replace(' ', "")
        })
        .collect();
    // The page's sentences (token ranges): "The cat sat on the mat." and " Then the dog ran"
    // (the target " off" continues the second).
    let g = &html[html.find("class=\"groups\">").unwrap()..];
    let g: serde_json::Value =
        serde_json::from_str(&g[g.find('>').unwrap() + 1..g.find("</script>").unwrap()]).unwrap();
    let sentences: Vec<(usize, usize)> = g["sentence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap() as usize,
                r[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(sentences.len(), 2, "{sentences:?}");
    let n = backgrounds.len() - 1; // the target is not shaded
    assert_eq!(sentences[1].1, n + 1);
    let (a, b) = (
        &backgrounds[sentences[0].0..sentences[0].1],
        &backgrounds[sentences[1].0..n],
    );
    assert!(a.iter().all(|x| x == &a[0]), "{backgrounds:?}");
    assert!(b.iter().all(|x| x == &b[0]), "{backgrounds:?}");
    assert_ne!(a[0], b[0], "{backgrounds:?}");

    // The evaluation report renders too.
    let ev = dir.join("eval");
    eval_run(&eval_args(
        &[
            "--methods",
            "attention,occlusion",
            "--limit",
            "2",
            "--new-tokens",
            "1",
        ],
        &ev,
    ));
    ok(&reagent(&["report", ev.to_str().unwrap()]));
    let url = format!("file://{}", ev.join("report.html").display());
    let dom = Command::new(browser)
        .args(headless)
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom", &url])
        .output()
        .unwrap();
    assert!(dom.status.success());
    assert!(!String::from_utf8_lossy(&dom.stderr).contains("Uncaught"));
    assert_eq!(
        String::from_utf8_lossy(&dom.stdout).matches("<svg").count(),
        6
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--unit sentence` and `--unit-spans`: one score per unit in the JSON and the heatmap; bad
/// spans and `--words` with `--unit` are one-line errors.
#[test]
fn units_from_the_command_line() {
    let llama = tiny("llama_tied");
    let prompt = "The cat sat. The dog ran. Then the";
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &llama,
        "-p",
        prompt,
        "-t",
        " mat",
        "--method",
        "occlusion",
        "--unit",
        "sentence",
        "--json",
        "-",
        "-q",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let w = &v["words"];
    assert_eq!(w["unit"], "sentence");
    assert_eq!(w["perturbed"], true);
    assert_eq!(w["words"].as_array().unwrap().len(), 3);
    assert_eq!(w["scores"][0].as_array().unwrap().len(), 3);
    // The heatmap shows the sentences.
    let text = ok(&reagent(&[
        "attribute",
        "-m",
        &llama,
        "-p",
        prompt,
        "-t",
        " mat",
        "--method",
        "occlusion",
        "--unit",
        "sentence",
        "-q",
    ]));
    assert!(text.contains("The cat sat."), "{text}");
    // Spans: the second sentence only; everything else is kept and scores 0.
    let dir = std::env::temp_dir().join(format!("reagent-spans-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spans = dir.join("spans.json");
    std::fs::write(&spans, "[[13, 25]]").unwrap();
    let out = ok(&reagent(&[
        "attribute",
        "-m",
        &llama,
        "-p",
        prompt,
        "-t",
        " mat",
        "--method",
        "occlusion",
        "--unit-spans",
        spans.to_str().unwrap(),
        "--json",
        "-",
        "-q",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["words"]["unit"], "spans");
    assert_eq!(v["words"]["words"].as_array().unwrap().len(), 1);
    let scores: Vec<f64> = v["targets"][0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    // Tokens of the first sentence (and BOS) and of the third (" Then" starts at the space
    // before it, 25) are outside the span.
    let mut outside = 0;
    for (i, t) in v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .take(scores.len())
    {
        let (start, end) = (t["start"].as_u64().unwrap(), t["end"].as_u64().unwrap());
        if end <= 13 || start >= 25 {
            outside += 1;
            assert_eq!(
                scores[i], 0.0,
                "token {i} {t} outside the span scored {}",
                scores[i]
            );
        }
    }
    assert!(outside >= 4, "{outside}");
    assert!(scores.iter().any(|s| *s > 0.0));
    let with_spans = |json: &str, needle: &str| {
        std::fs::write(&spans, json).unwrap();
        let s = spans.to_str().unwrap();
        fails(
            &[
                "attribute",
                "-m",
                &llama,
                "-p",
                prompt,
                "-t",
                " mat",
                "--unit-spans",
                s,
            ],
            needle,
        );
    };
    with_spans("[[0, 5], [3, 9]]", "overlap");
    with_spans("{\"a\": 1}", "expected [[start, end], ...]");
    fails(
        &[
            "attribute",
            "-m",
            &llama,
            "-p",
            prompt,
            "-t",
            " mat",
            "--unit",
            "word",
            "--words",
            "sum",
        ],
        "cannot be used with",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--chat`: a model without a template is one line; `--chat-template FILE` gives one; the
/// template's tokens are hidden in the heatmap unless `--show-template`, and marked in the JSON.
#[test]
fn chat_from_the_command_line() {
    let llama = tiny("llama_tied");
    let base = [
        "attribute",
        "-m",
        &llama,
        "-p",
        "The cat sat on the",
        "-t",
        " mat",
        "--method",
        "occlusion",
    ];
    let mut args = base.to_vec();
    args.push("--chat");
    fails(&args, "carry no chat template");
    let dir = std::env::temp_dir().join(format!("reagent-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tpl = dir.join("chat.jinja");
    std::fs::write(
        &tpl,
        "<|im_start|>user\n{{ messages[0]['content'] }}<|im_end|>\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    )
    .unwrap();
    args.extend(["--chat-template", tpl.to_str().unwrap(), "-q"]);
    let shown = ok(&reagent(&args));
    assert!(!shown.contains("im_start"), "{shown}");
    let mut with = args.clone();
    with.push("--show-template");
    assert!(ok(&reagent(&with)).contains("im_start"));
    let mut json = args.clone();
    json.extend(["--json", "-"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&reagent(&json))).unwrap();
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens[0]["template"], true);
    assert!(tokens.iter().any(|t| t.get("template").is_none()));
    let mut bad = base.to_vec();
    bad.extend(["--chat-template", "/nonexistent/chat.jinja"]);
    fails(&bad, "--chat");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--precision`: bf16 runs where the CPU has AVX512-BF16 (scores within 5 % of f32's largest,
/// provenance naming it) and is refused in one line where it has not; `auto` picks it only
/// for probability-only methods; quantized weights and served models refuse it.
#[test]
fn precision_from_the_command_line() {
    let model = tiny("llama_tied");
    let run = |precision: &str, method: &str| {
        reagent(&[
            "attribute",
            "--precision",
            precision,
            "-m",
            &model,
            "-p",
            "The cat sat on the mat",
            "-t",
            " the",
            "--method",
            method,
            "-q",
            "--json",
            "-",
        ])
    };
    let parse = |o: &Output| -> (String, Vec<f64>) {
        let v: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
        let scores = v["targets"][0]["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        (
            v["provenance"]["weights"].as_str().unwrap().to_string(),
            scores,
        )
    };
    let (w32, s32) = parse(&run("f32", "occlusion"));
    assert_eq!(w32, "f32");
    let bf16 = reagent::model::Precision::Bf16.available();
    if bf16 {
        let (w16, s16) = parse(&run("bf16", "occlusion"));
        assert!(w16.contains("bf16"), "{w16}");
        let top = s32.iter().cloned().fold(0.0, f64::max);
        for (a, b) in s32.iter().zip(&s16) {
            assert!((a - b).abs() <= 0.05 * top, "f32 {s32:?}\nbf16 {s16:?}");
        }
        assert_ne!(
            s32, s16,
            "bf16 gave f32's exact numbers: the kernel did not run"
        );
    } else {
        let e = stderr(&run("bf16", "occlusion"));
        assert!(
            e.contains("AVX512-BF16") && e.trim().lines().count() == 1,
            "{e}"
        );
    }
    let (auto_occ, _) = parse(&run("auto", "occlusion"));
    assert_eq!(auto_occ.contains("bf16"), bf16, "{auto_occ}");
    let (auto_grad, _) = parse(&run("auto", "gradient_norm"));
    assert_eq!(auto_grad, "f32");
    // Quantized GGUF weights in bf16: the blocks stay, the products run in bf16.
    if let Some(gguf) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") {
        let o = reagent(&[
            "attribute",
            "-m",
            &gguf,
            "-p",
            "The Eiffel Tower is in the city of",
            "-t",
            " Paris",
            "--method",
            "occlusion",
            "--quantized",
            "--precision",
            "bf16",
            "-q",
            "--json",
            "-",
        ]);
        if bf16 {
            let (w, _) = parse(&o);
            assert!(w.contains("quantized") && w.contains("bf16"), "{w}");
        } else {
            let e = stderr(&o);
            assert!(
                e.contains("AVX512-BF16") && e.trim().lines().count() == 1,
                "{e}"
            );
        }
    }
    fails(
        &[
            "predict",
            "-m",
            "http://127.0.0.1:9/v1",
            "--tokenizer",
            &model,
            "--precision",
            "bf16",
            "hi",
        ],
        "--precision applies to local weights",
    );
}
