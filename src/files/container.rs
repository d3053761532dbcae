//! `trainer`'s container: a magic tag, a JSON header, binary sections, and a CRC-32 of
//! everything before it, so that a truncated or corrupted file is reported as such instead of
//! half-loaded. Model files, checkpoints and the decoded-set cache are containers; each is
//! read streamed, no further than its lengths promise, within limits.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::{FileError, corrupt, io_err};

/// The tag of a model file.
pub(crate) const MODEL_MAGIC: &[u8; 8] = b"TRNRMDL1";
/// The tag of a checkpoint.
pub(crate) const CHECKPOINT_MAGIC: &[u8; 8] = b"TRNRCKP1";
/// The tag of a decoded set of pictures (the data cache).
pub(crate) const DECODED_MAGIC: &[u8; 8] = b"TRNRDEC1";

/// Lays out a container in memory, as [`write_container`] writes it.
#[cfg(test)]
pub(crate) fn encode_container(magic: &[u8; 8], header: &[u8], sections: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(32 + header.len() + sections.iter().map(|s| s.len() + 8).sum::<usize>());
    // Writing to a Vec cannot fail.
    let _ = write_container(&mut out, magic, header, sections);
    out
}

/// Writes a container to `out`: magic, header length, JSON header, section count, sections,
/// CRC-32 (model files, checkpoints, and the decoded-set cache), streamed through a buffer:
/// the sections are not copied into one.
pub(crate) fn write_container(
    out: impl Write,
    magic: &[u8; 8],
    header: &[u8],
    sections: &[&[u8]],
) -> std::io::Result<()> {
    let mut w = Crc {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: crc32fast::Hasher::new(),
    };
    w.write_all(magic)?;
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header)?;
    w.write_all(&(sections.len() as u32).to_le_bytes())?;
    for s in sections {
        w.write_all(&(s.len() as u64).to_le_bytes())?;
        w.write_all(s)?;
    }
    let crc = w.hasher.finalize();
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()
}

/// The most header bytes a container may promise: a checkpoint's JSON header holds the run's
/// history, a few hundred bytes an epoch.
const MAX_HEADER_BYTES: u64 = 64 << 20;
/// The most sections a container may promise (a checkpoint has two).
const MAX_SECTIONS: u32 = 8;
/// The most bytes one section may promise (a model of a billion parameters' optimizer state).
const MAX_SECTION_BYTES: u64 = 8 << 30;

/// A container read from a stream: its JSON header and its sections.
pub(crate) struct Container {
    /// Its tag.
    pub magic: [u8; 8],
    /// The JSON header.
    pub header: Vec<u8>,
    /// The binary sections.
    pub sections: Vec<Vec<u8>>,
}

/// What stops reading a container.
#[derive(Debug)]
enum ReadFail {
    /// The bytes are not a container of the expected kind, or are damaged.
    Corrupt(String),
    /// The stream itself failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadFail {
    fn from(e: std::io::Error) -> Self {
        ReadFail::Io(e)
    }
}

/// A reader or a writer that keeps a CRC-32 of what passes through it.
struct Crc<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Names a file by its magic.
fn kind(magic: &[u8]) -> &'static str {
    match magic {
        m if m == MODEL_MAGIC => "a trainer model file",
        m if m == CHECKPOINT_MAGIC => "a trainer checkpoint",
        m if m == DECODED_MAGIC => "a trainer decoded-set cache file",
        _ => "not a trainer file",
    }
}

/// The most bytes reserved ahead of those that have arrived.
const READ_STEP: u64 = 32 << 20;

/// Reads exactly `n` bytes, or says that the file ends before them. Memory grows with the
/// bytes that arrive (reserved [`READ_STEP`] at a time, exactly: a large section is not
/// copied between doubling buffers), not with what a damaged length field promises.
fn take(reader: &mut impl Read, n: u64, what: &str) -> Result<Vec<u8>, ReadFail> {
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        let step = left.min(READ_STEP);
        out.reserve_exact(step as usize);
        if (&mut *reader).take(step).read_to_end(&mut out)? < step as usize {
            return Err(ReadFail::Corrupt(format!(
                "truncated: the file ends inside its {what}"
            )));
        }
        left -= step;
    }
    Ok(out)
}

fn take_u64(reader: &mut impl Read, what: &str) -> Result<u64, ReadFail> {
    let bytes = take(reader, 8, what)?;
    Ok(u64::from_le_bytes(bytes.try_into().unwrap_or([0xff; 8])))
}

