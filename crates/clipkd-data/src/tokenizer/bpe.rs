//! CLIP's byte-level BPE: the vocabulary built from a merges file, and the merge loop.
//!
//! A port of open_clip's `SimpleTokenizer.__init__`/`bpe` (itself OpenAI CLIP's): every UTF-8
//! byte of a pre-token is one initial symbol (the 256 "byte characters" of `bytes_to_unicode`),
//! the last one carries the end-of-word marker `</w>`, and adjacent pairs are merged, lowest
//! merge rank first, until no listed pair is left.

use std::collections::HashMap;
use std::path::Path;

use crate::error::DataError;

/// The number of merge lines open_clip reads: `merges[1:49152-256-2+1]`.
const MAX_MERGES: usize = 49152 - 256 - 2;

/// The end-of-word marker appended to the last symbol of every pre-token.
const END_OF_WORD: &str = "</w>";

/// The start-of-text special token's text.
pub(super) const SOT_TEXT: &str = "<start_of_text>";
/// The end-of-text special token's text.
pub(super) const EOT_TEXT: &str = "<end_of_text>";

/// GPT-2/CLIP `bytes_to_unicode`: the byte order of the first 256 vocabulary entries and the
/// printable character that stands for each byte in the merges file.
fn bytes_to_unicode() -> ([u8; 256], [char; 256]) {
    let mut bs: Vec<u8> = (b'!'..=b'~')
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs: Vec<u32> = bs.iter().map(|&b| u32::from(b)).collect();
    let mut n = 0;
    for b in 0..=255u8 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut order = [0u8; 256];
    let mut chars = ['\0'; 256];
    for (i, (b, c)) in bs.into_iter().zip(cs).enumerate() {
        order[i] = b;
        chars[i] = char::from_u32(c).expect("bytes_to_unicode yields valid chars");
    }
    (order, chars)
}

/// A BPE vocabulary: ids, merge ranks and the bytes each id stands for.
#[derive(Debug)]
pub(super) struct Vocab {
    /// The vocabulary id of each byte (without `</w>`); add 256 for the `</w>` form.
    byte_id: [u32; 256],
    /// `(left id, right id)` to `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The UTF-8 bytes each id decodes to (`</w>` kept as its 4 ASCII bytes).
    id_bytes: Vec<Box<[u8]>>,
    /// `<start_of_text>`.
    pub(super) sot: u32,
    /// `<end_of_text>`.
    pub(super) eot: u32,
}

impl Vocab {
    /// Builds the vocabulary from the text of a merges file (first line a header, then one
    /// `left right` pair per line), exactly as open_clip does. `path` only names the source in
    /// errors.
    pub(super) fn from_merges(text: &str, path: &Path) -> Result<Self, DataError> {
        let (order, chars) = bytes_to_unicode();
        let mut byte_of_char: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, c) in order.iter().zip(chars.iter()) {
            byte_of_char.insert(*c, *b);
        }
        let mut byte_id = [0u32; 256];
        for (i, &b) in order.iter().enumerate() {
            byte_id[usize::from(b)] = i as u32;
        }

