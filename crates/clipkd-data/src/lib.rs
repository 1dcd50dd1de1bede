//! clipkd-data: placeholder module root, filled by its issue.
