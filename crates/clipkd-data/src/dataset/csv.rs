//! CLIP-KD's CSV training data.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ::csv::Position;

use super::{
    ImageSource, IndexedDataset, SampleRef, SkipReason, SkipReport, Skipped, warn_skipped,
};
use crate::DataError;

/// How to read a CSV file (open_clip's `--csv-separator`, `--csv-img-key`,
/// `--csv-caption-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvConfig {
    /// The caption column (`title`).
    pub caption_key: String,
    /// The image path column (`filepath`).
    pub image_key: String,
    /// The field separator (`\t`).
    pub separator: u8,
    /// Whether `"` quotes fields (a quoted field may hold separators, newlines and `""` for a
    /// quote), as pandas' `read_csv` does by default. Turn it off for files whose captions
    /// contain stray quotes.
    pub quoting: bool,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            caption_key: "title".into(),
            image_key: "filepath".into(),
            separator: b'\t',
            quoting: true,
        }
    }
}

impl CsvConfig {
    /// Sets the caption and image columns.
    pub fn with_keys(
        mut self,
        caption_key: impl Into<String>,
        image_key: impl Into<String>,
    ) -> Self {
        self.caption_key = caption_key.into();
        self.image_key = image_key.into();
        self
    }

    /// Sets the separator.
    pub fn with_separator(mut self, separator: u8) -> Self {
        self.separator = separator;
        self
    }

    /// Turns quoting on or off.
    pub fn with_quoting(mut self, quoting: bool) -> Self {
        self.quoting = quoting;
        self
    }
}

/// One CSV file and the folder its relative image paths are relative to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvSource {
    /// The CSV file.
    pub path: PathBuf,
    /// The data root joined to relative image paths (`None`: paths are used as written, i.e.
    /// relative to the working directory). Absolute image paths ignore it, as `os.path.join`.
    pub root: Option<PathBuf>,
}

impl CsvSource {
    /// A CSV file with a data root.
    pub fn new(path: impl Into<PathBuf>, root: Option<PathBuf>) -> Self {
        CsvSource {
            path: path.into(),
            root,
        }
    }

    /// Pairs CLIP-KD's comma-separated lists: `files` (`a.csv,b.csv`) with `roots`
    /// (`rootA,rootB`). One root serves every file; no root leaves paths as written; otherwise
    /// the counts must match. Empty items are an error.
    pub fn from_lists(files: &str, roots: Option<&str>) -> Result<Vec<CsvSource>, DataError> {
        let split = |s: &str, what: &str| -> Result<Vec<PathBuf>, DataError> {
            s.split(',')
                .map(|p| {
                    let p = p.trim();
                    if p.is_empty() {
                        Err(DataError::DatasetSpec {
                            what: format!("empty item in the {what} list `{s}`"),
                        })
                    } else {
                        Ok(PathBuf::from(p))
                    }
                })
                .collect()
        };
        let files = split(files, "CSV file")?;
        let roots = match roots {
            None => vec![None; files.len()],
            Some(r) => {
                let r = split(r, "data root")?;
                if r.len() == 1 {
                    vec![Some(r[0].clone()); files.len()]
                } else if r.len() == files.len() {
                    r.into_iter().map(Some).collect()
                } else {
                    return Err(DataError::DatasetSpec {
                        what: format!(
                            "{} CSV files but {} data roots: give one root per file, or one for all",
                            files.len(),
                            r.len()
                        ),
                    });
                }
            }
        };
        Ok(files
            .into_iter()
            .zip(roots)
            .map(|(path, root)| CsvSource { path, root })
            .collect())
    }
}

/// A row: caption and image path as ranges of the text arena, and the CSV it came from.
#[derive(Debug, Clone, Copy)]
struct Row {
    start: u64,
    caption_len: u32,
    path_len: u32,
    source: u32,
}

