//! CSV data: a label column and pixel columns (Kaggle's digit-recognizer `train.csv`:
//! `label,pixel0,…,pixel783`), or `path,label` rows naming pictures (relative to the CSV's
//! folder). `--data FILE.csv`, or a folder with `train.csv` (and `valid.csv`, `test.csv` when
//! there). Labels are numbers (as many classes as the highest says) or names (sorted).
//!
//! A pixel CSV is read twice through a buffer: once for its labels, once for its pixels,
//! [`CHUNK_ROWS`] rows at a time parsed in parallel through burn-dataset's `Dataset` trait (a
//! row an item) straight into the decoded set, so memory is that set plus a chunk of text,
//! whatever the file's size. A CSV of paths lists pictures decoded as a folder's are. Both are
//! cached once decoded ([`super::cache`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use tracing::{info, warn};

use super::folder::{self, Decoded, Part, Pictures};
use super::{
    Data, DataError, DataRequest, Decoding, ImageShape, LabelledImage, MAX_CLASSES, SplitSizes,
    cache, source_error,
};
use crate::files;

/// Column names taken as a picture's path.
const PATH_COLUMNS: [&str; 4] = ["path", "file", "filename", "image"];

/// Rows of a pixel CSV decoded at once (MNIST's: about 3 MB of text): with one line being
/// read, the working set besides the decoded images.
const CHUNK_ROWS: usize = 2048;

/// One CSV file of the data, scanned: its columns, and each row's label (and picture path),
/// but not its pixels, which are read again chunk by chunk as they are decoded.
struct CsvFile {
    path: PathBuf,
    /// The header's column names (empty: no header).
    header: Vec<String>,
    /// Fields a row has (the header's, else the first row's).
    columns: usize,
    /// The label column.
    label: usize,
    /// The split the file is.
    part: Part,
    /// Each data row's line number and label as written (a row too short for its label
    /// column has none; it is refused as it is decoded).
    labels: Vec<(usize, Option<String>)>,
    /// The column of pictures' paths, for a CSV of pictures.
    path_column: Option<usize>,
    /// Each data row's picture path, for a CSV of pictures (or, for a row of another length
    /// than the header's, its number of fields).
    paths: Vec<Result<String, usize>>,
}

fn fields(line: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(line)
        .unwrap_or("\u{fffd}")
        .trim_end_matches('\r')
        .split(',')
        .map(str::trim)
}

/// Calls `each` with the number (from 1) and the text of every non-blank line of `path` in
/// turn, read through a buffer: one line is held at a time.
fn each_line(
    path: &Path,
    mut each: impl FnMut(usize, &[u8]) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = std::fs::File::open(path).map_err(files::io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut line, mut number) = (Vec::new(), 0);
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(files::io_err(path))?
            == 0
        {
            return Ok(());
        }
        number += 1;
        if !line.iter().all(u8::is_ascii_whitespace) {
            each(number, line.strip_suffix(b"\n").unwrap_or(&line))?;
        }
    }
}

impl CsvFile {
    /// Reads `path` once for its header and its rows' labels (and picture paths).
    fn scan(path: &Path, part: Part) -> Result<Self, DataError> {
        let mut file = Self {
            path: path.to_path_buf(),
            header: Vec::new(),
            columns: 0,
            label: 0,
            part,
            labels: Vec::new(),
            path_column: None,
            paths: Vec::new(),
        };
        let mut first = true;
        each_line(path, |number, line| {
            let row: Vec<&str> = fields(line).collect();
            if std::mem::take(&mut first) {
                file.columns = row.len();
                if !row.iter().all(|f| f.parse::<f64>().is_ok()) {
                    file.header = row.iter().map(|f| f.to_string()).collect();
                    file.label = row
                        .iter()
                        .position(|h| h.eq_ignore_ascii_case("label"))
                        .unwrap_or(0);
                    file.path_column = row
                        .iter()
                        .position(|h| PATH_COLUMNS.iter().any(|p| h.eq_ignore_ascii_case(p)));
                    return Ok(());
                }
            }
            if let Some(column) = file.path_column {
                file.paths.push(if row.len() == file.columns {
                    Ok(row[column].to_string())
                } else {
                    Err(row.len())
                });
            }
            file.labels
                .push((number, row.get(file.label).map(|l| l.to_string())));
            Ok(())
        })?;
        match (first, file.labels.is_empty()) {
            (true, _) => Err(source_error(path, "no rows")),
            (false, true) => Err(source_error(path, "a header and no rows")),
            _ => Ok(file),
        }
    }

