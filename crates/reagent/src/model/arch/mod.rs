//! The architectures, one file each; `super::architectures` lists them.

pub mod bert;
pub mod gemma3;
pub mod gpt2;
pub mod gpt_neox;
pub mod gptj;
pub mod llama;
pub mod opt;
