//! The real models from `scripts/fetch-models.sh`, against transformers.
//!
//! Reference: `scripts/make_real_fixtures.py` — transformers 5.24 loading the GGUF files
//! dequantized to f32 (checked against llama.cpp there: same top-5 sets, probability
//! differences within quantization noise) — wrote `fixtures/real/*.json`. These tests skip, with
//! a visible message, only when `models/` lacks the files.

mod common;

use common::*;
use reagent::method::reagent::pos::PosTable;
use reagent::model::{load_causal, LoadOptions};

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

/// Top-5 next tokens of every fixture prompt match within `tol` in probability.
fn check_top5(file: &str, fixture_name: &str, tol: f32) -> TestResult {
    let Some(path) = real_model(file) else {
        return Ok(());
    };
    let m = load_causal(path.to_str().unwrap(), &LoadOptions::default())?;
    assert!(
        m.model.capabilities().gradients,
        "dequantized GGUF must support gradients"
    );
    let fx = read_json(&fixture(&format!("real/{fixture_name}.json")));
    let prompts = fx["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 3);
    for p in prompts {
        let text = p["prompt"].as_str().unwrap();
        let want_ids = ids_of(&p["input_ids"]);
        let enc = m.tokenizer.encode(text, true)?;
        assert_eq!(enc.ids, want_ids, "{fixture_name}: input ids of {text:?}");
        let lp: Vec<f32> = m
            .model
            .next_token_log_probs(std::slice::from_ref(&enc.ids))?
            .squeeze(0)?
            .to_vec1()?;
        let mut order: Vec<usize> = (0..lp.len()).collect();
        order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
        for (rank, want) in p["top5"].as_array().unwrap().iter().enumerate() {
            let id = want["id"].as_u64().unwrap() as usize;
            let prob = want["prob"].as_f64().unwrap() as f32;
            assert_eq!(
                order[rank], id,
                "{fixture_name}: rank {rank} after {text:?}"
            );
            let got = lp[id].exp();
            assert!(
                (got - prob).abs() < tol,
                "{fixture_name}: p({id}) after {text:?} is {got}, want {prob}"
            );
        }
        eprintln!("{fixture_name}: {text:.40?}… ok");
    }
    Ok(())
}

#[test]
fn smollm2_matches_transformers() -> TestResult {
    let Some(path) = real_model(SMOL) else {
        return Ok(());
    };
    let m = load_causal(path.to_str().unwrap(), &LoadOptions::default())?;
    let enc = m.tokenizer.encode("The capital of France is", true)?;
    let lp = m.model.next_token_log_probs(&[enc.ids])?.squeeze(0)?;
    let paris = m.tokenizer.encode(" Paris", false)?.ids;
    assert_eq!(paris.len(), 1);
    let p = lp.get(paris[0] as usize)?.to_scalar::<f32>()?.exp();
    assert!(
        (p - 0.7725).abs() <= 0.002,
        "P(\" Paris\") = {p}, want 0.7725 ± 0.002"
    );
    check_top5(SMOL, "smollm2", 2e-3)
}

#[test]
fn gemma3_matches_transformers() -> TestResult {
    check_top5(GEMMA, "gemma3", 2e-3)
}

/// Ids and character offsets equal transformers' on the fixture strings.
fn check_tokenizer(file: &str, fixture_name: &str) -> TestResult {
    let Some(path) = real_model(file) else {
        return Ok(());
    };
    let f = reagent::model::gguf::GgufFile::open(&path)?;
    let tok = reagent::Tokenizer::from_gguf(&f)?;
    let fx = read_json(&fixture(&format!("real/{fixture_name}.json")));
    for case in fx["strings"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true)?.ids,
            ids_of(&case["ids"]),
            "{fixture_name}: {text:?}"
        );
        let enc = tok.encode(text, false)?;
        assert_eq!(
            enc.ids,
            ids_of(&case["ids_no_special"]),
            "{fixture_name}: {text:?}"
        );
        let offsets: Vec<(usize, usize)> = case["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(enc.offsets, offsets, "{fixture_name}: offsets of {text:?}");
        for (id, want) in enc
            .ids
            .iter()
            .zip(case["decoded_per_id"].as_array().unwrap())
        {
            assert_eq!(
                tok.token_text(*id),
                want.as_str().unwrap(),
                "{fixture_name}: decode {id}"
            );
        }
    }
    Ok(())
}

#[test]
fn smollm2_tokenizer_matches_transformers() -> TestResult {
    check_tokenizer(SMOL, "tokenizer_smollm2")
}

