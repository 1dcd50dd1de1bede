//! CLIP-KD's CSV training data.

use std::path::{Path, PathBuf};

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
/// an error naming the file (and the column). A *line* that has a different number of fields
/// from the header, an empty image path, or bytes that are not UTF-8 is skipped, counted
/// ([`SkipReason::MalformedLine`], key `file.csv:line`) and logged; the rest of the file is
/// used. (pandas, which open_clip uses, stops with an error instead.) Empty captions are kept.
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
        let cap_col = column(&config.caption_key)?;
        let img_col = column(&config.image_key)?;
        let mut record = ::csv::ByteRecord::new();
        let rows_before = self.rows.len();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    // The reader cannot resynchronize after an I/O error; a parse error of one
                    // record is reported by line and the reading goes on.
                    let line = e.position().map(|p| p.line());
                    match e.into_kind() {
                        ::csv::ErrorKind::Io(err) => {
                            return Err(csv_err(format!(
                                "read error after line {}: {err}",
                                line.unwrap_or(0)
                            )));
                        }
                        other => {
                            self.malformed(path, line.unwrap_or(0), format!("{other:?}"));
                            continue;
                        }
                    }
                }
            }
            let line = record.position().map_or(0, |p| p.line());
            if record.len() != header.len() {
                self.malformed(
                    path,
                    line,
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
                self.malformed(path, line, "not valid UTF-8".into());
                continue;
            };
            if image.trim().is_empty() {
                self.malformed(path, line, format!("empty `{}`", config.image_key));
                continue;
            }
            let (Ok(caption_len), Ok(path_len)) =
                (u32::try_from(caption.len()), u32::try_from(image.len()))
            else {
                self.malformed(path, line, "a field longer than 4 GiB".into());
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
        if self.rows.len() == rows_before {
            return Err(csv_err("no data rows after the header".into()));
        }
        Ok(())
    }

    fn malformed(&mut self, path: &Path, line: u64, what: String) {
        let s = Skipped {
            reason: SkipReason::MalformedLine,
            key: format!("{}:{line}", path.display()),
            message: what,
        };
        self.skipped.record(&s);
        warn_skipped(&s, self.skipped.count(SkipReason::MalformedLine));
    }

    /// The CSV files and their roots.
    pub fn sources(&self) -> &[CsvSource] {
        &self.sources
    }

    /// The malformed lines that were skipped while reading.
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
