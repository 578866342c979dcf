//! The services' HTTP/1.1 request head parsing (`common_http::serve`, the
//! server every Gatehouse service listens with): where a request head ends
//! and how its body is framed — misread, bytes of one request would be taken
//! for the next (request smuggling).
//!
//! Input: one control byte (the size of the pieces the bytes arrive in,
//! 1–128), then the bytes a client sent.
//!
//! Invariants:
//! - the outcome (request, body length, what is left in the buffer, or the
//!   refusal) does not depend on how the bytes were split;
//! - a body length `n > 0` only with `Content-Length` fields that all say `n`
//!   and no `Transfer-Encoding`; chunked only with a `Transfer-Encoding`
//!   whose last coding is `chunked` and no `Content-Length`; no body only
//!   with neither or a length of 0;
//! - a refusal is 400, 431 or 501, and a head over 64 KiB is never accepted.
#![no_main]

use bytes::BytesMut;
use common_http::serve::{ParsedHead, parse_request_head};
use http::header;
use libfuzzer_sys::fuzz_target;

/// What a parse came to, comparably.
#[derive(Debug, PartialEq)]
enum Outcome {
    Incomplete,
    Head { method: String, uri: String, headers: Vec<(String, Vec<u8>)>, length: Option<u64>, rest: Vec<u8> },
    Refused(u16),
}

fn outcome(result: Result<Option<ParsedHead>, http::StatusCode>, rest: &BytesMut) -> Outcome {
    match result {
        Ok(None) => Outcome::Incomplete,
        Ok(Some((request, length))) => Outcome::Head {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers: request.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
            length,
            rest: rest.to_vec(),
        },
        Err(status) => Outcome::Refused(status.as_u16()),
    }
}

/// Feeds `data` in pieces of `step` until the head is parsed or refused.
fn parse_in_pieces(data: &[u8], step: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        let result = parse_request_head(&mut buf);
        if !matches!(result, Ok(None)) || fed == data.len() {
            // Whatever was not fed yet is still "after the head".
            buf.extend_from_slice(&data[fed..]);
            return outcome(result, &buf);
        }
        let end = (fed + step).min(data.len());
        buf.extend_from_slice(&data[fed..end]);
        fed = end;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let step = usize::from(control % 128) + 1;
    let mut whole = BytesMut::from(data);
    let at_once = outcome(parse_request_head(&mut whole), &whole);
    // Fed in pieces, a head may be refused for size before all of it is in,
    // where fed whole it is refused the same way: compare only complete runs.
    assert_eq!(parse_in_pieces(data, step), at_once, "split in pieces of {step}");

    match &at_once {
        Outcome::Refused(status) => assert!(matches!(status, 400 | 431 | 501), "refused with {status}"),
        Outcome::Incomplete => assert!(data.len() <= 64 * 1024 + 4, "{} bytes and still incomplete", data.len()),
        Outcome::Head { headers, length, rest, .. } => {
            assert!(data.len() - rest.len() <= 64 * 1024, "a head of {} bytes", data.len() - rest.len());
            let lengths: Vec<&[u8]> = headers
                .iter()
                .filter(|(n, _)| n == header::CONTENT_LENGTH.as_str())
                .map(|(_, v)| v.as_slice())
                .collect();
            let codings: Vec<&[u8]> = headers
                .iter()
                .filter(|(n, _)| n == header::TRANSFER_ENCODING.as_str())
                .map(|(_, v)| v.as_slice())
                .collect();
            match length {
                None => {
                    assert!(lengths.is_empty(), "chunked with a Content-Length");
                    let last = codings.iter().flat_map(|v| v.split(|b| *b == b',')).map(<[u8]>::trim_ascii);
                    let last = last.filter(|c| !c.is_empty()).last().unwrap_or_default();
                    assert!(last.eq_ignore_ascii_case(b"chunked"), "chunked framing without chunked last");
                }
                Some(n) => {
                    assert!(codings.is_empty(), "a length with Transfer-Encoding");
                    for value in &lengths {
                        for item in value.split(|b| *b == b',') {
                            assert_eq!(
                                std::str::from_utf8(item.trim_ascii()).ok().and_then(|t| t.parse().ok()),
                                Some(*n)
                            );
                        }
                    }
                    assert!(*n == 0 || !lengths.is_empty(), "a body of {n} without Content-Length");
                }
            }
        }
    }
});
