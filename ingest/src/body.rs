//! HTTP body handling: bounded gzip decompression and protobuf decoding.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::error::{Error, Result};

/// Decodes an OTLP/HTTP protobuf body (`application/x-protobuf`) into an export request.
///
/// Only decodes: ids, times and the rest are checked by [`crate::to_span_batch`].
pub fn decode_traces_protobuf(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    ExportTraceServiceRequest::decode(body).map_err(Error::Protobuf)
}

/// Decodes an OTLP/HTTP protobuf logs body into an export request (checked by
/// [`crate::prepare_logs`]).
pub fn decode_logs_protobuf(body: &[u8]) -> Result<ExportLogsServiceRequest> {
    ExportLogsServiceRequest::decode(body).map_err(Error::Protobuf)
}

/// Decompresses a gzip body (one or more concatenated members), refusing to produce more than
/// `limit` bytes.
///
/// Returns [`Error::TooLarge`] as soon as the output would pass `limit`; the output buffer never
/// grows past `limit` bytes, so a small "gzip bomb" cannot exhaust memory. A corrupt or truncated
/// stream is [`Error::Gzip`]. Both are caller errors.
pub fn decompress_gzip(body: &[u8], limit: usize) -> Result<Vec<u8>> {
    const CHUNK: usize = 64 * 1024;
    let mut decoder = MultiGzDecoder::new(body);
    // Compressed trace payloads typically expand 5-10x; start there, capped by the limit.
    let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(8).min(limit));
    let mut chunk = [0u8; CHUNK];
    loop {
        let read = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Error::Gzip(error)),
        };
        let needed = out.len() + read;
        if needed > limit {
            return Err(Error::TooLarge { limit });
        }
        if needed > out.capacity() {
            // Grow geometrically like Vec would, but never past the limit.
            let target = out.capacity().saturating_mul(2).max(needed).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..read]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_within_the_limit_decompresses() {
        let data = b"hello otlp ".repeat(10_000);
        let out = decompress_gzip(&gzip(&data), data.len()).unwrap();
        assert_eq!(out, data);
        assert!(out.capacity() <= data.len());
    }

    #[test]
    fn gzip_over_the_limit_is_too_large() {
        let data = vec![0u8; 1_000_001];
        let error = decompress_gzip(&gzip(&data), 1_000_000).unwrap_err();
        assert!(error.is_too_large(), "{error:?}");
        assert!(matches!(error, Error::TooLarge { limit: 1_000_000 }));
        assert!(error.is_caller_error());
        assert_eq!(
            error.to_string(),
            "decompressed body is larger than the limit of 1000000 bytes"
        );
    }

    #[test]
    fn concatenated_gzip_members_are_all_decompressed() {
        let mut body = gzip(b"first ");
        body.extend(gzip(b"second"));
        assert_eq!(decompress_gzip(&body, 100).unwrap(), b"first second");
    }

    #[test]
    fn corrupt_gzip_is_a_caller_error() {
        let mut body = gzip(&b"abc".repeat(1000));
        let middle = body.len() / 2;
        body[middle] ^= 0xff;
        let error = decompress_gzip(&body, 1 << 20).unwrap_err();
        assert!(matches!(error, Error::Gzip(_)), "{error:?}");
        assert!(error.is_caller_error());

        let error = decompress_gzip(b"not gzip at all", 1 << 20).unwrap_err();
        assert!(matches!(error, Error::Gzip(_)), "{error:?}");

        let truncated = gzip(b"abcdef");
        let error = decompress_gzip(&truncated[..truncated.len() - 4], 1 << 20).unwrap_err();
        assert!(matches!(error, Error::Gzip(_)), "{error:?}");
    }

    #[test]
    fn empty_gzip_stream_is_empty_but_an_empty_body_is_not_gzip() {
        assert_eq!(decompress_gzip(&gzip(b""), 0).unwrap(), b"");
        // An empty body is not a gzip stream (no header): a caller error.
        assert!(matches!(decompress_gzip(b"", 0), Err(Error::Gzip(_))));
    }

    #[test]
    fn protobuf_garbage_is_a_caller_error() {
        let error = decode_traces_protobuf(&[0x0a, 0xff, 0xff]).unwrap_err();
        assert!(matches!(error, Error::Protobuf(_)));
        assert!(error.is_caller_error());
        assert!(
            decode_traces_protobuf(&[])
                .unwrap()
                .resource_spans
                .is_empty()
        );
    }
}