    /// The row's fields against the header's: a row of another length is refused.
    fn check_length(&self, fields: usize, line: usize) -> Result<(), DataError> {
        if fields == self.columns {
            return Ok(());
        }
        Err(self.ragged(fields, line))
    }

    /// The error of a row of `fields` fields on line `line`, where the header has others.
    fn ragged(&self, fields: usize, line: usize) -> DataError {
        source_error(
            &self.path,
            format!(
                "line {line}: {fields} field{}, where the header has {}",
                if fields == 1 { "" } else { "s" },
                self.columns
            ),
        )
    }

    /// Data row `i` of a CSV of pictures as a listing entry: the picture's path (relative to
    /// the CSV's folder), its class, its split.
    fn entry(&self, labels: &Labels, i: usize) -> Result<(PathBuf, u8, Part), DataError> {
        let path = match &self.paths[i] {
            Ok(path) => path,
            Err(fields) => return Err(self.ragged(*fields, self.labels[i].0)),
        };
        let base = self.path.parent().unwrap_or(Path::new("."));
        Ok((base.join(path), self.class(labels, i)?, self.part))
    }

    /// The class of data row `i`.
    fn class(&self, labels: &Labels, i: usize) -> Result<u8, DataError> {
        let (line, label) = &self.labels[i];
        labels.of_label(self, label.as_deref().unwrap_or(""), *line)
    }
}

/// The class of each label as written: numbers keep their value (the classes as many as the
/// highest says), names are numbered in sorted order.
struct Labels {
    names: Vec<String>,
    numeric: bool,
}

impl Labels {
    /// The classes of the training file (`files[0]`): a label of another file that is not one
    /// of them is refused as its row is read.
    fn of(files: &[CsvFile]) -> Result<Self, DataError> {
        let mut numeric = true;
        let mut highest = 0usize;
        let mut names = std::collections::BTreeSet::new();
        for file in &files[..1] {
            for (line, label) in &file.labels {
                let Some(label) = label else {
                    continue;
                };
                match label.parse::<usize>() {
                    Ok(n) if n >= MAX_CLASSES => {
                        return Err(source_error(
                            &file.path,
                            format!("line {line}: label {n} is outside 0-{}", MAX_CLASSES - 1),
                        ));
                    }
                    Ok(n) => highest = highest.max(n),
                    Err(_) => numeric = false,
                }
                names.insert(label.to_string());
            }
        }
        let names: Vec<String> = if numeric {
            (0..=highest).map(|n| n.to_string()).collect()
        } else {
            names.into_iter().collect()
        };
        if names.len() > MAX_CLASSES {
            return Err(source_error(
                &files[0].path,
                format!("{} classes, at most {MAX_CLASSES}", names.len()),
            ));
        }
        Ok(Self { names, numeric })
    }

    /// The class of `label`, as written on line `line` of `file`.
    fn of_label(&self, file: &CsvFile, label: &str, line: usize) -> Result<u8, DataError> {
        let index = if self.numeric {
            label.parse::<usize>().ok()
        } else {
            self.names.iter().position(|n| n == label)
        };
        match index {
            Some(i) if i < self.names.len() => Ok(i as u8),
            _ => Err(source_error(
                &file.path,
                format!(
                    "line {line}: label {label:?} is not one of the training labels ({} classes)",
                    self.names.len()
                ),
            )),
        }
    }
}

/// A chunk of a pixel CSV's rows as burn-dataset items.
struct PixelRows<'a> {
    file: &'a CsvFile,
    labels: &'a Labels,
    shape: ImageShape,
    /// The rows' text, one after another.
    text: Vec<u8>,
    /// Each row's bytes in `text`, and its index among the file's data rows.
    rows: Vec<(usize, usize, usize)>,
}

