//! open_clip's text cleaning (`basic_clean`, `whitespace_clean`, `canonicalize_text`) with
//! Python's `str` semantics for whitespace.

use super::ftfy::fix_text;
use super::html::html_unescape;
use super::tables::{PY_CASE_IGNORABLE, PY_CASED, PY_LOWER_CHANGES, PY_SPACE};

/// How text is cleaned before tokenization: open_clip's `SimpleTokenizer(clean=...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Clean {
    /// `"lower"` (open_clip's default): ftfy, HTML unescape, collapse whitespace, lowercase.
    #[default]
    Lower,
    /// `"whitespace"`: ftfy, HTML unescape, collapse whitespace; case is kept.
    Whitespace,
    /// `"canonicalize"`: ftfy, HTML unescape, `_` to space, ASCII punctuation removed,
    /// lowercase, whitespace collapsed.
    Canonicalize,
}

impl Clean {
    /// Cleans `text` this way.
    ///
    /// ```
    /// use clipkd_data::tokenizer::Clean;
    /// assert_eq!(Clean::Lower.apply("  A  &amp;  B\n"), "a & b");
    /// assert_eq!(Clean::Whitespace.apply("  A  &amp;  B\n"), "A & B");
    /// assert_eq!(Clean::Canonicalize.apply("A_photo, of a CAT!"), "a photo of a cat");
    /// ```
    pub fn apply(self, text: &str) -> String {
        let basic = basic_clean(text);
        match self {
            Clean::Lower => py_lower(&whitespace_clean(&basic)),
            Clean::Whitespace => whitespace_clean(&basic),
            Clean::Canonicalize => {
                let no_punct: String = basic
                    .chars()
                    .map(|c| if c == '_' { ' ' } else { c })
                    .filter(|c| !c.is_ascii_punctuation())
                    .collect();
                whitespace_clean(&py_lower(&no_punct))
            }
        }
    }
}

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

/// open_clip's `basic_clean`: `ftfy.fix_text`, `html.unescape` twice, `strip()`.
fn basic_clean(text: &str) -> String {
    let fixed = fix_text(text);
    let once = html_unescape(&fixed);
    let twice = html_unescape(&once);
    twice.trim_matches(py_isspace).to_string()
}

/// open_clip's `whitespace_clean`: `" ".join(text.split())` (Python's whitespace set).
fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(py_isspace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
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
        assert_eq!(whitespace_clean("\u{2003}a\x1cb \t c\u{a0}"), "a b c");
    }

    #[test]
    fn lowercase_follows_python() {
        assert_eq!(py_lower("ΟΔΟΣ ΣΟΦΟΣ Σ ΑΣ' ΑΣ'Α"), "οδος σοφος σ ας' ασ'α");
        assert_eq!(py_lower("İstanbul ẞ"), "i\u{307}stanbul ß");
        // U+A7CB gained a lowercase mapping in Unicode 16; Python 3.11 (Unicode 14) keeps it.
        assert_eq!(py_lower("\u{A7CB}"), "\u{A7CB}");
    }
}
