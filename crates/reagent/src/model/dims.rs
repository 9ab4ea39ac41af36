//! Bounds on the sizes a model file may declare, checked before anything divides by them or
//! allocates from them.

use crate::{Error, Result};

/// The largest size any dimension may have (16 Mi): far above real models (vocabularies of
/// 262,144, contexts of 131,072), far below what would exhaust memory in one allocation of a
/// rotary table or a mask.
pub const MAX_DIM: usize = 1 << 24;

/// Each `(name, value)` must be in `1..=MAX_DIM`.
pub fn check(source: &str, dims: &[(&str, usize)]) -> Result<()> {
    for &(name, v) in dims {
        if v == 0 {
            return Err(Error::input(format!(
                "{source}: `{name}` must be at least 1, got 0"
            )));
        }
        if v > MAX_DIM {
            return Err(Error::input(format!(
                "{source}: `{name}` is {v}, more than the {MAX_DIM} this library accepts"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_huge_sizes_fail_with_the_field_name() {
        assert!(check("x", &[("a", 1), ("b", MAX_DIM)]).is_ok());
        let e = check("cfg.json", &[("num_attention_heads", 0)]).unwrap_err();
        assert!(e
            .to_string()
            .contains("`num_attention_heads` must be at least 1"));
        let e = check("f.gguf", &[("llama.block_count", MAX_DIM + 1)]).unwrap_err();
        assert!(e.to_string().contains("llama.block_count"));
    }
}