/// Image-caption pairs from one or more CSV files (CLIP-KD's `CsvDataset`, concatenated as its
/// `ConcatDataset`).
///
/// # Format
/// A header row names the columns; the separator is a tab by default; `"` quotes fields (see
/// [`CsvConfig::quoting`]). The caption and image columns are found by name
/// ([`CsvConfig::caption_key`], [`CsvConfig::image_key`]); other columns are ignored. An image
/// path is joined to its file's data root unless it is absolute.
///
/// # Errors and skipped lines
/// A file that cannot be read, has no header or no data row, or lacks a configured column is
/// an error naming the file (and the column). So is a file that ends inside a quoted field
/// (a caption starting with a stray `"` that nothing closes): the reader would take the rest
/// of the file into that one field, so the error names the line of the opening quote and
/// suggests turning [`CsvConfig::quoting`] off (pandas raises "EOF inside string" there). This
/// check re-reads only the last record, and is skipped for input that is not a regular file
/// (a pipe).
///
/// A *line* that has a different number of fields from the header, an empty image path, or
/// bytes that are not UTF-8 is skipped, counted ([`SkipReason::MalformedLine`], key
/// `file.csv:line`) and logged; the rest of the file is used. (pandas, which open_clip uses,
/// stops with an error instead.) A record that spans several lines (a quoted field holding
/// line breaks, often opened by a stray quote and closed by the next one) counts as that many
/// lines, and its message names the span (`lines 5-42`). Empty captions are kept.
///
/// Rows are stored in one text arena (about 24 bytes per row plus the text), so CC12M's ten
/// million rows take about 1.5 GB.
#[derive(Debug, Clone)]
pub struct CsvDataset {
    text: String,
    rows: Vec<Row>,
    sources: Vec<CsvSource>,
    skipped: SkipReport,
}

impl CsvDataset {
    /// Reads every CSV (in order) into one dataset.
    pub fn open(sources: &[CsvSource], config: &CsvConfig) -> Result<Self, DataError> {
        if sources.is_empty() {
            return Err(DataError::DatasetSpec {
                what: "no CSV file given".into(),
            });
        }
        let mut ds = CsvDataset {
            text: String::new(),
            rows: Vec::new(),
            sources: sources.to_vec(),
            skipped: SkipReport::default(),
        };
        for (i, src) in sources.iter().enumerate() {
            ds.read_one(i as u32, &src.path, config)?;
        }
        Ok(ds)
    }

    /// Reads one CSV file (see [`CsvDataset::open`]).
    pub fn open_file(
        path: impl AsRef<Path>,
        root: Option<PathBuf>,
        config: &CsvConfig,
    ) -> Result<Self, DataError> {
        Self::open(&[CsvSource::new(path.as_ref(), root)], config)
    }

