//! A port of ftfy 6.3.1's `fix_text` with its default settings, the first step of open_clip's
//! text cleaning.
//!
//! Every step of `ftfy.fix_text` is here, in ftfy's order, repeated until the text stops
//! changing, on each line separately:
//!
//! | ftfy step | what it does |
//! | --- | --- |
//! | `unescape_html` | `&eacute;`, `&#x2019;`, all-caps `&EACUTE;` (only entities ending in `;`); turned off for this and all later lines once a line contains `<` |
//! | `fix_encoding` | mojibake repair: UTF-8 decoded as Latin-1, sloppy Windows-125x, ISO-8859-2, MacRoman or CP437 is re-encoded and decoded again, with ftfy's heuristic (`is_bad`), U+00A0 restoration, lossy-sequence replacement, CESU-8/Java UTF-8, embedded mojibake (`decode_inconsistent_utf8`), and Latin-1/Windows-1252 C1 repair |
//! | `fix_c1_controls` | U+0080–U+009F as Windows-1252 |
//! | `fix_latin_ligatures` | `ﬁ` → `fi`, `Ĳ` → `IJ`, … |
//! | `fix_character_width` | fullwidth/halfwidth forms and U+3000 → normal width |
//! | `uncurl_quotes` | `‘’‚‛ʼ` → `'`, `“”„‟` → `"` |
//! | `fix_line_breaks` | CRLF, CR, U+2028, U+2029, U+0085 → `\n` |
//! | `fix_surrogates` | nothing to do: a Rust `str` cannot hold surrogates |
//! | `remove_terminal_escapes` | ANSI `ESC[…m` sequences |
//! | `remove_control_chars` | C0 controls except `\t \n \f \r`, DEL, U+206A–U+206F, U+FEFF, U+FFF9–U+FFFC |
//! | NFC | Unicode canonical composition |
//!
//! The data (ftfy's regexes, character classes and codec tables) is generated from the Python
//! modules themselves by `tools/make_tokenizer_fixtures.py tables` (see `tables.rs`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use regex::bytes::Regex as BytesRegex;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use super::html::{ENTITIES, html_unescape};
use super::tables::{
    BADNESS_PATTERN, CHARMAPS, Charmap, PY_UNASSIGNED, UTF8_CONTINUATION, UTF8_CONTINUATION_STRICT,
    UTF8_FIRST_OF_2, UTF8_FIRST_OF_3, UTF8_FIRST_OF_4, WIDTH_MAP,
};
use super::unicode::in_ranges;

/// ftfy's `max_decode_length`: the longest segment (in characters) fixed at once.
const MAX_DECODE_LENGTH: usize = 1_000_000;

/// Fixes mojibake, HTML entities, curly quotes, ligatures, odd widths, line breaks and control
/// characters, and applies NFC: ftfy 6.3.1's `fix_text(text)` with its default configuration.
///
/// ```
/// use clipkd_data::tokenizer::ftfy::fix_text;
/// assert_eq!(fix_text("âœ” No problems"), "✔ No problems");
/// assert_eq!(fix_text("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"), "Broken text… it's flubberific!");
/// assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
/// assert_eq!(fix_text("schÃ¶n"), "schön");
/// ```
pub fn fix_text(text: &str) -> String {
    if is_plain_ascii(text) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if end > MAX_DECODE_LENGTH
            && let Some((i, _)) = rest[..end].char_indices().nth(MAX_DECODE_LENGTH)
        {
            end = i;
        }
        let segment = &rest[..end];
        // ftfy's "auto" HTML mode: a `<` means real HTML; from then on entities are kept.
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = &rest[end..];
    }
    out
}

/// ASCII text that no step of `fix_text` can change (no `&`, CR or removable control).
fn is_plain_ascii(text: &str) -> bool {
    text.bytes()
        .all(|b| b < 0x80 && b != b'&' && b != b'\r' && !is_removed_control(u32::from(b)))
}

/// ftfy's `fix_and_explain` loop for one segment.
fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = unescape_html(&text).into_owned();
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text).into_owned();
        text = map_chars(&text, ligature);
        text = map_chars(&text, width);
        text = map_chars(&text, uncurl);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text).into_owned();
        text.retain(|c| !is_removed_control(u32::from(c)));
        text = nfc(text);
        if text == orig {
            return text;
        }
    }
}