/// Reads a container (magic, header length, JSON header, section count, sections, CRC-32)
/// no further than its lengths promise, plus one byte to tell trailing data. `accept` lists
/// the magics the caller takes.
fn read_container(reader: impl Read, accept: &[&[u8; 8]]) -> Result<Container, ReadFail> {
    let corrupt = |m: String| Err(ReadFail::Corrupt(m));
    let mut r = Crc {
        inner: reader,
        hasher: crc32fast::Hasher::new(),
    };
    // A file shorter than the tag is not a trainer file; a failing read stays what it is.
    let magic: [u8; 8] = take(&mut r, 8, "magic tag")
        .map_err(|e| match e {
            ReadFail::Corrupt(_) => {
                ReadFail::Corrupt("too short: truncated or not a trainer file".into())
            }
            io => io,
        })?
        .try_into()
        .unwrap_or([0; 8]);
    if !accept.contains(&&magic) {
        return corrupt(format!("{}, expected {}", kind(&magic), kind(accept[0])));
    }
    let header_len = take_u64(&mut r, "header length")?;
    if header_len > MAX_HEADER_BYTES {
        return corrupt(format!(
            "damaged: header length {header_len} is past the limit of {MAX_HEADER_BYTES}"
        ));
    }
    let header = take(&mut r, header_len, "header")?;
    let count = u32::from_le_bytes(
        take(&mut r, 4, "section count")?
            .try_into()
            .unwrap_or([0xff; 4]),
    );
    if count > MAX_SECTIONS {
        return corrupt(format!("damaged: {count} sections, at most {MAX_SECTIONS}"));
    }
    let mut sections = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = take_u64(&mut r, "section length")?;
        if n > MAX_SECTION_BYTES {
            return corrupt(format!(
                "damaged: section length {n} is past the limit of {MAX_SECTION_BYTES}"
            ));
        }
        sections.push(take(&mut r, n, "data")?);
    }
    let computed = r.hasher.clone().finalize();
    let stored = take(&mut r.inner, 4, "checksum")?;
    if computed != u32::from_le_bytes(stored.try_into().unwrap_or([0; 4])) {
        return corrupt("checksum mismatch: the file is truncated or corrupted".into());
    }
    if r.inner.read(&mut [0u8; 1])? > 0 {
        return corrupt("damaged: data continues past the end of the container".into());
    }
    Ok(Container {
        magic,
        header,
        sections,
    })
}

/// Opens and reads the container at `path`, one of the kinds `accept` lists.
pub(crate) fn read_container_file(
    path: &Path,
    accept: &[&[u8; 8]],
) -> Result<Container, FileError> {
    let file = File::open(path).map_err(io_err(path))?;
    read_container(BufReader::new(file), accept).map_err(|e| match e {
        ReadFail::Corrupt(problem) => corrupt(path, problem),
        ReadFail::Io(e) => io_err(path)(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(magic: &[u8; 8], bytes: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        match read_container(bytes, &[magic]) {
            Ok(c) => Ok((c.header, c.sections)),
            Err(ReadFail::Corrupt(m)) => Err(m),
            Err(ReadFail::Io(e)) => Err(e.to_string()),
        }
    }

    #[test]
    fn container_round_trips_and_detects_damage() {
        let bytes = encode_container(MODEL_MAGIC, b"{}", &[b"abc", b""]);
        let (h, s) = decode(MODEL_MAGIC, &bytes).unwrap();
        assert_eq!((h, s), (b"{}".to_vec(), vec![b"abc".to_vec(), vec![]]));
        for cut in 0..bytes.len() {
            assert!(decode(MODEL_MAGIC, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            assert!(decode(MODEL_MAGIC, &flipped).is_err(), "flip at {at}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1; // the "a" of "abc": only the checksum can tell
        assert!(
            decode(MODEL_MAGIC, &flipped)
                .unwrap_err()
                .contains("checksum")
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            decode(MODEL_MAGIC, &longer)
                .unwrap_err()
                .contains("continues past")
        );
        assert!(
            decode(CHECKPOINT_MAGIC, &bytes)
                .unwrap_err()
                .contains("a trainer model file, expected a trainer checkpoint")
        );
    }

    /// A container is read no further than its lengths promise (and one byte to tell trailing
    /// data), and a damaged length costs no memory it does not have data for.
    #[test]
    fn reading_stops_at_what_the_lengths_promise() {
        use crate::test_support::Endless;
        let bytes = encode_container(MODEL_MAGIC, b"{}", &[b"abc"]);
        let mut reader = std::io::Cursor::new(bytes).chain(Endless(0));
        assert!(matches!(
            read_container(&mut reader, &[MODEL_MAGIC]),
            Err(ReadFail::Corrupt(m)) if m.contains("continues past")
        ));
        assert!(reader.into_inner().1.0 <= 8192);
        // A section that promises the limit, followed by only a little data.
        let mut bytes = MODEL_MAGIC.to_vec();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&MAX_SECTION_BYTES.to_le_bytes());
        bytes.extend_from_slice(&[0; 100]);
        assert!(matches!(
            read_container(&bytes[..], &[MODEL_MAGIC]),
            Err(ReadFail::Corrupt(m)) if m.contains("truncated")
        ));
    }
}
