//! Request ids: the client's `X-Request-ID` when it is a sane one, else a generated `req_<ulid>`.
//!
//! The id is echoed in the response, recorded in the tracing span and stored in the metadata of
//! every event the request causes, so a client value must not be allowed to be anything: an
//! empty, over-long or non-visible-ASCII id is replaced, never echoed or stored.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-chosen request id kept; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of the current request, in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh `req_<ulid>`.
    pub fn generate() -> Self {
        Self(format!(
            "req_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ))
    }

    /// The client's id, if it is 1-[`MAX_REQUEST_ID_LEN`] visible ASCII characters.
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let acceptable = (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_graphic());
        acceptable
            .then(|| {
                std::str::from_utf8(bytes)
                    .ok()
                    .map(|id| Self(id.to_owned()))
            })
            .flatten()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("a request id is visible ASCII")
    }
}

/// Middleware: settles the request's id before anything else sees the request (the header is
/// replaced, so logs and handlers read the settled id), and sets it on the response.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);
    let value = id.header_value();
    request
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), value.clone());
    request.extensions_mut().insert(id);
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(value: &[u8]) -> Option<String> {
        let value = HeaderValue::from_bytes(value).ok()?;
        RequestId::from_client(&value).map(|id| id.0)
    }

    #[test]
    fn keeps_a_sane_client_id() {
        assert_eq!(
            client(b"client-chosen-42").as_deref(),
            Some("client-chosen-42")
        );
        let longest = "x".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(client(longest.as_bytes()), Some(longest));
    }

    #[test]
    fn refuses_empty_long_spaced_or_non_ascii_ids() {
        assert_eq!(client(b""), None);
        assert_eq!(client("x".repeat(MAX_REQUEST_ID_LEN + 1).as_bytes()), None);
        assert_eq!(client("x".repeat(360_000).as_bytes()), None);
        assert_eq!(client(b"with space"), None);
        assert_eq!(client(b"tab\there"), None);
        assert_eq!(client("caf\u{e9}".as_bytes()), None);
        assert_eq!(client(b"\xff\xfe"), None);
    }

    #[test]
    fn generated_ids_are_req_ulids_and_valid_client_ids() {
        let id = RequestId::generate();
        assert!(id.as_str().starts_with("req_"), "{id:?}");
        assert_eq!(id.as_str().len(), 30);
        assert_eq!(RequestId::from_client(&id.header_value()), Some(id));
    }
}
