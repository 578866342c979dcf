//! The payment service behind the real gateway and auth service, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{
    Backend, TestDatabase, TestGateway, backend_tests, spawn_auth, spawn_gateway, spawn_payments, test_auth_config,
    test_gateway_config, unique_email,
};

struct Stack {
    _auth: testkit::TestApp,
    gateway: TestGateway,
    payments_url: String,
    _db: TestDatabase,
}

async fn stack(backend: Backend) -> Stack {
    let db = TestDatabase::new(backend).await;
    let auth = spawn_auth(test_auth_config(db.target.clone())).await;
    // One database for both services, as `up` runs them.
    let payments = spawn_payments(&auth, &db).await;
    let gateway = spawn_gateway(test_gateway_config(&auth, &payments.base_url)).await;
    Stack { _auth: auth, gateway, payments_url: payments.base_url, _db: db }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Stack {
    /// Registers and logs in a new user; the login body.
    async fn login(&self) -> Value {
        self.gateway.sign_up_and_in(&unique_email("p"), None).await
    }

    fn authed(&self, method: Method, path: &str, login: &Value) -> reqwest::RequestBuilder {
        self.gateway.authed(method, path, login)
    }

    /// `POST /payments` with `key` and `body`.
    async fn create(&self, login: &Value, key: &str, body: &Value) -> reqwest::Response {
        self.authed(Method::POST, "/api/v1/payments", login)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a payment that must succeed with 201; its JSON.
    async fn created(&self, login: &Value, body: &Value) -> Value {
        let r = self.create(login, &new_key(), body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{body}");
        r.json::<Value>().await.unwrap()["payment"].clone()
    }

    async fn get(&self, login: &Value, path: &str) -> (StatusCode, Value) {
        let r = self.authed(Method::GET, path, login).send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn refund(&self, login: &Value, id: &str) -> (StatusCode, Value) {
        let r = self.authed(Method::POST, &format!("/api/v1/payments/{id}/refund"), login).send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// Every payment of the user, following the cursors.
    async fn all_payments(&self, login: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = "/api/v1/payments?limit=100".to_owned();
        loop {
            let (status, body) = self.get(login, &path).await;
            assert_eq!(status, StatusCode::OK);
            out.extend(body["payments"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/payments?limit=100&cursor={cursor}"),
                None => return out,
            }
        }
    }
}

async fn payments_are_created_and_decided_by_the_amount(backend: Backend) {
    let st = stack(backend).await;
    let login = st.login().await;
    let before = now();
    let r = st.create(&login, "order-1", &json!({"amount": 1050, "currency": "EUR", "description": "Coffee"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let body: Value = r.json().await.unwrap();
    let payment = &body["payment"];
    let id = payment["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    let created_at = payment["created_at"].as_i64().unwrap();
    assert!((before..=now()).contains(&created_at), "{created_at}");
    assert_eq!(
        body,
        json!({"payment": {
            "id": id, "amount": 1050, "currency": "EUR", "description": "Coffee", "status": "succeeded",
            "decline_reason": null, "created_at": created_at, "refunded_at": null,
        }})
    );
    let (status, fetched) = st.get(&login, &format!("/api/v1/payments/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);

    // The simulated processor: …02 is declined as card_declined, …05 as
    // insufficient_funds; declined payments are recorded and answered 201.
    for (amount, reason) in [(1002, "card_declined"), (2505, "insufficient_funds"), (2, "card_declined")] {
        let p = st.created(&login, &json!({"amount": amount, "currency": "USD", "description": "Declined"})).await;
        assert_eq!((p["status"].as_str(), p["decline_reason"].as_str()), (Some("declined"), Some(reason)), "{amount}");
        let (_, fetched) = st.get(&login, &format!("/api/v1/payments/{}", p["id"].as_str().unwrap())).await;
        assert_eq!(fetched["payment"], p);
    }
    for amount in [1, 1020, 12, 10_000_000_000_i64] {
        let p = st.created(&login, &json!({"amount": amount, "currency": "JPY", "description": "Fine"})).await;
        assert_eq!((p["status"].as_str(), &p["decline_reason"]), (Some("succeeded"), &Value::Null), "{amount}");
    }
    // Lower-case currency codes are normalised, descriptions trimmed.
    let p = st.created(&login, &json!({"amount": 700, "currency": "gbp", "description": "  Tea  "})).await;
    assert_eq!((p["currency"].as_str(), p["description"].as_str()), (Some("GBP"), Some("Tea")));
    // Unicode beyond ASCII is kept as sent.
    let text = "Café ☕ für 2 — 東京 👩\u{200D}💻";
    let p = st.created(&login, &json!({"amount": 990, "currency": "EUR", "description": text})).await;
    assert_eq!(p["description"], text);
}

async fn a_retry_with_the_same_key_returns_the_original_payment(backend: Backend) {
    let st = stack(backend).await;
    let login = st.login().await;
    let body = json!({"amount": 1999, "currency": "EUR", "description": "Book"});
    let r = st.create(&login, "retry-me", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let original: Value = r.json().await.unwrap();
    // The same request again, also written differently (currency case,
    // blanks, field order): 200, the original payment, marked as a replay.
    let variants = [body.clone(), json!({"description": " Book ", "currency": "eur", "amount": 1999})];
    for again in variants {
        let r = st.create(&login, "retry-me", &again).await;
        assert_eq!(r.status(), StatusCode::OK, "{again}");
        assert_eq!(r.headers()["idempotent-replayed"], "true");
        assert_eq!(r.json::<Value>().await.unwrap(), original);
    }
    // The same key with another request is a conflict, and changes nothing.
    for other in [
        json!({"amount": 2000, "currency": "EUR", "description": "Book"}),
        json!({"amount": 1999, "currency": "USD", "description": "Book"}),
        json!({"amount": 1999, "currency": "EUR", "description": "Another book"}),
    ] {
        let r = st.create(&login, "retry-me", &other).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "{other}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "Idempotency key already used with a different request");
    }
    // A declined payment replays as declined.
    let declined = json!({"amount": 502, "currency": "EUR", "description": "Nope"});
    let first: Value = st.create(&login, "declined-key", &declined).await.json().await.unwrap();
    assert_eq!(first["payment"]["status"], "declined");
    let r = st.create(&login, "declined-key", &declined).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), first);
    // A replay after a refund returns the payment as it is now.
    let id = original["payment"]["id"].as_str().unwrap();
    assert_eq!(st.refund(&login, id).await.0, StatusCode::OK);
    let r = st.create(&login, "retry-me", &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let now_body: Value = r.json().await.unwrap();
    assert_eq!(
        (now_body["payment"]["id"].as_str(), now_body["payment"]["status"].as_str()),
        (Some(id), Some("refunded"))
    );
    // Two payments in all.
    assert_eq!(st.all_payments(&login).await.len(), 2);
}

async fn concurrent_requests_with_one_key_create_one_payment(backend: Backend) {
    let st = stack(backend).await;
    let login = st.login().await;
    let body = json!({"amount": 4200, "currency": "EUR", "description": "Concurrent"});
    let requests = (0..10).map(|_| {
        st.authed(Method::POST, "/api/v1/payments", &login).header("Idempotency-Key", "same-key").json(&body).send()
    });
    let responses = futures_join_all(requests).await;
    let mut statuses = Vec::new();
    let mut ids = HashSet::new();
    for r in responses {
        let r = r.unwrap();
        statuses.push(r.status());
        let body: Value = r.json().await.unwrap();
        ids.insert(body["payment"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 9, "{statuses:?}");
    assert_eq!(ids.len(), 1, "one payment id: {ids:?}");
    assert_eq!(st.all_payments(&login).await.len(), 1);
}

/// Runs the futures concurrently, keeping their order.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn idempotency_keys_are_scoped_per_user(backend: Backend) {
    let st = stack(backend).await;
    let (alice, bob) = (st.login().await, st.login().await);
    let body = json!({"amount": 300, "currency": "EUR", "description": "Shared key"});
    let a = st.create(&alice, "shared", &body).await;
    let b = st.create(&bob, "shared", &body).await;
    assert_eq!((a.status(), b.status()), (StatusCode::CREATED, StatusCode::CREATED));
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_ne!(a["payment"]["id"], b["payment"]["id"]);
    // Another body under Bob's key does not conflict with Alice's use of it.
    let other = json!({"amount": 301, "currency": "EUR", "description": "Shared key"});
    assert_eq!(st.create(&bob, "shared-2", &other).await.status(), StatusCode::CREATED);
    assert_eq!(st.create(&alice, "shared-2", &body).await.status(), StatusCode::CREATED);
    let ids = |list: Vec<Value>| list.iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect::<HashSet<_>>();
    let (alices, bobs) = (ids(st.all_payments(&alice).await), ids(st.all_payments(&bob).await));
    assert_eq!((alices.len(), bobs.len()), (2, 2));
    assert!(alices.is_disjoint(&bobs));
}

async fn invalid_payments_are_refused(backend: Backend) {
    let st = stack(backend).await;
    let login = st.login().await;
    let ok = |amount: Value| json!({"amount": amount, "currency": "EUR", "description": "x"});
    let cases = [
        (ok(json!(0)), "amount must be a positive integer in minor units"),
        (ok(json!(-100)), "amount must be a positive integer in minor units"),
        (ok(json!(10_000_000_001_i64)), "amount must be at most 10000000000 minor units"),
        (ok(json!(10.5)), "Invalid request body"),
        (ok(json!(10.0)), "Invalid request body"),
        (ok(json!("1000")), "Invalid request body"),
        (ok(json!(null)), "Invalid request body"),
        (ok(json!(1e30)), "Invalid request body"),
        (ok(json!(u64::MAX)), "Invalid request body"),
        (json!({"amount": 100, "currency": "XYZ", "description": "x"}), "currency must be an ISO 4217 currency code"),
        (json!({"amount": 100, "currency": "EURO", "description": "x"}), "currency must be an ISO 4217 currency code"),
        (json!({"amount": 100, "currency": "€", "description": "x"}), "currency must be an ISO 4217 currency code"),
        (json!({"amount": 100, "currency": "", "description": "x"}), "currency must be an ISO 4217 currency code"),
        (json!({"amount": 100, "currency": 978, "description": "x"}), "Invalid request body"),
        (json!({"amount": 100, "currency": "EUR", "description": ""}), "description must not be empty"),
        (json!({"amount": 100, "currency": "EUR", "description": " \t "}), "description must not be empty"),
        (
            json!({"amount": 100, "currency": "EUR", "description": "d".repeat(201)}),
            "description must be at most 200 characters",
        ),
        (
            json!({"amount": 100, "currency": "EUR", "description": "a\u{0}b"}),
            "description must not contain control characters",
        ),
        (
            json!({"amount": 100, "currency": "EUR", "description": "a\nb"}),
            "description must not contain control characters",
        ),
        (
            json!({"amount": 100, "currency": "EUR", "description": "a\u{202E}b"}),
            "description must not contain control characters",
        ),
        (json!({"amount": 100, "currency": "EUR"}), "Invalid request body"),
        (json!({"amount": 100, "currency": "EUR", "description": "x", "status": "refunded"}), "Invalid request body"),
        (json!([100, "EUR", "x"]), "Invalid request body"),
    ];
    for (body, message) in cases {
        let r = st.create(&login, &new_key(), &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], message, "{body}");
    }
    // 200 characters are fine, counted as characters, not bytes.
    st.created(&login, &json!({"amount": 100, "currency": "EUR", "description": "é".repeat(200)})).await;

    let raw = |text: &'static str| {
        st.authed(Method::POST, "/api/v1/payments", &login)
            .header("Idempotency-Key", new_key())
            .header("Content-Type", "application/json")
            .body(text)
    };
    for text in [
        "{",
        "not json",
        r#"{"amount": 100, "currency": "EUR", "description": "\ud800"}"#,
        r#"{"amount": 100, "amount": 200, "currency": "EUR", "description": "x"}"#,
        r#"{"amount": 100, "currency": "EUR", "description": "x"} trailing"#,
        "",
    ] {
        let r = raw(text).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "Invalid request body", "{text}");
    }
    let body = json!({"amount": 100, "currency": "EUR", "description": "x"});
    let r = st
        .authed(Method::POST, "/api/v1/payments", &login)
        .header("Idempotency-Key", new_key())
        .header("Content-Type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The Idempotency-Key header: required, 1 to 255 visible ASCII characters.
    let r = st.authed(Method::POST, "/api/v1/payments", &login).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Idempotency-Key header is required");
    for key in ["", "has space", &"k".repeat(256)] {
        let r = st.create(&login, key, &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            "{key:?}"
        );
    }
    assert_eq!(st.create(&login, &"k".repeat(255), &body).await.status(), StatusCode::CREATED);

    // Over 16 KiB: 413.
    let big = json!({"amount": 100, "currency": "EUR", "description": "x".repeat(20 * 1024)}).to_string();
    let status = testkit::status_for_streamed_body(|| {
        st.authed(Method::POST, "/api/v1/payments", &login)
            .header("Idempotency-Key", new_key())
            .header("Content-Type", "application/json")
            .body(big.clone())
            .send()
    })
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Only the two valid payments exist.
    assert_eq!(st.all_payments(&login).await.len(), 2);
}

async fn payments_are_listed_newest_first_a_page_at_a_time(backend: Backend) {
    let st = stack(backend).await;
    let (login, other) = (st.login().await, st.login().await);
    let mut created = Vec::new();
    for i in 0..25 {
        let p = st
            .created(&login, &json!({"amount": 100 + i * 100, "currency": "EUR", "description": format!("#{i}")}))
            .await;
        created.push(p["id"].as_str().unwrap().to_owned());
    }
    let mut others = HashSet::new();
    for _ in 0..3 {
        let p = st.created(&other, &json!({"amount": 100, "currency": "USD", "description": "Other"})).await;
        others.insert(p["id"].as_str().unwrap().to_owned());
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/api/v1/payments?limit=10".to_owned();
    loop {
        let (status, body) = st.get(&login, &path).await;
        assert_eq!(status, StatusCode::OK);
        let page = body["payments"].as_array().unwrap();
        sizes.push(page.len());
        seen.extend(page.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/payments?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "all distinct, newest first, none of the other user's");
    assert!(seen.iter().all(|id| !others.contains(id)));

    // The default page is 20; exactly one page has no next cursor.
    let (_, body) = st.get(&login, "/api/v1/payments").await;
    assert_eq!(body["payments"].as_array().unwrap().len(), 20);
    assert!(body["next_cursor"].is_string());
    let (_, body) = st.get(&login, "/api/v1/payments?limit=25").await;
    assert_eq!(body["payments"].as_array().unwrap().len(), 25);
    assert_eq!(body["next_cursor"], Value::Null);
    // The other user sees their three.
    let (_, body) = st.get(&other, "/api/v1/payments").await;
    let theirs: HashSet<String> =
        body["payments"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(theirs, others);
    // A user without payments gets an empty list.
    let nobody = st.login().await;
    let (status, body) = st.get(&nobody, "/api/v1/payments").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"payments": [], "next_cursor": null})));
    // Another user's cursor only positions the caller's own list.
    let (_, first_page) = st.get(&login, "/api/v1/payments?limit=10").await;
    let cursor = first_page["next_cursor"].as_str().unwrap();
    let (status, body) = st.get(&other, &format!("/api/v1/payments?cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["payments"].as_array().unwrap().iter().all(|p| others.contains(p["id"].as_str().unwrap())));

    for (query, message) in [
        ("limit=0", "limit must be an integer from 1 to 100"),
        ("limit=101", "limit must be an integer from 1 to 100"),
        ("limit=-1", "limit must be an integer from 1 to 100"),
        ("limit=ten", "limit must be an integer from 1 to 100"),
        ("limit=", "limit must be an integer from 1 to 100"),
        ("limit=99999999999999999999", "limit must be an integer from 1 to 100"),
        ("cursor=", "Invalid cursor"),
        ("cursor=garbage!", "Invalid cursor"),
        ("cursor=MTIzNDU", "Invalid cursor"),
        ("cursor=%FF%FE", "Invalid cursor"),
        ("offset=10", "Invalid query string"),
        ("limit=5&limit=6", "Invalid query string"),
    ] {
        let (status, body) = st.get(&login, &format!("/api/v1/payments?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"], message, "{query}");
    }
}

async fn another_users_payment_is_not_found(backend: Backend) {
    let st = stack(backend).await;
    let (alice, mallory) = (st.login().await, st.login().await);
    let payment = st.created(&alice, &json!({"amount": 5000, "currency": "EUR", "description": "Mine"})).await;
    let id = payment["id"].as_str().unwrap();
    let (status, body) = st.get(&mallory, &format!("/api/v1/payments/{id}")).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"error": "Payment not found"})));
    let (status, body) = st.refund(&mallory, id).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"error": "Payment not found"})));
    // Alice's payment is untouched.
    let (status, body) = st.get(&alice, &format!("/api/v1/payments/{id}")).await;
    assert_eq!((status, &body["payment"]), (StatusCode::OK, &payment));
    // An unknown id, or one that is no UUID, is the same 404, never a 500.
    let unknown = uuid::Uuid::now_v7();
    for bad in [unknown.to_string(), "not-a-uuid".to_owned(), "1".to_owned(), "%C3%A9".to_owned(), "x".repeat(300)] {
        let (status, body) = st.get(&alice, &format!("/api/v1/payments/{bad}")).await;
        assert_eq!((status, &body["error"]), (StatusCode::NOT_FOUND, &json!("Payment not found")), "{bad}");
        let (status, _) = st.refund(&alice, &bad).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
    // The id in another spelling (upper case) still names the payment.
    let (status, _) = st.get(&alice, &format!("/api/v1/payments/{}", id.to_uppercase())).await;
    assert_eq!(status, StatusCode::OK);
}

async fn refunds_happen_once_and_only_for_succeeded_payments(backend: Backend) {
    let st = stack(backend).await;
    let login = st.login().await;
    let payment = st.created(&login, &json!({"amount": 1234, "currency": "EUR", "description": "Refund me"})).await;
    let id = payment["id"].as_str().unwrap();
    let before = now();
    let (status, body) = st.refund(&login, id).await;
    assert_eq!(status, StatusCode::OK);
    let refunded = &body["payment"];
    assert_eq!(refunded["status"], "refunded");
    let refunded_at = refunded["refunded_at"].as_i64().unwrap();
    assert!((before..=now()).contains(&refunded_at));
    for field in ["id", "amount", "currency", "description", "created_at", "decline_reason"] {
        assert_eq!(refunded[field], payment[field], "{field}");
    }
    let (_, fetched) = st.get(&login, &format!("/api/v1/payments/{id}")).await;
    assert_eq!(&fetched["payment"], refunded);
    // Once only.
    let (status, body) = st.refund(&login, id).await;
    assert_eq!((status, body), (StatusCode::CONFLICT, json!({"error": "Payment already refunded"})));
    // Never a declined payment.
    let declined = st.created(&login, &json!({"amount": 1005, "currency": "EUR", "description": "Declined"})).await;
    let (status, body) = st.refund(&login, declined["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "Only a succeeded payment can be refunded");
    let (_, fetched) = st.get(&login, &format!("/api/v1/payments/{}", declined["id"].as_str().unwrap())).await;
    assert_eq!(fetched["payment"], declined);
    // Concurrent refunds of one payment: exactly one wins.
    let payment = st.created(&login, &json!({"amount": 800, "currency": "EUR", "description": "Race"})).await;
    let path = format!("/api/v1/payments/{}/refund", payment["id"].as_str().unwrap());
    let responses = futures_join_all((0..8).map(|_| st.authed(Method::POST, &path, &login).send())).await;
    let statuses: Vec<StatusCode> = responses.into_iter().map(|r| r.unwrap().status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 7, "{statuses:?}");
}

async fn the_service_refuses_anything_the_gateway_did_not_sign(backend: Backend) {
    let st = stack(backend).await;
    let c = reqwest::Client::new();
    let body = json!({"amount": 100, "currency": "EUR", "description": "Forged"});
    let r = c
        .post(format!("{}/payments", st.payments_url))
        .header("X-User-ID", "admin")
        .header("X-User-Email", "a@b.io")
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "User context missing. Request must come through API Gateway."
    );
    let r = c
        .get(format!("{}/payments", st.payments_url))
        .header("X-User-ID", "admin")
        .header("X-User-Email", "a@b.io")
        .header("X-Request-ID", "r1")
        .header("X-Gateway-Timestamp", now().to_string())
        .header("X-Gateway-Signature", "v1=00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Invalid gateway signature. Request may not be authentic.");
    let r = c.post(format!("{}/payments/{}/refund", st.payments_url, uuid::Uuid::now_v7())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Through the gateway without a token: refused there.
    let r = st.gateway.client.get(st.gateway.url("/api/v1/payments")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let health: Value = c.get(format!("{}/health", st.payments_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "healthy", "service": "payment-service"}));
    assert_eq!(c.get(format!("{}/ready", st.payments_url)).send().await.unwrap().status(), StatusCode::OK);
}

backend_tests!(
    payments_are_created_and_decided_by_the_amount,
    a_retry_with_the_same_key_returns_the_original_payment,
    concurrent_requests_with_one_key_create_one_payment,
    idempotency_keys_are_scoped_per_user,
    invalid_payments_are_refused,
    payments_are_listed_newest_first_a_page_at_a_time,
    another_users_payment_is_not_found,
    refunds_happen_once_and_only_for_succeeded_payments,
    the_service_refuses_anything_the_gateway_did_not_sign,
);
