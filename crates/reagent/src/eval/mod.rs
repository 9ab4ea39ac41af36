//! Evaluation: the ReAGent paper's faithfulness metrics and the runner that compares methods
//! on a dataset.

pub mod datasets;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod stats;
pub mod store;
pub mod summary;
