//! Line framing and decoding shared by the `stdin` and `file` sources. Input is read in big chunks
//! and cut at the last newline, so a chunk of complete lines travels on without copying each line;
//! chunks are decoded in parallel on blocking threads while the output keeps the input's order;
//! and bad lines (undecodable, oversized) are counted, reported and routed the same way by both.

use std::io::{self, Read};
use std::mem;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{self, BoxFuture};
use futures::stream::FuturesOrdered;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::codec::Decoder;
use tapio_event::{
    ByteSize, ComponentError, ComponentMetrics, ERRORS_OUTPUT, EventBatch, Outputs, Timestamp,
    UnifiedEvent,
};

/// How much one read asks for: big enough that per-chunk costs vanish next to decoding, small
/// enough that a few chunks in flight keep every core busy.
pub(crate) const READ_CHUNK: usize = 256 << 10;

/// The most events one batch carries; bigger chunks are cut into several batches so downstream
/// buffers (counted in events) stay fair.
const BATCH_MAX: usize = 2000;

/// At most one warning per kind of problem this often, however many lines are bad.
const WARN_EVERY: Duration = Duration::from_secs(5);

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

/// How many chunks are decoded at once: one per core, at least two so reading and decoding
/// overlap, at most four so memory in flight stays small.
pub(crate) fn decode_depth() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4)
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

/// Events ready for one batch, and the input offset just past the lines they came from.
#[derive(Debug)]
pub(crate) struct DecodedBatch {
    pub events: Vec<UnifiedEvent>,
    pub end: u64,
}

/// What one chunk of lines became.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// In input order, each at most `BATCH_MAX` events; the last one ends at `end`.
    pub batches: Vec<DecodedBatch>,
    /// Input offset just past the chunk.
    pub end: u64,
    /// Non-empty lines seen, good or bad.
    lines: usize,
    undecodable: usize,
    oversized: usize,
    last_error: Option<String>,
    /// Error events for the `errors` output, when something reads it.
    errors: Vec<Vec<UnifiedEvent>>,
}

/// Decodes one chunk; runs on a blocking thread, so it owns everything it touches.
fn decode(
    framed: Framed,
    settings: LineSettings,
    keep_errors: bool,
    decoder: &mut Decoder,
) -> Decoded {
    let read_at = Timestamp::now();
    let mut decoded = Decoded {
        end: framed.end,
        lines: framed.oversized,
        oversized: framed.oversized,
        ..Decoded::default()
    };
    let mut events = Vec::with_capacity(BATCH_MAX.min(framed.data.len() / 256 + 16));
    let mut errors = Vec::new();
    let mut offset = framed.start;
    for raw in framed.data.split_inclusive(|&b| b == b'\n') {
        offset += raw.len() as u64;
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        if line.len() > settings.max_line {
            decoded.lines += 1;
            decoded.oversized += 1;
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        decoded.lines += 1;
        match settings.decoding {
            Decoding::Json => match decoder.decode_json(line, read_at) {
                Ok(event) => events.push(event),
                Err(error) => {
                    decoded.undecodable += 1;
                    if keep_errors {
                        errors.push(decoder.error_event(line, settings.source, &error.0, read_at));
                        if errors.len() == BATCH_MAX {
                            decoded.errors.push(mem::take(&mut errors));
                        }
                    }
                    decoded.last_error = Some(error.0);
                }
            },
            Decoding::Text => events.push(decoder.wrap_text(line, settings.source, read_at)),
        }
        if events.len() == BATCH_MAX {
            decoded.batches.push(DecodedBatch {
                events: mem::take(&mut events),
                end: offset,
            });
        }
    }
    if !events.is_empty() {
        decoded.batches.push(DecodedBatch {
            events,
            end: framed.end,
        });
    } else if let Some(last) = decoded.batches.last_mut() {
        last.end = framed.end;
    }
    if !errors.is_empty() {
        decoded.errors.push(errors);
    }
    decoded
}

type Job<M> = BoxFuture<'static, Result<(Decoded, Option<Decoder>, M), ComponentError>>;

/// Decodes chunks on blocking threads, several at once, and hands the results back in the order
/// the chunks came in. Each chunk travels with a caller's tag `M` (what it was read from);
/// a tag without a chunk keeps its place in the order (a file source's position changes).
pub(crate) struct DecodePool<M> {
    settings: LineSettings,
    keep_errors: bool,
    /// One decoder per chunk in flight, so event ids come from separate generators.
    idle: Vec<Decoder>,
    jobs: FuturesOrdered<Job<M>>,
}

impl<M: Send + 'static> DecodePool<M> {
    /// A pool decoding [`decode_depth`] chunks at once; `keep_errors` builds error events for
    /// the `errors` output (only worth it when something reads it).
    pub fn new(settings: LineSettings, keep_errors: bool) -> Self {
        DecodePool {
            settings,
            keep_errors,
            idle: (0..decode_depth()).map(|_| Decoder::default()).collect(),
            jobs: FuturesOrdered::new(),
        }
    }

    /// Whether another chunk may start decoding now.
    pub fn has_room(&self) -> bool {
        !self.idle.is_empty()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Queues a chunk (decoded on a blocking thread), or just a tag, behind everything queued.
    pub fn push(&mut self, framed: Option<Framed>, tag: M) {
        let Some(framed) = framed else {
            self.jobs
                .push_back(Box::pin(future::ready(Ok((Decoded::default(), None, tag)))));
            return;
        };
        let mut decoder = self.idle.pop().unwrap_or_default();
        let (settings, keep_errors) = (self.settings, self.keep_errors);
        let job = tokio::task::spawn_blocking(move || {
            let decoded = decode(framed, settings, keep_errors, &mut decoder);
            (decoded, decoder)
        });
        self.jobs.push_back(Box::pin(async move {
            let (decoded, decoder) = job.await.map_err(|error| {
                ComponentError::runtime(format!("decoding lines failed: {error}"))
            })?;
            Ok((decoded, Some(decoder), tag))
        }));
    }

    /// The oldest job once it is done; `None` when nothing is in flight.
    pub async fn next(&mut self) -> Option<Result<(Decoded, M), ComponentError>> {
        Some(self.jobs.next().await?.map(|(decoded, decoder, tag)| {
            self.idle.extend(decoder);
            (decoded, tag)
        }))
    }
}

/// Occurrences of one problem since it was last reported, so a flood of bad lines costs one log
/// line every few seconds.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    since: usize,
}

