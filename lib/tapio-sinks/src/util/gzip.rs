//! gzip for request bodies, shared by the sinks that compress what they send over HTTP
//! (`Content-Encoding: gzip`): fast level, since a sink compresses on its hot path.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

/// `data` compressed as one gzip member.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
    encoder
        .write_all(data)
        .expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips() {
        let data = b"{\"a\":1}\n".repeat(100);
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&gzip(&data)[..]),
            &mut decoded,
        )
        .unwrap();
        assert_eq!(decoded, data);
    }
}
