//! Decoding chunks of lines into events on blocking threads, several at once, in input order.

use std::mem;

use futures::StreamExt;
use futures::future::{self, BoxFuture};
use futures::stream::FuturesOrdered;
use tapio_event::codec::Decoder;
use tapio_event::{ComponentError, Timestamp, UnifiedEvent};

use super::framing::{Decoding, Framed, LineSettings};

/// The most events one batch carries; bigger chunks are cut into several batches so downstream
/// buffers (counted in events) stay fair.
pub(crate) const BATCH_MAX: usize = 2000;
/// How many chunks are decoded at once: one per core, at least two so reading and decoding
/// overlap, at most four so memory in flight stays small.
pub(crate) fn decode_depth() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4)
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
    pub(crate) lines: usize,
    /// Lines that did not decode into an event.
    pub(crate) undecodable: usize,
    /// Lines longer than `max_line_bytes`, skipped while framing.
    pub(crate) oversized: usize,
    /// Why the last undecodable line failed, for the warning.
    pub(crate) last_error: Option<String>,
    /// Error events for the `errors` output, when something reads it.
    pub(crate) errors: Vec<Vec<UnifiedEvent>>,
}

/// Decodes one chunk; runs on a blocking thread, so it owns everything it touches.
pub(crate) fn decode(
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

type DecodeJob<M> = BoxFuture<'static, Result<(Decoded, Option<Decoder>, M), ComponentError>>;

/// Decodes chunks on blocking threads, several at once, and hands the results back in the order
/// the chunks came in. Each chunk travels with a caller's tag `M` (what it was read from);
/// a tag without a chunk keeps its place in the order (a file source's position changes).
pub(crate) struct DecodePool<M> {
    settings: LineSettings,
    keep_errors: bool,
    /// One decoder per chunk in flight, so event ids come from separate generators.
    idle: Vec<Decoder>,
    jobs: FuturesOrdered<DecodeJob<M>>,
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
