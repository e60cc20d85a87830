//! The `stdin` source: lines piped into Tapio (`kubectl logs … | tapio run`, replays of captured
//! NDJSON, tests). A dedicated thread reads big chunks and cuts them into complete lines, the
//! shared decode pool turns them into events in parallel, and the source ends at end of input
//! once everything read has been sent.

use std::io::{self, Read};

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BuildContext, ByteSize, ComponentConfig, ComponentError, ComponentFuture, ERRORS_OUTPUT,
    EventBatch, Source, SourceContext,
};
use tokio::sync::mpsc;

pub use crate::util::lines::Decoding;
use crate::util::lines::{
    self, DecodePool, Framed, LineBuffer, LineSettings, Problems, READ_CHUNK,
};

/// Reads events from standard input, one per line.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// How each line becomes an event: `"json"` reads one `UnifiedEvent` per line (NDJSON);
    /// `"text"` makes each line an `application` event with the line in `raw_data`.
    /// Lines that do not decode are counted and sent to the `errors` output.
    #[serde(default)]
    pub decoding: Decoding,
    /// Longest line kept; longer lines are skipped whole and counted as `oversized_line`
    /// errors.
    #[serde(default = "lines::default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
}

impl ComponentConfig for StdinConfig {
    type Component = dyn Source;
    const NAMED_OUTPUTS: &'static [&'static str] = &[ERRORS_OUTPUT];

    /// Checks the options; standard input itself is only touched when the source runs.
    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let settings = LineSettings::new(self.decoding, self.max_line_bytes, "stdin")?;
        Ok(Box::new(StdinSource { settings }))
    }
}

struct StdinSource {
    settings: LineSettings,
}

impl Source for StdinSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        enlarge_stdin_pipe();
        Box::pin(read_lines(io::stdin(), self.settings, cx))
    }
}

/// A pipe holds 64 KiB by default, so each read would return at most that much; a 1 MiB pipe
/// (the unprivileged maximum) lets a fast producer fill whole read chunks.
#[cfg(target_os = "linux")]
fn enlarge_stdin_pipe() {
    // SAFETY: F_SETPIPE_SZ only resizes the pipe's buffer; on anything that is not a pipe, or
    // beyond the allowed size, fcntl fails without side effects, and the default size is fine.
    unsafe {
        libc::fcntl(libc::STDIN_FILENO, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

#[cfg(not(target_os = "linux"))]
fn enlarge_stdin_pipe() {}

/// Runs the source on any input. The reading thread is never joined: a blocking read cannot be
/// interrupted, so on shutdown the source simply stops listening to it.
async fn read_lines<R: Read + Send + 'static>(
    input: R,
    settings: LineSettings,
    cx: SourceContext,
) -> Result<(), ComponentError> {
    let SourceContext {
        mut out,
        mut shutdown,
        metrics,
    } = cx;
    let mut pool = DecodePool::new(settings, out.has_output(ERRORS_OUTPUT));
    let (tx, mut rx) = mpsc::channel(lines::decode_depth());
    std::thread::Builder::new()
        .name("tapio-stdin".into())
        .spawn(move || frame_input(input, settings.max_line, tx))
        .map_err(|error| {
            ComponentError::runtime(format!("cannot start the stdin reader: {error}"))
        })?;
    let mut problems = Problems::default();
    let mut reading = true;
    let mut failure = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.triggered(), if reading => reading = false,
            Some(job) = pool.next(), if !pool.is_empty() => {
                let (mut decoded, ()) = job?;
                problems.report(&mut decoded, "stdin", &mut out, &metrics).await;
                for batch in decoded.batches {
                    if out.send(EventBatch::new(batch.events)).await.is_err() {
                        problems.flush("stdin");
                        return Ok(());
                    }
                }
            }
            message = rx.recv(), if reading && pool.has_room() => match message {
                Some(Ok(framed)) => pool.push(Some(framed), ()),
                Some(Err(error)) => {
                    failure = Some(ComponentError::runtime(format!("reading stdin failed: {error}")));
                    reading = false;
                }
                None => reading = false,
            },
            else => break,
        }
    }
    problems.flush("stdin");
    failure.map_or(Ok(()), Err)
}

