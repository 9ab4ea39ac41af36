//! One probe's random stream at one step, as the samplers, the replacer and the initializer see
//! it (the leaf they all share).

use rand_chacha::ChaCha8Rng;

/// What a random draw is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Init,
    Update,
    StopTest,
    /// The adaptive replacing ratio's pilot draws.
    Pilot,
}

/// One probe's random stream at one step (steps count from 1; initialisation is step 0).
pub struct Draw<'a> {
    pub probe: usize,
    pub step: usize,
    pub phase: Phase,
    pub rng: &'a mut ChaCha8Rng,
}
