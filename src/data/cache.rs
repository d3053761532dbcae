//! The decoded-set cache: a folder's pictures (or a CSV's rows) decoded once are kept in
//! `$TRAINER_CACHE_DIR` (default `~/.cache/trainer/decoded`), one file per listing, so that a
//! second run over the same data starts in a fraction of a second (sets under a mebibyte,
//! which decode in less, are not kept). A listing's key is a digest
//! of every file's path, size and modification time, its class and split, and the flags that
//! shape the decoding (`--image-size`, `--channels`, `--skip-bad`): any change to the data
//! makes another key. The file is `trainer`'s checksummed container; one that does not read
//! back whole is ignored (and rewritten), never trusted. Failing to write it costs nothing but
//! the next run's decoding.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::debug;

use super::folder::{Decoded, Pictures};
use super::{DataError, DataRequest, ImageShape, Split};
use crate::files;
use crate::files::container::{DECODED_MAGIC, read_container_file, write_container};

/// A listing's identity: a digest of everything the decoded set depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

/// Two independent 32-bit checksums and the length of what was hashed: a digest that two
/// listings share only by accident far past the odds of a damaged disk.
#[derive(Default)]
struct Digest {
    a: crc32fast::Hasher,
    b: u32,
    len: u64,
}

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        self.a.update(bytes);
        self.b = crc32c::crc32c_append(self.b, bytes);
        self.len += bytes.len() as u64;
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.a.update(&[0]);
        self.b = crc32c::crc32c_append(self.b, &[0]);
    }

    fn finish(self) -> Key {
        Key(format!(
            "{:08x}{:08x}{:012x}",
            self.a.finalize(),
            self.b,
            self.len
        ))
    }
}

/// The part of a file's identity the key takes: its path, size and modification time.
fn add_file(digest: &mut Digest, path: &Path) -> Result<(), DataError> {
    let meta = std::fs::metadata(path).map_err(files::io_err(path))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    digest.add(path.as_os_str().as_encoded_bytes());
    digest.add(&meta.len().to_le_bytes());
    digest.add(&modified.to_le_bytes());
    Ok(())
}

impl Key {
    /// The key of `pictures` decoded as `request` asks.
    pub fn of_pictures(pictures: &Pictures, request: &DataRequest) -> Result<Self, DataError> {
        let mut digest = Digest::default();
        digest.add(
            format!(
                "pictures v1 {:?} {:?} {}",
                pictures.shape, request.image_size, request.skip_bad
            )
            .as_bytes(),
        );
        for (path, label, part) in &pictures.entries {
            add_file(&mut digest, path)?;
            digest.add(&[*label, *part as u8]);
        }
        Ok(digest.finish())
    }

    /// The key of the files `paths` read as `what` says (a CSV and the options that shape
    /// it), from their metadata alone: nothing is read.
    pub fn of_files(paths: &[&Path], what: &str) -> Result<Self, DataError> {
        let mut digest = Digest::default();
        digest.add(what.as_bytes());
        for path in paths {
            add_file(&mut digest, path)?;
        }
        Ok(digest.finish())
    }

    /// Where the set of this key is kept.
    pub fn path(&self) -> PathBuf {
        dir().join(format!("{}.bin", self.0))
    }
}

/// The cache directory: `$TRAINER_CACHE_DIR`, else `trainer/decoded` in the user's cache.
pub fn dir() -> PathBuf {
    match std::env::var_os("TRAINER_CACHE_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => super::user_cache().join("trainer").join("decoded"),
    }
}

/// What the container's header says of the set.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: String,
    shape: ImageShape,
    count: usize,
    skipped: usize,
    classes: Vec<String>,
}

/// The set kept under `key`, if there is one that reads back whole.
pub fn read(key: &Key) -> Option<Decoded> {
    let path = key.path();
    if !path.is_file() {
        return None;
    }
    let decoded = (|| -> Result<Decoded, String> {
        let container = read_container_file(&path, &[DECODED_MAGIC]).map_err(|e| e.to_string())?;
        let header: Header =
            serde_json::from_slice(&container.header).map_err(|e| e.to_string())?;
        let Ok([images, labels, parts]) = <[Vec<u8>; 3]>::try_from(container.sections) else {
            return Err("expected three sections".into());
        };
        if header.key != key.0 || labels.len() != header.count || parts.len() != header.count {
            return Err("another listing".into());
        }
        let split = Split::new(images, labels, header.shape).map_err(|e| e.to_string())?;
        Ok(Decoded {
            split,
            parts,
            skipped: header.skipped,
            classes: header.classes,
        })
    })();
    match decoded {
        Ok(decoded) => Some(decoded),
        Err(why) => {
            debug!(cache = %path.display(), why, "the cached set does not read back: decoding again");
            None
        }
    }
}

/// Sets smaller than this decode faster than a cache file is written and read back: not kept.
const SMALLEST_KEPT: usize = 1 << 20;

/// Keeps `decoded` under `key` (best effort: a failure only costs the next run's decoding);
/// sets under a mebibyte are not kept.
pub fn write(key: &Key, decoded: &Decoded) {
    if decoded.split.images().len() < SMALLEST_KEPT {
        return;
    }
    let path = key.path();
    let header = Header {
        key: key.0.clone(),
        shape: decoded.split.shape,
        count: decoded.split.len(),
        skipped: decoded.skipped,
        classes: decoded.classes.clone(),
    };
    let written = (|| -> Result<(), String> {
        files::create_dir_all(&dir()).map_err(|e| e.to_string())?;
        let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
        files::atomic_write(&path, |file| {
            write_container(
                file,
                DECODED_MAGIC,
                &header,
                &[
                    decoded.split.images(),
                    decoded.split.labels(),
                    &decoded.parts,
                ],
            )
        })
        .map_err(|e| e.to_string())
    })();
    if let Err(why) = written {
        debug!(cache = %path.display(), why, "the decoded set was not cached");
    }
}
