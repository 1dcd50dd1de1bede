//! clipkd-losses: placeholder module root, filled by its issue.
