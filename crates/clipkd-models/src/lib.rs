//! clipkd-models: placeholder module root, filled by its issue.
