//! Writes the hand-made seed inputs of every fuzz target into
//! `fuzz/corpus/<target>/seed-*` (existing files with the same names are
//! overwritten; the rest of the corpus is left alone).
//!
//! ```sh
//! cd fuzz && cargo run --example make_seeds                  # keeps the RS256 fixture key
//! cd fuzz && cargo run --example make_seeds -- --new-rsa-key # new RSA key + RS256 seed tokens
//! ```
//!
//! `--new-rsa-key` (needed once, or when `fixtures/rs256.jwks.json` is
//! missing) generates an RSA key, writes its public half to
//! `fixtures/rs256.jwks.json` and signs the RS256 seed tokens with it; the
//! private half is never written. Rebuild the targets afterwards: the
//! fixture is compiled in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatehouse_fuzz::{
    AUD, CSRF_SECRET, GATEWAY_SECRET, GATEWAY_SECRET_OLD, HS256_SECRET, ISS, REFRESH_SECRET, SEED_TTL_SECS, b64url,
    eddsa_key, hs256_key, secret, unix_now,
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokens::assertion::Assertion;
use tokens::keys::jwks;
use tokens::{AccessTokenIssuer, Algorithm, CsrfKey, RefreshKey, SigningKey};

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn write(&self, target: &str, name: &str, data: impl AsRef<[u8]>) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
    }
}

/// `fields` joined with NUL, the targets' framing.
fn nul(fields: &[&str]) -> Vec<u8> {
    fields.join("\0").into_bytes()
}

fn issue(key: &Arc<SigningKey>) -> String {
    AccessTokenIssuer::new(Arc::clone(key), ISS, AUD, SEED_TTL_SECS)
        .issue(
            "0193a3f2-7c1e-7d2a-9b1e-2f0c5d4e6a71",
            "alice@example.com",
            "0193a3f2-7c1e-7d2a-9b1e-000000000001",
            unix_now(),
        )
        .expect("issue")
        .0
}

fn claims(now: i64) -> serde_json::Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "0193a3f2-7c1e-7d2a-9b1e-2f0c5d4e6a71",
        "sid": "0193a3f2-7c1e-7d2a-9b1e-000000000001", "jti": "5f0c8e1d2b3a4c5d6e7f8091a2b3c4d5",
        "iat": now, "nbf": now, "exp": now + SEED_TTL_SECS, "email": "alice@example.com",
    })
}