/// NFC as Python 3.11's `unicodedata` (Unicode 14) computes it. Characters unassigned in
/// Unicode 14 are starters without decomposition there, so they split the text into runs that
/// normalize independently and are themselves kept unchanged; for assigned characters the
/// crate's newer tables agree with Unicode 14 (decompositions and combining classes are
/// stable).
fn nfc(text: String) -> String {
    let new_char = |c: char| !c.is_ascii() && in_ranges(PY_UNASSIGNED, c);
    if !text.chars().any(new_char) {
        return if is_nfc_quick(text.chars()) == IsNormalized::Yes {
            text
        } else {
            text.nfc().collect()
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if new_char(c) {
            out.extend(text[start..i].nfc());
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    out.extend(text[start..].nfc());
    out
}

/// ftfy's `unescape_html`: decodes `&name;` entities (HTML5 names and all-caps variants of
/// lowercase names) and numeric references that end in `;`, leaving everything else alone.
fn unescape_html(text: &str) -> Cow<'_, str> {
    static ENTITY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid regex"));
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    ENTITY.replace_all(text, |caps: &regex::Captures<'_>| {
        let m = &caps[0];
        if let Some(v) = ENTITIES.ftfy.get(m) {
            v.clone()
        } else if m.starts_with("&#") {
            let decoded = html_unescape(m);
            if decoded.contains(';') {
                m.to_string()
            } else {
                decoded.into_owned()
            }
        } else {
            m.to_string()
        }
    })
}

/// Repairs mojibake: ftfy's `fix_encoding`, applied until the text stops changing.
///
/// ```
/// use clipkd_data::tokenizer::ftfy::fix_encoding;
/// assert_eq!(fix_encoding("cafÃ©"), "café");
/// assert_eq!(fix_encoding("donâ€™t"), "don’t"); // quotes are `fix_text`'s job
/// assert_eq!(fix_encoding("café"), "café");
/// ```
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        match fix_encoding_step(&text) {
            Some(fixed) if fixed != text => text = fixed,
            _ => return text,
        }
    }
}

/// Whether ftfy's heuristic thinks `text` contains mojibake (`ftfy.badness.is_bad`).
///
/// ```
/// use clipkd_data::tokenizer::ftfy::is_bad;
/// assert!(is_bad("cafÃ©"));
/// assert!(!is_bad("café"));
/// ```
pub fn is_bad(text: &str) -> bool {
    static BADNESS: LazyLock<Regex> = LazyLock::new(|| {
        regex::RegexBuilder::new(BADNESS_PATTERN)
            .size_limit(64 << 20)
            .build()
            .expect("valid regex")
    });
    BADNESS.is_match(text)
}

/// One step of ftfy's `_fix_encoding_one_step_and_explain`; `None` when nothing changes.
fn fix_encoding_step(text: &str) -> Option<String> {
    if text.is_ascii() || !is_bad(text) {
        return None;
    }
    let mut latin1_possible = false;
    for charmap in CHARMAPS {
        let Some(mut bytes) = encode_charmap(text, charmap) else {
            continue;
        };
        if charmap.name == "latin-1" {
            latin1_possible = true;
        }
        if charmap.name != "macroman" && altered_utf8().is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if charmap.sloppy {
            bytes = lossy_utf8()
                .replace_all(&bytes, "\u{FFFD}".as_bytes())
                .into_owned();
        }
        let decoded = if bytes.contains(&0xED) || bytes.contains(&0xC0) {
            decode_utf8_variants(&bytes)
        } else {
            String::from_utf8(bytes).ok()
        };
        if let Some(fixed) = decoded {
            return Some(fixed);
        }
    }
    if let Some(fixed) = decode_inconsistent_utf8(text)
        && fixed != text
    {
        return Some(fixed);
    }
    // Latin-1 text with C1 controls that Windows-1252 (strict) can decode.
    if latin1_possible {
        let mut fixed = String::with_capacity(text.len());
        let mut ok = true;
        for c in text.chars() {
            match u32::from(c) {
                0x81 | 0x8D | 0x8F | 0x90 | 0x9D => {
                    ok = false;
                    break;
                }
                cp @ 0x80..=0x9F => fixed.push(sloppy_1252(cp)),
                _ => fixed.push(c),
            }
        }
        if ok && fixed != text {
            return Some(fixed);
        }
    }
    if text.chars().any(|c| ('\u{80}'..='\u{9F}').contains(&c)) {
        return Some(fix_c1_controls(text).into_owned());
    }
    None
}

