//! Renderers that need no terminal: an attribution result as a self-contained HTML page, for
//! the command line's `--html` and Python's `show()`, and as inseq's JSON (`--format inseq`).
//! (The terminal heatmap lives in the CLI.)

mod html;
mod inseq;

pub use html::Html;
pub use inseq::InseqJson;
