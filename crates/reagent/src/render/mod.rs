//! Renderers that need no terminal: an attribution result as a self-contained HTML page, for
//! the command line's `--html` and Python's `show()`. (The terminal heatmap lives in the CLI.)

mod html;

pub use html::Html;
