//! The gateway's upstream response reading (`gateway::http1`):
//! `parse_response_head` and `ChunkedDecoder`, which decide where an
//! upstream's response ends — misread, the next client of that connection
//! would get someone else's bytes.
//!
//! Input: one control byte (bit 0: the request was `HEAD`; the rest: the
//! size of the pieces the bytes arrive in, 1–128), then the bytes an
//! upstream sent.
//!
//! Invariants:
//! - the outcome (head, framing, keep-alive, or the error) does not depend
//!   on how the bytes were split;
//! - a `Length(n)` framing has `Content-Length` fields that all say `n`; a
//!   `Chunked` one has `Transfer-Encoding` and no `Content-Length`; `Empty`
//!   only for `HEAD`, 204, 304 or a length of 0; never keep-alive when the
//!   body ends at the close;
//! - the parsed head relays no hop-by-hop field, none that `Connection`
//!   names, no `Server` and no `Access-Control-*`;
//! - a chunked body decodes to the same bytes however it is split, never
//!   to more bytes than were sent, and leaves what follows its end untouched.
#![no_main]

use axum::http::{Method, StatusCode, header};
use bytes::BytesMut;
use gatehouse_fuzz::HOP_BY_HOP;
use gateway::http1::{BodyFraming, ChunkedDecoder, Decoded, ResponseHead, parse_response_head};
use libfuzzer_sys::fuzz_target;

/// What a parse came to, comparably.
#[derive(Debug, PartialEq)]
enum Outcome {
    Incomplete,
    Head { status: u16, headers: Vec<(String, Vec<u8>)>, framing: BodyFraming, keep_alive: bool, rest: Vec<u8> },
    Refused(String),
}

fn outcome(result: Result<Option<ResponseHead>, gateway::http1::ProtocolError>, rest: &BytesMut) -> Outcome {
    match result {
        Ok(None) => Outcome::Incomplete,
        Ok(Some(head)) => Outcome::Head {
            status: head.response.status().as_u16(),
            headers: head
                .response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            framing: head.framing,
            keep_alive: head.keep_alive,
            rest: rest.to_vec(),
        },
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// Feeds `data` in pieces of `step` until the head is parsed or refused.
fn parse_in_pieces(data: &[u8], step: usize, method: &Method) -> (Outcome, BytesMut) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        let result = parse_response_head(&mut buf, method);
        let done = !matches!(result, Ok(None)) || fed == data.len();
        if done {
            // What was not fed yet follows the head too.
            buf.extend_from_slice(&data[fed..]);
            let rest_before = buf.clone();
            let out = match &result {
                Ok(Some(_)) => outcome(result, &rest_before),
                _ => outcome(result, &BytesMut::new()),
            };
            return (out, buf);
        }
        let end = (fed + step).min(data.len());
        buf.extend_from_slice(&data[fed..end]);
        fed = end;
    }
}

/// Decodes a chunked body from `data` fed in pieces of `step`: the body,
/// whether it ended, and what was left after it.
fn decode_chunked(data: &[u8], step: usize) -> (Vec<u8>, Result<bool, String>, Vec<u8>) {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "empty data piece");
                body.extend_from_slice(&d);
            }
            Ok(Decoded::Done) => {
                assert!(decoder.is_done());
                buf.extend_from_slice(&data[fed..]);
                return (body, Ok(true), buf.to_vec());
            }
            Ok(Decoded::NeedMore) if fed == data.len() => return (body, Ok(false), Vec::new()),
            Ok(Decoded::NeedMore) => {
                let end = (fed + step).min(data.len());
                buf.extend_from_slice(&data[fed..end]);
                fed = end;
            }
            Err(e) => return (body, Err(e.to_string()), Vec::new()),
        }
    }
}

/// The field lines of the last head in `consumed` (the heads the parser
/// took: interim ones, then the final one), without their line ends.
fn final_head_fields(consumed: &[u8]) -> Vec<&[u8]> {
    let mut heads: Vec<Vec<&[u8]>> = vec![Vec::new()];
    for line in consumed.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match heads.last_mut() {
            Some(head) if line.is_empty() => {
                if !head.is_empty() {
                    heads.push(Vec::new());
                }
            }
            Some(head) => head.push(line),
            None => {}
        }
    }
    let last = heads.into_iter().rev().find(|head| !head.is_empty()).unwrap_or_default();
    last.into_iter().skip(1).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let method = if control & 1 == 1 { Method::HEAD } else { Method::GET };
    let step = usize::from(control >> 1) + 1;

    let mut whole = BytesMut::from(bytes);
    let result = parse_response_head(&mut whole, &method);
    let whole_outcome = match &result {
        Ok(Some(_)) => outcome(result, &whole),
        _ => outcome(result, &BytesMut::new()),
    };
    let (pieces_outcome, _) = parse_in_pieces(bytes, step, &method);
    assert_eq!(whole_outcome, pieces_outcome, "the split changed the outcome");

    let Outcome::Head { status, headers, framing, keep_alive, rest } = whole_outcome else {
        return;
    };
    let lengths: Vec<&[u8]> =
        headers.iter().filter(|(n, _)| n == header::CONTENT_LENGTH.as_str()).map(|(_, v)| v.as_slice()).collect();
    // `Transfer-Encoding` is hop-by-hop: the parsed head leaves it out, so
    // whether the upstream sent one is read from the final head's own lines.
    let has_te = final_head_fields(&bytes[..bytes.len() - rest.len()])
        .iter()
        .any(|line| line.len() > 18 && line[..18].eq_ignore_ascii_case(b"transfer-encoding:"));
    let fields = final_head_fields(&bytes[..bytes.len() - rest.len()]);
    let named: Vec<String> = fields
        .iter()
        .filter(|line| line.len() > 11 && line[..11].eq_ignore_ascii_case(b"connection:"))
        .flat_map(|line| line[11..].split(|b| *b == b','))
        .map(|token| String::from_utf8_lossy(token.trim_ascii()).to_ascii_lowercase())
        .collect();
    for (name, _) in &headers {
        let withheld = HOP_BY_HOP.contains(&name.as_str())
            || named.contains(name)
            || name == "server"
            || name.starts_with("access-control-");
        assert!(!withheld, "{name} was relayed");
    }
    let bodiless = method == Method::HEAD
        || status == StatusCode::NO_CONTENT.as_u16()
        || status == StatusCode::NOT_MODIFIED.as_u16();
    match framing {
        BodyFraming::Length(n) => {
            assert!(!bodiless && !has_te && n > 0);
            for v in &lengths {
                for item in v.split(|b| *b == b',') {
                    assert_eq!(std::str::from_utf8(item.trim_ascii()).unwrap().parse::<u64>().unwrap(), n);
                }
            }
            assert!(!lengths.is_empty());
        }
        BodyFraming::Chunked => {
            assert!(!bodiless && has_te && lengths.is_empty());
            let (body, ended, after) = decode_chunked(&rest, step);
            assert!(body.len() <= rest.len(), "decoded more than was sent");
            let (body1, ended1, after1) = decode_chunked(&rest, 1);
            assert_eq!((body1, ended1), (body, ended.clone()), "the split changed the body");
            if ended == Ok(true) {
                assert!(rest.ends_with(&after), "what follows the body was altered");
                assert_eq!(after, after1);
            }
        }
        BodyFraming::UntilClose => {
            assert!(!bodiless && lengths.is_empty() && !keep_alive);
        }
        BodyFraming::Empty => {
            assert!(bodiless || (!has_te && !lengths.is_empty()));
        }
    }
});
