//! Renderers: sinks that draw an [`AttributionResult`] (ripgrep's `grep-printer` shape). Each has
//! `render(&AttributionResult, impl Write)`.

mod heatmap;

pub use heatmap::Heatmap;
pub use reagent::render::{Html, InseqJson};

use std::io::Write;

use anyhow::Result;
use reagent::AttributionResult;

/// Write results as JSON: pretty for one result, one line each for several (JSONL).
pub struct Json {
    pub lines: bool,
}

impl Json {
    pub fn render(&self, r: &AttributionResult, mut w: impl Write) -> Result<()> {
        if self.lines {
            serde_json::to_writer(&mut w, r)?;
        } else {
            serde_json::to_writer_pretty(&mut w, r)?;
        }
        writeln!(w)?;
        Ok(())
    }
}
