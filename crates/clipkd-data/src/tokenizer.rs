//! The CLIP BPE tokenizer (filled by the foundation issue).
