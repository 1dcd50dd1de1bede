//! The CLIP BPE tokenizer, token for token identical to open_clip 3.3.0's `open_clip.tokenize`
//! (`SimpleTokenizer`, OpenAI CLIP's tokenizer).
//!
//! The pipeline, as in open_clip:
//!
//! 1. **Clean** ([`Clean::Lower`] by default): ftfy 6.3.1's `fix_text` (ported in [`ftfy`]:
//!    mojibake repair, HTML entities, quotes, ligatures, widths, line breaks, control
//!    characters, NFC), Python's `html.unescape` twice ([`html_unescape`]), strip, collapse
//!    whitespace (Python's `str.split()` set), lowercase.
//! 2. **Pre-tokenize** with open_clip's regex
//!    `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    (case-insensitive, as Python's `regex.IGNORECASE` applies it).
//! 3. **Byte-level BPE** with the bundled 49 152-entry merge list
//!    (`assets/bpe_simple_vocab_16e6.txt.gz`, from open_clip, MIT), cached per word.
//! 4. **Frame**: `<start_of_text>` (49406) + ids + `<end_of_text>` (49407), truncated so the
//!    last kept token is `<end_of_text>`, zero-padded to the context length (77).
//!
//! ```
//! use clipkd_data::tokenizer::{Tokenizer, DEFAULT_CONTEXT_LENGTH, EOT_TOKEN, SOT_TOKEN};
//!
//! let tok = Tokenizer::new();
//! let ids = tok.tokenize("A photo of a cat.", DEFAULT_CONTEXT_LENGTH);
//! assert_eq!(ids.len(), 77);
//! assert_eq!(&ids[..7], &[SOT_TOKEN, 320, 1125, 539, 320, 2368, 269]);
//! assert_eq!(ids[7], EOT_TOKEN);
//! assert!(ids[8..].iter().all(|&id| id == 0));
//! assert_eq!(tok.decode(&ids[1..7]), "a photo of a cat . ");
//! ```
//!
//! # Known differences from Python
//!
//! * Unicode versions: the pre-tokenizer's `\p{L}`/`\p{N}` come from the `regex` crate
//!   (Unicode 16), lowercasing from Rust's `str::to_lowercase`, NFC from
//!   `unicode-normalization`; Python 3.11 uses Unicode 14 for `lower()` and NFC and the
//!   `regex` module its own tables. Only characters assigned after Unicode 14 can differ.
//! * ftfy's `fix_surrogates` has nothing to do: a Rust `&str` cannot contain lone surrogates.
//! * open_clip's optional `reduction_mask` strategies (random/shuffle/syntax masking instead
//!   of truncation) are not implemented; truncation is open_clip's default.

pub mod ftfy;

mod bpe;
mod clean;
mod ftfy_tables;
mod html;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, LazyLock, RwLock};

use regex::Regex;

pub use clean::Clean;
pub use html::html_unescape;

use crate::error::DataError;
use bpe::{EOT_TEXT, SOT_TEXT, Vocab};

/// The context length of every CLIP model: 77 tokens.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;
/// The size of the bundled vocabulary.
pub const VOCAB_SIZE: usize = 49408;
/// `<start_of_text>` in the bundled vocabulary.
pub const SOT_TOKEN: u32 = 49406;
/// `<end_of_text>` in the bundled vocabulary (the text tower pools at its position).
pub const EOT_TOKEN: u32 = 49407;
/// The padding id after `<end_of_text>`.
pub const PAD_TOKEN: u32 = 0;

/// open_clip's merges file, bundled (MIT, see `assets/README.md`).
const BUNDLED_MERGES_GZ: &[u8] = include_bytes!("../assets/bpe_simple_vocab_16e6.txt.gz");

/// Words kept in the BPE cache before it is emptied (bounds memory on endless streams).
const CACHE_CAPACITY: usize = 1 << 17;

/// open_clip's pre-tokenization regex. Python compiles it with `regex.IGNORECASE`, which only
/// changes what the literal alternatives match (`'ſ` matches `'s`) and takes U+0345 (which
/// case-folds to a letter) out of the punctuation class, so that U+0345 matches nothing.
static PRE_TOKENIZE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i:<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+")
        .expect("valid regex")
});

/// The shared state behind a [`Tokenizer`]: vocabulary and BPE cache.
#[derive(Debug)]
struct Inner {
    vocab: Vocab,
    cache: RwLock<HashMap<Box<str>, Box<[u32]>>>,
}

