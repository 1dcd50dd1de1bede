//! open_clip's text cleaning (`basic_clean`, `whitespace_clean`, `canonicalize_text`) with
//! Python's `str` semantics for whitespace.

use super::ftfy::fix_text;
use super::ftfy_tables::PY_SPACE;
use super::html::html_unescape;

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
            Clean::Lower => whitespace_clean(&basic).to_lowercase(),
            Clean::Whitespace => whitespace_clean(&basic),
            Clean::Canonicalize => {
                let no_punct: String = basic
                    .chars()
                    .map(|c| if c == '_' { ' ' } else { c })
                    .filter(|c| !c.is_ascii_punctuation())
                    .collect();
                whitespace_clean(&no_punct.to_lowercase())
            }
        }
    }
}

/// Python's `str.isspace()` for one character.
pub(super) fn py_isspace(c: char) -> bool {
    let cp = u32::from(c);
    if cp < 0x80 {
        return matches!(cp, 0x09..=0x0D | 0x1C..=0x20);
    }
    PY_SPACE.iter().any(|&(lo, hi)| (lo..=hi).contains(&cp))
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
}
