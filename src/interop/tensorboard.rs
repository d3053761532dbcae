//! A run's TensorBoard event file (`events.out.tfevents.*`), so that `tensorboard --logdir runs`
//! shows every run and every sweep point side by side.
//!
//! The file is TFRecord framing (length, masked CRC-32C of the length, the record, masked
//! CRC-32C of the record) around TensorFlow's `Event` protobuf messages. No maintained Rust
//! crate writes it and reads it back, so it is written here: the messages (the handful of
//! fields used) with `prost`, the checksums with `crc32c`.
//!
//! One record per epoch, appended once the epoch's checkpoint is on disk, holds all of its
//! scalars; the test result is one more record. A run that is resumed opens the file again:
//! a record cut short by a kill is dropped, and only the epochs not in the file yet are
//! appended, so no epoch appears twice however the run was stopped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::InteropError;
use crate::files::io_err;
use crate::metrics::Metrics;
use crate::session::EpochRecord;

/// How event files are named (TensorBoard looks for this in the name).
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// The tags written per epoch and at the end, as TensorBoard groups them (by the part before
/// the slash).
pub mod tags {
    /// Mean training loss over the epoch's steps.
    pub const TRAIN_LOSS: &str = "loss/train";
    /// Validation loss after the epoch.
    pub const VALID_LOSS: &str = "loss/validation";
    /// Training accuracy over the epoch's steps.
    pub const TRAIN_ACCURACY: &str = "accuracy/train";
    /// Validation accuracy after the epoch.
    pub const VALID_ACCURACY: &str = "accuracy/validation";
    /// The learning rate at the epoch's last step.
    pub const LEARNING_RATE: &str = "learning_rate";
    /// Test loss at the end, at the step of the last epoch.
    pub const TEST_LOSS: &str = "test/loss";
    /// Test accuracy at the end.
    pub const TEST_ACCURACY: &str = "test/accuracy";
}

/// TensorFlow's `Event`, the fields written.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

/// `Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// TensorFlow's `Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `Summary.Value` with a scalar (`simple_value`, a member of a oneof: written even when 0).
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// The masked CRC-32C TFRecord uses.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The whole records at the start of `bytes` and the length they take; what follows (a record
/// cut short or damaged) is not counted.
fn records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 12) {
        let len_bytes: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| head[i]);
        let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if masked_crc(&len_bytes) != crc {
            break;
        }
        let Ok(len) = usize::try_from(u64::from_le_bytes(len_bytes)) else {
            break;
        };
        let Some(end) = (at + 12).checked_add(len).filter(|e| e + 4 <= bytes.len()) else {
            break;
        };
        let data = &bytes[at + 12..end];
        let crc = &bytes[end..end + 4];
        if masked_crc(data).to_le_bytes() != crc {
            break;
        }
        out.push(data);
        at = end + 4;
    }
    (out, at)
}

/// The scalars of one record, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalars {
    /// The step (the epoch).
    pub step: i64,
    /// Tag and value.
    pub values: Vec<(String, f32)>,
}

/// The scalar records of an event file's bytes (the header record and a torn end left out).
pub fn read_scalars(bytes: &[u8]) -> Vec<Scalars> {
    records(bytes)
        .0
        .into_iter()
        .filter_map(|r| prost::Message::decode(r).ok())
        .filter_map(|e: Event| match e.what {
            Some(What::Summary(s)) => Some(Scalars {
                step: e.step,
                values: s
                    .value
                    .into_iter()
                    .filter_map(|v| Some((v.tag, v.simple_value?)))
                    .collect(),
            }),
            _ => None,
        })
        .collect()
}

/// A run's event file, open for appending.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    /// The last epoch in the file.
    last_epoch: usize,
    /// The step of the last test result in the file (a run extended with `--epochs` is tested
    /// again at its new last epoch).
    tested_at: Option<usize>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The TensorBoard event files in `dir` (names starting with [`FILE_PREFIX`]), sorted by name.
pub fn event_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(FILE_PREFIX))
        })
        .collect();
    files.sort();
    Ok(files)
}

impl EventLog {
    /// Opens the event file of the run in `dir`, making one if there is none; a record cut
    /// short at its end (a kill mid-write) is cut off.
    pub fn open(dir: &Path) -> Result<Self, InteropError> {
        let existing = event_files(dir).map_err(io_err(dir))?.into_iter().next();
        let path = existing.unwrap_or_else(|| {
            let host = crate::host::name().replace(['/', '\\'], "_");
            dir.join(format!("{FILE_PREFIX}{}.{host}", now() as u64))
        });
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
        let (_, whole) = records(&bytes);
        if whole < bytes.len() {
            file.set_len(whole as u64).map_err(io_err(&path))?;
        }
        file.seek(SeekFrom::Start(whole as u64))
            .map_err(io_err(&path))?;
        let scalars = read_scalars(&bytes[..whole]);
        let mut log = Self {
            last_epoch: scalars
                .iter()
                .filter(|s| s.values.iter().any(|(t, _)| t == tags::TRAIN_LOSS))
                .map(|s| s.step.max(0) as usize)
                .max()
                .unwrap_or(0),
            tested_at: scalars
                .iter()
                .filter(|s| s.values.iter().any(|(t, _)| t == tags::TEST_ACCURACY))
                .map(|s| s.step.max(0) as usize)
                .max(),
            path,
            file,
        };
        if whole == 0 {
            log.append(Event {
                wall_time: now(),
                step: 0,
                what: Some(What::FileVersion("brain.Event:2".into())),
            })?;
        }
        Ok(log)
    }

