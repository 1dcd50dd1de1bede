//! open_clip's text cleaning (`basic_clean`, `whitespace_clean`, `canonicalize_text`) with
//! Python's `str` semantics for whitespace.

use super::ftfy::fix_text;
use super::html::html_unescape;
use super::unicode::{py_isspace, py_lower};

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
    fn whitespace_clean_splits_on_python_whitespace() {
        assert_eq!(whitespace_clean("\u{2003}a\x1cb \t c\u{a0}"), "a b c");
    }
}
