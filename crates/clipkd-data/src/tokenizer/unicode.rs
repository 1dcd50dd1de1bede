//! Python's view of Unicode, over the tables generated from Python itself (`tables.rs`):
//! membership in a code point range table, `str.isspace()` and `str.lower()` (Python 3.11,
//! Unicode 14). Used by the text cleaning and by the ftfy port.

use super::tables::{PY_CASE_IGNORABLE, PY_CASED, PY_LOWER_CHANGES, PY_SPACE};

/// Membership in a sorted table of inclusive code point ranges.
pub(super) fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let cp = u32::from(c);
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Python's `str.isspace()` for one character.
pub(super) fn py_isspace(c: char) -> bool {
    let cp = u32::from(c);
    if cp < 0x80 {
        return matches!(cp, 0x09..=0x0D | 0x1C..=0x20);
    }
    in_ranges(PY_SPACE, c)
}

/// Python 3.11's `str.lower()`: Rust's full lowercase mappings, applied only to the characters
/// that Python's Unicode 14 tables lowercase, and Python's Final_Sigma rule for `Σ`.
pub(super) fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '\u{3A3}' {
            out.push(if is_final_sigma(&chars, i) {
                '\u{3C2}'
            } else {
                '\u{3C3}'
            });
        } else if in_ranges(PY_LOWER_CHANGES, c) {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// CPython's `handle_capital_sigma`: a cased letter before (skipping case-ignorables) and no
/// cased letter after.
fn is_final_sigma(chars: &[char], i: usize) -> bool {
    let ignorable = |c: &&char| in_ranges(PY_CASE_IGNORABLE, **c);
    let before = chars[..i].iter().rev().find(|c| !ignorable(c));
    if !before.is_some_and(|&c| in_ranges(PY_CASED, c)) {
        return false;
    }
    let after = chars[i + 1..].iter().find(|c| !ignorable(c));
    !after.is_some_and(|&c| in_ranges(PY_CASED, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_the_separators() {
        for c in [
            '\t', '\n', '\x0b', '\x0c', '\r', '\x1c', '\x1f', ' ', '\u{85}', '\u{a0}', '\u{3000}',
        ] {
            assert!(py_isspace(c), "{c:?}");
        }
        for c in ['a', '\u{200b}', '\u{feff}', '_', '\x1b'] {
            assert!(!py_isspace(c), "{c:?}");
        }
    }

    #[test]
    fn lowercase_follows_python() {
        assert_eq!(py_lower("ΟΔΟΣ ΣΟΦΟΣ Σ ΑΣ' ΑΣ'Α"), "οδος σοφος σ ας' ασ'α");
        assert_eq!(py_lower("İstanbul ẞ"), "i\u{307}stanbul ß");
        // U+A7CB gained a lowercase mapping in Unicode 16; Python 3.11 (Unicode 14) keeps it.
        assert_eq!(py_lower("\u{A7CB}"), "\u{A7CB}");
    }

    #[test]
    fn range_tables_are_inclusive() {
        let table = [(0x41, 0x43), (0x61, 0x61)];
        for c in ['A', 'B', 'C', 'a'] {
            assert!(in_ranges(&table, c), "{c:?}");
        }
        for c in ['@', 'D', '`', 'b'] {
            assert!(!in_ranges(&table, c), "{c:?}");
        }
    }
}
