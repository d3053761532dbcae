//! Files: the one error a file operation ends in (naming the file), writes that are atomic,
//! and `trainer`'s checksummed container ([`container`]).
//!
//! Every write goes to a temporary file in the same directory (`.NAME.tmp-HOST-PID-N`), is
//! flushed to disk, then renamed over the target: a crash, a full disk or a second Ctrl-C
//! mid-write leaves the previous file intact, never a half-written one under the real name.

pub mod container;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A file could not be read or written, or its bytes are not what they should be. Every
/// module's file errors are this one, so each says the same thing the same way.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a file of the expected kind, or are damaged.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::Corrupt { path, .. } => path,
        }
    }
}

/// The I/O error of `path`, as a [`FileError`] (for `map_err`).
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `path` is damaged or of the wrong kind, for `problem`.
pub fn corrupt(path: &Path, problem: impl Into<String>) -> FileError {
    FileError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads `path` whole.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(io_err(path))
}

/// Reads `path` as JSON of a `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    serde_json::from_slice(&read(path)?).map_err(|e| corrupt(path, e.to_string()))
}

/// Writes `value` to `path` as pretty JSON with a final newline, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    atomic_write(path, |f| {
        serde_json::to_writer_pretty(&mut *f, value)?;
        writeln!(f)
    })
}

/// Makes the directory `path` and its parents.
pub fn create_dir_all(path: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

/// Writes `path` atomically: the bytes `write` produces go to a temporary file beside it, which
/// is synced and renamed over `path` only when complete. On any error the temporary file is
/// removed and `path` keeps its previous content. Temporaries of `path` that ended processes
/// of this machine left are removed first.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // The host, the process id and a per-process nonce: writers on different machines
    // sharing a directory (a sweep's workers) may have the same process id.
    let prefix = format!(".{name}.tmp-");
    remove_dead_temporaries(dir, &prefix);
    let tmp = dir.join(format!(
        "{prefix}{}-{}-{:08x}",
        crate::host::file_name_part(),
        std::process::id(),
        nonce()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can open a directory).
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Writes `bytes` to `path` atomically (see [`atomic_write`]).
pub fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    atomic_write(path, |f| f.write_all(bytes))
}

/// Whether `name` is an atomic write's temporary file.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Removes every atomic write's temporary file in `dir`, whoever left it: for a directory
/// only this process writes in (a run directory, under its lock). Best effort.
pub fn remove_temporaries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if is_temporary(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Removes the temporary files (`{prefix}HOST-PID-NONCE`) in `dir` that processes of this
/// machine left when they were killed mid-write; those of live processes, of other machines
/// and of unknown form stay. Best effort.
fn remove_dead_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let host = crate::host::file_name_part();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (_nonce, pid, writer) = (parts.next(), parts.next(), parts.next());
        let pid = pid.and_then(|p| p.parse::<u32>().ok());
        if let (Some(pid), Some(writer)) = (pid, writer)
            && writer == host
            && crate::host::has_ended(&crate::host::name(), pid)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A number drawn once per process, from the clock and an address, for temporary names.
fn nonce() -> u32 {
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let here = &nanos as *const u32 as usize as u32;
        nanos ^ here.rotate_left(16)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_the_previous_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.ckpt");
        atomic_write_bytes(&path, b"good").unwrap();
        let err = atomic_write(&path, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("checkpoint.ckpt") && err.to_string().contains("disk full")
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    /// The next write of a file removes the temporaries of it that killed processes of this
    /// machine left, and nothing else: not those of live processes, of other machines, of
    /// other files.
    #[test]
    fn a_write_removes_the_temporaries_of_dead_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = crate::host::file_name_part();
        let me = std::process::id();
        let names = [
            format!(".m.onnx.tmp-{host}-{dead}-0000abcd"),
            format!(".m.onnx.tmp-{host}-{me}-0000abcd"),
            format!(".m.onnx.tmp-elsewhere-{dead}-0000abcd"),
            format!(".other.onnx.tmp-{host}-{dead}-0000abcd"),
            format!(".m.onnx.tmp-{dead}-0000abcd"),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), b"half").unwrap();
        }
        atomic_write_bytes(&dir.path().join("m.onnx"), b"whole").unwrap();
        let left: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let expected: std::collections::BTreeSet<String> = names[1..]
            .iter()
            .cloned()
            .chain(["m.onnx".to_string()])
            .collect();
        assert_eq!(left, expected);
    }
}
