//! Shard specifications: `::`-separated sources, brace patterns as Python's `braceexpand`,
//! directories and globs, expanded into shard files.

use std::path::PathBuf;

use crate::DataError;

/// Expands a shard specification into shard files:
/// - several specifications separated by `::` (open_clip's multi-source syntax), concatenated;
/// - brace patterns as Python's `braceexpand` (webdataset's): `{000000..000123}` (zero padded
///   to the wider bound when a bound has a leading zero), `{0..10..2}` with a step,
///   `{a..e}` letters, `{x,y,z}` alternatives, nested braces, `\{` for a literal brace;
/// - a directory: every `*.tar` in it, sorted;
/// - a glob (`*`, `?`, `[..]`): the matching files, sorted.
///
/// A concrete path is kept whether or not it exists (a missing shard is skipped and counted
/// when read) but a warning is logged. Errors: an unbalanced brace, a glob or directory that
/// matches nothing, or an empty result.
pub fn expand_shards(spec: &str) -> Result<Vec<PathBuf>, DataError> {
    let err = |what: String| DataError::Shards {
        pattern: spec.to_string(),
        what,
    };
    let mut out = Vec::new();
    for part in spec.split("::").map(str::trim).filter(|p| !p.is_empty()) {
        for item in expand_braces(part)? {
            let path = PathBuf::from(&item);
            if path.is_dir() {
                let mut tars: Vec<PathBuf> = std::fs::read_dir(&path)
                    .map_err(|source| DataError::Io {
                        path: path.clone(),
                        source,
                    })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"))
                    })
                    .collect();
                if tars.is_empty() {
                    return Err(err(format!("no .tar file in the directory {item}")));
                }
                tars.sort();
                out.extend(tars);
            } else if item.contains(['*', '?', '[']) {
                let paths =
                    glob::glob(&item).map_err(|e| err(format!("invalid glob `{item}`: {e}")))?;
                let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                if matched.is_empty() {
                    return Err(err(format!("the glob `{item}` matches no file")));
                }
                matched.sort();
                out.extend(matched);
            } else {
                if !path.exists() {
                    log::warn!("webdataset shard {item} does not exist (it will be skipped)");
                }
                out.push(path);
            }
        }
    }
    if out.is_empty() {
        return Err(err("no shard".into()));
    }
    Ok(out)
}

/// Python `braceexpand` of one pattern (see [`expand_shards`]).
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, DataError> {
    let chars: Vec<char> = pattern.chars().collect();
    expand_chars(&chars, pattern)
}

fn expand_chars(chars: &[char], whole: &str) -> Result<Vec<String>, DataError> {
    let err = |what: String| DataError::Shards {
        pattern: whole.to_string(),
        what,
    };
    // The first unescaped `{` and its matching `}`.
    let mut open = None;
    let mut depth = 0usize;
    let mut i = 0;
    let mut close = None;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            '}' => return Err(err(format!("unbalanced `}}` at character {i}"))),
            _ => {}
        }
        i += 1;
    }
    let (Some(open), Some(close)) = (open, close) else {
        if open.is_some() {
            return Err(err("unbalanced `{`".into()));
        }
        return Ok(vec![unescape(chars)]);
    };
    let prefix = unescape(&chars[..open]);
    let inner = &chars[open + 1..close];
    let alternatives: Vec<String> = match split_top_level(inner) {
        parts if parts.len() > 1 => {
            let mut v = Vec::new();
            for p in parts {
                v.extend(expand_chars(p, whole)?);
            }
            v
        }
        _ => {
            let text: String = inner.iter().collect();
            match sequence(&text) {
                Some(seq) => seq,
                // `{x}` without a comma or a range stays literal, as braceexpand.
                None => expand_chars(inner, whole)?
                    .into_iter()
                    .map(|s| format!("{{{s}}}"))
                    .collect(),
            }
        }
    };
    let suffixes = expand_chars(&chars[close + 1..], whole)?;
    let mut out = Vec::with_capacity(alternatives.len() * suffixes.len());
    for a in &alternatives {
        for s in &suffixes {
            out.push(format!("{prefix}{a}{s}"));
        }
    }
    Ok(out)
}

/// Splits brace contents at top-level commas.
fn split_top_level(chars: &[char]) -> Vec<&[char]> {
    let mut parts = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0usize, 0usize);
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&chars[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&chars[start..]);
    parts
}

/// `a..b` or `a..b..step` over integers (zero padded when a bound has a leading zero) or
/// single letters, both directions; `None` when `text` is not a sequence.
fn sequence(text: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = text.split("..").collect();
    if parts.len() != 2 && parts.len() != 3 {
        return None;
    }
    let step: i64 = match parts.get(2) {
        Some(s) => s.parse::<i64>().ok()?.abs().max(1),
        None => 1,
    };
    let (a, b) = (parts[0], parts[1]);
    if let (Ok(x), Ok(y)) = (a.parse::<i64>(), b.parse::<i64>()) {
        let padded = |s: &str| {
            let digits = s.trim_start_matches('-');
            digits.len() > 1 && digits.starts_with('0')
        };
        let width = if padded(a) || padded(b) {
            a.len().max(b.len())
        } else {
            0
        };
        let values: Vec<i64> = if x <= y {
            (x..=y).step_by(step as usize).collect()
        } else {
            (y..=x).rev().step_by(step as usize).collect()
        };
        return Some(
            values
                .into_iter()
                .map(|v| {
                    if v < 0 {
                        format!("-{:0w$}", -v, w = width.saturating_sub(1))
                    } else {
                        format!("{v:0width$}")
                    }
                })
                .collect(),
        );
    }
    let (mut ca, mut cb) = (a.chars(), b.chars());
    let (Some(x), None, Some(y), None) = (ca.next(), ca.next(), cb.next(), cb.next()) else {
        return None;
    };
    if !(x.is_ascii_alphabetic() && y.is_ascii_alphabetic()) {
        return None;
    }
    let (x, y) = (x as u8, y as u8);
    let values: Vec<u8> = if x <= y {
        (x..=y).step_by(step as usize).collect()
    } else {
        (y..=x).rev().step_by(step as usize).collect()
    };
    Some(
        values
            .into_iter()
            .map(|c| (c as char).to_string())
            .collect(),
    )
}

/// Removes the backslash of escaped characters.
fn unescape(chars: &[char]) -> String {
    let mut s = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            i += 1;
        }
        s.push(chars[i]);
        i += 1;
    }
    s
}
