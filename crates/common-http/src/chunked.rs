//! Chunked transfer coding (RFC 9112 §7.1), both ways: decoding a chunked
//! body incrementally from a buffer that more bytes are appended to, and
//! encoding one. No I/O here. The gateway's upstream client decodes chunked
//! responses and encodes chunked request bodies with it; the HTTP/1.1 server
//! ([`crate::serve`]) decodes chunked request bodies and encodes responses
//! of unknown length.
//!
//! What decoding enforces, because a peer that misreads where a body ends
//! reads the next message from the wrong byte: sizes are hex that fits 64
//! bits, lines end in CRLF, extensions (ignored, as §7.1.1 allows) and
//! trailers (skipped: never forwarded) are bounded, and after the last chunk
//! nothing is read as body.

use bytes::{Bytes, BytesMut};

/// A body that is not valid chunked coding, or whose lines are too long.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed chunked body")]
pub struct ChunkedError;

/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes skipped after a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// Appends one chunk (`data` must not be empty: an empty chunk is the end).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len = data.len();
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    out.extend((0..digits).rev().map(|i| HEX[(len >> (i * 4)) & 0xf]));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk, no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What [`ChunkedDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer ends mid-frame: read more.
    NeedMore,
    /// The last chunk and the trailers have been read.
    Done,
}

/// Decodes a chunked body incrementally, from a buffer that more bytes are
/// appended to between calls.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes the next piece of the body from the front of `buf`.
    ///
    /// # Errors
    /// The body is not valid chunked coding, or its lines are too long.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkedError);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = take_line(buf, MAX_TRAILERS.saturating_sub(self.trailer_bytes))? else {
                        return Ok(Decoded::NeedMore);
                    };
                    // Trailers are not forwarded: the gateway removes
                    // `Trailer` and `TE` like any hop-by-hop field.
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Removes one CRLF-terminated line from the front of `buf` and returns it
/// without the CRLF; `None` if no line end is in the buffer yet.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ChunkedError> {
    let Some(end) = buf.iter().take(max.saturating_add(2)).position(|b| *b == b'\n') else {
        return if buf.len() >= max.saturating_add(2) { Err(ChunkedError) } else { Ok(None) };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(ChunkedError);
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// `chunk-size [ chunk-ext ]`: hex digits, then nothing or extensions
/// (`;name=value`, ignored as RFC 9112 §7.1.1 allows).
fn chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkedError);
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(ChunkedError);
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkedError)?;
    u64::from_str_radix(hex, 16).map_err(|_| ChunkedError)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, BytesMut), ChunkedError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Done => return Ok((body, buf)),
                Decoded::NeedMore if fed == input.len() => return Err(ChunkedError),
                Decoded::NeedMore => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunks_encode_their_size_in_lowercase_hex() {
        for len in [1usize, 9, 10, 15, 16, 255, 256, 4096, 65_535, 1_048_577] {
            let mut out = Vec::new();
            encode_chunk(&mut out, &vec![b'x'; len]);
            let head = format!("{len:x}\r\n");
            assert!(out.starts_with(head.as_bytes()), "{len}");
            assert_eq!(out.len(), head.len() + len + 2, "{len}");
            let mut buf = BytesMut::from(&out[..]);
            buf.extend_from_slice(LAST_CHUNK);
            let (body, rest) = decode_all(&buf, 4096).unwrap();
            assert_eq!((body.len(), rest.len()), (len, 0));
        }
    }

    #[test]
    fn a_chunked_body_decodes_whole_however_it_is_split() {
        let input = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, rest) = decode_all(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            if step == input.len() {
                assert_eq!(&rest[..], b"NEXT", "nothing after the body is taken as body");
            }
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for input in [
            &b"x\r\nhello\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5 garbage\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"\r\n",
        ] {
            assert_eq!(decode_all(input, 3).unwrap_err(), ChunkedError, "{}", String::from_utf8_lossy(input));
        }
        let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(decode_all(long_extension.as_bytes(), 512).unwrap_err(), ChunkedError);
        let endless_trailers = format!("0\r\n{}", "X-T: v\r\n".repeat(MAX_TRAILERS));
        assert_eq!(decode_all(endless_trailers.as_bytes(), 4096).unwrap_err(), ChunkedError);
    }
}