/// The bundled CLIP vocabulary, built on first use.
static BUNDLED: LazyLock<Arc<Inner>> = LazyLock::new(|| {
    let text = gunzip(BUNDLED_MERGES_GZ).expect("the bundled vocabulary is valid gzip");
    let vocab = Vocab::from_merges(&text, Path::new("assets/bpe_simple_vocab_16e6.txt.gz"))
        .expect("the bundled vocabulary is valid");
    assert_eq!(vocab.len(), VOCAB_SIZE, "bundled vocabulary size");
    Arc::new(Inner {
        vocab,
        cache: RwLock::new(HashMap::new()),
    })
});

fn gunzip(bytes: &[u8]) -> std::io::Result<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text)?;
    Ok(text)
}

/// The CLIP BPE tokenizer (open_clip's `SimpleTokenizer`).
///
/// Cheap to clone (the vocabulary and the word cache are shared behind an [`Arc`]) and safe to
/// use from many threads at once.
///
/// ```
/// use clipkd_data::tokenizer::Tokenizer;
///
/// let tok = Tokenizer::new();
/// let batch = tok.tokenize_batch(&["a dog", "a cat on a mat"], 8);
/// assert_eq!(batch.len(), 2 * 8);
/// assert_eq!(&batch[..4], &[49406, 320, 1929, 49407]);
/// ```
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
    clean: Clean,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokenizer {
    /// The tokenizer with the bundled CLIP vocabulary and open_clip's default cleaning
    /// ([`Clean::Lower`]). The vocabulary is decompressed once per process, on first use.
    pub fn new() -> Self {
        Self {
            inner: Arc::clone(&BUNDLED),
            clean: Clean::default(),
        }
    }

    /// A tokenizer with the merges file at `path` (open_clip's `bpe_path`): gzip-compressed or
    /// plain text, a header line, then one `left right` merge per line. open_clip reads at most
    /// 48 894 merges; the special tokens follow the last one.
    ///
    /// # Errors
    /// [`DataError::Io`] if the file cannot be read or decompressed, [`DataError::BpeMerges`]
    /// (with the line) if a line is not a pair of byte-level symbols.
    pub fn from_merges_file(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io_err)?;
        let text = if bytes.starts_with(&[0x1F, 0x8B]) {
            gunzip(&bytes).map_err(io_err)?
        } else {
            String::from_utf8(bytes)
                .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?
        };
        let vocab = Vocab::from_merges(&text, path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                vocab,
                cache: RwLock::new(HashMap::new()),
            }),
            clean: Clean::default(),
        })
    }

    /// The same tokenizer with another cleaning mode (open_clip's `clean=` argument).
    pub fn with_clean(mut self, clean: Clean) -> Self {
        self.clean = clean;
        self
    }

    /// The cleaning mode.
    pub fn clean(&self) -> Clean {
        self.clean
    }

    /// The number of token ids (49408 for the bundled vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab.len()
    }

    /// The id of `<start_of_text>`.
    pub fn sot_token(&self) -> u32 {
        self.inner.vocab.sot
    }

    /// The id of `<end_of_text>`.
    pub fn eot_token(&self) -> u32 {
        self.inner.vocab.eot
    }

    /// Cleans and encodes `text` into BPE ids, without `<start_of_text>`/`<end_of_text>` and
    /// without truncation (open_clip's `SimpleTokenizer.encode`).
    ///
    /// ```
    /// use clipkd_data::tokenizer::Tokenizer;
    /// let tok = Tokenizer::new();
    /// assert_eq!(tok.encode("Hello, World!"), vec![3306, 267, 1002, 256]);
    /// assert_eq!(tok.encode("  "), Vec::<u32>::new());
    /// ```
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = self.clean.apply(text);
        let mut ids = Vec::with_capacity(cleaned.len() / 3 + 1);
        for m in PRE_TOKENIZE.find_iter(&cleaned) {
            self.encode_word(m.as_str(), &mut ids);
        }
        ids
    }

    /// Appends the ids of one pre-token.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        // Only the exact special-token texts hit open_clip's pre-filled cache.
        if word == SOT_TEXT {
            out.push(self.sot_token());
            return;
        }
        if word == EOT_TEXT {
            out.push(self.eot_token());
            return;
        }
        let inner = &*self.inner;
        if let Some(ids) = inner
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(word)
        {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        inner.vocab.bpe(word.as_bytes(), out);
        let mut cache = inner.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(word.into(), out[start..].into());
    }

    /// Decodes ids back to text (open_clip's `SimpleTokenizer.decode`): the bytes of every id
    /// are joined, decoded as UTF-8 with U+FFFD for invalid sequences, and each end-of-word
    /// marker becomes a space. Special tokens and padding (id 0 is `!`) are decoded like any
    /// other id, so pass only the ids between `<start_of_text>` and `<end_of_text>` to get the
    /// text back. Ids outside the vocabulary (where Python raises `KeyError`) become U+FFFD.
    ///
    /// ```
    /// use clipkd_data::tokenizer::Tokenizer;
    /// let tok = Tokenizer::new();
    /// let ids = tok.encode("Café au lait");
    /// assert_eq!(tok.decode(&ids), "café au lait ");
    /// ```
    pub fn decode(&self, ids: &[u32]) -> String {
        let vocab = &self.inner.vocab;
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut out = String::new();
        for &id in ids {
            match vocab.bytes_of(id) {
                Some(b) => bytes.extend_from_slice(b),
                None => {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    bytes.clear();
                    out.push('\u{FFFD}');
                }
            }
        }
        out.push_str(&String::from_utf8_lossy(&bytes));
        out.replace("</w>", " ")
    }

    /// Tokenizes one text into exactly `context_length` ids: `<start_of_text>`, the BPE ids,
    /// `<end_of_text>`, then zeros. A text that is too long is cut so that `<end_of_text>` is
    /// still the last token (open_clip's `tokenize`).
    ///
    /// # Panics
    /// If `context_length` is 0 (open_clip asserts the same).
    ///
    /// ```
    /// use clipkd_data::tokenizer::{Tokenizer, EOT_TOKEN, SOT_TOKEN};
    /// let tok = Tokenizer::new();
    /// let ids = tok.tokenize("a very long caption that does not fit", 5);
    /// assert_eq!(ids, vec![SOT_TOKEN, 320, 1070, 1538, EOT_TOKEN]);
    /// ```
    pub fn tokenize(&self, text: &str, context_length: usize) -> Vec<u32> {
        let mut row = Vec::with_capacity(context_length);
        self.tokenize_into(text, context_length, &mut row);
        row
    }

    /// Tokenizes many texts into one row-major `texts.len() × context_length` buffer (open_clip's
    /// `tokenize(list)`, ready for a `[N, context_length]` integer tensor).
    ///
    /// # Panics
    /// If `context_length` is 0.
    pub fn tokenize_batch(&self, texts: &[impl AsRef<str>], context_length: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(texts.len() * context_length);
        for text in texts {
            self.tokenize_into(text.as_ref(), context_length, &mut out);
        }
        out
    }

    /// Appends one framed, truncated, padded row of `context_length` ids to `out`.
    fn tokenize_into(&self, text: &str, context_length: usize, out: &mut Vec<u32>) {
        assert!(context_length > 0, "context_length must be at least 1");
        let start = out.len();
        out.push(self.sot_token());
        let ids = self.encode(text);
        out.extend_from_slice(&ids);
        out.push(self.eot_token());
        if out.len() - start > context_length {
            out.truncate(start + context_length);
            *out.last_mut().expect("context_length > 0") = self.eot_token();
        }
        out.resize(start + context_length, PAD_TOKEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_vocab_layout() {
        let tok = Tokenizer::new();
        assert_eq!(tok.vocab_size(), VOCAB_SIZE);
        assert_eq!(tok.sot_token(), SOT_TOKEN);
        assert_eq!(tok.eot_token(), EOT_TOKEN);
        assert_eq!(
            tok.decode(&[SOT_TOKEN, EOT_TOKEN]),
            "<start_of_text><end_of_text>"
        );
        assert_eq!(tok.decode(&[0, 256]), "!! ");
        assert_eq!(tok.decode(&[0, VOCAB_SIZE as u32, 0]), "!\u{FFFD}!");
    }

    #[test]
    fn special_tokens_and_caching() {
        let tok = Tokenizer::new();
        assert_eq!(
            tok.encode("<start_of_text>x<end_of_text>"),
            vec![SOT_TOKEN, 343, EOT_TOKEN]
        );
        let first = tok.encode("antidisestablishmentarianism");
        let again = tok.encode("antidisestablishmentarianism");
        assert_eq!(first, again);
        assert!(first.len() > 1);
        assert!(
            tok.inner
                .cache
                .read()
                .unwrap()
                .contains_key("antidisestablishmentarianism")
        );
    }

    #[test]
    #[should_panic(expected = "context_length")]
    fn zero_context_length_panics() {
        Tokenizer::new().tokenize("x", 0);
    }
}
