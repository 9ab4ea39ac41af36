//! GGUF files: the container format (metadata and tensor table, read with candle's reader),
//! below the tokenizer and the models that both read it. What the metadata means for a given
//! architecture lives with the models (`model::gguf`).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use crate::error::WithPath;
use crate::{Error, Result};

/// An open GGUF file: its metadata, and a reader for its tensors.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).with_path(path)?;
        let mut reader = BufReader::new(f);
        let content = Content::read(&mut reader).map_err(|e| {
            Error::ModelSource(format!(
                "{}: not a readable GGUF file ({e})",
                path.display()
            ))
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// A metadata value, or an error naming the missing key.
    pub fn meta(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::missing(format!("GGUF metadata key `{key}`"), self.describe()))
    }

    pub fn meta_opt(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Result<String> {
        Ok(self
            .meta(key)?
            .to_string()
            .map_err(|e| self.bad(key, e))?
            .clone())
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        value_usize(self.meta(key)?).ok_or_else(|| self.bad(key, "not an integer"))
    }

    pub fn usize_opt(&self, key: &str) -> Option<usize> {
        self.meta_opt(key).and_then(value_usize)
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        value_f64(self.meta(key)?).ok_or_else(|| self.bad(key, "not a number"))
    }

    pub fn f64_opt(&self, key: &str) -> Option<f64> {
        self.meta_opt(key).and_then(value_f64)
    }

    pub fn bool_opt(&self, key: &str) -> Option<bool> {
        self.meta_opt(key).and_then(|v| v.to_bool().ok())
    }

    /// A metadata array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let arr = self.meta(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        arr.iter()
            .map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e)))
            .collect()
    }

    /// A metadata array of numbers.
    pub fn numbers(&self, key: &str) -> Result<Vec<f64>> {
        let arr = self.meta(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        arr.iter()
            .map(|v| value_f64(v).ok_or_else(|| self.bad(key, "not a number")))
            .collect()
    }

    fn bad(&self, key: &str, e: impl std::fmt::Display) -> Error {
        Error::ModelSource(format!(
            "{}: GGUF metadata key `{key}`: {e}",
            self.describe()
        ))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The quantized formats of the tensors, e.g. `Q4_1, Q8_0, F32`.
    pub fn dtypes(&self) -> String {
        let mut seen: Vec<String> = self
            .content
            .tensor_infos
            .values()
            .map(|t| format!("{:?}", t.ggml_dtype))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        seen.sort();
        seen.join(", ")
    }

    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(Error::missing(format!("tensor `{name}`"), self.describe()));
        }
        let mut r = self
            .reader
            .lock()
            .map_err(|_| Error::ModelSource("GGUF reader lock poisoned".into()))?;
        self.content.tensor(&mut *r, name, device).map_err(|e| {
            Error::ModelSource(format!(
                "{}: cannot read tensor `{name}`: {e}",
                self.describe()
            ))
        })
    }
}

fn value_usize(v: &Value) -> Option<usize> {
    use Value::*;
    Some(match *v {
        U8(x) => x as usize,
        I8(x) => usize::try_from(x).ok()?,
        U16(x) => x as usize,
        I16(x) => usize::try_from(x).ok()?,
        U32(x) => x as usize,
        I32(x) => usize::try_from(x).ok()?,
        U64(x) => x as usize,
        I64(x) => usize::try_from(x).ok()?,
        _ => return None,
    })
}

fn value_f64(v: &Value) -> Option<f64> {
    use Value::*;
    Some(match *v {
        F32(x) => x as f64,
        F64(x) => x,
        _ => value_usize(v)? as f64,
    })
}
