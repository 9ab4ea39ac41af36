//! What the model benchmarks share: the SmolLM2 file and the precision from `PRECISION`.

use std::path::PathBuf;

use reagent::model::Precision;

/// `models/SmolLM2-135M-Instruct.Q4_1.gguf`, or an error that says how to fetch it.
pub fn smollm2() -> Result<PathBuf, String> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
    ));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: run scripts/fetch-models.sh",
            path.display()
        ))
    }
}

/// `PRECISION` (f32 or bf16), f32 when unset.
pub fn precision() -> reagent::Result<Precision> {
    match std::env::var("PRECISION") {
        Ok(p) => Precision::parse(&p),
        Err(_) => Ok(Precision::F32),
    }
}
