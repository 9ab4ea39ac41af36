//! File formats that both the tokenizer and the models read.

pub mod gguf;