        // Vocabulary strings in id order: bytes, bytes + </w>, one per merge, then specials.
        let mut strings: Vec<String> = Vec::with_capacity(MAX_MERGES + 514);
        strings.extend(chars.iter().map(|c| c.to_string()));
        strings.extend(chars.iter().map(|c| format!("{c}{END_OF_WORD}")));
        let mut pairs: Vec<(&str, &str, usize)> = Vec::with_capacity(MAX_MERGES);
        for (index, line) in text.split('\n').enumerate().skip(1).take(MAX_MERGES) {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(left), Some(right), None) => {
                    strings.push(format!("{left}{right}"));
                    pairs.push((left, right, index + 1));
                }
                // An empty line (e.g. the file's final newline when it has fewer merges than
                // CLIP's) becomes an empty vocabulary entry in open_clip: keep its id.
                (None, _, _) => strings.push(String::new()),
                _ => {
                    return Err(DataError::BpeMerges {
                        path: path.to_path_buf(),
                        line: index + 1,
                        what: format!("expected two space-separated symbols, found {line:?}"),
                    });
                }
            }
        }
        if pairs.is_empty() {
            return Err(DataError::BpeMerges {
                path: path.to_path_buf(),
                line: 1,
                what: "no merges after the header line".into(),
            });
        }
        strings.push(SOT_TEXT.to_string());
        strings.push(EOT_TEXT.to_string());

        // Python's `dict(zip(vocab, range(len(vocab))))`: a repeated string keeps its last id.
        let mut encoder: HashMap<&str, u32> = HashMap::with_capacity(strings.len());
        for (id, s) in strings.iter().enumerate() {
            encoder.insert(s.as_str(), id as u32);
        }
        // `dict(zip(merges, range(len(merges))))`: a repeated pair keeps its last rank. A pair
        // whose halves are not vocabulary strings can never occur in a word and is dropped.
        let mut merges = HashMap::with_capacity(pairs.len());
        for (rank, (left, right, _line)) in pairs.iter().enumerate() {
            let merged = encoder[format!("{left}{right}").as_str()];
            if let (Some(&l), Some(&r)) = (encoder.get(left), encoder.get(right)) {
                merges.insert((l, r), (rank as u32, merged));
            }
        }

        let mut id_bytes = Vec::with_capacity(strings.len());
        for (id, s) in strings.iter().enumerate() {
            let is_special = id + 2 >= strings.len();
            let bytes: Vec<u8> = if is_special {
                s.as_bytes().to_vec()
            } else {
                let (body, eow) = match s.strip_suffix(END_OF_WORD) {
                    Some(body) => (body, true),
                    None => (s.as_str(), false),
                };
                let mut out = Vec::with_capacity(body.len() + 4);
                for c in body.chars() {
                    match byte_of_char.get(&c) {
                        Some(&b) => out.push(b),
                        None => {
                            let line = id.saturating_sub(512) + 2;
                            return Err(DataError::BpeMerges {
                                path: path.to_path_buf(),
                                line,
                                what: format!(
                                    "symbol {s:?} has the character {c:?}, which is not one of \
                                     the 256 byte characters"
                                ),
                            });
                        }
                    }
                }
                if eow {
                    out.extend_from_slice(END_OF_WORD.as_bytes());
                }
                out
            };
            id_bytes.push(bytes.into_boxed_slice());
        }

        let n = strings.len() as u32;
        Ok(Self {
            byte_id,
            merges,
            id_bytes,
            sot: n - 2,
            eot: n - 1,
        })
    }

    /// The number of ids (49408 for CLIP's vocabulary).
    pub(super) fn len(&self) -> usize {
        self.id_bytes.len()
    }

    /// The bytes that `id` stands for, `None` when it is out of range.
    pub(super) fn bytes_of(&self, id: u32) -> Option<&[u8]> {
        self.id_bytes.get(id as usize).map(|b| &b[..])
    }

    /// Runs BPE on one pre-token (its UTF-8 bytes, at least one) and appends the ids to `out`.
    pub(super) fn bpe(&self, token: &[u8], out: &mut Vec<u32>) {
        debug_assert!(!token.is_empty());
        let mut word: Vec<u32> = token
            .iter()
            .map(|&b| self.byte_id[usize::from(b)])
            .collect();
        if let Some(last) = word.last_mut() {
            *last += 256; // the `</w>` form of the last byte
        }
        let mut next = Vec::with_capacity(word.len());
        while word.len() > 1 {
            // The adjacent pair with the lowest rank (ranks are unique).
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.merges
                        .get(&(w[0], w[1]))
                        .map(|&(rank, id)| (rank, w[0], w[1], id))
                })
                .min_by_key(|m| m.0);
            let Some((_, first, second, merged)) = best else {
                break;
            };
            // Merge every occurrence, left to right, as open_clip does.
            next.clear();
            let mut i = 0;
            while i < word.len() {
                if word[i] == first && i + 1 < word.len() && word[i + 1] == second {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            std::mem::swap(&mut word, &mut next);
        }
        out.extend_from_slice(&word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_unicode_is_a_bijection_onto_printable_chars() {
        let (order, chars) = bytes_to_unicode();
        let mut seen = [false; 256];
        for b in order {
            assert!(!seen[usize::from(b)]);
            seen[usize::from(b)] = true;
        }
        assert_eq!(order[0], b'!');
        assert_eq!(chars[0], '!');
        // Byte 0 is the first non-printable byte: it maps to U+0100.
        let zero = order.iter().position(|&b| b == 0).unwrap();
        assert_eq!(chars[zero], '\u{100}');
        // The space byte maps to U+0120 ('Ġ').
        let space = order.iter().position(|&b| b == b' ').unwrap();
        assert_eq!(chars[space], '\u{120}');
        assert!(chars.iter().all(|c| !c.is_whitespace()));
    }

    #[test]
    fn tiny_vocab_merges_lowest_rank_first() {
        let text = "#version: test\nl o\nlo w</w>\nh e\nhe l";
        let v = Vocab::from_merges(text, Path::new("tiny")).unwrap();
        assert_eq!(v.len(), 512 + 4 + 2);
        assert_eq!((v.sot, v.eot), (516, 517));
        let mut out = Vec::new();
        v.bpe(b"low", &mut out);
        assert_eq!(out, vec![513]); // "l o" (512) then "lo w</w>" (513)
        out.clear();
        v.bpe(b"hello", &mut out);
        // "l o" cannot apply to "l" + "o</w>"; "h e" (514) then "he l" (515), then "l", "o</w>".
        let l = v.byte_id[usize::from(b'l')];
        let o_eow = v.byte_id[usize::from(b'o')] + 256;
        assert_eq!(out, vec![515, l, o_eow]);
        assert_eq!(v.bytes_of(515).unwrap(), b"hel");
        assert_eq!(v.bytes_of(513).unwrap(), b"low</w>");
        assert_eq!(v.bytes_of(516).unwrap(), b"<start_of_text>");
        assert!(v.bytes_of(518).is_none());
    }

    #[test]
    fn malformed_merges_name_the_line() {
        let err = Vocab::from_merges("#h\na b\nc d e\n", Path::new("m.txt")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("m.txt") && msg.contains("line 3"), "{msg}");
        let err = Vocab::from_merges("#h\n", Path::new("m.txt")).unwrap_err();
        assert!(err.to_string().contains("no merges"), "{err}");
        // A trailing newline keeps an (empty) id, as in open_clip.
        let v = Vocab::from_merges("#h\na b\n", Path::new("m.txt")).unwrap();
        assert_eq!((v.len(), v.sot), (512 + 2 + 2, 514));
    }
}