/// `text.encode(charmap)` when every character is in the charmap (ftfy's `possible_encoding`).
fn encode_charmap(text: &str, charmap: &Charmap) -> Option<Vec<u8>> {
    static REVERSE: LazyLock<Vec<HashMap<char, u8>>> = LazyLock::new(|| {
        CHARMAPS
            .iter()
            .map(|cm| {
                cm.high
                    .iter()
                    .enumerate()
                    .map(|(i, &cp)| {
                        (
                            char::from_u32(u32::from(cp)).expect("BMP code point"),
                            0x80 + i as u8,
                        )
                    })
                    .collect()
            })
            .collect()
    });
    let index = CHARMAPS
        .iter()
        .position(|cm| std::ptr::eq(cm, charmap))
        .expect("a CHARMAPS entry");
    let reverse = &REVERSE[index];
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let cp = u32::from(c);
        if cp < 0x80 {
            // The sloppy codecs use byte 0x1A for U+FFFD, so U+001A itself cannot be encoded.
            if cp == 0x1A && charmap.sloppy {
                return None;
            }
            out.push(cp as u8);
        } else if cp == 0xFFFD && charmap.sloppy {
            out.push(0x1A);
        } else {
            out.push(*reverse.get(&c)?);
        }
    }
    Some(out)
}

/// The Windows-1252 (sloppy) character of a C1 code point.
fn sloppy_1252(cp: u32) -> char {
    let cm = CHARMAPS
        .iter()
        .find(|cm| cm.name == "sloppy-windows-1252")
        .expect("in CHARMAPS");
    char::from_u32(u32::from(cm.high[(cp - 0x80) as usize])).expect("BMP code point")
}

/// ftfy's `fix_c1_controls`: every U+0080–U+009F decoded as sloppy Windows-1252.
fn fix_c1_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| ('\u{80}'..='\u{9F}').contains(&c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if ('\u{80}'..='\u{9F}').contains(&c) {
                    sloppy_1252(u32::from(c))
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// ftfy's `ALTERED_UTF8_RE`: UTF-8 sequences whose byte 0xA0 became a space.
fn altered_utf8() -> &'static BytesRegex {
    static RE: LazyLock<BytesRegex> = LazyLock::new(|| {
        BytesRegex::new(
            r"(?-u)[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ]",
        )
        .expect("valid regex")
    });
    &RE
}

/// ftfy's `LOSSY_UTF8_RE`: UTF-8 sequences that lost bytes to U+FFFD (byte 0x1A) or `?`.
fn lossy_utf8() -> &'static BytesRegex {
    static RE: LazyLock<BytesRegex> = LazyLock::new(|| {
        BytesRegex::new(
            r"(?-u)[\xc2-\xdf][\x1a]|[\xc2-\xc3][?]|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a",
        )
        .expect("valid regex")
    });
    &RE
}