/// The reading thread: frames `input` until its end (or a read error, passed on), then hands over
/// the unterminated last line, if any. Stops early once nobody listens.
fn frame_input(mut input: impl Read, max_line: usize, tx: mpsc::Sender<io::Result<Framed>>) {
    let mut lines = LineBuffer::new(max_line, READ_CHUNK, 0);
    loop {
        let (framed, done) = match lines.read_from(&mut input) {
            Ok(Some(framed)) => (framed, false),
            Ok(None) => (lines.finish().unwrap_or_default(), true),
            Err(error) => {
                let _ = tx.blocking_send(Err(error));
                return;
            }
        };
        if !framed.is_empty() && tx.blocking_send(Ok(framed)).is_err() {
            return;
        }
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};
    use std::time::Duration;

    use tapio_event::UnifiedEvent;

    use super::*;
    use crate::util::testing::{context, take, texts};

    async fn run_on(
        input: impl Read + Send + 'static,
        decoding: Decoding,
        with_errors: bool,
    ) -> (
        Vec<UnifiedEvent>,
        Vec<UnifiedEvent>,
        tapio_event::MetricsSnapshot,
    ) {
        let settings = LineSettings::new(decoding, ByteSize(64), "stdin").unwrap();
        let (cx, mut taps) = context("stdin", with_errors);
        let result = tokio::time::timeout(Duration::from_secs(20), read_lines(input, settings, cx))
            .await
            .expect("stdin source did not end at end of input");
        result.unwrap();
        let mut events = Vec::new();
        while let Some(batch) = taps.events.recv().await {
            events.extend_from_slice(batch.events());
        }
        let mut errors = Vec::new();
        while let Some(batch) = taps.errors.recv().await {
            errors.extend_from_slice(batch.events());
        }
        (events, errors, taps.metrics.snapshot())
    }

    #[tokio::test]
    async fn text_lines_until_end_of_input_including_an_unterminated_last_line() {
        let input = Cursor::new(b"one\r\n\ntwo\nthree".to_vec());
        let (events, _, metrics) = run_on(input, Decoding::Text, false).await;
        assert_eq!(texts(&events), ["one", "two", "three"]);
        assert!(events.iter().all(|e| e.source == "stdin"));
        assert_eq!((metrics.events_in, metrics.events_out), (3, 3));
    }

    #[tokio::test]
    async fn bad_and_oversized_lines_are_counted_and_sent_to_errors_when_connected() {
        let long = "y".repeat(200);
        let input = format!(
            "{{\"type\":\"process\",\"source\":\"ebpf\"}}\nnot json\n{long}\n{{\"type\":\"network\",\"source\":\"cni\"}}\n"
        );
        for with_errors in [true, false] {
            let (events, errors, metrics) = run_on(
                Cursor::new(input.clone().into_bytes()),
                Decoding::Json,
                with_errors,
            )
            .await;
            let sources: Vec<_> = events.iter().map(|e| e.source.as_str()).collect();
            assert_eq!(sources, ["ebpf", "cni"]);
            assert_eq!(metrics.errors.get("decode"), Some(&1));
            assert_eq!(metrics.errors.get("oversized_line"), Some(&1));
            assert_eq!(metrics.events_in, 4);
            if with_errors {
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].raw_data.as_deref(), Some(&b"not json"[..]));
                assert_eq!(metrics.events_out, 3);
            } else {
                assert!(errors.is_empty());
                assert_eq!(metrics.events_out, 2);
            }
        }
    }

    #[tokio::test]
    async fn order_is_kept_across_parallel_decoding() {
        let count = 30_000;
        let mut input = Vec::new();
        for i in 0..count {
            writeln!(
                input,
                r#"{{"type":"process","source":"ebpf","process":{{"pid":{i},"comm":"padding-padding-padding"}}}}"#
            )
            .unwrap();
        }
        assert!(
            input.len() > 4 * READ_CHUNK,
            "input must span several chunks"
        );
        let settings = LineSettings::new(Decoding::Json, ByteSize(1000), "stdin").unwrap();
        let (cx, mut taps) = context("stdin", false);
        let source = tokio::spawn(read_lines(Cursor::new(input), settings, cx));
        let events = take(&mut taps.events, count).await;
        source.await.unwrap().unwrap();
        let pids: Vec<u32> = events
            .iter()
            .map(|e| e.process.as_ref().unwrap().pid.unwrap())
            .collect();
        assert!(
            pids.iter().copied().eq(0..count as u32),
            "events out of order"
        );
        let mut ids: Vec<_> = events.iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "event ids collide");
    }

    #[tokio::test]
    async fn follows_a_pipe_and_stops_on_shutdown_while_the_read_blocks() {
        let (reader, mut writer) = io::pipe().unwrap();
        let settings = LineSettings::new(Decoding::Text, ByteSize(100), "stdin").unwrap();
        let (cx, mut taps) = context("stdin", false);
        let source = tokio::spawn(read_lines(reader, settings, cx));
        writer.write_all(b"early\n").unwrap();
        assert_eq!(texts(&take(&mut taps.events, 1).await), ["early"]);
        taps.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), source)
            .await
            .expect("source ignored shutdown")
            .unwrap()
            .unwrap();
        drop(writer);
    }
}
