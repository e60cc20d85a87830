//! The disk buffer's files. A buffer is a directory of append-only segments named by a
//! sequence number (`00000000000000000042.seg`), each a run of records
//! `[length: u32 LE][crc32c of the payload: u32 LE][payload: one event's JSON]`, plus an `ack`
//! file naming the first record not yet acknowledged (`<segment> <offset>`). A damaged tail
//! found at start is moved to `<segment>.damaged` (the quarantine) and cut off, so what follows
//! is always a readable prefix. Everything here streams: no function holds more than one record.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes before each record's payload: its length and its checksum.
pub(crate) const HEADER: usize = 8;

/// Largest payload a record may claim; a length above it is damage, not a huge event.
pub(crate) const MAX_RECORD: u32 = 64 << 20;

/// The extension of segment files.
const SEGMENT_EXT: &str = "seg";
/// The extension of quarantined damaged tails.
pub(crate) const DAMAGED_EXT: &str = "damaged";
/// The file naming the acknowledged position.
const ACK_FILE: &str = "ack";

/// A position in the buffer: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Position {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// The directory of sink `name`'s buffer under `data_dir`.
pub fn buffer_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("buffers").join(name)
}

/// The path of segment `seq` in `dir`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SEGMENT_EXT}"))
}

/// The sequence numbers of the segments in `dir`, in order.
pub(crate) fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(&format!(".{SEGMENT_EXT}"))
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            found.push(seq);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The acknowledged position recorded in `dir`, or the start when none is.
pub(crate) fn read_ack(dir: &Path) -> Position {
    let Ok(text) = std::fs::read_to_string(dir.join(ACK_FILE)) else {
        return Position::default();
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Position { segment, offset },
        _ => Position::default(),
    }
}

/// Records `at` as the acknowledged position, atomically (write then rename). It is not
/// synced: losing it to a power cut only means events are sent again, never lost.
pub(crate) fn write_ack(dir: &Path, at: Position) -> std::io::Result<()> {
    let temporary = dir.join(format!("{ACK_FILE}.tmp"));
    std::fs::write(&temporary, format!("{} {}\n", at.segment, at.offset))?;
    std::fs::rename(temporary, dir.join(ACK_FILE))
}

/// The header of a record holding `payload`: its length and checksum.
pub(crate) fn record_header(payload: &[u8]) -> [u8; HEADER] {
    let mut header = [0; HEADER];
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    header
}

/// Appends one record holding `payload` to `out`.
#[cfg(test)]
pub(crate) fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&record_header(payload));
    out.extend_from_slice(payload);
}

/// What reading a record found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A whole record whose checksum matches; its payload is in the reader's buffer.
    Valid,
    /// The segment ends cleanly here.
    End,
    /// The bytes here are not a valid record (torn write, bad length or checksum).
    Damaged(&'static str),
}

/// Reads records one at a time from a segment, keeping only the current payload.
pub(crate) struct RecordReader {
    file: BufReader<File>,
    /// Offset of the next record.
    pub(crate) offset: u64,
    /// The payload of the last valid record.
    pub(crate) payload: Vec<u8>,
}

impl RecordReader {
    /// Reads segment `path` from `offset`.
    pub(crate) fn open(path: &Path, offset: u64) -> std::io::Result<Self> {
        use std::io::Seek;
        let mut file = File::open(path)?;
        file.seek(std::io::SeekFrom::Start(offset))?;
        Ok(RecordReader {
            file: BufReader::with_capacity(256 << 10, file),
            offset,
            payload: Vec::new(),
        })
    }

    /// The next record; `limit` is where readable data ends (the writer's position, or the
    /// file's length for a sealed segment).
    pub(crate) fn next(&mut self, limit: u64) -> std::io::Result<Record> {
        if self.offset >= limit {
            return Ok(Record::End);
        }
        if limit - self.offset < HEADER as u64 {
            return Ok(Record::Damaged("a record header is cut short"));
        }
        let mut header = [0u8; HEADER];
        if !read_full(&mut self.file, &mut header)? {
            return Ok(Record::Damaged("a record header is cut short"));
        }
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let checksum = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if length > MAX_RECORD || self.offset + (HEADER as u64) + u64::from(length) > limit {
            return Ok(Record::Damaged("a record's length runs past the segment"));
        }
        self.payload.resize(length as usize, 0);
        if !read_full(&mut self.file, &mut self.payload)? {
            return Ok(Record::Damaged("a record is cut short"));
        }
        if crc32c::crc32c(&self.payload) != checksum {
            return Ok(Record::Damaged("a record's checksum does not match"));
        }
        self.offset += HEADER as u64 + u64::from(length);
        Ok(Record::Valid)
    }
}

