//! The tokenizer's API contract: framing, truncation, padding, decode round trips, custom
//! merges files and their errors, and sharing across threads.

use std::path::PathBuf;

use clipkd_data::DataError;
use clipkd_data::tokenizer::{
    Clean, DEFAULT_CONTEXT_LENGTH, EOT_TOKEN, PAD_TOKEN, SOT_TOKEN, Tokenizer, VOCAB_SIZE,
};

/// A fresh file path in the system temp folder (removed by the caller).
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("clipkd-tokenizer-{}-{name}", std::process::id()))
}

#[test]
fn rows_are_sot_ids_eot_then_padding() {
    let tok = Tokenizer::new();
    let text = "a photo of a golden retriever";
    let ids = tok.encode(text);
    let row = tok.tokenize(text, DEFAULT_CONTEXT_LENGTH).unwrap();
    assert_eq!(row.len(), DEFAULT_CONTEXT_LENGTH);
    assert_eq!(row[0], SOT_TOKEN);
    assert_eq!(&row[1..=ids.len()], ids.as_slice());
    assert_eq!(row[ids.len() + 1], EOT_TOKEN);
    assert!(row[ids.len() + 2..].iter().all(|&id| id == PAD_TOKEN));
}

#[test]
fn empty_and_whitespace_texts_are_sot_eot() {
    let tok = Tokenizer::new();
    for text in ["", "   ", "\t\n\u{a0}\u{3000}", "\u{feff}\x1c "] {
        assert_eq!(
            tok.tokenize(text, 4).unwrap(),
            vec![SOT_TOKEN, EOT_TOKEN, 0, 0],
            "text {text:?}"
        );
    }
    // U+0085 (NEL) is whitespace to Python, but ftfy first reads it as Windows-1252 "…" (959).
    assert_eq!(
        tok.tokenize("\u{85}", 4).unwrap(),
        vec![SOT_TOKEN, 959, EOT_TOKEN, 0]
    );
    // U+FEFF is removed by ftfy, but U+200B is not whitespace to Python: it stays, as one token
    // (open_clip 3.3.0 gives [49406, 9844, 49407, 0]).
    assert_eq!(
        tok.tokenize("\u{200b}\u{feff}", 4).unwrap(),
        vec![SOT_TOKEN, 9844, EOT_TOKEN, 0]
    );
}

#[test]
fn context_length_zero_is_an_error_naming_the_value() {
    let tok = Tokenizer::new();
    for result in [
        tok.tokenize("a photo of a cat", 0),
        tok.tokenize_batch(&["a dog", "a cat"], 0),
        tok.tokenize_batch(&[] as &[&str], 0),
    ] {
        let error = result.unwrap_err();
        assert!(
            matches!(error, DataError::ContextLength { context_length: 0 }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("context_length") && message.contains("got 0"),
            "{message}"
        );
    }
    // One position holds only <end_of_text>, as in open_clip.
    assert_eq!(
        tok.tokenize_batch(&["a dog", ""], 1).unwrap(),
        vec![EOT_TOKEN, EOT_TOKEN]
    );
}

#[test]
fn truncation_keeps_eot_last_for_every_context_length() {
    let tok = Tokenizer::new();
    let text = "one two three four five six seven eight nine ten";
    let ids = tok.encode(text);
    assert_eq!(ids.len(), 10);
    for cl in 1..=14 {
        let row = tok.tokenize(text, cl).unwrap();
        assert_eq!(row.len(), cl);
        let used = (ids.len() + 2).min(cl);
        assert_eq!(row[used - 1], EOT_TOKEN, "context {cl}");
        if cl >= 2 {
            assert_eq!(row[0], SOT_TOKEN, "context {cl}");
            assert_eq!(&row[1..used - 1], &ids[..used - 2], "context {cl}");
        }
        assert!(
            row[used..].iter().all(|&id| id == PAD_TOKEN),
            "context {cl}"
        );
    }
}

#[test]
fn decode_round_trips_cleaned_text() {
    let tok = Tokenizer::new();
    for text in [
        "A photo of a cat.",
        "two dogs playing in the snow, one with a red ball",
        "日本語のキャプション 😀 naïve café",
        "it's 5 o'clock!!",
    ] {
        let ids = tok.encode(text);
        let decoded = tok.decode(&ids);
        // Each word gets a trailing space; punctuation runs become separate words.
        let squashed: String = decoded.split_whitespace().collect();
        let expected: String = Clean::Lower.apply(text).split_whitespace().collect();
        assert_eq!(squashed, expected, "text {text:?} decoded {decoded:?}");
        // Encoding the decoded text again gives the same ids.
        assert_eq!(tok.encode(&decoded), ids, "text {text:?}");
    }
}

#[test]
fn custom_merges_files_gz_and_plain() {
    let gz = temp_path("bundled.txt.gz");
    std::fs::write(
        &gz,
        include_bytes!("../assets/bpe_simple_vocab_16e6.txt.gz"),
    )
    .unwrap();
    let from_gz = Tokenizer::from_merges_file(&gz).unwrap();
    std::fs::remove_file(&gz).unwrap();
    assert_eq!(from_gz.vocab_size(), VOCAB_SIZE);
    let text = "A bicycle replica with a clock as the front wheel.";
    assert_eq!(
        from_gz.tokenize(text, 77).unwrap(),
        Tokenizer::new().tokenize(text, 77).unwrap()
    );

    // A tiny plain-text vocabulary: 512 byte symbols + 3 merges + 2 specials.
    let plain = temp_path("tiny.txt");
    std::fs::write(&plain, "#version: 0.2\nc a\nca t</w>\nd o\n").unwrap();
    let tiny = Tokenizer::from_merges_file(&plain).unwrap();
    std::fs::remove_file(&plain).unwrap();
    // The final newline is an empty merge line, which keeps an id as in open_clip.
    assert_eq!(tiny.vocab_size(), 512 + 4 + 2);
    assert_eq!((tiny.sot_token(), tiny.eot_token()), (516, 517));
    assert_eq!(tiny.encode("cat"), vec![513]);
    assert_eq!(tiny.tokenize("cat", 4).unwrap(), vec![516, 513, 517, 0]);
    assert_eq!(tiny.decode(&[513]), "cat ");
}

#[test]
fn malformed_or_missing_merges_files_are_errors_that_say_where() {
    let bad = temp_path("bad.txt");
    std::fs::write(&bad, "#version: 0.2\nc a\nthree parts here\n").unwrap();
    let err = Tokenizer::from_merges_file(&bad).unwrap_err();
    std::fs::remove_file(&bad).unwrap();
    assert!(
        matches!(err, DataError::BpeMerges { line: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad.txt"), "{err}");

    let missing = temp_path("missing.txt.gz");
    let err = Tokenizer::from_merges_file(&missing).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.txt.gz"), "{err}");
}

#[test]
fn shared_across_threads_gives_the_same_rows() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Tokenizer>();

    let texts: Vec<String> = (0..200)
        .map(|i| format!("caption number {i}: a scene with {} objects", i * 7 % 13))
        .collect();
    let reference = Tokenizer::new()
        .tokenize_batch(&texts, DEFAULT_CONTEXT_LENGTH)
        .unwrap();
    let tok = Tokenizer::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let tok = tok.clone();
                let texts = &texts;
                s.spawn(move || tok.tokenize_batch(texts, DEFAULT_CONTEXT_LENGTH).unwrap())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), reference);
        }
    });
}