/// ftfy's `restore_byte_a0`: puts back the 0xA0 bytes that became spaces.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    // A_GRAVE_WORD_RE: b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 ".
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xC3 && bytes.get(i + 1) == Some(&b' ') {
            let rest = &bytes[i + 2..];
            let keep = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|p| rest.starts_with(p));
            if !keep {
                out.extend_from_slice(b"\xc3\xa0 ");
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    altered_utf8()
        .replace_all(&out, |caps: &regex::bytes::Captures<'_>| {
            caps[0]
                .iter()
                .map(|&b| if b == b' ' { 0xA0 } else { b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// Python's `$` without MULTILINE: at the end, or before a final `\n`.
fn at_dollar(b: &[u8], i: usize) -> bool {
    i == b.len() || (i + 1 == b.len() && b[i] == b'\n')
}

/// Where ftfy's `SPECIAL_BYTES_RE` (Java null, CESU-8 or surrogate) first matches.
fn find_special(b: &[u8]) -> Option<usize> {
    (0..b.len()).find(|&p| match b[p] {
        0xC0 => b.get(p + 1) == Some(&0x80) || at_dollar(b, p + 1),
        0xED => {
            let first = b.get(p + 1).is_some_and(|x| (0xA0..=0xBF).contains(x))
                && (b.get(p + 2).is_some_and(|x| (0x80..=0xBF).contains(x)) || at_dollar(b, p + 2));
            first || at_dollar(b, p + 1)
        }
        _ => false,
    })
}

/// Whether ftfy's `CESU8_RE` matches at the start of `b` (which starts with 0xED).
fn cesu8_match(b: &[u8]) -> bool {
    const CLASSES: [(u8, u8); 5] = [
        (0xA0, 0xAF),
        (0x80, 0xBF),
        (0xED, 0xED),
        (0xB0, 0xBF),
        (0x80, 0xBF),
    ];
    fn go(b: &[u8], pos: usize, k: usize) -> bool {
        if k == CLASSES.len() {
            return true;
        }
        let (lo, hi) = CLASSES[k];
        (b.get(pos).is_some_and(|x| (lo..=hi).contains(x)) && go(b, pos + 1, k + 1))
            || (at_dollar(b, pos) && go(b, pos, k + 1))
    }
    b.first() == Some(&0xED) && go(b, 1, 0)
}

/// ftfy's `utf-8-variants` codec (strict): UTF-8 plus CESU-8 surrogate pairs and Java's
/// `C0 80` null. `None` where Python raises `UnicodeDecodeError`.
fn decode_utf8_variants(input: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(input.len());
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        match find_special(rest) {
            None => {
                out.push_str(std::str::from_utf8(rest).ok()?);
                pos = input.len();
            }
            Some(0) if rest[0] == 0xC0 => {
                if rest.len() < 2 {
                    return None;
                }
                out.push('\0');
                pos += 2;
            }
            Some(0) => {
                // Surrogates: only a complete CESU-8 pair decodes; anything else is an error.
                if rest.len() < 6 || !cesu8_match(rest) {
                    return None;
                }
                let cp = ((u32::from(rest[1]) & 0x0F) << 16)
                    + ((u32::from(rest[2]) & 0x3F) << 10)
                    + ((u32::from(rest[4]) & 0x0F) << 6)
                    + (u32::from(rest[5]) & 0x3F)
                    + 0x10000;
                out.push(char::from_u32(cp)?);
                pos += 6;
            }
            Some(cut) => {
                out.push_str(std::str::from_utf8(&rest[..cut]).ok()?);
                pos += cut;
            }
        }
    }
    Some(out)
}

/// ftfy's `UTF8_DETECTOR_RE` at char index `i`: the end (exclusive) of the match, if any.
fn utf8_detector_at(chars: &[(usize, char)], i: usize) -> Option<usize> {
    if i > 0 && in_ranges(UTF8_CONTINUATION_STRICT, chars[i - 1].1) {
        return None; // the negative lookbehind
    }
    let cont = |j: usize| {
        chars
            .get(j)
            .is_some_and(|&(_, c)| in_ranges(UTF8_CONTINUATION, c))
    };
    let mut j = i;
    while let Some(&(_, c)) = chars.get(j) {
        // The three lead sets are disjoint (checked by the generator), so one unit can match.
        let unit = if in_ranges(UTF8_FIRST_OF_2, c) {
            2
        } else if in_ranges(UTF8_FIRST_OF_3, c) {
            3
        } else if in_ranges(UTF8_FIRST_OF_4, c) {
            4
        } else {
            break;
        };
        if !(1..unit).all(|k| cont(j + k)) {
            break;
        }
        j += unit;
    }
    (j > i).then_some(j)
}

/// ftfy's `decode_inconsistent_utf8`: fixes UTF-8 mojibake embedded in otherwise fine text.
/// `None` when the detector finds nothing.
fn decode_inconsistent_utf8(text: &str) -> Option<String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut found = false;
    let mut i = 0;
    while i < chars.len() {
        let Some(end) = utf8_detector_at(&chars, i) else {
            i += 1;
            continue;
        };
        found = true;
        let start_b = chars[i].0;
        let end_b = chars.get(end).map_or(text.len(), |&(b, _)| b);
        let sub = &text[start_b..end_b];
        out.push_str(&text[last..start_b]);
        if end - i < chars.len() && is_bad(sub) {
            out.push_str(&fix_encoding(sub));
        } else {
            out.push_str(sub);
        }
        last = end_b;
        i = end;
    }
    if !found {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// Applies a per-character replacement, allocating only when something changes.
fn map_chars(text: &str, f: fn(char) -> Option<&'static str>) -> String {
    if text.is_ascii() || !text.chars().any(|c| f(c).is_some()) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    out
}

/// ftfy's `LIGATURES`.
fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// ftfy's `WIDTH_MAP`.
fn width(c: char) -> Option<&'static str> {
    let cp = u32::from(c);
    if cp != 0x3000 && !(0xFF01..=0xFFEF).contains(&cp) {
        return None;
    }
    WIDTH_MAP
        .binary_search_by_key(&cp, |&(k, _)| k)
        .ok()
        .map(|i| WIDTH_MAP[i].1)
}

/// ftfy's `uncurl_quotes`.
fn uncurl(c: char) -> Option<&'static str> {
    match c {
        '\u{02BC}' | '\u{2018}'..='\u{201B}' => Some("'"),
        '\u{201C}'..='\u{201F}' => Some("\""),
        _ => None,
    }
}

/// ftfy's `fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    if !text.contains(['\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        return text.to_string();
    }
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy's `remove_terminal_escapes` (Python's `\d` is any Unicode decimal digit, as in Rust).
fn remove_terminal_escapes(text: &str) -> Cow<'_, str> {
    static ANSI: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("valid regex"));
    if !text.contains('\x1b') {
        return Cow::Borrowed(text);
    }
    ANSI.replace_all(text, "")
}