    /// The file's path.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, event: Event) -> Result<(), InteropError> {
        let record = frame(&prost::Message::encode_to_vec(&event));
        self.file.write_all(&record).map_err(io_err(&self.path))?;
        Ok(self.file.sync_data().map_err(io_err(&self.path))?)
    }

    fn scalars(&mut self, step: usize, values: &[(&str, f64)]) -> Result<(), InteropError> {
        let value = values
            .iter()
            .map(|&(tag, v)| SummaryValue {
                tag: tag.into(),
                simple_value: Some(v as f32),
            })
            .collect();
        self.append(Event {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// Appends the epochs of `history` not in the file yet; `rate(epoch)` is the learning
    /// rate at the end of that epoch.
    pub fn epochs(
        &mut self,
        history: &[EpochRecord],
        rate: impl Fn(usize) -> f64,
    ) -> Result<(), InteropError> {
        let last = self.last_epoch;
        for record in history.iter().filter(|r| r.epoch > last) {
            let mut values = vec![
                (tags::TRAIN_LOSS, record.train.loss),
                (tags::TRAIN_ACCURACY, record.train.accuracy),
            ];
            if let Some(v) = record.valid {
                values.push((tags::VALID_LOSS, v.loss));
                values.push((tags::VALID_ACCURACY, v.accuracy));
            }
            values.push((tags::LEARNING_RATE, rate(record.epoch)));
            self.scalars(record.epoch, &values)?;
            self.last_epoch = record.epoch;
        }
        Ok(())
    }

    /// Appends the test result, at the step of the last epoch, unless it is there already.
    pub fn test(&mut self, metrics: &Metrics) -> Result<(), InteropError> {
        let step = self.last_epoch;
        if self.tested_at == Some(step) {
            return Ok(());
        }
        self.scalars(
            step,
            &[
                (tags::TEST_LOSS, metrics.loss),
                (tags::TEST_ACCURACY, metrics.accuracy),
            ],
        )?;
        self.tested_at = Some(step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize) -> EpochRecord {
        let m = |x: f64| Metrics {
            loss: x,
            accuracy: 1.0 - x,
            count: 100,
        };
        EpochRecord {
            epoch,
            train: m(0.5 / epoch as f64),
            valid: Some(m(0.6 / epoch as f64)),
            train_seconds: 1.0,
            seconds: 1.0,
        }
    }

    /// The masked CRC-32C of TFRecord, against the values TensorBoard's own
    /// `masked_crc32c` gives (tensorboard 2.21, `tensorflow_stub.pywrap_tensorflow`).
    #[test]
    fn checksums_are_tensorboards() {
        assert_eq!(masked_crc(&24u64.to_le_bytes()), 0x224b_7fa3);
        assert_eq!(masked_crc(b"hello"), 0x191c_1fbb);
    }

    /// Epochs are appended once each, also when the log is opened again after a record was
    /// cut short, and the test result once.
    #[test]
    fn epochs_appear_once_across_reopening_and_torn_records() {
        let dir = tempfile::tempdir().unwrap();
        let history: Vec<EpochRecord> = (1..=4).map(record).collect();
        let mut log = EventLog::open(dir.path()).unwrap();
        log.epochs(&history[..2], |_| 0.001).unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        // A kill in the middle of the third epoch's record.
        let mut log = EventLog::open(dir.path()).unwrap();
        log.epochs(&history[..3], |_| 0.001).unwrap();
        drop(log);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let mut log = EventLog::open(dir.path()).unwrap();
        assert_eq!(log.path(), path);
        log.epochs(&history, |e| e as f64).unwrap();
        let metrics = Metrics {
            loss: 0.1,
            accuracy: 0.97,
            count: 10,
        };
        log.test(&metrics).unwrap();
        drop(log);
        let mut log = EventLog::open(dir.path()).unwrap();
        log.epochs(&history, |_| 0.0).unwrap();
        log.test(&metrics).unwrap();
        // Extended by an epoch (`--epochs`), the run is tested again at its new end.
        let mut log = EventLog::open(dir.path()).unwrap();
        log.epochs(&[record(5)], |_| 0.0).unwrap();
        log.test(&metrics).unwrap();
        let scalars = read_scalars(&std::fs::read(&path).unwrap());
        let steps: Vec<i64> = scalars.iter().map(|s| s.step).collect();
        assert_eq!(steps, [1, 2, 3, 4, 4, 5, 5]);
        assert_eq!(scalars[2].values[4], (tags::LEARNING_RATE.into(), 3.0));
        assert_eq!(scalars[0].values[0], (tags::TRAIN_LOSS.into(), 0.5));
        assert_eq!(scalars[4].values[1], (tags::TEST_ACCURACY.into(), 0.97));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
