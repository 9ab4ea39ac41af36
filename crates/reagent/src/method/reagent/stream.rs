//! A recorded random stream: ReAGent's deterministic mode.
//!
//! Instead of drawing, the initial scores, the replacement masks and the sampled tokens are read
//! from a file recorded by `scripts/reagent_reference.py` (format `reagent-reference-fixture/1`).
//! With the same stream, our ReAGent and the Python reference port of inseq's `reagent_core`
//! must produce the same importance scores, steps and converged probes. Draws are indexed by
//! `(probe, step)`, so dropping stopped probes from the batch does not shift the stream.

use std::path::Path;

use serde::Deserialize;

use super::draw::{Draw, Phase};
use super::replacer::{Initializer, Replacer};
use super::sampler::Sampler;
use crate::error::WithPath;
use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
struct Step {
    replace_mask: Vec<Vec<u8>>,
    update_tokens: Vec<Vec<u32>>,
    stop_fill_tokens: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Stream {
    initial_scores: Vec<Vec<f64>>,
    steps: Vec<Step>,
}

/// The recorded draws of one ReAGent run.
#[derive(Debug, Clone)]
pub struct RecordedStream {
    stream: Stream,
}

impl RecordedStream {
    /// Read the `stream` object of a reference fixture file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        let v: serde_json::Value = serde_json::from_str(&text).with_path(path)?;
        Self::from_json(&v["stream"]).map_err(|e| Error::input(format!("{}: {e}", path.display())))
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let stream: Stream = serde_json::from_value(v.clone())
            .map_err(|e| Error::input(format!("bad recorded stream: {e}")))?;
        Ok(RecordedStream { stream })
    }

    /// How many steps were recorded.
    pub fn steps(&self) -> usize {
        self.stream.steps.len()
    }

    fn step(&self, d: &Draw<'_>) -> Result<&Step> {
        d.step
            .checked_sub(1)
            .and_then(|i| self.stream.steps.get(i))
            .ok_or_else(|| Error::input(format!("the recorded stream has no step {}", d.step)))
    }
}

fn row<T: Clone>(rows: &[Vec<T>], probe: usize, len: usize) -> Vec<T> {
    let r = rows.get(probe).cloned().unwrap_or_default();
    assert_eq!(r.len(), len, "recorded stream row has the wrong length");
    r
}

impl Initializer for RecordedStream {
    fn initial_scores(&self, len: usize, draw: &mut Draw<'_>) -> Vec<f32> {
        row(&self.stream.initial_scores, draw.probe, len)
            .into_iter()
            .map(|x| x as f32)
            .collect()
    }
}

impl Replacer for RecordedStream {
    fn choose(&self, len: usize, draw: &mut Draw<'_>) -> Vec<bool> {
        let step = self.step(draw).expect("recorded stream too short");
        row(&step.replace_mask, draw.probe, len)
            .into_iter()
            .map(|m| m != 0)
            .collect()
    }
}

impl Sampler for RecordedStream {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"kind": "recorded stream", "steps": self.steps()})
    }

    fn sample(
        &self,
        context: &[u32],
        replace: &[Vec<bool>],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Vec<u32>>> {
        replace
            .iter()
            .zip(draws.iter())
            .map(|(mask, d)| {
                let step = self.step(d)?;
                let rows = match d.phase {
                    Phase::Update => &step.update_tokens,
                    Phase::StopTest => &step.stop_fill_tokens,
                    Phase::Init => {
                        return Err(Error::input("no tokens are drawn at initialisation"))
                    }
                    Phase::Pilot => {
                        return Err(Error::input(
                            "a recorded stream has no pilot draws (adaptive_ratio must be off)",
                        ))
                    }
                };
                let toks = row(rows, d.probe, context.len());
                Ok(context
                    .iter()
                    .zip(mask)
                    .zip(toks)
                    .map(|((&id, &m), t)| if m { t } else { id })
                    .collect())
            })
            .collect()
    }
}