/// ftfy's `CONTROL_CHARS`: the characters `remove_control_chars` deletes.
fn is_removed_control(cp: u32) -> bool {
    matches!(cp, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_docstring_examples() {
        // Examples from ftfy 6.3.1's own docstrings.
        assert_eq!(fix_text("âœ” No problems"), "✔ No problems");
        assert_eq!(fix_text("&macr;\\_(ã\u{83}\u{84})_/&macr;"), "¯\\_(ツ)_/¯");
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix_encoding("sÃ³"), "só");
        assert_eq!(fix_encoding("voilÃ le travail"), "voilà le travail");
        assert_eq!(fix_encoding("&ATILDE;&SUP3;"), "&ATILDE;&SUP3;");
        assert_eq!(unescape_html("P&EACUTE;REZ"), "PÉREZ");
        assert_eq!(unescape_html("BUNDESSTRA&SZLIG;E"), "BUNDESSTRASSE");
        assert_eq!(
            unescape_html("&ntilde; &Ntilde; &NTILDE; &nTILDE;"),
            "ñ Ñ Ñ &nTILDE;"
        );
        assert_eq!(unescape_html("this&not that"), "this&not that");
        assert_eq!(map_chars("ﬂuﬃeﬆ", ligature), "fluffiest");
        assert_eq!(map_chars("Ｕﾀｰﾝ", width), "Uターン");
        assert_eq!(
            fix_line_breaks("a\r\nb\rc\u{2028}d\u{85}e"),
            "a\nb\nc\nd\ne"
        );
        assert_eq!(
            remove_terminal_escapes("\x1b[36;44mI'm blue\x1b[0m"),
            "I'm blue"
        );
    }

    #[test]
    fn utf8_variants_codec() {
        assert_eq!(
            decode_utf8_variants(b"null \xc0\x80!").as_deref(),
            Some("null \0!")
        );
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x8d").as_deref(),
            Some("😍")
        );
        assert_eq!(decode_utf8_variants(b"\xed\xa0\xbd"), None);
        assert_eq!(
            decode_utf8_variants("한국어".as_bytes()).as_deref(),
            Some("한국어")
        );
        assert_eq!(decode_utf8_variants(b"\xc0"), None);
    }

    #[test]
    fn nfc_is_python_unicode_14() {
        assert_eq!(nfc("e\u{301} A\u{30A}".to_string()), "é Å");
        // A Unicode 16 composition (Tulu-Tigalari) that Python 3.11 does not know.
        assert_eq!(nfc("\u{11382}\u{113C9}".to_string()), "\u{11382}\u{113C9}");
        // Unassigned-in-14 characters split runs; the runs around them still compose.
        assert_eq!(
            nfc("e\u{301}\u{11382}\u{301}o\u{308}".to_string()),
            "é\u{11382}\u{301}ö"
        );
    }

    #[test]
    fn html_mode_turns_off_after_a_less_than_sign() {
        assert_eq!(
            fix_text("a &amp; b\n<p> &amp;\n&amp;"),
            "a & b\n<p> &amp;\n&amp;"
        );
    }
}
