//! The command line against a real llama.cpp `llama-server` (see `crates/reagent/tests/remote.rs`
//! for the library-level checks): `attribute` and `predict` work with `--model URL`, the API
//! key never shows, and what a served model cannot do is one line.

#[path = "../../reagent/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::{llama_server_binary, real_model, root, LlamaServer};

const KEY: &str = "sk-test-4f1d2c9e";

fn reagent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("REAGENT_TEST_KEY", KEY)
        .output()
        .expect("run reagent")
}

#[test]
fn attribute_and_predict_against_a_served_model() {
    let (Some(bin), Some(gguf)) = (
        llama_server_binary(),
        real_model("SmolLM2-135M-Instruct.Q4_1.gguf"),
    ) else {
        return;
    };
    let server = LlamaServer::start(&bin, &gguf, 2);
    let url = server.url();
    let tok = gguf.to_str().unwrap();
    let json = std::env::temp_dir().join(format!("served-{}.json", server.port));
    let o = reagent(&[
        "attribute",
        "-m",
        &url,
        "--tokenizer",
        tok,
        "--api-key-env",
        "REAGENT_TEST_KEY",
        "-p",
        "The Eiffel Tower is a famous landmark in the city of",
        "-t",
        " Paris, France",
        "--preset",
        "paper-token",
        "--max-steps",
        "300",
        "--seed",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("converged") && err.contains("served: "),
        "{out}\n{err}"
    );
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(!text.contains(KEY) && !out.contains(KEY) && !err.contains(KEY));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let t = &v["targets"][0];
    assert!(t["backend"]["requests"].as_u64().unwrap() > 0, "{t}");
    assert!(v["provenance"]["weights"]
        .as_str()
        .unwrap()
        .contains("llama-server"));
    assert_eq!(t["scores"].as_array().unwrap().len(), 12);
    // Each target's counters are its own: every row it asked for came from one request or
    // from the cache.
    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    for t in targets {
        let b = &t["backend"];
        let n = |k: &str| b[k].as_u64().unwrap();
        assert_eq!(n("requests") + n("cache_hits"), n("rows"), "{b}");
    }

    let o = reagent(&[
        "predict",
        "-m",
        &url,
        "--tokenizer",
        tok,
        "The capital of France is",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("\" Paris\""), "{out}");

    // What a served model cannot do, and missing pieces: one line each. Each case is the
    // served `attribute` call with its own extra arguments.
    let served = [
        "attribute",
        "-m",
        &url,
        "--tokenizer",
        tok,
        "-p",
        "a b",
        "-t",
        " c",
    ];
    let only_probs = "a served model gives only next-token probabilities";
    for (extra, needle) in [
        (vec!["--method", "integrated_gradients"], only_probs),
        (vec!["--method", "attention"], only_probs),
        (
            vec!["--api-key-env", "REAGENT_NO_SUCH_VAR"],
            "REAGENT_NO_SUCH_VAR",
        ),
        (vec!["--served-model", "other"], "does not serve `other`"),
    ] {
        let args: Vec<&str> = served.iter().copied().chain(extra).collect();
        one_line_failure(&args, needle);
    }
    one_line_failure(
        &["attribute", "-m", &url, "-p", "a b", "-t", " c"],
        "needs --tokenizer",
    );
    one_line_failure(
        &[
            "evaluate",
            "-m",
            &url,
            "--tokenizer",
            tok,
            "--dataset",
            "data/longra.jsonl",
            "--methods",
            "reagent,gradient_shap",
            "--out",
            "/tmp/never",
        ],
        "gradient_shap needs the model's gradients, but a served model gives only next-token probabilities",
    );
    one_line_failure(
        &["attribute", "--tokenizer", tok, "-p", "a b", "-t", " c"],
        "--tokenizer applies to a served model",
    );
}

fn one_line_failure(args: &[&str], needle: &str) {
    let o = reagent(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
}
