//! Bench of the CLIP-KD losses (being written).
fn main() {}
