//! Path normalisation (`gateway::path::canonical_path`) and the route table
//! lookup (`RouteTable::find`, default table), then the upstream URI as the
//! gateway builds it (`phases::rewrite_request`).
//!
//! Input: a request target (`/path?query`), checked twice: as a raw string
//! (what `canonical_path` accepts from any caller, e.g. route prefixes from
//! the TOML file), and through `http`'s `PathAndQuery`, as the gateway gets
//! it from hyper.
//!
//! Invariants for an accepted path:
//! - it is returned unchanged, and checking it again accepts it again
//!   (a fixed point);
//! - it starts with `/`, has no `//`, no `\`, no control character, no `.`
//!   or `..` segment, and every `%` starts a two-hex-digit escape;
//! - percent-decoded, no segment is `.` or `..` and none holds `/`, `\` or a
//!   control character: an upstream that decodes sees the same segments;
//! - the route found is the longest prefix that matches on whole segments;
//!   the forwarded path is the path minus `/api/v1`, starts with `/` and is
//!   itself canonical; only `/api/v1/auth[/…]` is public;
//! - the upstream URI builds and carries exactly the forwarded path and
//!   query (what the route table saw is what the upstream gets, and what the
//!   downstream guard will check the signature over).
#![no_main]

use gateway::path::canonical_path;
use libfuzzer_sys::fuzz_target;

fn percent_decode(segment: &str) -> Vec<u8> {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("checked: two hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("checked: two hex digits"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn check_canonical(path: &str) {
    let Ok(p) = canonical_path(path) else {
        return;
    };
    assert_eq!(p, path, "returned a different path");
    assert_eq!(canonical_path(p), Ok(p), "not a fixed point");
    assert!(p.starts_with('/'));
    assert!(!p.contains("//"), "{p:?}");
    assert!(!p.contains('\\'), "{p:?}");
    assert!(!p.bytes().any(|b| b < 0x20 || b == 0x7f), "{p:?}");
    let b = p.as_bytes();
    for (i, _) in p.match_indices('%') {
        assert!(b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)), "bad escape in {p:?}");
    }
    for segment in p[1..].split('/') {
        assert!(segment != "." && segment != "..", "{p:?}");
        let decoded = percent_decode(segment);
        assert!(decoded != b"." && decoded != b"..", "encoded dot segment in {p:?}");
        assert!(!decoded.iter().any(|&c| c == b'/' || c == b'\\' || c < 0x20 || c == 0x7f), "{p:?}");
    }
}

/// `query`: `None` for a raw string (no URI is built), `Some(query)` for a
/// target that came through `PathAndQuery`.
fn check_route(path: &str, query: Option<Option<&str>>) {
    let table = gatehouse_fuzz::default_routes();
    let whole = |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let longest = table.routes().iter().filter(|r| whole(&r.prefix)).map(|r| r.prefix.len()).max();
    let Some((route, forwarded)) = table.find(path) else {
        assert_eq!(longest, None, "{path:?} matches a route but none was found");
        return;
    };
    assert!(whole(&route.prefix), "{path:?} routed to {}", route.prefix);
    assert_eq!(Some(route.prefix.len()), longest, "{path:?}: not the longest prefix");
    let expected = path.strip_prefix(route.strip_prefix.as_str()).unwrap_or(path);
    assert_eq!(forwarded, if expected.is_empty() { "/" } else { expected });
    assert!(forwarded.starts_with('/'));
    assert_eq!(canonical_path(forwarded), Ok(forwarded), "forwarded path not canonical: {forwarded:?}");
    assert_eq!(route.public, route.prefix == "/api/v1/auth", "{path:?} → {}", route.prefix);

    // As `rewrite_request` builds the upstream request.
    let Some(query) = query else {
        return;
    };
    let path_and_query = match query {
        Some(q) => format!("{forwarded}?{q}"),
        None => forwarded.to_owned(),
    };
    let upstream = &route.upstream;
    let uri = http::Uri::builder()
        .scheme(upstream.scheme_str().unwrap_or("http"))
        .authority(upstream.authority().map(|a| a.as_str()).unwrap_or_default())
        .path_and_query(path_and_query.as_str())
        .build()
        .unwrap_or_else(|e| panic!("upstream URI for {path_and_query:?} does not build: {e}"));
    assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some(path_and_query.as_str()));
    assert_eq!(uri.path(), forwarded);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_canonical(text);
        if canonical_path(text).is_ok() {
            check_route(text, None);
        }
    }
    if let Ok(pq) = http::uri::PathAndQuery::try_from(data) {
        let path = pq.path();
        check_canonical(path);
        if canonical_path(path).is_ok() {
            check_route(path, Some(pq.query()));
        }
    }
});
