//! Data for clipkd: the CLIP BPE tokenizer, open_clip's image preprocessing and (later)
//! image-text datasets.
//!
//! This crate does not depend on Burn: it produces plain `Vec`s (token ids, CHW `f32` pixels) so
//! that it can feed any framework; `clipkd-train` turns them into tensors.
#![warn(missing_docs)]

pub mod error;
pub mod image;
pub mod tokenizer;

pub use error::DataError;
