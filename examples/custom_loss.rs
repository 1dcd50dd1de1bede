//! A custom loss next to the built-in ones (being written).
fn main() {}