impl Throttle {
    /// Adds `n` occurrences; returns how many to report if a report is due now.
    pub fn add(&mut self, n: usize) -> Option<usize> {
        self.since += n;
        let due = self.since > 0 && self.last.is_none_or(|last| last.elapsed() >= WARN_EVERY);
        due.then(|| {
            self.last = Some(Instant::now());
            mem::take(&mut self.since)
        })
    }

    /// Occurrences not reported yet, for a last report at exit.
    pub fn flush(&mut self) -> Option<usize> {
        (self.since > 0).then(|| mem::take(&mut self.since))
    }
}

/// Counts, reports and routes the bad lines of one source.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    undecodable: Throttle,
    oversized: Throttle,
    last_error: Option<String>,
}

impl Problems {
    /// Accounts for a decoded chunk read from `origin` (counters, rate-limited warnings) and sends
    /// its error events to the `errors` output. The good batches are left to the caller.
    pub async fn report(
        &mut self,
        decoded: &mut Decoded,
        origin: &str,
        out: &mut Outputs,
        metrics: &ComponentMetrics,
    ) {
        metrics.add_events_in(decoded.lines);
        self.undecodable(
            origin,
            decoded.undecodable,
            decoded.last_error.take(),
            metrics,
        );
        metrics.add_errors("oversized_line", decoded.oversized);
        let oversized = self.oversized.add(decoded.oversized);
        self.warn(origin, None, oversized);
        for errors in mem::take(&mut decoded.errors) {
            out.send_to(ERRORS_OUTPUT, EventBatch::new(errors)).await;
        }
    }

    /// Counts `count` inputs that did not decode, the last of them failing with `last_error`,
    /// and warns about them (rate-limited). Sources that decode record by record (`kafka`) call
    /// it directly; line sources through [`Problems::report`].
    pub fn undecodable(
        &mut self,
        origin: &str,
        count: usize,
        last_error: Option<String>,
        metrics: &ComponentMetrics,
    ) {
        metrics.add_errors("decode", count);
        if last_error.is_some() {
            self.last_error = last_error;
        }
        let due = self.undecodable.add(count);
        self.warn(origin, due, None);
    }

    /// Reports what the last rate-limited warnings left out; called when the source stops.
    pub fn flush(&mut self, origin: &str) {
        let undecodable = self.undecodable.flush();
        let oversized = self.oversized.flush();
        self.warn(origin, undecodable, oversized);
    }

