//! Results in inseq's format: a JSON file that inseq's `FeatureAttributionOutput.load` reads
//! (checked with inseq 0.7.1), so a Python user can open them with inseq's own `.show()`.
//!
//! inseq saves a `FeatureAttributionOutput` with class markers (`__instance_type__`) and its
//! tensors as base64 safetensors (one tensor named `attribution`). For a decoder-only model, each
//! job is one `CoarseFeatureAttributionSequenceOutput` (inseq's class for one score per token,
//! as its occlusion and ReAGent write):
//!
//! - `source`: the prompt's tokens; `target`: every token, prompt then targets (`{id, token}`,
//!   the token's decoded text);
//! - `target_attributions`: float32 `[tokens, targets]`, column `j` holds target `j`'s scores of
//!   the tokens before it and NaN from the target on (inseq's layout);
//! - `step_scores`: `probability` (`p(target | context)`), and with a contrast
//!   `contrast_prob_diff` (`p(target) - p(contrast)`);
//! - `attr_pos_start` / `attr_pos_end`: the targets' span of `target`.
//!
//! The scores are token scores as the result holds them (the `words` of `--unit` or `--words`
//! are not written: inseq groups tokens itself, with `aggregate("spans", ...)`). `info` carries
//! the model, method, configuration (`attribution_args`), texts and wall time.

use std::io::Write;

use base64::Engine;
use serde_json::{json, Value};

use crate::result::AttributionResult;
use crate::{Error, Result};

/// Writes a list of results as one inseq `FeatureAttributionOutput` (one sequence per result).
pub struct InseqJson;

/// A float32 tensor as inseq stores it: base64 of a safetensors file holding `attribution`.
fn tensor_b64(shape: &[usize], data: &[f32]) -> Result<String> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .map_err(|e| Error::InvalidInput(format!("inseq format: {e}")))?;
    let file = safetensors::serialize([("attribution", view)], None)
        .map_err(|e| Error::InvalidInput(format!("inseq format: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(file))
}

fn instance(class: &str, attributes: Value) -> Value {
    let module = if class == "TokenWithId" {
        "inseq.utils.typing"
    } else {
        "inseq.data.attribution"
    };
    json!({"__instance_type__": [module, class], "attributes": attributes})
}

/// One result as a `CoarseFeatureAttributionSequenceOutput`.
fn sequence(r: &AttributionResult) -> Result<Value> {
    let n = r.tokens.len();
    let start = r.prompt_tokens;
    let k = r.targets.len();
    if start + k > n {
        return Err(Error::InvalidInput(format!(
            "a result of {n} tokens cannot hold {start} prompt tokens and {k} targets"
        )));
    }
    for (j, t) in r.targets.iter().enumerate() {
        if t.position != start + j {
            return Err(Error::InvalidInput(format!(
                "inseq's format needs the targets to follow the prompt one after another; \
                 target {j} is token {} of {n}",
                t.position
            )));
        }
        if t.scores.scores.len() != t.position {
            return Err(Error::InvalidInput(format!(
                "target {j} has {} scores for a context of {} tokens",
                t.scores.scores.len(),
                t.position
            )));
        }
    }
    // Row-major [n, k]: row i = token i, column j = target j.
    let mut matrix = vec![f32::NAN; n * k];
    for (j, t) in r.targets.iter().enumerate() {
        for (i, s) in t.scores.scores.iter().enumerate() {
            matrix[i * k + j] = *s;
        }
    }
    let token =
        |t: &crate::result::Token| instance("TokenWithId", json!({"id": t.id, "token": t.text}));
    let mut step_scores = serde_json::Map::new();
    let probs: Vec<f32> = r.targets.iter().map(|t| t.prob).collect();
    step_scores.insert("probability".into(), tensor_b64(&[k], &probs)?.into());
    if k > 0 && r.targets.iter().all(|t| t.contrast.is_some()) {
        let diff: Vec<f32> = r
            .targets
            .iter()
            .map(|t| t.prob - t.contrast.as_ref().map_or(0.0, |c| c.prob))
            .collect();
        step_scores.insert("contrast_prob_diff".into(), tensor_b64(&[k], &diff)?.into());
    }
    Ok(instance(
        "CoarseFeatureAttributionSequenceOutput",
        json!({
            "attr_pos_end": n,
            "attr_pos_start": start,
            "sequence_scores": {},
            "source": r.tokens[..start].iter().map(token).collect::<Vec<_>>(),
            "source_attributions": null,
            "step_scores": step_scores,
            "target": r.tokens.iter().map(token).collect::<Vec<_>>(),
            "target_attributions": tensor_b64(&[n, k], &matrix)?,
        }),
    ))
}

impl InseqJson {
    /// The `FeatureAttributionOutput` of `results`, as JSON.
    pub fn to_value(&self, results: &[AttributionResult]) -> Result<Value> {
        let first = results.first().ok_or_else(|| {
            Error::InvalidInput("inseq's format needs at least one result".into())
        })?;
        let sequences = results.iter().map(sequence).collect::<Result<Vec<_>>>()?;
        let prompt_text = |r: &AttributionResult| -> String {
            match r.tokens.get(r.prompt_tokens) {
                Some(t) => r.text.chars().take(t.start).collect(),
                None => r.text.clone(),
            }
        };
        let contrast = first
            .targets
            .first()
            .and_then(|t| t.contrast.as_ref())
            .is_some();
        let step_scores: Vec<&str> = if contrast {
            vec!["probability", "contrast_prob_diff"]
        } else {
            vec!["probability"]
        };
        let p = &first.provenance;
        Ok(instance(
            "FeatureAttributionOutput",
            json!({
                "info": {
                    "attr_pos_end": first.tokens.len(),
                    "attr_pos_start": first.prompt_tokens,
                    "attribute_target": false,
                    "attributed_fn": if contrast { "contrast_prob_diff_fn" } else { "probability_fn" },
                    "attributed_fn_args": {},
                    "attribution_args": p.config,
                    "attribution_method": p.method,
                    "constrained_decoding": first.target_mode == "forced",
                    "exec_time": results.iter().map(|r| r.wall_s).sum::<f64>(),
                    "generate_from_target_prefix": false,
                    "generated_texts": results.iter().map(|r| r.text.clone()).collect::<Vec<_>>(),
                    "generation_args": {},
                    "include_eos_baseline": false,
                    "input_texts": results.iter().map(prompt_text).collect::<Vec<_>>(),
                    "model_class": p.architecture,
                    "model_name": p.model,
                    "output_step_attributions": false,
                    "step_scores": step_scores,
                    "step_scores_args": {},
                    "tokenizer_class": "reagent",
                    "tokenizer_name": null,
                    "weights": p.weights,
                    "reagent_version": p.reagent_version,
                },
                "sequence_attributions": sequences,
                "step_attributions": null,
            }),
        ))
    }

    /// Writes `results` as one inseq JSON file (indented). A result inseq's format cannot hold
    /// is an `InvalidInput` I/O error with a one-line message.
    pub fn render(&self, results: &[AttributionResult], mut w: impl Write) -> std::io::Result<()> {
        let v = self
            .to_value(results)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        serde_json::to_writer_pretty(&mut w, &v)?;
        writeln!(w)
    }
}
