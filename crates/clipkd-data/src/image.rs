//! Image decoding and open_clip preprocessing (filled by the foundation issue).
