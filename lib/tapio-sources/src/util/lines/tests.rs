//! Framing and decoding together, as the `stdin` and `file` sources use them.

use std::io::{self, Read};

use tapio_event::ByteSize;
use tapio_event::codec::Decoder;

use super::decoding::{BATCH_MAX, Decoded, decode};
use super::framing::{Decoding, Framed, LineBuffer, LineSettings};

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
        .flat_map(|batch| crate::util::testing::texts(&batch.events))
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
fn zero_max_line_is_rejected() {
    let error = LineSettings::new(Decoding::Json, ByteSize(0), "stdin").unwrap_err();
    assert!(error.message().contains("max_line_bytes"), "{error}");
}
