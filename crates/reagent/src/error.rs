//! The library's one error type.
//!
//! Errors from candle and tokenizers are wrapped once, here; file errors carry their path
//! (`.with_path()`), so the CLI can print a one-line cause.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tensor operation failed (usually a bug or a corrupt weight file).
    #[error("tensor error: {}", first_line(&.0.to_string()))]
    Candle(#[from] candle_core::Error),
    /// The tokenizer failed to load or to encode/decode.
    #[error("tokenizer: {}", first_line(.0))]
    Tokenizer(String),
    /// A JSON file (config.json, tokenizer.json, a dataset) did not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The model's architecture is not one this crate implements.
    #[error("unsupported architecture `{name}` (supported: {supported})")]
    UnsupportedArchitecture { name: String, supported: String },
    /// A model file lacks something we need: a config key, a tensor, a GGUF metadata entry.
    #[error("{what} is missing from {source_name}")]
    Missing { what: String, source_name: String },
    /// A file or folder the caller named does not exist.
    #[error("{}", first_line(.0))]
    NotFound(String),
    /// The model could not be fetched, or its folder is not a model.
    #[error("{}", first_line(.0))]
    ModelSource(String),
    /// The caller's input is unusable: empty text, too long, bad hyperparameter, ...
    #[error("{}", first_line(.0))]
    InvalidInput(String),
    /// A served model's server failed or sent an unusable reply (the message names the
    /// server, never the API key).
    #[error("{}", first_line(.0))]
    Remote(String),
    /// The model cannot do what the method needs (e.g. gradients through quantized weights).
    #[error("{}", first_line(.0))]
    Unsupported(String),
    /// The caller stopped the work (a progress sink answered that it was cancelled).
    #[error("interrupted")]
    Cancelled,
}

/// The first line of a message: candle appends a backtrace to its errors when `RUST_BACKTRACE`
/// is set, and an error here is one line.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim_end()
}

/// The crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An invalid-input error with the given message.
    pub fn input(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
    pub(crate) fn missing(what: impl Into<String>, source_name: impl Into<String>) -> Self {
        Error::Missing {
            what: what.into(),
            source_name: source_name.into(),
        }
    }
    /// An architecture this crate does not implement, with the list it does.
    pub(crate) fn unsupported_architecture(name: impl Into<String>, supported: String) -> Self {
        Error::UnsupportedArchitecture {
            name: name.into(),
            supported,
        }
    }
    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        Error::Tokenizer(e.to_string())
    }
}

/// Attach a path to I/O and JSON errors.
pub trait WithPath<T> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> WithPath<T> for std::result::Result<T, std::io::Error> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

impl<T> WithPath<T> for std::result::Result<T, serde_json::Error> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| Error::Json {
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

/// Bail out with an invalid-input error, `format!`-style.
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err($crate::Error::InvalidInput(format!($($arg)*)))
    };
}
