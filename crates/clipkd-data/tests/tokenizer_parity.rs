//! Parity of the Rust CLIP tokenizer with open_clip 3.3.0 (`open_clip.tokenize`,
//! `SimpleTokenizer`) on the committed fixtures in `crates/clipkd-data/tests/fixtures/tokenizer/`, written by
//! `tools/make_tokenizer_fixtures.py` (see the README there for the sources of the texts).
//!
//! Token ids are integers: every comparison is exact (tolerance 0). The cleaned text
//! (ftfy + html.unescape + whitespace + lowercase) is compared exactly as well, so that a
//! difference in cleaning shows even where truncation at 77 tokens would hide it.
//!
//! Run: `cargo test -p clipkd-data --test tokenizer_parity -- --nocapture` (prints the counts).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clipkd_data::tokenizer::{Clean, DEFAULT_CONTEXT_LENGTH, EOT_TOKEN, Tokenizer};
use serde_json::Value;

fn fixture(name: &str) -> Vec<Value> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "tokenizer",
        name,
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{name} line {}: {e}", i + 1))
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id array")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).expect("a u32 id"))
        .collect()
}

fn trim_padding(mut row: Vec<u32>) -> Vec<u32> {
    while row.last() == Some(&0) {
        row.pop();
    }
    row
}

/// Texts on which the Rust tokenizer knowingly differs from open_clip, with the reason. Each
/// must still differ (so that a fix shows up and the list is kept honest).
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

#[test]
fn ids_and_cleaned_text_match_open_clip_on_every_fixture_text() {
    let rows = fixture("parity.jsonl");
    let tok = Tokenizer::new();
    let mut by_source: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches: Vec<String> = Vec::new();
    let mut truncated = 0;
    for row in &rows {
        let text = row["text"].as_str().expect("text");
        let src = row["src"].as_str().expect("src");
        *by_source.entry(src.to_string()).or_default() += 1;
        let want_ids = ids(&row["ids"]);
        let want_encode = match row.get("encode") {
            Some(e) => {
                truncated += 1;
                ids(e)
            }
            None => want_ids[1..want_ids.len() - 1].to_vec(),
        };
        let want_clean = row["clean"].as_str().expect("clean");

        let got_clean = Clean::Lower.apply(text);
        let got_encode = tok.encode(text);
        let got_row = tok.tokenize(text, DEFAULT_CONTEXT_LENGTH).unwrap();
        assert_eq!(got_row.len(), DEFAULT_CONTEXT_LENGTH);
        let got_ids = trim_padding(got_row);
        if got_clean != want_clean || got_encode != want_encode || got_ids != want_ids {
            mismatches.push(text.to_string());
            eprintln!(
                "MISMATCH [{src}] {text:?}\n  clean want {want_clean:?}\n  clean got  {got_clean:?}\n  ids want {want_ids:?}\n  ids got  {got_ids:?}"
            );
        }
    }
    println!(
        "tokenizer parity: {} texts, {truncated} longer than 77 tokens",
        rows.len()
    );
    for (src, n) in &by_source {
        println!("  {src}: {n}");
    }
    let known: Vec<&str> = KNOWN_DIFFERENCES.iter().map(|(t, _)| *t).collect();
    let unexpected: Vec<&String> = mismatches
        .iter()
        .filter(|m| !known.contains(&m.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} texts differ from open_clip: {unexpected:?}",
        unexpected.len()
    );
    for (text, why) in KNOWN_DIFFERENCES {
        assert!(
            mismatches.iter().any(|m| m == text),
            "known difference no longer differs ({why}): {text:?}"
        );
    }
    // The corpus must really be there: >= 1000 real image descriptions, plus the rest.
    assert!(
        by_source.get("cupl").copied().unwrap_or(0) >= 1000,
        "{by_source:?}"
    );
    assert!(rows.len() >= 2500, "only {} fixture texts", rows.len());
    assert!(
        truncated >= 10,
        "too few texts exercise truncation: {truncated}"
    );
}

#[test]
fn other_context_lengths_match_open_clip() {
    let rows = fixture("context_lengths.jsonl");
    let tok = Tokenizer::new();
    for row in &rows {
        let text = row["text"].as_str().expect("text");
        let cl = row["context_length"].as_u64().expect("context_length") as usize;
        let got = tok.tokenize(text, cl).unwrap();
        assert_eq!(got, ids(&row["ids"]), "context_length {cl}, text {text:?}");
        assert_eq!(
            *got.iter().rfind(|&&id| id != 0).expect("non-empty"),
            EOT_TOKEN
        );
    }
    assert_eq!(rows.len(), 28);
}

#[test]
fn whitespace_and_canonicalize_cleaning_match_open_clip() {
    let rows = fixture("clean_modes.jsonl");
    let lower = Tokenizer::new();
    let whitespace = lower.clone().with_clean(Clean::Whitespace);
    let canonicalize = lower.clone().with_clean(Clean::Canonicalize);
    let mut n = 0;
    for row in &rows {
        let text = row["text"].as_str().expect("text");
        let tok = match row["mode"].as_str().expect("mode") {
            "whitespace" => &whitespace,
            "canonicalize" => &canonicalize,
            other => panic!("unknown mode {other}"),
        };
        let got = trim_padding(tok.tokenize(text, DEFAULT_CONTEXT_LENGTH).unwrap());
        assert_eq!(
            got,
            ids(&row["ids"]),
            "mode {:?}, text {text:?}",
            tok.clean()
        );
        n += 1;
    }
    assert_eq!(n, 500);
}

#[test]
fn decode_matches_open_clip() {
    let rows = fixture("decode.jsonl");
    let tok = Tokenizer::new();
    for row in &rows {
        let got = tok.decode(&ids(&row["ids"]));
        assert_eq!(
            got,
            row["text"].as_str().expect("text"),
            "ids {}",
            row["ids"]
        );
    }
    assert!(rows.len() >= 250);
}

#[test]
fn batch_is_the_rows_of_single_calls_concatenated() {
    let tok = Tokenizer::new();
    let texts = [
        "a photo of a dog",
        "",
        "Ünïcödé &amp; ÃƒÂ©motions 😀",
        &"long ".repeat(90),
    ];
    let batch = tok.tokenize_batch(&texts, DEFAULT_CONTEXT_LENGTH).unwrap();
    assert_eq!(batch.len(), texts.len() * DEFAULT_CONTEXT_LENGTH);
    for (i, text) in texts.iter().enumerate() {
        let row = &batch[i * DEFAULT_CONTEXT_LENGTH..(i + 1) * DEFAULT_CONTEXT_LENGTH];
        assert_eq!(
            row,
            tok.tokenize(text, DEFAULT_CONTEXT_LENGTH)
                .unwrap()
                .as_slice(),
            "row {i}"
        );
    }
    // Owned strings work too.
    let owned: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        tok.tokenize_batch(&owned, DEFAULT_CONTEXT_LENGTH).unwrap(),
        batch
    );
}