    fn warn(&self, origin: &str, undecodable: Option<usize>, oversized: Option<usize>) {
        if let Some(skipped) = undecodable {
            let last_error = self.last_error.as_deref().unwrap_or("?");
            tracing::warn!(
                origin,
                skipped,
                last_error,
                "skipped input that is not UnifiedEvent JSON (counted as errors, kind \"decode\", and sent to the `errors` output if anything reads it)"
            );
        }
        if let Some(skipped) = oversized {
            tracing::warn!(
                origin,
                skipped,
                "skipped lines longer than max_line_bytes (counted as errors, kind \"oversized_line\")"
            );
        }
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read, like a slow pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Frames `input` read `step` bytes at a time; returns each chunk's data and the oversized
    /// count, checking offsets are contiguous.
    fn frame(input: &[u8], step: usize, max_line: usize, chunk: usize) -> (Vec<u8>, usize, u64) {
        let mut reader = Trickle { data: input, step };
        let mut lines = LineBuffer::new(max_line, chunk, 0);
        let (mut data, mut oversized, mut end) = (Vec::new(), 0, 0);
        while let Some(framed) = lines.read_from(&mut reader).unwrap() {
            assert!(framed.start >= end && framed.end >= framed.start + framed.data.len() as u64);
            assert!(framed.data.is_empty() || framed.data.ends_with(b"\n"));
            data.extend_from_slice(&framed.data);
            oversized += framed.oversized;
            end = framed.end;
        }
        if let Some(last) = lines.finish() {
            assert_eq!(last.start, end);
            data.extend_from_slice(&last.data);
            end = last.end;
        }
        (data, oversized, end)
    }

    fn text_settings(max_line: usize) -> LineSettings {
        LineSettings::new(Decoding::Text, ByteSize(max_line as u64), "stdin").unwrap()
    }

    fn texts_of(decoded: &Decoded) -> Vec<String> {
        decoded
            .batches
            .iter()
            .flat_map(|batch| crate::testing::texts(&batch.events))
            .collect()
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        let input = b"first line\nsecond\r\n\nthird without newline";
        for step in [1, 2, 3, 7, 64] {
            let (data, oversized, end) = frame(input, step, 100, 8);
            assert_eq!(data, input, "step {step}");
            assert_eq!((oversized, end), (0, input.len() as u64));
        }
    }

    #[test]
    fn crlf_empty_lines_and_unterminated_last_line() {
        let framed = Framed {
            start: 0,
            data: b"a\r\n\n\r\nb\nc".to_vec(),
            end: 9,
            oversized: 0,
        };
        let decoded = decode(framed, text_settings(100), false, &mut Decoder::default());
        assert_eq!(texts_of(&decoded), ["a", "b", "c"]);
        assert_eq!(decoded.lines, 3);
        assert_eq!(decoded.batches[0].end, 9);
    }

    #[test]
    fn oversized_line_spanning_reads_is_skipped_and_neighbours_survive() {
        let long = "x".repeat(50);
        let input = format!("before\n{long}\nafter\n{long}");
        for step in [1, 5, 16, 1000] {
            let (data, oversized, end) = frame(input.as_bytes(), step, 10, 8);
            assert_eq!(end, input.len() as u64, "step {step}");
            let framed = Framed {
                start: 0,
                data,
                end,
                oversized,
            };
            let decoded = decode(framed, text_settings(10), false, &mut Decoder::default());
            assert_eq!(texts_of(&decoded), ["before", "after"], "step {step}");
            assert_eq!(decoded.oversized, 2, "step {step}");
        }
    }

    #[test]
    fn line_of_exactly_max_bytes_is_kept() {
        let input = b"0123456789\n01234567890\n";
        let (data, oversized, end) = frame(input, 3, 10, 4);
        let framed = Framed {
            start: 0,
            data,
            end,
            oversized,
        };
        let decoded = decode(framed, text_settings(10), false, &mut Decoder::default());
        assert_eq!(texts_of(&decoded), ["0123456789"]);
        assert_eq!(decoded.oversized, 1);
    }

    #[test]
    fn big_chunks_become_capped_batches_ending_at_line_ends() {
        let mut data = Vec::new();
        for i in 0..(BATCH_MAX * 2 + 5) {
            data.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let end = data.len() as u64 + 100;
        let framed = Framed {
            start: 100,
            data,
            end,
            oversized: 0,
        };
        let decoded = decode(framed, text_settings(100), false, &mut Decoder::default());
        let sizes: Vec<_> = decoded.batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [BATCH_MAX, BATCH_MAX, 5]);
        let first_end = 100
            + (0..BATCH_MAX)
                .map(|i| format!("{i}\n").len() as u64)
                .sum::<u64>();
        assert_eq!(decoded.batches[0].end, first_end);
        assert_eq!(decoded.batches[2].end, end);
    }

    #[test]
    fn undecodable_lines_are_counted_and_kept_for_the_errors_output() {
        let settings = LineSettings::new(Decoding::Json, ByteSize(1000), "stdin").unwrap();
        let framed = Framed {
            start: 0,
            data: b"{\"type\":\"process\",\"source\":\"x\"}\nnot json\n".to_vec(),
            end: 42,
            oversized: 0,
        };
        let decoded = decode(framed, settings, true, &mut Decoder::default());
        assert_eq!(decoded.batches.len(), 1);
        assert_eq!(decoded.undecodable, 1);
        let error = &decoded.errors[0][0];
        assert_eq!(error.raw_data.as_deref(), Some(&b"not json"[..]));
        assert!(error.application.as_ref().unwrap().contains_key("error"));
    }

    #[test]
    fn throttle_reports_first_then_at_most_every_period() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.add(0), None);
        assert_eq!(throttle.add(2), Some(2));
        assert_eq!(throttle.add(3), None);
        assert_eq!(throttle.add(0), None);
        assert_eq!(throttle.flush(), Some(3));
        assert_eq!(throttle.flush(), None);
    }

    #[test]
    fn zero_max_line_is_rejected() {
        let error = LineSettings::new(Decoding::Json, ByteSize(0), "stdin").unwrap_err();
        assert!(error.message().contains("max_line_bytes"), "{error}");
    }
}