    fn read_one(&mut self, source: u32, path: &Path, config: &CsvConfig) -> Result<(), DataError> {
        let csv_err = |what: String| DataError::Csv {
            path: path.to_path_buf(),
            what,
        };
        let mut reader = ::csv::ReaderBuilder::new()
            .delimiter(config.separator)
            .quoting(config.quoting)
            .has_headers(true)
            .flexible(true)
            .from_path(path)
            .map_err(|e| match e.into_kind() {
                ::csv::ErrorKind::Io(source) => DataError::Io {
                    path: path.to_path_buf(),
                    source,
                },
                other => csv_err(format!("{other:?}")),
            })?;
        let header = reader
            .byte_headers()
            .map_err(|e| csv_err(format!("cannot read the header: {e}")))?
            .clone();
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(csv_err("empty file: no header row".into()));
        }
        let names: Vec<String> = header
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_string()
            })
            .collect();
        let column = |key: &str| -> Result<usize, DataError> {
            names
                .iter()
                .position(|n| n == key)
                .ok_or_else(|| DataError::CsvColumn {
                    path: path.to_path_buf(),
                    column: key.to_string(),
                    found: names.join(", "),
                })
        };
        // A second handle on the file: where records start and end, and whether the file ends
        // inside a quoted field, are read from the raw bytes (the reader does not say).
        let mut raw = RawBytes::open(path);
        let unclosed = |raw: &mut RawBytes, start: &Position, end: &Position| {
            let line = raw.unclosed_quote(start, end.byte(), config.separator)?;
            Some(csv_err(format!(
                "line {line}: a quoted field starts here and is never closed, so the rest of \
                 the file would be read into that one field (pandas raises \"EOF inside \
                 string\"). If `\"` does not quote fields in this file (a caption starting \
                 with a stray quote), read it without quoting: `data.csv_quoting = false` \
                 (CsvConfig::quoting)"
            )))
        };
        let header_end = reader.position().clone();
        if config.quoting
            && let Some(e) = unclosed(&mut raw, &Position::new(), &header_end)
        {
            return Err(e);
        }
        let cap_col = column(&config.caption_key)?;
        let img_col = column(&config.image_key)?;
        let mut record = ::csv::ByteRecord::new();
        let rows_before = self.rows.len();
        // The last record read (or the header): the only one that can end inside a quoted
        // field, since the reader takes everything to the end of the file into it.
        let mut last = (Position::new(), header_end);
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    // The reader cannot resynchronize after an I/O error; a parse error of one
                    // record is reported by line and the reading goes on.
                    let start = e.position().cloned();
                    match e.into_kind() {
                        ::csv::ErrorKind::Io(err) => {
                            return Err(csv_err(format!(
                                "read error after line {}: {err}",
                                start.map_or(0, |p| p.line())
                            )));
                        }
                        other => {
                            let end = reader.position().clone();
                            let start = start.unwrap_or_else(|| end.clone());
                            let lines = raw.lines(&start, &end);
                            last = (start, end);
                            self.malformed(path, lines, format!("{other:?}"));
                            continue;
                        }
                    }
                }
            }
            // The reader sets every record's position.
            let start = record.position().cloned().unwrap_or_else(Position::new);
            last = (start, reader.position().clone());
            if record.len() != header.len() {
                self.malformed(
                    path,
                    raw.lines(&last.0, &last.1),
                    format!(
                        "{} fields where the header has {} (separator {:?})",
                        record.len(),
                        header.len(),
                        config.separator as char
                    ),
                );
                continue;
            }
            let (Ok(caption), Ok(image)) = (
                std::str::from_utf8(&record[cap_col]),
                std::str::from_utf8(&record[img_col]),
            ) else {
                self.malformed(path, raw.lines(&last.0, &last.1), "not valid UTF-8".into());
                continue;
            };
            if image.trim().is_empty() {
                let what = format!("empty `{}`", config.image_key);
                self.malformed(path, raw.lines(&last.0, &last.1), what);
                continue;
            }
            let (Ok(caption_len), Ok(path_len)) =
                (u32::try_from(caption.len()), u32::try_from(image.len()))
            else {
                let what = "a field longer than 4 GiB".into();
                self.malformed(path, raw.lines(&last.0, &last.1), what);
                continue;
            };
            let start = self.text.len() as u64;
            self.text.push_str(caption);
            self.text.push_str(image);
            self.rows.push(Row {
                start,
                caption_len,
                path_len,
                source,
            });
        }
        if config.quoting
            && let Some(e) = unclosed(&mut raw, &last.0, &last.1)
        {
            return Err(e);
        }
        if self.rows.len() == rows_before {
            return Err(csv_err("no data rows after the header".into()));
        }
        Ok(())
    }

    /// Counts a skipped record spanning `lines` (first and last line of its text) as that
    /// many malformed lines: what users see is "bad lines", and one stray quote can merge
    /// dozens of lines into one record.
    fn malformed(&mut self, path: &Path, lines: (u64, u64), what: String) {
        let (first, last) = lines;
        let message = if last > first {
            format!(
                "lines {first}-{last}, read as one record because a quoted field spans them: \
                 {what}"
            )
        } else {
            what
        };
        let s = Skipped {
            reason: SkipReason::MalformedLine,
            key: format!("{}:{first}", path.display()),
            message,
        };
        self.skipped.record_n(&s, last - first + 1);
        warn_skipped(&s, self.skipped.count(SkipReason::MalformedLine));
    }

    /// The CSV files and their roots.
    pub fn sources(&self) -> &[CsvSource] {
        &self.sources
    }

    /// The malformed lines that were skipped while reading (a record spanning several lines
    /// counts as that many). Also [`IndexedDataset::read_skips`].
    pub fn skipped(&self) -> &SkipReport {
        &self.skipped
    }

    /// The caption of row `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn caption(&self, index: usize) -> &str {
        let r = self.rows[index];
        let s = r.start as usize;
        &self.text[s..s + r.caption_len as usize]
    }

    /// The image path of row `index` as written in the CSV.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn image_path_raw(&self, index: usize) -> &str {
        let r = self.rows[index];
        let s = r.start as usize + r.caption_len as usize;
        &self.text[s..s + r.path_len as usize]
    }

    /// The image path of row `index` joined to its data root (absolute paths unchanged).
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn image_path(&self, index: usize) -> PathBuf {
        let raw = self.image_path_raw(index);
        match &self.sources[self.rows[index].source as usize].root {
            Some(root) => root.join(raw),
            None => PathBuf::from(raw),
        }
    }
}

impl IndexedDataset for CsvDataset {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn read_skips(&self) -> SkipReport {
        self.skipped.clone()
    }

    fn sample(&self, index: usize) -> SampleRef {
        let path = self.image_path(index);
        SampleRef {
            id: index as u64,
            key: path.display().to_string(),
            image: ImageSource::File(path),
            captions: vec![self.caption(index).to_string()],
            label: None,
        }
    }
}

