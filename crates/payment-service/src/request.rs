//! What `POST /payments` accepts, and how a request is recognised again.
//!
//! The body is `{"amount", "currency", "description"}`, all three required,
//! nothing else (unknown, duplicate or mistyped fields are 400 `Invalid
//! request body` from [`common_http::StrictJson`]; an amount sent as a float
//! or a string is mistyped). Then, each with its own 400 message naming the
//! field:
//!
//! - `amount`: an integer number of the currency's minor units, from 1 to
//!   [`MAX_AMOUNT`] (100,000,000.00 in a two-decimal currency). One cap for
//!   every currency keeps the rule simple; it is a sanity limit, not a risk
//!   limit.
//! - `currency`: an active ISO 4217 code from [`CURRENCIES`]. Lower-case
//!   ASCII letters are accepted and stored in upper case (`eur` is `EUR`,
//!   as several payment APIs write codes in lower case); anything else that
//!   is not on the list is refused.
//! - `description`: trimmed, then 1 to [`MAX_DESCRIPTION_CHARS`] characters,
//!   no control characters and no bidirectional overrides (they would let a
//!   description display as something else in a statement or a log).
//!
//! The `Idempotency-Key` header is required on every creation (1 to 255
//! visible ASCII characters, sent once). The service keeps, with the key, the
//! SHA-256 of the *canonical* request ([`ValidPayment::request_hash`]: the
//! normalised amount, currency and description), so a retry that differs only
//! in currency case, surrounding blanks or JSON formatting is the same request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use common_http::ApiError;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// The largest amount, in minor units.
pub const MAX_AMOUNT: i64 = 10_000_000_000;
pub const MAX_DESCRIPTION_CHARS: usize = 200;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The active ISO 4217 currency codes (list one, 2025), sorted for binary
/// search: every circulating currency, without the fund codes (`BOV`, `CHE`,
/// `USN`, …), precious metals, the SDR and the testing codes, none of which a
/// card payment is made in. `ANG` and its successor `XCG` are both listed
/// during their changeover. When ISO amends the list, so must this.
pub const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY", "COP", "CRC",
    "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// The body of `POST /payments` (a JSON object: `parse_json` refuses any
/// other top-level value).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Minor units of the currency, 1 to 10^10.
    #[schema(minimum = 1, maximum = 10_000_000_000_i64)]
    pub amount: i64,
    /// An active ISO 4217 code; lower case is accepted.
    #[schema(example = "EUR")]
    pub currency: String,
    /// 1 to 200 characters after trimming; no control characters.
    pub description: String,
}

/// A request that passed every check, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPayment {
    pub amount: i64,
    pub currency: &'static str,
    pub description: String,
}

impl CreatePayment {
    /// Checks and normalises the body (the rules of the module docs).
    ///
    /// # Errors
    /// 400 with a message naming the field.
    pub fn validate(self) -> Result<ValidPayment, ApiError> {
        if self.amount < 1 {
            return Err(ApiError::bad_request("amount must be a positive integer in minor units")
                .with_hint("e.g. 1050 for 10.50 EUR"));
        }
        if self.amount > MAX_AMOUNT {
            return Err(ApiError::bad_request("amount must be at most 10000000000 minor units"));
        }
        let currency = currency(&self.currency).ok_or_else(|| {
            ApiError::bad_request("currency must be an ISO 4217 currency code")
                .with_hint("Three letters of an active currency, e.g. EUR, USD, JPY")
        })?;
        let description = self.description.trim();
        if description.is_empty() {
            return Err(ApiError::bad_request("description must not be empty"));
        }
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::bad_request("description must be at most 200 characters"));
        }
        let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if description.chars().any(|c| c.is_control() || bidi(c)) {
            return Err(ApiError::bad_request("description must not contain control characters"));
        }
        Ok(ValidPayment { amount: self.amount, currency, description: description.to_owned() })
    }
}

/// The listed code for `code`, accepting lower-case ASCII letters.
pub fn currency(code: &str) -> Option<&'static str> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let upper = code.to_ascii_uppercase();
    CURRENCIES.binary_search(&upper.as_str()).ok().and_then(|i| CURRENCIES.get(i).copied())
}

impl ValidPayment {
    /// Lower-case hex SHA-256 of the canonical request. The fields are
    /// separated by newlines, which neither the amount, the currency nor a
    /// valid description can contain, so two different requests never share
    /// a canonical form.
    pub fn request_hash(&self) -> String {
        let canonical = format!("payment-request-v1\n{}\n{}\n{}", self.amount, self.currency, self.description);
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// The `Idempotency-Key` header of a request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            if parts.headers.contains_key(IDEMPOTENCY_KEY_HEADER) {
                return Err(invalid_key().with_hint("Send the Idempotency-Key header once"));
            }
            return Err(ApiError::bad_request("Idempotency-Key header is required")
                .with_hint("Send a unique key per payment (e.g. a UUID) and the same key when retrying it"));
        };
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(invalid_key());
        }
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }
}

