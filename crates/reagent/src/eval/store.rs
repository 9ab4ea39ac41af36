//! The evaluation's files: the records of `examples.jsonl` and `results.jsonl`, appended and
//! synced one at a time and read back for resuming, and `run.json`, written atomically.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::metrics::{Erasure, Hard, Soft};
use crate::error::WithPath;
use crate::method::TargetScores;
use crate::{Error, Result};

/// How two runs of one method on independent random streams agree on one target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Stability {
    /// Spearman's rank correlation of the two score vectors (None when one is constant).
    pub spearman: Option<f64>,
    /// How many of the two runs' top-3 context tokens are shared (0 to 3).
    pub top3_overlap: usize,
}

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
    /// The embedding metrics (the paper's): only where this process holds the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suff0: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<Soft>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hard: Vec<Hard>,
    /// The erasure metrics (tokens dropped; next-token probabilities only), with `p(y | x)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_target: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub erasure: Vec<Erasure>,
    /// LongRA: whether a token of the antecedent is among the 3 highest-scored context tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub antecedent_top3: Option<bool>,
    /// Agreement with a second run on an independent random stream (stochastic methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<Stability>,
}

/// One (example, method) result line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultRecord {
    pub example: String,
    pub method: String,
    pub targets: Vec<TargetRecord>,
}

/// Read an append-only JSONL file for resuming. Only a torn final line (a write cut short by a
/// kill: no newline at its end) is dropped, and it is cut off the file so that the next record
/// starts on a line of its own; any other line that does not parse is an error naming the file
/// and line. The file is never rewritten from memory.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(path).with_path(path)?;
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    let mut out = Vec::new();
    for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let v = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<T>(text).map_err(|e| e.to_string()))
            .map_err(|e| {
                Error::input(format!(
                    "{}:{}: not a valid record ({e}); the file is damaged, so the run cannot resume from it",
                    path.display(),
                    n + 1
                ))
            })?;
        out.push(v);
    }
    if complete < bytes.len() {
        // A torn last line: drop it from the file (truncation, not a rewrite).
        let f = OpenOptions::new().write(true).open(path).with_path(path)?;
        f.set_len(complete as u64).with_path(path)?;
        f.sync_all().with_path(path)?;
    }
    Ok(out)
}

/// Append one record and make it durable before going on.
pub fn append_line<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_path(path)?;
    let mut line = serde_json::to_string(v).map_err(|e| Error::input(e.to_string()))?;
    line.push('\n');
    f.write_all(line.as_bytes()).with_path(path)?;
    f.sync_data().with_path(path)?;
    Ok(())
}

/// Write a JSON file through a temporary file and a rename, so a kill leaves the old or the new.
pub fn write_atomically<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::input(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_path(&tmp)?;
    std::fs::rename(&tmp, path).with_path(path)?;
    Ok(())
}
#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn tmp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reagent-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_from_the_file() {
        let p = tmp("torn.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":");
        let v: Vec<serde_json::Value> = read_jsonl(&p).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        append_line(&p, &serde_json::json!({"a": 3})).unwrap();
        let v: Vec<serde_json::Value> = read_jsonl(&p).unwrap();
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn a_corrupt_middle_line_is_an_error_and_the_file_is_kept() {
        let text = "{\"a\":1}\n{\"a\" 2}\n{\"a\":3}\n";
        let p = tmp("corrupt.jsonl", text);
        let e = read_jsonl::<serde_json::Value>(&p).unwrap_err().to_string();
        assert!(e.contains("corrupt.jsonl:2:"), "{e}");
        assert_eq!(e.lines().count(), 1);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }
}
