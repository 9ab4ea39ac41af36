//! Evaluation datasets, in the shapes the ReAGent paper uses.
//!
//! - **LongRA** (long-range agreement; `longra.jsonl`): token level. Each row is a prompt whose
//!   next word depends on an antecedent far back, past a distractor parenthesis. As in the paper,
//!   only rows the model completes correctly — greedy, with and without the distractor — and
//!   whose target is a single token are used.
//! - **Sequence level** (`tellmewhy.txt`, `wikibio.txt`: one prompt per line): the model's
//!   greedy continuation of a few tokens is attributed token by token.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::WithPath;
use crate::model::LoadedModel;
use crate::{Error, Result};

/// One LongRA row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LongraRow {
    pub id: String,
    pub category: String,
    /// No trailing space.
    pub prompt: String,
    /// With its leading space.
    pub target: String,
    pub antecedent: String,
    /// Character offsets into `prompt`.
    pub antecedent_char_span: (usize, usize),
    pub distractor_char_span: (usize, usize),
}

impl LongraRow {
    /// The prompt with the distractor parenthesis cut out.
    pub fn without_distractor(&self) -> String {
        let (a, b) = self.distractor_char_span;
        self.prompt
            .chars()
            .take(a)
            .chain(self.prompt.chars().skip(b))
            .collect()
    }
}

/// What an evaluation runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum Dataset {
    /// Token level: one target per row.
    Longra(Vec<LongraRow>),
    /// Sequence level: prompts whose greedy continuation is attributed.
    Prompts { name: String, prompts: Vec<String> },
}

impl Dataset {
    /// `*.jsonl` with LongRA fields, or a text file with one prompt per line.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        let is_jsonl = path
            .extension()
            .is_some_and(|e| e == "jsonl" || e == "json");
        if is_jsonl {
            let rows = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str::<LongraRow>(l).map_err(|e| {
                        Error::input(format!(
                            "{}:{}: not a LongRA row ({e})",
                            path.display(),
                            i + 1
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if rows.is_empty() {
                return Err(Error::input(format!("{}: no rows", path.display())));
            }
            return Ok(Dataset::Longra(rows));
        }
        let prompts: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect();
        if prompts.is_empty() {
            return Err(Error::input(format!("{}: no prompts", path.display())));
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prompts".into());
        Ok(Dataset::Prompts { name, prompts })
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::Longra(r) => r.len(),
            Dataset::Prompts { prompts, .. } => prompts.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `token` (LongRA) or `sequence`.
    pub fn level(&self) -> &'static str {
        match self {
            Dataset::Longra(_) => "token",
            Dataset::Prompts { .. } => "sequence",
        }
    }
}

/// Why a LongRA row is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The target is more than one token.
    MultiToken(usize),
    /// The greedy next token with the distractor is not the target.
    WrongWithDistractor,
    /// The greedy next token without the distractor is not the target.
    WrongWithoutDistractor,
}

/// The target token id of a usable LongRA row, or why it is skipped: the target must be a
/// single token right after the prompt, and the model's greedy prediction with and without the
/// distractor.
pub fn longra_target(
    model: &LoadedModel,
    row: &LongraRow,
) -> Result<std::result::Result<u32, Skip>> {
    let tok = &model.tokenizer;
    let prompt = tok.encode(&row.prompt, true)?.ids;
    let full = tok
        .encode(&format!("{}{}", row.prompt, row.target), true)?
        .ids;
    let n = full.len().saturating_sub(prompt.len());
    if n != 1 || full[..prompt.len()] != prompt[..] {
        return Ok(Err(Skip::MultiToken(n)));
    }
    let target = full[prompt.len()];
    let greedy = |ids: Vec<u32>| -> Result<u32> {
        let lp = model.model.next_token_log_probs(&[ids])?;
        Ok(lp.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?)
    };
    if greedy(prompt)? != target {
        return Ok(Err(Skip::WrongWithDistractor));
    }
    let short = tok.encode(&row.without_distractor(), true)?.ids;
    if greedy(short)? != target {
        return Ok(Err(Skip::WrongWithoutDistractor));
    }
    Ok(Ok(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distractor_is_cut() {
        let r = LongraRow {
            id: "x".into(),
            category: "c".into(),
            prompt: "In Greece. (A dream.) I was in the capital,".into(),
            target: " Athens".into(),
            antecedent: "Greece".into(),
            antecedent_char_span: (3, 9),
            distractor_char_span: (10, 21),
        };
        assert_eq!(r.without_distractor(), "In Greece. I was in the capital,");
    }
}