#[test]
fn gemma3_tokenizer_matches_transformers() -> TestResult {
    check_tokenizer(GEMMA, "tokenizer_gemma3")
}

/// Our POS table equals the one `scripts/inseq_pos_cache.py` built for inseq's sampler.
#[test]
fn smollm2_pos_tags_match_the_inseq_cache_builder() -> TestResult {
    let Some(path) = real_model(SMOL) else {
        return Ok(());
    };
    let f = reagent::model::gguf::GgufFile::open(&path)?;
    let tok = reagent::Tokenizer::from_gguf(&f)?;
    let table = PosTable::build(&tok);
    let fx = read_json(&fixture("pos/smollm2_tags.json"));
    let want = fx["tags"].as_array().unwrap();
    assert_eq!(table.tag_of.len(), want.len());
    let mut bad = Vec::new();
    for (id, w) in want.iter().enumerate() {
        if table.tag(id as u32) != w.as_str().unwrap() {
            bad.push((
                id,
                tok.token_text(id as u32),
                table.tag(id as u32).to_string(),
                w.clone(),
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} tags differ, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    Ok(())
}

/// `--quantized` (GGUF blocks kept, decoded a panel at a time into the f32 kernel) against
/// transformers' f32 run of the dequantized weights (`top5` in the fixtures): the model parity
/// tolerance, 1e-3 on each probability; and against llama.cpp's own probabilities on the same
/// files (`llama_cpp_top5`, from llama-cpp-python 0.3.36, which quantizes activations to 8 bits
/// where we keep them f32): the same most likely token on every prompt, and each of llama.cpp's
/// top-5 probabilities within `tol`.
fn check_quantized_against_llama_cpp(file: &str, fixture_name: &str, tol: f32) -> TestResult {
    let Some(path) = real_model(file) else {
        return Ok(());
    };
    let m = load_causal(
        path.to_str().unwrap(),
        &LoadOptions {
            quantized: true,
            ..LoadOptions::default()
        },
    )?;
    assert!(
        !m.model.capabilities().gradients,
        "quantized weights have no gradients"
    );
    let fx = read_json(&fixture(&format!("real/{fixture_name}.json")));
    let (mut worst, mut worst_f32) = (0f32, 0f32);
    for p in fx["prompts"].as_array().unwrap() {
        let ids = ids_of(&p["input_ids"]);
        let lp: Vec<f32> = m
            .model
            .next_token_log_probs(std::slice::from_ref(&ids))?
            .squeeze(0)?
            .to_vec1()?;
        // The same most likely token (lower ranks hold near ties of small probabilities).
        let top = reagent::util::top_n(&lp, 1)[0];
        let theirs = p["llama_cpp_top5"][0]["id"].as_u64().unwrap() as usize;
        assert_eq!(
            top, theirs,
            "{fixture_name}: top token after {:?}",
            p["prompt"]
        );
        for t in p["llama_cpp_top5"].as_array().unwrap() {
            let id = t["id"].as_u64().unwrap() as usize;
            let d = (lp[id].exp() - t["prob"].as_f64().unwrap() as f32).abs();
            worst = worst.max(d);
        }
        // For comparison: the same quantized run against transformers' f32 (dequantized) one.
        for t in p["top5"].as_array().unwrap() {
            let id = t["id"].as_u64().unwrap() as usize;
            let d = (lp[id].exp() - t["prob"].as_f64().unwrap() as f32).abs();
            worst_f32 = worst_f32.max(d);
        }
    }
    eprintln!(
        "{fixture_name} --quantized: max |dp| {worst:.4} against llama.cpp, {worst_f32:.4} against transformers f32"
    );
    assert!(
        worst < tol,
        "{fixture_name}: max |dp| {worst} against llama.cpp"
    );
    assert!(
        worst_f32 < 1e-3,
        "{fixture_name}: max |dp| {worst_f32} against transformers f32"
    );
    Ok(())
}

#[test]
fn smollm2_quantized_matches_llama_cpp() -> TestResult {
    // Measured 0.033 against llama.cpp, 0.0000 against transformers' f32 (four decimals).
    check_quantized_against_llama_cpp(SMOL, "smollm2", 0.05)
}

#[test]
fn gemma3_quantized_matches_llama_cpp() -> TestResult {
    // Measured 0.026 against llama.cpp and 0.0000 against transformers' f32 (four decimals);
    // llama.cpp rounds activations to 8 bits, which moves Gemma's largest probabilities.
    check_quantized_against_llama_cpp(GEMMA, "gemma3", 0.05)
}
