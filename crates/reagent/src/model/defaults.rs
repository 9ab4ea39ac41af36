//! Serde defaults of `config.json` fields, shared by the architectures: one function per value
//! (`#[serde(default = "crate::model::defaults::eps_1e5")]`).

pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn eps_1e5() -> f64 {
    1e-5
}
pub(crate) fn eps_1e6() -> f64 {
    1e-6
}
pub(crate) fn eps_1e12() -> f64 {
    1e-12
}
pub(crate) fn positions_2048() -> usize {
    2048
}
pub(crate) fn positions_131072() -> usize {
    131_072
}
pub(crate) fn gelu() -> String {
    "gelu".into()
}
pub(crate) fn gelu_new() -> String {
    "gelu_new".into()
}
pub(crate) fn gelu_pytorch_tanh() -> String {
    "gelu_pytorch_tanh".into()
}
pub(crate) fn silu() -> String {
    "silu".into()
}
pub(crate) fn relu() -> String {
    "relu".into()
}