impl Dataset<LabelledImage, DataError> for PixelRows<'_> {
    fn get(&self, index: usize) -> Result<LabelledImage, DataError> {
        let (start, end, r) = self.rows[index];
        let file = self.file;
        let line = file.labels[r].0;
        let row: Vec<&str> = fields(&self.text[start..end]).collect();
        file.check_length(row.len(), line)?;
        let label = file.class(self.labels, r)?;
        let mut pixels = Vec::with_capacity(self.shape.pixels());
        for (c, value) in row.iter().enumerate().filter(|(c, _)| *c != file.label) {
            match value.parse::<u8>() {
                Ok(v) => pixels.push(v),
                Err(_) => {
                    return Err(source_error(
                        &file.path,
                        format!(
                            "line {line}, column {}: {value:?} is not a pixel value (0-255)",
                            c + 1
                        ),
                    ));
                }
            }
        }
        Ok(LabelledImage { pixels, label })
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

impl<'a> PixelRows<'a> {
    fn new(file: &'a CsvFile, labels: &'a Labels, shape: ImageShape) -> Self {
        Self {
            file,
            labels,
            shape,
            text: Vec::new(),
            rows: Vec::with_capacity(CHUNK_ROWS),
        }
    }

    /// Decodes the rows held into `decoding` from item `at`, and empties the chunk.
    fn flush(
        &mut self,
        decoding: &mut Decoding,
        at: &mut usize,
        skip_bad: bool,
    ) -> Result<(), DataError> {
        decoding.fill(*at, self, skip_bad)?;
        *at += self.rows.len();
        self.text.clear();
        self.rows.clear();
        Ok(())
    }
}

/// The CSV files `request` names, with their parts: one file, or a folder's `train.csv`,
/// `valid.csv`, `test.csv`.
fn csv_paths(request: &DataRequest) -> Result<Vec<(PathBuf, Part)>, DataError> {
    let p = &request.path;
    if !p.is_dir() {
        return Ok(vec![(p.clone(), Part::Train)]);
    }
    let parts = [
        ("train.csv", Part::Train),
        ("valid.csv", Part::Valid),
        ("test.csv", Part::Test),
    ];
    let found: Vec<(PathBuf, Part)> = parts
        .into_iter()
        .map(|(name, part)| (p.join(name), part))
        .filter(|(f, _)| f.is_file())
        .collect();
    if found.first().is_none_or(|(_, part)| *part != Part::Train) {
        return Err(source_error(p, "no train.csv"));
    }
    Ok(found)
}

/// The image shape of `columns` pixel columns: `--image-size` (and `--channels`) where given,
/// else a square of gray, or of RGB.
fn pixel_shape(
    columns: usize,
    request: &DataRequest,
    path: &Path,
) -> Result<ImageShape, DataError> {
    let square = |n: usize| {
        let side = (n as f64).sqrt().round() as usize;
        (side > 0 && side * side == n).then_some(side)
    };
    let shape = match (request.image_size, request.channels) {
        (Some((height, width)), channels) => ImageShape {
            channels: channels.unwrap_or(columns / (height * width).max(1)),
            height,
            width,
        },
        (None, Some(channels)) => {
            let side = square(columns / channels).unwrap_or(0);
            ImageShape {
                channels,
                height: side,
                width: side,
            }
        }
        (None, None) => match (square(columns), square(columns / 3)) {
            (Some(side), _) => ImageShape {
                channels: 1,
                height: side,
                width: side,
            },
            (None, Some(side)) if columns.is_multiple_of(3) => ImageShape {
                channels: 3,
                height: side,
                width: side,
            },
            _ => ImageShape {
                channels: 0,
                height: 0,
                width: 0,
            },
        },
    };
    if shape.pixels() != columns || shape.pixels() == 0 || !matches!(shape.channels, 1 | 3) {
        return Err(source_error(
            path,
            format!(
                "{columns} pixel columns make no square gray or RGB image: give --image-size H,W (and --channels)"
            ),
        ));
    }
    Ok(shape)
}

/// Reads the CSV data `request` names and splits it: validation the last training rows (as
/// for IDX files), test `test.csv` or rows drawn per class. A pixel CSV decoded before comes
/// from the cache without being read.
pub fn load(request: &DataRequest, sizes: SplitSizes) -> Result<Data, DataError> {
    let paths = csv_paths(request)?;
    let valid_from_file = paths.iter().any(|(_, part)| *part == Part::Valid);
    let files_only: Vec<&Path> = paths.iter().map(|(p, _)| p.as_path()).collect();
    let key = cache::Key::of_files(
        &files_only,
        &format!(
            "pixel csv v1 {:?} {:?} {}",
            request.image_size, request.channels, request.skip_bad
        ),
    )?;
    let decoded = match cache::read(&key) {
        Some(hit) => {
            info!(rows = hit.split.len(), "CSV rows, from the cache");
            hit
        }
        None => {
            let files = paths
                .iter()
                .map(|(f, part)| CsvFile::scan(f, *part))
                .collect::<Result<Vec<_>, _>>()?;
            let labels = Labels::of(&files)?;
            match files[0].path_column {
                Some(_) => pictures(&files, &labels, request)?,
                None => pixels(&files, &labels, request, &key)?,
            }
        }
    };
    let mut data = folder::into_data(
        decoded,
        SplitSizes {
            valid: Some(0),
            ..sizes
        },
    )?;
    if !valid_from_file {
        // As for IDX files: the last training rows.
        let n = sizes
            .valid
            .unwrap_or_else(|| super::splits::default_valid(data.train.len()));
        let (train, valid) = data.train.split_last(n)?;
        data.train = train;
        data.valid = valid;
        data.valid_size = n;
    }
    Ok(data)
}

/// A pixel CSV decoded, and kept in the cache under `key`: each file read again,
/// [`CHUNK_ROWS`] rows decoded in parallel at a time.
fn pixels(
    files: &[CsvFile],
    labels: &Labels,
    request: &DataRequest,
    key: &cache::Key,
) -> Result<Decoded, DataError> {
    let first = &files[0];
    let shape = pixel_shape(first.columns - 1, request, &first.path)?;
    let total = files.iter().map(|f| f.labels.len()).sum();
    let mut decoding = Decoding::new(total, shape);
    let mut at = 0;
    for file in files {
        let mut chunk = PixelRows::new(file, labels, shape);
        let mut header = !file.header.is_empty();
        let mut r = 0;
        each_line(&file.path, |_, line| {
            if std::mem::take(&mut header) {
                return Ok(());
            }
            let start = chunk.text.len();
            chunk.text.extend_from_slice(line);
            chunk.rows.push((start, chunk.text.len(), r));
            r += 1;
            if chunk.rows.len() == CHUNK_ROWS {
                chunk.flush(&mut decoding, &mut at, request.skip_bad)?;
            }
            Ok(())
        })?;
        chunk.flush(&mut decoding, &mut at, request.skip_bad)?;
        if r != file.labels.len() {
            return Err(source_error(&file.path, "changed while it was read"));
        }
    }
    let (split, kept) = decoding.finish()?;
    let skipped = total - kept.len();
    if skipped > 0 {
        warn!(
            skipped,
            "CSV rows that could not be read were skipped (--skip-bad)"
        );
    }
    let parts: Vec<u8> = files
        .iter()
        .flat_map(|f| std::iter::repeat_n(f.part as u8, f.labels.len()))
        .collect();
    let decoded = Decoded {
        parts: kept.iter().map(|&i| parts[i]).collect(),
        split,
        skipped,
        classes: labels.names.clone(),
    };
    cache::write(key, &decoded);
    Ok(decoded)
}

/// A CSV of `path,label` rows: the pictures it names, decoded as a folder's are.
fn pictures(
    files: &[CsvFile],
    labels: &Labels,
    request: &DataRequest,
) -> Result<Decoded, DataError> {
    let (mut entries, mut skipped) = (Vec::new(), 0);
    for file in files {
        if file.path_column.is_none() {
            return Err(source_error(
                &file.path,
                format!(
                    "no path column, where {} names pictures",
                    files[0].path.display()
                ),
            ));
        }
        for i in 0..file.paths.len() {
            match file.entry(labels, i) {
                Ok(entry) => entries.push(entry),
                Err(_) if request.skip_bad => skipped += 1,
                Err(e) => return Err(e),
            }
        }
    }
    if skipped > 0 {
        warn!(
            skipped,
            "CSV rows that could not be read were skipped (--skip-bad)"
        );
    }
    let pictures = Pictures::new(entries, request)?;
    let mut decoded = folder::decode(&pictures, &labels.names, request)?;
    decoded.skipped += skipped;
    Ok(decoded)
}