/// A second handle on a CSV file, to look at the raw bytes of a record again (records come in
/// order, so it mostly moves forward within its buffer). Not available (`None`) for what is not
/// a regular file, such as a pipe: then line spans come from the reader's line numbers and the
/// end-of-file check is skipped.
struct RawBytes {
    file: Option<BufReader<File>>,
    pos: u64,
}

/// Where csv_core's record reader is, as far as quotes go (its NFA with the default `"`, `""`
/// escaping, no escape character, no comments, and any of `\r`, `\n`, `\r\n` ending a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    /// Between records (line terminators are skipped here: blank lines are no records).
    StartRecord,
    /// At the start of a field: only here does a quote open a quoted field.
    StartField,
    /// In an unquoted field (or after a quoted field's closing quote): quotes are literal.
    InField,
    /// In a quoted field: separators and line terminators are part of it.
    InQuoted,
    /// Just after a quote in a quoted field: a second quote is a literal quote, anything else
    /// closes the field (and, unless it ends the field, goes on as unquoted text).
    QuoteInQuoted,
}

impl RawBytes {
    fn open(path: &Path) -> Self {
        let file = std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .and_then(|_| File::open(path).ok())
            .map(|f| BufReader::with_capacity(64 << 10, f));
        RawBytes { file, pos: 0 }
    }

    /// Feeds bytes `start..end` to `f`, chunk by chunk; false when they cannot be read (and
    /// the handle is given up).
    fn scan(&mut self, start: u64, end: u64, mut f: impl FnMut(&[u8])) -> bool {
        let Some(file) = &mut self.file else {
            return false;
        };
        let ok = (|| -> std::io::Result<()> {
            if start >= self.pos {
                file.seek_relative(
                    i64::try_from(start - self.pos).map_err(std::io::Error::other)?,
                )?;
            } else {
                file.seek(SeekFrom::Start(start))?;
            }
            self.pos = start;
            while self.pos < end {
                let buf = file.fill_buf()?;
                if buf.is_empty() {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let take = buf
                    .len()
                    .min(usize::try_from(end - self.pos).unwrap_or(usize::MAX));
                f(&buf[..take]);
                file.consume(take);
                self.pos += take as u64;
            }
            Ok(())
        })()
        .is_ok();
        if !ok {
            self.file = None;
        }
        ok
    }

    /// The first and last line holding text of the record read from `start` to `end`: the
    /// blank lines the reader skipped before it and its line terminator are not its lines (the
    /// reader's own line number is off for those, and for every record of a CRLF file).
    fn lines(&mut self, start: &Position, end: &Position) -> (u64, u64) {
        let mut line = start.line();
        let (mut first, mut last) = (None, start.line());
        let read = self.scan(start.byte(), end.byte(), |chunk| {
            for &b in chunk {
                match b {
                    b'\n' => line += 1,
                    b'\r' => {}
                    _ => {
                        first.get_or_insert(line);
                        last = line;
                    }
                }
            }
        });
        match first {
            Some(first) if read => (first, last),
            // An empty record, or no bytes to look at: the reader's lines (its terminator
            // counted as a line of its own when it was a `\n`).
            _ => {
                let last = end.line().saturating_sub(1).max(start.line());
                (start.line(), last)
            }
        }
    }

    /// Whether the record read from `start` to `end` ends inside a quoted field, and if so the
    /// line of that field's opening quote. The reader ends a record there only at the end of
    /// the file, having read everything after the quote into the field.
    fn unclosed_quote(&mut self, start: &Position, end: u64, separator: u8) -> Option<u64> {
        use QuoteState::*;
        let (mut state, mut line, mut opened) = (StartRecord, start.line(), 0);
        let read = self.scan(start.byte(), end, |chunk| {
            for &b in chunk {
                let term = b == b'\n' || b == b'\r';
                state = match state {
                    StartRecord if term => StartRecord,
                    StartRecord | StartField => {
                        if b == b'"' {
                            opened = line;
                            InQuoted
                        } else if b == separator {
                            StartField
                        } else if term {
                            StartRecord
                        } else {
                            InField
                        }
                    }
                    InQuoted if b == b'"' => QuoteInQuoted,
                    InQuoted => InQuoted,
                    QuoteInQuoted if b == b'"' => InQuoted,
                    InField | QuoteInQuoted if b == separator => StartField,
                    InField | QuoteInQuoted if term => StartRecord,
                    InField | QuoteInQuoted => InField,
                };
                line += u64::from(b == b'\n');
            }
        });
        (read && state == InQuoted).then_some(opened)
    }
}