/// Fills `buf`, or returns false at end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// What scanning a segment found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// Valid records from the scan's start.
    pub(crate) records: u64,
    /// Where the valid prefix ends.
    pub(crate) valid_until: u64,
    /// The file's length.
    pub(crate) length: u64,
    /// Why the bytes after `valid_until` are not readable, if there are any.
    pub(crate) damage: Option<&'static str>,
}

/// Checks every record of segment `path` from `offset` on, streaming.
pub(crate) fn scan(path: &Path, offset: u64) -> std::io::Result<Scan> {
    let length = std::fs::metadata(path)?.len();
    let mut reader = RecordReader::open(path, offset.min(length))?;
    let mut scan = Scan {
        length,
        ..Scan::default()
    };
    loop {
        match reader.next(length)? {
            Record::Valid => scan.records += 1,
            Record::End => break,
            Record::Damaged(why) => {
                scan.damage = Some(why);
                break;
            }
        }
    }
    scan.valid_until = reader.offset;
    Ok(scan)
}

/// Moves the bytes of segment `seq` after `valid_until` to its quarantine file and cuts the
/// segment there, so it ends with its last whole record. Returns the bytes moved.
pub(crate) fn quarantine_tail(dir: &Path, seq: u64, valid_until: u64) -> std::io::Result<u64> {
    use std::io::Seek;
    let path = segment_path(dir, seq);
    let mut segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    segment.seek(std::io::SeekFrom::Start(valid_until))?;
    let quarantine = dir.join(format!("{seq:020}.{DAMAGED_EXT}"));
    let mut damaged = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&quarantine)?;
    let moved = std::io::copy(&mut segment, &mut damaged)?;
    damaged.flush()?;
    damaged.sync_data()?;
    segment.set_len(valid_until)?;
    segment.sync_data()?;
    Ok(moved)
}

/// One sink's buffer as `tapio buffer check` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BufferReport {
    /// The sink whose buffer this is (the directory's name).
    pub sink: String,
    /// Segment files.
    pub segments: usize,
    /// Readable events not yet acknowledged by the sink.
    pub events: u64,
    /// Bytes of the segments.
    pub bytes: u64,
    /// Damage no start has quarantined yet: `<segment>: <why> at <offset> (<n> bytes)`.
    pub unreadable: Vec<String>,
    /// Bytes a start already moved to quarantine files.
    pub quarantined_bytes: u64,
}

/// Verifies every buffer under `<data_dir>/buffers`, offline: each segment read through, every
/// checksum checked. Nothing is changed.
pub fn check(data_dir: &Path) -> std::io::Result<Vec<BufferReport>> {
    let root = data_dir.join("buffers");
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut reports = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        reports.push(check_one(&entry.path())?);
    }
    reports.sort_by(|a, b| a.sink.cmp(&b.sink));
    Ok(reports)
}

/// [`check`] for one buffer directory.
fn check_one(dir: &Path) -> std::io::Result<BufferReport> {
    let ack = read_ack(dir);
    let mut report = BufferReport {
        sink: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..BufferReport::default()
    };
    for seq in segments(dir)? {
        let path = segment_path(dir, seq);
        let scan = scan(&path, 0)?;
        report.segments += 1;
        report.bytes += scan.length;
        if let Some(why) = scan.damage {
            report.unreadable.push(format!(
                "{}: {why} at offset {} ({} bytes)",
                path.display(),
                scan.valid_until,
                scan.length - scan.valid_until
            ));
        }
        report.events += if seq < ack.segment {
            0
        } else if seq == ack.segment {
            scan.records - scan_records_before(&path, ack.offset.min(scan.valid_until))?
        } else {
            scan.records
        };
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(DAMAGED_EXT) {
            report.quarantined_bytes += std::fs::metadata(&path)?.len();
        }
    }
    Ok(report)
}

