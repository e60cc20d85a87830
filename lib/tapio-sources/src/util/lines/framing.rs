//! Cutting input into chunks of complete lines, and the line options a source is built with.

use std::io::{self, Read};
use std::mem;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::{ByteSize, ComponentError};

/// How much one read asks for: big enough that per-chunk costs vanish next to decoding, small
/// enough that a few chunks in flight keep every core busy.
pub(crate) const READ_CHUNK: usize = 256 << 10;
/// How lines become events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decoding {
    /// Each line is a `UnifiedEvent` in its JSON form (NDJSON); a missing `id` or `timestamp` is
    /// filled in, anything else that does not fit the contract makes the line an error.
    #[default]
    Json,
    /// Each line becomes an `application` event with the line in `raw_data`.
    Text,
}

/// The default `max_line_bytes`: 1 MiB, far above any sane log line, far below memory trouble.
pub(crate) fn default_max_line_bytes() -> ByteSize {
    ByteSize(1 << 20)
}

/// The line options of a source, checked once at build time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineSettings {
    pub decoding: Decoding,
    /// Longest line kept, in bytes, not counting its newline.
    pub max_line: usize,
    /// The `source` of events made from text lines (the source's type).
    pub source: &'static str,
}

impl LineSettings {
    /// Validates the options every line-reading source shares.
    pub fn new(
        decoding: Decoding,
        max_line_bytes: ByteSize,
        source: &'static str,
    ) -> Result<Self, ComponentError> {
        if max_line_bytes.0 == 0 {
            return Err(ComponentError::config(
                "`max_line_bytes` must be at least 1 byte",
            ));
        }
        Ok(LineSettings {
            decoding,
            max_line: usize::try_from(max_line_bytes.0).unwrap_or(usize::MAX),
            source,
        })
    }
}

/// Complete lines cut from an input, and where they sit in it (file sources checkpoint by it).
#[derive(Debug, Default)]
pub(crate) struct Framed {
    /// Input offset of `data[0]`.
    pub start: u64,
    /// Whole lines, each ending with a newline except an input's unterminated last line.
    pub data: Vec<u8>,
    /// Input offset just past everything this covers, including oversized bytes skipped after
    /// `data`.
    pub end: u64,
    /// Oversized lines skipped while framing (they never reach `data`).
    pub oversized: usize,
}

impl Framed {
    /// Whether this carries anything a source must pass on.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.oversized == 0
    }
}

/// Cuts an input into [`Framed`] chunks of complete lines. Holds at most one partial line between
/// reads; a partial line that grows past `max_line` is dropped up to its newline, however many
/// reads that takes.
pub(crate) struct LineBuffer {
    /// Bytes read but not handed out: a partial line, without a newline.
    buf: Vec<u8>,
    /// Input offset of `buf[0]`.
    position: u64,
    /// Inside an oversized line: drop everything up to the next newline.
    skipping: bool,
    max_line: usize,
    chunk: usize,
}

impl LineBuffer {
    /// A buffer for an input read from `position` on, reading `chunk` bytes at a time.
    pub fn new(max_line: usize, chunk: usize, position: u64) -> Self {
        LineBuffer {
            buf: Vec::new(),
            position,
            skipping: false,
            max_line,
            chunk: chunk.max(1),
        }
    }

    /// Input offset of the next byte to read (a file compares it with the file's size).
    pub fn read_end(&self) -> u64 {
        self.position + self.buf.len() as u64
    }

    /// Forgets everything and continues at `position` (a truncated file restarts at 0).
    pub fn reset(&mut self, position: u64) {
        self.buf.clear();
        self.skipping = false;
        self.position = position;
    }

    /// Reads once from `input`. `None` at end of input; otherwise the complete lines that became
    /// available, possibly none.
    pub fn read_from(&mut self, input: &mut impl Read) -> io::Result<Option<Framed>> {
        let old = self.buf.len();
        if self.buf.capacity() - old < self.chunk / 2 {
            self.buf.reserve(self.chunk);
        }
        self.buf.resize(self.buf.capacity(), 0);
        let read = loop {
            match input.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.buf.truncate(old);
                    return Err(error);
                }
            }
        };
        self.buf.truncate(old + read);
        if read == 0 {
            return Ok(None);
        }
        // `from`: where the first line that is kept starts.
        let mut from = 0;
        if self.skipping {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    from = newline + 1;
                    self.skipping = false;
                }
                None => {
                    self.position += self.buf.len() as u64;
                    self.buf.clear();
                    return Ok(Some(self.nothing()));
                }
            }
        }
        // Only the new bytes can hold a newline: the partial line kept before had none.
        let scan = from.max(old);
        let mut framed = match self.buf[scan..].iter().rposition(|&b| b == b'\n') {
            Some(newline) => {
                let cut = scan + newline + 1;
                let mut rest = Vec::with_capacity(self.chunk + (self.buf.len() - cut));
                rest.extend_from_slice(&self.buf[cut..]);
                self.buf.truncate(cut);
                let mut data = mem::replace(&mut self.buf, rest);
                data.drain(..from);
                let start = self.position + from as u64;
                self.position += cut as u64;
                Framed {
                    start,
                    data,
                    end: self.position,
                    oversized: 0,
                }
            }
            None => {
                self.buf.drain(..from);
                self.position += from as u64;
                self.nothing()
            }
        };
        if self.buf.len() > self.max_line {
            framed.oversized += 1;
            self.skipping = true;
            self.position += self.buf.len() as u64;
            self.buf.clear();
            framed.end = self.position;
        }
        Ok(Some(framed))
    }

    /// The unterminated last line, for an input that has ended (or a file given up on).
    pub fn finish(&mut self) -> Option<Framed> {
        self.skipping = false;
        if self.buf.is_empty() {
            return None;
        }
        let data = mem::take(&mut self.buf);
        let start = self.position;
        self.position += data.len() as u64;
        Some(Framed {
            start,
            data,
            end: self.position,
            oversized: 0,
        })
    }

    fn nothing(&self) -> Framed {
        Framed {
            start: self.position,
            end: self.position,
            ..Framed::default()
        }
    }
}