fn invalid_key() -> ApiError {
    ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(amount: i64, currency: &str, description: &str) -> CreatePayment {
        CreatePayment { amount, currency: currency.to_owned(), description: description.to_owned() }
    }

    #[test]
    fn the_body_is_a_json_object_with_exactly_the_three_fields() {
        let parse = |text: &str| common_http::json::parse_json::<CreatePayment>(text.as_bytes());
        let ok = parse(r#"{"description":"x","amount":5,"currency":"EUR"}"#).unwrap();
        assert_eq!((ok.amount, ok.currency.as_str(), ok.description.as_str()), (5, "EUR", "x"));
        for (text, hint) in [
            (r#"[5,"EUR","x"]"#, "the body must be a JSON object"),
            (r#""EUR""#, "the body must be a JSON object"),
            (r#"{"amount":5,"currency":"EUR"}"#, "missing field `description`"),
            (r#"{"amount":5,"currency":"EUR","description":"x","id":"y"}"#, "unknown field `id`"),
            (r#"{"amount":5,"amount":6,"currency":"EUR","description":"x"}"#, "duplicate field `amount`"),
            (r#"{"amount":5.5,"currency":"EUR","description":"x"}"#, "field `amount` has the wrong type or value"),
            (r#"{"amount":"5","currency":"EUR","description":"x"}"#, "field `amount` has the wrong type or value"),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.message(), "Invalid request body", "{text}");
            assert!(format!("{error:?}").contains(hint), "{text}: {error:?}");
        }
    }

    #[test]
    fn the_currency_list_is_sorted_and_well_formed() {
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
        assert!(CURRENCIES.iter().all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
        for code in CURRENCIES {
            assert_eq!(currency(code), Some(*code));
        }
    }

    #[test]
    fn currencies_are_normalised_or_refused() {
        assert_eq!(currency("EUR"), Some("EUR"));
        assert_eq!(currency("eur"), Some("EUR"));
        assert_eq!(currency("uSd"), Some("USD"));
        for bad in ["", "EU", "EURO", "XXX", "XTS", "XAU", "ABC", "E1R", "ÉUR", "EU\u{0}", " EUR"] {
            assert_eq!(currency(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn valid_bodies_are_normalised() {
        let valid = body(1050, "eur", "  Coffee  ").validate().unwrap();
        assert_eq!(valid, ValidPayment { amount: 1050, currency: "EUR", description: "Coffee".into() });
        assert!(body(1, "JPY", "x").validate().is_ok());
        assert!(body(MAX_AMOUNT, "USD", &"é".repeat(MAX_DESCRIPTION_CHARS)).validate().is_ok());
        assert!(body(1, "USD", "emoji 🎉 and ZWJ 👩\u{200D}💻").validate().is_ok());
    }

    #[test]
    fn invalid_bodies_name_the_field() {
        let cases = [
            (body(0, "EUR", "x"), "amount must be a positive integer in minor units"),
            (body(-5, "EUR", "x"), "amount must be a positive integer in minor units"),
            (body(MAX_AMOUNT + 1, "EUR", "x"), "amount must be at most 10000000000 minor units"),
            (body(100, "XYZ", "x"), "currency must be an ISO 4217 currency code"),
            (body(100, "EUR", "   "), "description must not be empty"),
            (body(100, "EUR", &"a".repeat(201)), "description must be at most 200 characters"),
            (body(100, "EUR", "a\u{7}b"), "description must not contain control characters"),
            (body(100, "EUR", "a\nb"), "description must not contain control characters"),
            (body(100, "EUR", "abc\u{202E}fed"), "description must not contain control characters"),
        ];
        for (body, message) in cases {
            let error = body.validate().unwrap_err();
            assert_eq!(error.status(), 400);
            assert_eq!(error.message(), message);
        }
    }

    #[test]
    fn the_request_hash_is_canonical() {
        let a = body(1050, "eur", " Coffee").validate().unwrap().request_hash();
        let b = body(1050, "EUR", "Coffee ").validate().unwrap().request_hash();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        for other in [body(1051, "EUR", "Coffee"), body(1050, "USD", "Coffee"), body(1050, "EUR", "Tea")] {
            assert_ne!(other.validate().unwrap().request_hash(), a);
        }
    }

    async fn key_of(values: &[&[u8]]) -> Result<IdempotencyKey, ApiError> {
        let mut request = axum::http::Request::builder();
        for v in values {
            request = request.header(IDEMPOTENCY_KEY_HEADER, axum::http::HeaderValue::from_bytes(v).unwrap());
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        IdempotencyKey::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn idempotency_keys_are_checked() {
        assert_eq!(key_of(&[b"order-42"]).await.unwrap(), IdempotencyKey("order-42".into()));
        assert!(key_of(&["k".repeat(255).as_bytes()]).await.is_ok());
        let missing = key_of(&[]).await.unwrap_err();
        assert_eq!((missing.status().as_u16(), missing.message()), (400, "Idempotency-Key header is required"));
        for bad in [&b""[..], b"two words", b"tab\there", &[b'k'; 256], "clé".as_bytes()] {
            let e = key_of(&[bad]).await.unwrap_err();
            assert_eq!(e.message(), "Idempotency-Key must be 1 to 255 visible ASCII characters", "{bad:?}");
        }
        let twice = key_of(&[b"a", b"b"]).await.unwrap_err();
        assert_eq!(twice.message(), "Idempotency-Key must be 1 to 255 visible ASCII characters");
    }
}