/// Valid records of segment `path` before byte `until`.
fn scan_records_before(path: &Path, until: u64) -> std::io::Result<u64> {
    let mut reader = RecordReader::open(path, 0)?;
    let mut records = 0;
    while reader.next(until)? == Record::Valid {
        records += 1;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_segment(dir: &Path, seq: u64, payloads: &[&[u8]]) -> u64 {
        let mut bytes = Vec::new();
        for payload in payloads {
            encode_record(payload, &mut bytes);
        }
        std::fs::write(segment_path(dir, seq), &bytes).unwrap();
        bytes.len() as u64
    }

    #[test]
    fn records_read_back_and_a_clean_segment_scans_whole() {
        let dir = tempfile::tempdir().unwrap();
        let length = write_segment(dir.path(), 3, &[b"{\"a\":1}", b"", b"{\"b\":22}"]);
        let scan = scan(&segment_path(dir.path(), 3), 0).unwrap();
        assert_eq!(
            scan,
            Scan {
                records: 3,
                valid_until: length,
                length,
                damage: None
            }
        );
        let mut reader = RecordReader::open(&segment_path(dir.path(), 3), 0).unwrap();
        assert_eq!(reader.next(length).unwrap(), Record::Valid);
        assert_eq!(reader.payload, b"{\"a\":1}");
        assert_eq!(reader.next(length).unwrap(), Record::Valid);
        assert_eq!(reader.next(length).unwrap(), Record::Valid);
        assert_eq!(reader.payload, b"{\"b\":22}");
        assert_eq!(reader.next(length).unwrap(), Record::End);
        assert_eq!(segments(dir.path()).unwrap(), [3]);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_found_and_the_prefix_kept() {
        let dir = tempfile::tempdir().unwrap();
        let payloads: [&[u8]; 3] = [b"first-record", b"second", b"third-one"];
        let full = write_segment(dir.path(), 0, &payloads);
        let original = std::fs::read(segment_path(dir.path(), 0)).unwrap();
        let first_end = (HEADER + payloads[0].len()) as u64;
        for cut in 1..full {
            std::fs::write(segment_path(dir.path(), 0), &original[..cut as usize]).unwrap();
            let scan = scan(&segment_path(dir.path(), 0), 0).unwrap();
            assert!(
                scan.damage.is_some() || scan.valid_until == cut,
                "cut {cut}"
            );
            assert!(scan.valid_until <= cut);
            if cut >= first_end {
                assert!(scan.records >= 1, "cut {cut} lost the first record");
            }
        }
        for flip in 0..full as usize {
            let mut bytes = original.clone();
            bytes[flip] ^= 0x5a;
            std::fs::write(segment_path(dir.path(), 0), &bytes).unwrap();
            let scan = scan(&segment_path(dir.path(), 0), 0).unwrap();
            assert!(scan.damage.is_some(), "flipped byte {flip} went unnoticed");
            if flip as u64 >= first_end {
                assert!(scan.records >= 1);
            }
        }
    }

    #[test]
    fn a_quarantined_tail_leaves_a_readable_segment_and_check_reports_both_states() {
        let data = tempfile::tempdir().unwrap();
        let dir = buffer_dir(data.path(), "out");
        std::fs::create_dir_all(&dir).unwrap();
        let length = write_segment(&dir, 1, &[b"one", b"two"]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(segment_path(&dir, 1))
            .unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let report = &check(data.path()).unwrap()[0];
        assert_eq!(report.sink, "out");
        assert_eq!(report.events, 2);
        assert_eq!(report.unreadable.len(), 1, "{report:?}");
        let scan = scan(&segment_path(&dir, 1), 0).unwrap();
        assert_eq!(scan.valid_until, length);
        assert_eq!(quarantine_tail(&dir, 1, scan.valid_until).unwrap(), 6);
        let report = &check(data.path()).unwrap()[0];
        assert!(report.unreadable.is_empty(), "{report:?}");
        assert_eq!(report.quarantined_bytes, 6);
        assert_eq!(report.bytes, length);
        write_ack(
            &dir,
            Position {
                segment: 1,
                offset: (HEADER + 3) as u64,
            },
        )
        .unwrap();
        assert_eq!(check(data.path()).unwrap()[0].events, 1);
        assert_eq!(
            read_ack(&dir),
            Position {
                segment: 1,
                offset: 11
            }
        );
    }
}
