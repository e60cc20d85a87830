//! `tapio tap`: prints the live events crossing components of a running Tapio, read from its
//! API's `GET /v1/tap` stream, as the wire JSON (one event a line, which a `stdin` source reads
//! back) or as readable lines naming the component each event crossed.

use std::io::Write as _;

use serde::Deserialize;
use tapio_api::client::{ClientError, Lines};
use tapio_event::UnifiedEvent;

use crate::cli::{TapArgs, TapFormat};
use crate::run::{EXIT_OK, EXIT_TEMPFAIL, EXIT_UNAVAILABLE, EXIT_USAGE};

/// One line of the `/v1/tap` stream: an event and where it was seen, or why the stream ended.
#[derive(Deserialize)]
struct TapLine {
    #[serde(default)]
    component: String,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    event: Option<UnifiedEvent>,
    #[serde(default)]
    error: Option<String>,
}

/// Runs `tapio tap`; the exit code is 0 when the stream ended (its limit reached), 64 for a
/// request the API refused, 69 when the API cannot be reached, 75 when the API dropped this
/// client for reading too slowly.
pub fn tap(args: &TapArgs) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime starts");
    match runtime.block_on(stream(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tapio tap: {error}");
            match error {
                ClientError::Unreachable(_) => EXIT_UNAVAILABLE,
                ClientError::Invalid(_) | ClientError::Refused(..) => EXIT_USAGE,
            }
        }
    }
}

/// The `/v1/tap` request `args` ask for.
fn request_path(args: &TapArgs) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("component", &args.component);
    if args.inputs_of {
        query.append_pair("direction", "inputs");
    }
    if let Some(limit) = args.limit {
        query.append_pair("limit", &limit.to_string());
    }
    format!("/v1/tap?{}", query.finish())
}

async fn stream(args: &TapArgs) -> Result<i32, ClientError> {
    let client = args.api.client()?;
    let mut lines = Lines::new(client.get(&request_path(args)).await?);
    let mut stdout = std::io::stdout().lock();
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().await {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let parsed: TapLine = serde_json::from_slice(&line).map_err(|e| {
            ClientError::Unreachable(format!(
                "the API sent a line that is not a tapped event ({e}): {}",
                String::from_utf8_lossy(&line)
            ))
        })?;
        if let Some(error) = parsed.error {
            eprintln!("tapio tap: {error}");
            return Ok(EXIT_TEMPFAIL);
        }
        let Some(event) = parsed.event else {
            continue;
        };
        out.clear();
        format_line(
            &parsed.component,
            parsed.output.as_deref(),
            &event,
            args.format,
            &mut out,
        );
        // A closed pipe (`tapio tap … | head`) ends the tap quietly.
        if stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(EXIT_OK);
        }
    }
    Ok(EXIT_OK)
}

/// One printed line: the wire JSON, or `component[.output]  <the event as text>`.
fn format_line(
    component: &str,
    output: Option<&str>,
    event: &UnifiedEvent,
    format: TapFormat,
    out: &mut Vec<u8>,
) {
    match format {
        TapFormat::Json => tapio_event::codec::encode_json(event, out),
        TapFormat::Text => {
            let mut text = String::new();
            tapio_event::codec::encode_text(event, &mut text);
            let place = match output {
                Some(output) => format!("{component}.{output}"),
                None => component.to_owned(),
            };
            out.extend_from_slice(format!("{place}  {}", text.trim_end()).as_bytes());
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{EventType, Timestamp};

    #[test]
    fn json_lines_read_back_as_events_and_text_names_the_component() {
        let event = UnifiedEvent::new(EventType::Process, "demo", Timestamp(1_000_000_000));
        let mut out = Vec::new();
        format_line("in", None, &event, TapFormat::Json, &mut out);
        let back: UnifiedEvent = serde_json::from_slice(out.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(back, event);

        out.clear();
        format_line("route", Some("critical"), &event, TapFormat::Text, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("route.critical  "), "{text}");
        assert!(text.contains("demo"), "{text}");
        assert_eq!(text.matches('\n').count(), 1);
    }
}
