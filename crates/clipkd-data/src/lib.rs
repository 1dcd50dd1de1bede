//! Data for clipkd: the CLIP BPE tokenizer, open_clip's image preprocessing, image-text
//! datasets (CSV, webdataset, ImageFolder, retrieval) and a parallel, deterministic, resumable
//! data loader.
//!
//! This crate does not depend on Burn: it produces plain `Vec`s (token ids, CHW `f32` pixels) so
//! that it can feed any framework; `clipkd-train` turns them into tensors.
#![warn(missing_docs)]

pub mod dataset;
pub mod error;
pub mod image;
pub mod loader;
pub mod tokenizer;

pub use error::DataError;
