//! clipkd-train: placeholder module root, filled by its issue.
