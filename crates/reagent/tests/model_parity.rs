//! Parity of every architecture with transformers.
//!
//! Reference: `scripts/make_fixtures.py` (transformers 5.24 / torch 2.15, eager attention, f32)
//! built a tiny random model per architecture and recorded logits, attention probabilities,
//! input embeddings and input-embedding gradients in `fixtures/models/<name>/expected.*`.
//! Tolerances: logits and attentions 1e-4 absolute, gradients 1e-3 relative.

mod common;

use candle_core::{IndexOp, Tensor, Var};
use common::*;
use reagent::model::{load_causal, load_masked, LoadOptions, Outputs};

const MASKED: &[&str] = &["bert", "roberta"];

const TOL: f32 = 1e-4;
const GRAD_TOL: f32 = 1e-3;

fn check_tokenizer(tok: &reagent::Tokenizer, expected: &serde_json::Value, name: &str) {
    let add = expected["add_special_tokens"].as_bool().unwrap_or(false);
    for case in expected["tokenization"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let add = case
            .get("add_special_tokens")
            .and_then(|v| v.as_bool())
            .unwrap_or(add);
        let enc = tok.encode(text, add).unwrap();
        assert_eq!(enc.ids, ids_of(&case["ids"]), "{name}: ids of {text:?}");
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
        assert_eq!(enc.offsets, offsets, "{name}: offsets of {text:?}");
    }
}

#[test]
fn causal_models_match_transformers() -> TestResult {
    for name in CAUSAL {
        let dir = fixture(&format!("models/{name}"));
        let expected = read_json(&dir.join("expected.json"));
        let tensors = load_tensors(&dir.join("expected.safetensors"));
        let m = load_causal(dir.to_str().unwrap(), &LoadOptions::default())?;
        let model = &m.model;
        assert!(model.capabilities().gradients, "{name}");
        check_tokenizer(&m.tokenizer, &expected, name);

        let all_ids: Vec<Vec<u32>> = expected["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids_of)
            .collect();
        let targets = ids_of(&expected["targets"]);
        for (i, ids) in all_ids.iter().enumerate() {
            let out = model.forward(
                std::slice::from_ref(ids),
                Outputs {
                    logits: true,
                    attentions: true,
                },
            )?;
            let logits = out.logits.unwrap().i(0)?;
            let d = max_abs_diff(&logits, &tensors[&format!("logits.{i}")]);
            assert!(d < TOL, "{name}: logits of text {i} differ by {d}");
            let d = max_abs_diff(
                &out.last_log_probs.i(0)?,
                &tensors[&format!("logprobs_last.{i}")],
            );
            assert!(d < TOL, "{name}: last log-probs of text {i} differ by {d}");
            let attns = out.attentions.unwrap();
            assert_eq!(
                attns.len(),
                expected["layers"].as_u64().unwrap() as usize,
                "{name}"
            );
            for (l, a) in attns.iter().enumerate() {
                let d = max_abs_diff(&a.i(0)?, &tensors[&format!("attn.{i}.{l}")]);
                assert!(
                    d < TOL,
                    "{name}: attention of text {i} layer {l} differs by {d}"
                );
            }

            // Input embeddings and the gradient of log p(target) with respect to them.
            let ids_t = Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?;
            let embeds = model.embed(&ids_t)?;
            let d = max_abs_diff(&embeds.i(0)?, &tensors[&format!("embeds.{i}")]);
            assert!(d < 1e-5, "{name}: embeddings of text {i} differ by {d}");
            let var = Var::from_tensor(&embeds)?;
            let out = model.forward_embeds(var.as_tensor(), &[ids.len()], Outputs::default())?;
            let lp = out.last_log_probs.i((0, targets[i] as usize))?;
            let grads = lp.backward()?;
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient reached the input embeddings"))
                .i(0)?;
            let expected_g = &tensors[&format!("grad.{i}")];
            let r = rel_diff(&g, expected_g);
            assert!(
                r < GRAD_TOL,
                "{name}: gradient of text {i} differs by {r} (relative)"
            );
        }

        // A right-padded batch gives the same logits at real positions.
        let out = model.forward(
            &all_ids,
            Outputs {
                logits: true,
                attentions: false,
            },
        )?;
        let logits = out.logits.unwrap();
        let padded = &tensors["padded_logits"];
        for (i, ids) in all_ids.iter().enumerate() {
            let n = ids.len();
            let d = max_abs_diff(&logits.i((i, ..n))?, &padded.i((i, ..n))?);
            assert!(d < TOL, "{name}: padded batch row {i} differs by {d}");
            let d = max_abs_diff(
                &out.last_log_probs.i(i)?,
                &tensors[&format!("logprobs_last.{i}")],
            );
            assert!(
                d < TOL,
                "{name}: padded last log-probs row {i} differ by {d}"
            );
        }
        eprintln!("{name}: ok");
    }
    Ok(())
}

#[test]
fn masked_models_match_transformers() -> TestResult {
    for name in MASKED {
        let dir = fixture(&format!("models/{name}"));
        let expected = read_json(&dir.join("expected.json"));
        let tensors = load_tensors(&dir.join("expected.safetensors"));
        let m = load_masked(dir.to_str().unwrap(), &LoadOptions::default())?;
        check_tokenizer(&m.tokenizer, &expected, name);
        let all_ids: Vec<Vec<u32>> = expected["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids_of)
            .collect();
        for (i, ids) in all_ids.iter().enumerate() {
            let (logits, attns) = m.model.forward(std::slice::from_ref(ids), true)?;
            let d = max_abs_diff(&logits.i(0)?, &tensors[&format!("logits.{i}")]);
            assert!(d < TOL, "{name}: logits of text {i} differ by {d}");
            for (l, a) in attns.unwrap().iter().enumerate() {
                let d = max_abs_diff(&a.i(0)?, &tensors[&format!("attn.{i}.{l}")]);
                assert!(
                    d < TOL,
                    "{name}: attention of text {i} layer {l} differs by {d}"
                );
            }
            // logits_at gives the same rows.
            let at: Vec<(usize, usize)> = (0..ids.len()).map(|p| (0, p)).collect();
            let rows = m.model.logits_at(std::slice::from_ref(ids), &at)?;
            let d = max_abs_diff(&rows, &tensors[&format!("logits.{i}")]);
            assert!(d < TOL, "{name}: logits_at of text {i} differs by {d}");
        }
        // Padded batch.
        let (logits, _) = m.model.forward(&all_ids, false)?;
        for (i, ids) in all_ids.iter().enumerate() {
            let n = ids.len();
            let d = max_abs_diff(&logits.i((i, ..n))?, &tensors[&format!("logits.{i}")]);
            assert!(d < TOL, "{name}: padded batch row {i} differs by {d}");
        }
        eprintln!("{name}: ok");
    }
    Ok(())
}
