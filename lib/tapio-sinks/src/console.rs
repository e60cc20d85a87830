//! `console`: writes events to standard output, as NDJSON for machines or as one readable line
//! per event for people watching a node.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::codec::{encode_json, encode_text};
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    Sink, SinkContext, UnifiedEvent,
};
use tokio::io::AsyncWriteExt;

/// How the `console` sink writes each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleEncoding {
    /// The event's JSON form, one per line (the wire contract).
    #[default]
    Json,
    /// Time, source, entity, narrative (or the key facts) and the correlation pattern.
    Text,
}

/// Options of the `console` sink.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `"json"`: the event's JSON form, one per line, for machines. `"text"`: one readable line
    /// per event (time, source, entity, narrative or the event's key facts, and the
    /// correlation pattern), for people watching a node.
    #[serde(default)]
    pub encoding: ConsoleEncoding,
}

struct Console {
    encoding: ConsoleEncoding,
}

impl ComponentConfig for ConsoleConfig {
    type Component = dyn Sink;

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        Ok(Box::new(Console {
            encoding: self.encoding,
        }))
    }
}

/// Appends `events` in `encoding`, one line each.
fn encode_lines(events: &[UnifiedEvent], encoding: ConsoleEncoding, out: &mut Vec<u8>) {
    let mut line = String::new();
    for event in events {
        match encoding {
            ConsoleEncoding::Json => encode_json(event, out),
            ConsoleEncoding::Text => {
                line.clear();
                encode_text(event, &mut line);
                out.extend_from_slice(line.as_bytes());
            }
        }
        out.push(b'\n');
    }
}

impl Sink for Console {
    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            let mut stdout = tokio::io::stdout();
            let mut encoded = Vec::new();
            while let Some(batch) = input.recv().await {
                encoded.clear();
                encode_lines(batch.events(), self.encoding, &mut encoded);
                let written = async {
                    stdout.write_all(&encoded).await?;
                    stdout.flush().await
                };
                match written.await {
                    Ok(()) => {}
                    // The reader went away (`tapio run | head`): nobody wants more, so the sink
                    // stops, which stops what only fed it, and the run ends well.
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                        tracing::info!(
                            sink = %cx.metrics.name,
                            "standard output was closed; the console sink stops"
                        );
                        cx.metrics.add_dropped("stdout_closed", batch.len());
                        batch.ack(BatchStatus::Dropped);
                        return Ok(());
                    }
                    Err(error) => {
                        cx.metrics.add_errors("write", batch.len());
                        return Err(ComponentError::runtime(format!(
                            "cannot write to standard output: {error}"
                        )));
                    }
                }
                cx.metrics.add_events_out(batch.len());
                cx.metrics.add_bytes_out(encoded.len());
                batch.ack(BatchStatus::Delivered);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{EventType, Timestamp};

    #[test]
    fn one_line_per_event_in_either_encoding() {
        let events = vec![
            UnifiedEvent::new(EventType::Process, "ebpf", Timestamp(1)),
            UnifiedEvent::new(EventType::Systemd, "systemd", Timestamp(2)),
        ];
        for encoding in [ConsoleEncoding::Json, ConsoleEncoding::Text] {
            let mut out = Vec::new();
            encode_lines(&events, encoding, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(text.ends_with('\n'));
        }
        let mut out = Vec::new();
        encode_lines(&events[..1], ConsoleEncoding::Json, &mut out);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["source"], "ebpf");
    }
}