fn main() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = Seeds { root: fuzz_dir.join("corpus") };
    let new_rsa = std::env::args().any(|a| a == "--new-rsa-key");
    let now = unix_now();
    let hs = hs256_key();
    let ed = eddsa_key();
    let hs_enc = EncodingKey::from_secret(HS256_SECRET.as_bytes()).expect("HS256");

    // --- access_token ------------------------------------------------------
    let t = "access_token";
    seeds.write(t, "hs256-valid", issue(hs));
    seeds.write(t, "eddsa-valid", issue(ed));
    if new_rsa {
        let pem = SigningKey::generate_pem(Algorithm::Rs256).expect("RSA key");
        let rsa = Arc::new(SigningKey::from_pem(Algorithm::Rs256, pem.as_bytes()).expect("RSA key"));
        let set = serde_json::to_string_pretty(&jwks([rsa.as_ref()])).expect("JWKS");
        std::fs::write(fuzz_dir.join("fixtures/rs256.jwks.json"), format!("{set}\n")).expect("write fixture");
        seeds.write(t, "rs256-valid", issue(&rsa));
        // The published JWKS (Ed25519 + RSA), as the auth service serves it.
        let both = serde_json::to_string(&jwks([ed.as_ref(), rsa.as_ref()])).expect("JWKS");
        seeds.write("jwks", "auth-service-jwks", format!("{both}\0{}", issue(&rsa).rsplit('.').next().unwrap_or("")));
        seeds.write("bearer", "rs256", format!("Bearer {}", issue(&rsa)));
    }
    let forge = |alg: jsonwebtoken::Algorithm, typ: Option<&str>, kid: Option<&str>, c: serde_json::Value| {
        let mut h = Header::new(alg);
        h.typ = typ.map(str::to_owned);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, &c, &hs_enc).expect("encode")
    };
    let hs_alg = jsonwebtoken::Algorithm::HS256;
    seeds.write(
        t,
        "hs256-expired",
        forge(hs_alg, Some("at+jwt"), Some(hs.kid()), {
            let mut c = claims(now - 7200);
            c["exp"] = json!(now - 3600);
            c
        }),
    );
    seeds.write(t, "hs256-typ-jwt", forge(hs_alg, Some("JWT"), Some(hs.kid()), claims(now)));
    seeds.write(t, "hs256-no-kid", forge(hs_alg, Some("at+jwt"), None, claims(now)));
    seeds.write(t, "hs256-app-typ", forge(hs_alg, Some("application/at+jwt"), Some(hs.kid()), claims(now)));
    // HS256 with the EdDSA key's kid (algorithm confusion).
    seeds.write(t, "hs256-eddsa-kid", forge(hs_alg, Some("at+jwt"), Some(ed.kid()), claims(now)));
    let none_header = b64url(json!({"alg": "none", "typ": "at+jwt", "kid": hs.kid()}).to_string().as_bytes());
    let body = b64url(claims(now).to_string().as_bytes());
    seeds.write(t, "alg-none", format!("{none_header}.{body}."));
    seeds.write(t, "garbage", "eyJ.eyJ.sig");
    seeds.write(t, "two-segments", format!("{none_header}.{body}"));

    // --- access_token_signed -----------------------------------------------
    let t = "access_token_signed";
    let header = |alg: &str, typ: &str, kid: &str| json!({"alg": alg, "typ": typ, "kid": kid}).to_string();
    let framed = |selector: u8, h: &str, c: &str| {
        let mut v = vec![selector];
        v.extend_from_slice(h.as_bytes());
        v.push(0);
        v.extend_from_slice(c.as_bytes());
        v
    };
    let c = claims(now).to_string();
    seeds.write(t, "hs256-valid", framed(0, &header("HS256", "at+jwt", hs.kid()), &c));
    seeds.write(t, "eddsa-valid", framed(1, &header("EdDSA", "at+jwt", ed.kid()), &c));
    seeds.write(t, "eddsa-app-typ", framed(1, &header("EdDSA", "application/AT+JWT", ed.kid()), &c));
    seeds.write(t, "alg-mismatch", framed(0, &header("RS256", "at+jwt", hs.kid()), &c));
    let mut aud_array = claims(now);
    aud_array["aud"] = json!([AUD, "other"]);
    seeds.write(t, "aud-array", framed(0, &header("HS256", "at+jwt", hs.kid()), &aud_array.to_string()));
    let mut exp_float = claims(now);
    exp_float["exp"] = json!(4.0e9);
    seeds.write(t, "exp-float", framed(0, &header("HS256", "at+jwt", hs.kid()), &exp_float.to_string()));
    let mut no_sub = claims(now);
    no_sub.as_object_mut().expect("object").remove("sub");
    seeds.write(t, "no-sub", framed(0, &header("HS256", "at+jwt", hs.kid()), &no_sub.to_string()));
    let dup = format!(r#"{{"iss":"evil",{}"#, &c[1..]);
    seeds.write(t, "duplicate-iss", framed(0, &header("HS256", "at+jwt", hs.kid()), &dup));
    let extra_header =
        json!({"alg": "HS256", "typ": "at+jwt", "kid": hs.kid(), "crit": ["exp"], "jku": "http://evil/"});
    seeds.write(t, "extra-header", framed(0, &extra_header.to_string(), &c));
    // Found by fuzzing: bytes that are not UTF-8 in a string of a member the
    // claims type does not name (serde_json skips such strings unchecked).
    let mut not_utf8 = framed(0, &header("HS256", "at+jwt", hs.kid()), "{");
    not_utf8.extend_from_slice(b"\"x\":\"evi\xAEl\",");
    not_utf8.extend_from_slice(&c.as_bytes()[1..]);
    seeds.write(t, "regression-claims-not-utf8", not_utf8);

    // --- jwks ----------------------------------------------------------------
    let t = "jwks";
    let ed_jwks = serde_json::to_string(&jwks([ed.as_ref()])).expect("JWKS");
    let sig = issue(ed).rsplit('.').next().unwrap_or("").to_owned();
    seeds.write(t, "eddsa", format!("{ed_jwks}\0{sig}"));
    seeds.write(
        t,
        "oct-key",
        format!(r#"{{"keys":[{{"kty":"oct","kid":"hs","alg":"HS256","k":"{}"}}]}}"#, b64url(HS256_SECRET.as_bytes())),
    );
    seeds.write(t, "ec-key", r#"{"keys":[{"kty":"EC","kid":"ec1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#);
    seeds.write(
        t,
        "x25519",
        r#"{"keys":[{"kty":"OKP","kid":"x","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}]}"#,
    );
    seeds.write(t, "rsa-e1", "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"n\":\"AQAB\",\"e\":\"AQ\"}]}\0AAAA");
    seeds.write(
        t,
        "no-kid",
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    );
    seeds.write(t, "empty", r#"{"keys":[]}"#);

    // --- csrf ----------------------------------------------------------------
    let t = "csrf";
    let csrf = CsrfKey::new(secret(CSRF_SECRET));
    let sid = "0193a3f2-7c1e-7d2a-9b1e-000000000001";
    let token = csrf.mint(sid).expect("mint");
    seeds.write(t, "valid", nul(&[sid, "0193a3f2-7c1e-7d2a-9b1e-000000000002", &token]));
    seeds.write(t, "same-session", nul(&[sid, sid, &token]));
    seeds.write(t, "padded", nul(&[sid, "", &format!("{token}==")]));
    seeds.write(t, "no-dot", nul(&["s", "t", "abcdef"]));
    seeds.write(t, "long", nul(&["s", "t", &format!("{}.{}", "A".repeat(65), "B".repeat(43))]));

    // --- assertion -----------------------------------------------------------
    let t = "assertion";
    let ts = now.to_string();
    let rid = "3f1c2a9e-7b7d-4a5e-9a51-0d6f0c0b7c11";
    let a = Assertion {
        timestamp: now,
        method: "PUT",
        path_and_query: "/users/profile?x=1",
        request_id: rid,
        user_id: "0193a3f2-7c1e-7d2a-9b1e-2f0c5d4e6a71",
        email: "alice@example.com",
    };
    let gw = [secret(GATEWAY_SECRET), secret(GATEWAY_SECRET_OLD)];
    let one = a.sign(&gw[..1]);
    let both = a.sign(&gw);
    let fields =
        |now: &str, sig: &str| nul(&[&ts, now, a.method, a.path_and_query, a.request_id, a.user_id, a.email, sig]);
    seeds.write(t, "valid", fields(&ts, &one));
    seeds.write(t, "rotation", fields(&(now + 59).to_string(), &both));
    seeds.write(t, "stale", fields(&(now + 61).to_string(), &one));
    seeds.write(t, "uppercase", fields(&ts, &one.to_ascii_uppercase().replace("V1=", "v1=")));
    seeds.write(t, "junk", fields(&ts, &"v1=00,".repeat(10)));
    // Regression: found by this target, fixed in tokens (freshness check overflowed).
    seeds.write(t, "regression-i64-min-timestamp", "-9223372036854775808\x009");
    seeds.write(t, "internal-call", {
        let b = Assertion {
            method: "GET",
            path_and_query: "/internal/revocations?since=0",
            user_id: "gatehouse-internal",
            email: "internal@gatehouse.invalid",
            ..a
        };
        nul(&[&ts, &ts, b.method, b.path_and_query, b.request_id, b.user_id, b.email, &b.sign(&gw[..1])])
    });

    // --- guard_headers -------------------------------------------------------
    let t = "guard_headers";
    let guard = |selector: u8, f: &[&str]| {
        let mut v = vec![selector];
        v.extend(nul(f));
        v
    };
    let uid = "0193a3f2-7c1e-7d2a-9b1e-2f0c5d4e6a71";
    seeds.write(t, "signed", guard(1, &["GET", "/users/profile", uid, "alice@example.com", rid, "", ""]));
    seeds.write(
        t,
        "signed-query",
        guard(1, &["PUT", "/payments?cursor=abc", uid, "ålice@exämple.com", "trace:abc.def_1", "", ""]),
    );
    seeds.write(t, "unsigned", guard(0, &["GET", "/users/profile", uid, "alice@example.com", rid, &ts, &one]));
    seeds.write(
        t,
        "duplicate",
        guard(1, &["GET", "/users/profile", &format!("{uid}\nadmin"), "alice@example.com", rid, "", ""]),
    );
    seeds.write(t, "timestamp-forms", guard(0, &["GET", "/", uid, "a@b.co", rid, &format!("+{ts}"), "v1=00"]));
    seeds.write(t, "missing", guard(0, &["DELETE", "/users/account", "", "", "", "", ""]));

    // --- refresh_token -------------------------------------------------------
    let t = "refresh_token";
    let rk = RefreshKey::new(secret(REFRESH_SECRET));
    let session = uuid::Uuid::parse_str("0193a3f2-7c1e-7d2a-9b1e-000000000001").expect("uuid");
    seeds.write(t, "valid", rk.mint(session, 7));
    seeds.write(t, "counter-max", rk.mint(session, u64::MAX));
    seeds.write(t, "other-key", RefreshKey::new(secret(CSRF_SECRET)).mint(session, 1));
    seeds.write(t, "jwt-shaped", issue(hs));
    seeds.write(t, "all-a", "A".repeat(75));

    // --- bearer --------------------------------------------------------------
    let t = "bearer";
    seeds.write(t, "hs256", format!("Bearer {}", issue(hs)));
    for (name, value) in [
        ("lowercase", "bearer abc.def.ghi"),
        ("basic", "Basic dXNlcjpwYXNz"),
        ("two-spaces", "Bearer  abc"),
        ("inner-space", "Bearer a b"),
        ("tab", "Bearer\tabc"),
        ("padding", "BEARER YWJj=="),
        ("empty", "Bearer "),
    ] {
        seeds.write(t, name, value);
    }

    // --- cookies -------------------------------------------------------------
    let t = "cookies";
    for (name, value) in [
        ("simple", "csrf_token\0a=1; csrf_token=xyz; b=2"),
        ("quoted", "csrf_token\0csrf_token=\"abc.def\"; other=\"q;uoted\""),
        ("two-headers", "csrf_token\0a=1\ncsrf_token=second"),
        ("spaces", "csrf_token\0  csrf_token  =  spaced value ;; ;"),
        ("equals", "csrf_token\0csrf_token=a=b==; x"),
        ("prefixed", "__Host-csrf\0__Host-csrf=v; csrf_token=w; CSRF_TOKEN=upper"),
        ("encoded", "csrf_token\0%63srf_token=enc; csrf%5Ftoken=enc2"),
        ("empty-name", "\0=x; csrf_token="),
        ("obs-text", "csrf_token\0csrf_token=caf\u{e9}; csrf_token=ok"),
    ] {
        seeds.write(t, name, value);
    }

    // --- request_id ----------------------------------------------------------
    let t = "request_id";
    let long = "a".repeat(128);
    let too_long = "a".repeat(129);
    for (name, value) in [
        ("uuid", rid),
        ("trace", "trace:abc.def_1"),
        ("space", "a b"),
        ("newline", "x\ny"),
        ("html", "<script>"),
        ("unicode", "\u{fc}"),
        ("max", long.as_str()),
        ("too-long", too_long.as_str()),
    ] {
        seeds.write(t, name, value);
    }

    // --- client_ip -----------------------------------------------------------
    let t = "client_ip";
    for (name, value) in [
        ("spoofed-left", "10.0.0.2\x0010.0.0.0/8\x006.6.6.6, 198.51.100.7"),
        ("untrusted-peer", "203.0.113.9\x0010.0.0.0/8\x001.1.1.1"),
        ("chain", "10.0.0.2\x0010.0.0.0/8,fd00::/8\x00198.51.100.7, fd00::1\n10.0.0.3"),
        ("mapped", "::ffff:10.0.0.2\x0010.0.0.0/8\0::ffff:198.51.100.7"),
        ("garbage", "10.0.0.2\x000.0.0.0/0\x001.2.3.4, garbage, 10.9.9.9"),
        ("v6", "fd00::2\0fd00::/8,::1\x002001:db8::1, fd00::3"),
        ("bad-cidrs", "10.0.0.2\x0010.0.0.0/33, host/8, ::/129, 10.0.0.0/08\x001.1.1.1"),
        // Regression: an IPv4-mapped block contained nothing (fixed in common-http).
        ("mapped-cidr", "::ffff:10.0.0.2\0::ffff:10.0.0.0/104\x00198.51.100.7"),
        ("mixed-cidr", "::ffff:10.0.0.2\0::ffff:64.0.0.0/1,::/0\x00198.51.100.7"),
    ] {
        seeds.write(t, name, value);
    }

    // --- strict_json ---------------------------------------------------------
    let t = "strict_json";
    for (name, value) in [
        ("login", r#"{"email":"a@b.co","password":"correct horse battery staple"}"#),
        ("full", r#"{"email":"a@b.co","password":"x","name":"A","amount":1999,"tags":["a","b"]}"#),
        ("unknown", r#"{"email":"a@b.co","password":"x","admin":true}"#),
        ("duplicate", r#"{"email":"a@b.co","email":"c@d.co","password":"x"}"#),
        ("mistyped-secret", r#"{"email":"a@b.co","password":98765432}"#),
        ("array", r#" ["a@b.co","correct horse"]"#),
        ("trailing", r#"{"email":"a@b.co","password":"x"} trailing"#),
        ("incomplete", r#"{"email":"#),
        ("nested", r#"{"email":"a@b.co","password":"x","tags":[1,{"a":[[[]]]}],"amount":1e400}"#),
        ("escapes", "{\"email\":\"\\u0000\\ud800\",\"password\":\"\\\"\"}"),
    ] {
        seeds.write(t, name, value);
    }

    // --- path ----------------------------------------------------------------
    let t = "path";
    for (name, value) in [
        ("profile", "/api/v1/users/profile"),
        ("query", "/api/v1/payments/abc-123?cursor=x&limit=10"),
        ("login", "/api/v1/auth/login"),
        ("dotdot", "/api/v1/users/../auth"),
        ("encoded-dotdot", "/api/v1/users/%2e%2e/admin"),
        ("mixed-dot", "/api/v1/users/.%2E/admin"),
        ("encoded-slash", "/api/v1/users%2fadmin"),
        ("backslash", "/api/v1/users\\..\\auth"),
        ("double-slash", "/api/v1//users/profile"),
        ("prefix-only", "/api/v1/auth"),
        ("not-segment", "/api/v1/usersadmin"),
        ("root", "/"),
        ("utf8", "/api/v1/users/caf%C3%A9"),
        ("overlong-dot", "/api/v1/users/%c0%ae%c0%ae/x"),
        ("nul", "/api/v1/users/%00"),
        ("plus-hex", "/api/v1/users/%+f"),
        ("trailing-slash", "/api/v1/notifications/"),
        ("query-dots", "/api/v1/users?next=/../../etc"),
    ] {
        seeds.write(t, name, value);
    }

    // --- proxy_headers -------------------------------------------------------
    // A flag byte (odd: the route forwards credentials), then header lines.
    let t = "proxy_headers";
    let fields = |flag: u8, lines: &str| [&[flag][..], lines.as_bytes()].concat();
    seeds.write(
        t,
        "connection-named",
        fields(
            0,
            "connection: keep-alive, x-secret-hop\nx-secret-hop: 1\nkeep-alive: timeout=5\nte: trailers\naccept: */*",
        ),
    );
    seeds.write(t, "spoofed-identity", fields(0, "x-user-id: admin\nX-User-Email: root@example.com\nx-gateway-signature: v1=00\nx-forwarded-for: 1.2.3.4\nforwarded: for=1.2.3.4\nx-real-ip: 1.2.3.4\nx-userid: kept"));
    seeds.write(t, "connection-names-auth", fields(1, "connection: authorization, cookie,, x-user-id\nauthorization: Bearer x\ncookie: a=b\ncontent-type: application/json"));
    seeds.write(
        t,
        "duplicates",
        fields(0, "accept: a\naccept: b\nconnection: close\nconnection: upgrade\nupgrade: websocket"),
    );

    // --- upstream_response ---------------------------------------------------
    // A control byte (bit 0: HEAD; the rest: piece size - 1), then what an upstream sent.
    let t = "upstream_response";
    let response = |control: u8, raw: &str| [&[control][..], raw.as_bytes()].concat();
    seeds.write(t, "length", response(6, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nserver: x\r\n\r\nokNEXT"));
    seeds.write(
        t,
        "chunked",
        response(
            2,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\nNEXT",
        ),
    );
    seeds.write(
        t,
        "interim-then-close",
        response(0, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\nbody"),
    );
    seeds.write(t, "head", response(1, "HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n"));
    seeds.write(
        t,
        "smuggle",
        response(0, "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
    );
    seeds.write(
        t,
        "lengths",
        response(8, "HTTP/1.1 204 No Content\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
    );

    // --- request_head --------------------------------------------------------
    // A control byte (piece size - 1), then what a client sent.
    let t = "request_head";
    let request = |control: u8, raw: &str| [&[control][..], raw.as_bytes()].concat();
    seeds.write(t, "get", request(4, "GET /api/v1/users/profile?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
    seeds.write(
        t,
        "length",
        request(0, "POST /a HTTP/1.1\r\ncontent-length: 2, 2\r\nexpect: 100-continue\r\n\r\nokNEXT"),
    );
    seeds.write(t, "chunked", request(2, "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"));
    seeds.write(
        t,
        "smuggle",
        request(1, "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    );
    seeds.write(
        t,
        "codings",
        request(8, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
    );
    seeds.write(t, "http10", request(3, "GET http://x/y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));

    // The "valid" seeds must pass, or the fuzzer starts from refusals only.
    let verifier = gatehouse_fuzz::verifier();
    for name in ["hs256-valid", "eddsa-valid", "rs256-valid"] {
        if new_rsa && name == "rs256-valid" {
            continue; // signed with the key just generated; the compiled-in fixture is the old one
        }
        let token =
            std::fs::read_to_string(seeds.root.join("access_token").join(format!("seed-{name}"))).expect("seed token");
        verifier.verify(&token).unwrap_or_else(|e| panic!("seed {name} does not verify: {e}"));
    }
    assert!(csrf.verify(sid, &token));
    assert!(rk.parse(&rk.mint(session, 7)).is_ok());
    assert!(a.verify(&one, &gw, now).is_ok() && a.verify(&both, &gw[1..], now).is_ok());

    println!("seeds written under {}", seeds.root.display());
}
