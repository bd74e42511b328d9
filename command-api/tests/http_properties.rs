//! Properties of the HTTP edge under hostile input, against the API in this test's own process
//! (`system_tests::App`: real Postgres, real NATS): generated headers (`Authorization`,
//! `Idempotency-Key`, `Content-Type`, `X-Request-ID`, long and odd bytes), query strings of
//! `GET /v1/environments`, path ids and MetaConfig bodies (deep nesting, huge numbers, odd
//! unicode, duplicate and long keys, sizes around the limit). Whatever comes in:
//! - never a 5xx, and the connection answers;
//! - every error is the documented `ErrorBody` (`{"error": {"code", "message", "details"}}`)
//!   with a stable code that goes with its status, and short messages;
//! - a refused request records nothing (no event caused by it, no idempotency key);
//! - the client's `X-Request-ID` is echoed only when it is a valid one.
//!
//! Each property runs a bounded number of cases (the whole file takes well under a minute);
//! `PROVISIONER_TEST_HTTP_CASES` sets how many.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;
use system_tests::{App, TOKEN};

/// The documented error codes and the status each answers with.
const CODES: &[(&str, u16)] = &[
    ("bad_request", 400),
    ("malformed_document", 400),
    ("unauthorized", 401),
    ("forbidden", 403),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("request_timeout", 408),
    ("already_exists", 409),
    ("name_taken", 409),
    ("not_failed", 409),
    ("invalid_state", 409),
    ("executor_alive", 409),
    ("payload_too_large", 413),
    ("unsupported_media_type", 415),
    ("validation_failed", 422),
    ("idempotency_key_reused", 422),
    ("request_header_fields_too_large", 431),
    ("internal", 500),
    ("unavailable", 503),
];

/// Longest message an error may have: quoted client values are cut short, and the longest fixed
/// text (the list of regions) fits.
const MAX_MESSAGE_CHARS: usize = 1024;
/// Longest field path: three levels of schema and one unknown key, quoted and cut short.
const MAX_PATH_CHARS: usize = 128;
const MAX_DOCUMENT_BYTES: usize = domain::config::MAX_DOCUMENT_BYTES;

/// Cases per property: `PROVISIONER_TEST_HTTP_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROVISIONER_TEST_HTTP_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// Runs `property` on `cases` inputs of `strategy` against one in-process API. Proptest drives
/// the cases (and shrinks a failure) on this thread; the API runs on the runtime's workers.
fn check<S: Strategy>(
    default_cases: u32,
    strategy: S,
    property: impl AsyncFn(&App, S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let app = runtime.block_on(App::spawn());
    let mut runner = TestRunner::new(Config {
        cases: cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    let result = runner.run(&strategy, |input| {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), property(&app, input))
                .await
                .map_err(|_| TestCaseError::fail("no answer within 30 s"))?
        })
    });
    drop(app);
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// What the API answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    request_ids: Vec<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

async fn send(request: reqwest::RequestBuilder) -> Result<Answer, TestCaseError> {
    let response = request
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_err(|error| TestCaseError::fail(format!("no answer: {error:#}")))?;
    let status = response.status();
    let request_ids = response
        .headers()
        .get_all("x-request-id")
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let body = response
        .bytes()
        .await
        .map_err(|error| TestCaseError::fail(format!("the body broke off: {error:#}")))?
        .to_vec();
    Ok(Answer {
        status,
        request_ids,
        content_type,
        body,
    })
}

impl Answer {
    /// The settled request id: every answer has exactly one.
    fn request_id(&self) -> Result<&str, TestCaseError> {
        match self.request_ids.as_slice() {
            [id] => Ok(id),
            ids => Err(TestCaseError::fail(format!(
                "expected one X-Request-ID, got {ids:?}"
            ))),
        }
    }

    /// No 5xx; an error is the documented body with a code that goes with the status. Hands
    /// back the code (`None` for a success).
    fn checked(&self) -> Result<Option<String>, TestCaseError> {
        let status = self.status.as_u16();
        prop_assert!(status < 500, "a {status}: {}", self.text());
        self.request_id()?;
        if status < 400 {
            return Ok(None);
        }
        prop_assert!(
            self.content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/json")),
            "error with content type {:?}",
            self.content_type
        );
        let body: Value = serde_json::from_slice(&self.body)
            .map_err(|error| TestCaseError::fail(format!("not JSON ({error}): {}", self.text())))?;
        let fields = |value: &Value| -> Vec<String> {
            let mut names: Vec<String> = value
                .as_object()
                .map(|object| object.keys().cloned().collect())
                .unwrap_or_default();
            names.sort();
            names
        };
        prop_assert_eq!(fields(&body), ["error"], "{}", body);
        let error = &body["error"];
        prop_assert_eq!(fields(error), ["code", "details", "message"], "{}", body);
        let code = error["code"].as_str().unwrap_or_default();
        let documented = CODES.iter().find(|(known, _)| *known == code);
        prop_assert!(documented.is_some(), "undocumented code: {}", body);
        prop_assert_eq!(documented.map(|(_, s)| *s), Some(status), "{}", body);
        let message = error["message"].as_str().unwrap_or_default();
        prop_assert!(!message.is_empty(), "{}", body);
        short(message, MAX_MESSAGE_CHARS)?;
        let details = error["details"].as_array();
        prop_assert!(details.is_some(), "{}", body);
        let details = details.map(Vec::as_slice).unwrap_or_default();
        prop_assert_eq!(
            details.is_empty(),
            code != "validation_failed",
            "details exactly for validation_failed: {}",
            body
        );
        for detail in details {
            prop_assert_eq!(fields(detail), ["message", "path"], "{}", body);
            short(detail["path"].as_str().unwrap_or_default(), MAX_PATH_CHARS)?;
            let message = detail["message"].as_str().unwrap_or_default();
            prop_assert!(!message.is_empty(), "{}", body);
            short(message, MAX_MESSAGE_CHARS)?;
        }
        Ok(Some(code.to_owned()))
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(500).collect()
    }
}

fn short(text: &str, max_chars: usize) -> Result<(), TestCaseError> {
    let chars = text.chars().count();
    prop_assert!(
        chars <= max_chars,
        "{chars} characters: {}...",
        text.chars().take(200).collect::<String>()
    );
    Ok(())
}

/// What a request left behind: events it caused directly, and idempotency keys (a refused
/// request may leave neither).
async fn recorded(app: &App, request_id: &str) -> (i64, i64) {
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE metadata->>'causation_id' = 'request:' || $1",
    )
    .bind(request_id)
    .fetch_one(&app.pool)
    .await
    .expect("count the request's events");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .expect("count the idempotency keys");
    (events, keys)
}

/// A header value as the server reads it: without surrounding spaces and tabs.
fn as_received(value: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// The client's request id when the API must keep it: 1-128 visible ASCII characters.
fn valid_request_id(sent: &[u8]) -> Option<String> {
    let value = as_received(sent);
    ((1..=128).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic))
        .then(|| String::from_utf8_lossy(value).into_owned())
}

/// Whether an `Authorization` value carries the admin token: `Bearer` (any case), spaces, the
/// token.
fn authorizes(sent: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(as_received(sent)) else {
        return false;
    };
    let Some((scheme, token)) = text.split_at_checked(6) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && token.starts_with([' ', '\t'])
        && token.trim_matches([' ', '\t']) == TOKEN
}

/// Every byte a header value may hold (no control characters but tab), mostly printable.
fn header_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            12 => 0x21u8..0x7f,
            2 => Just(b' '),
            1 => Just(b'\t'),
            2 => 0x80u8..=0xff,
        ],
        0..max_len,
    )
}

fn bytes_of(words: &[&str]) -> impl Strategy<Value = Vec<u8>> + use<> {
    let words: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
    prop::sample::select(words)
}

fn optional_header(
    values: impl Strategy<Value = Vec<u8>>,
) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![1 => Just(None), 4 => values.prop_map(Some)]
}

// --- headers --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct HeaderCase {
    method: Method,
    path: &'static str,
    authorization: Option<Vec<u8>>,
    idempotency_key: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    request_id: Option<Vec<u8>>,
    body: String,
}

fn header_case() -> impl Strategy<Value = HeaderCase> {
    let token = format!("Bearer {TOKEN}");
    let authorization = optional_header(prop_oneof![
        4 => Just(token.clone().into_bytes()),
        2 => bytes_of(&[
            "bearer test-admin-token",
            "BEARER \t test-admin-token \t",
            "Bearer  test-admin-token ",
            "Bearer test-admin-token x",
            "Bearer test-admin-tokenx",
            "Bearer test-admin-toke",
            "Bearertest-admin-token",
            "Basic dGVzdC1hZG1pbi10b2tlbg==",
            "Bearer",
            "Bearer ",
            "test-admin-token",
        ]),
        1 => header_bytes(80),
        1 => (4000usize..5000).prop_map(|n| format!("Bearer {}", "t".repeat(n)).into_bytes()),
    ]);
    let idempotency_key = optional_header(prop_oneof![
        3 => "[a-zA-Z0-9_-]{1,12}".prop_map(String::into_bytes),
        2 => header_bytes(40),
        1 => (250usize..262).prop_map(|n| "k".repeat(n).into_bytes()),
    ]);
    let content_type = optional_header(prop_oneof![
        4 => bytes_of(&[
            "application/yaml",
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/X-YAML",
            "text/yaml ; q=1",
            "text/x-yaml",
            "text/plain",
            "application/yaml-ish",
            ";",
            "",
        ]),
        1 => header_bytes(60),
        1 => (1000usize..3000).prop_map(|n| format!("text/{}", "y".repeat(n)).into_bytes()),
    ]);
    let request_id = optional_header(prop_oneof![
        3 => "[!-~]{1,128}".prop_map(String::into_bytes),
        2 => header_bytes(140),
        1 => (125usize..135).prop_map(|n| "r".repeat(n).into_bytes()),
    ]);
    let route = prop::sample::select(vec![
        (Method::POST, "/v1/environments"),
        (Method::POST, "/v1/plans"),
        (Method::GET, "/v1/environments"),
    ]);
    let body = prop_oneof![
        "[a-z][a-z0-9]{11}".prop_map(|name| format!("name: {name}\ncloud:\n  provider: sandbox\n")),
        "[a-z][a-z0-9]{11}".prop_map(|name| format!(
            r#"{{"name": "{name}", "cloud": {{"provider": "sandbox"}}}}"#
        )),
        Just("name: [unclosed".to_owned()),
        Just(String::new()),
    ];
    (
        route,
        authorization,
        idempotency_key,
        content_type,
        request_id,
        body,
    )
        .prop_map(
            |((method, path), authorization, idempotency_key, content_type, request_id, body)| {
                HeaderCase {
                    method,
                    path,
                    authorization,
                    idempotency_key,
                    content_type,
                    request_id,
                    body,
                }
            },
        )
}

async fn header_property(app: &App, case: HeaderCase) -> Result<(), TestCaseError> {
    let mut request = app
        .http
        .request(
            case.method.clone(),
            format!("{}{}", app.base_url, case.path),
        )
        .body(case.body.clone());
    for (name, value) in [
        ("authorization", &case.authorization),
        ("idempotency-key", &case.idempotency_key),
        ("content-type", &case.content_type),
        ("x-request-id", &case.request_id),
    ] {
        if let Some(value) = value {
            let value = HeaderValue::from_bytes(value).expect("a header value");
            request = request.header(HeaderName::from_static(name), value);
        }
    }
    let client_id = case.request_id.as_deref().and_then(valid_request_id);
    let before = recorded(app, client_id.as_deref().unwrap_or("")).await;
    let answer = send(request).await?;
    let code = answer.checked()?;
    let id = answer.request_id()?.to_owned();

    match &client_id {
        Some(kept) => prop_assert_eq!(&id, kept, "a valid request id is echoed"),
        None => prop_assert!(
            id.starts_with("req_") && id.len() == 30,
            "an invalid or missing request id is replaced, got {:?}",
            id
        ),
    }
    let authorized = case.authorization.as_deref().is_some_and(authorizes);
    prop_assert_eq!(
        code.as_deref() == Some("unauthorized"),
        !authorized,
        "{:?}: {}",
        answer.status,
        answer.text()
    );
    if code.is_some() {
        let before = if client_id.is_some() {
            before
        } else {
            (0, before.1)
        };
        prop_assert_eq!(
            recorded(app, &id).await,
            before,
            "a refused request ({}) recorded something",
            answer.text()
        );
    }
    if answer.status == StatusCode::ACCEPTED
        && let Some(key) = &case.idempotency_key
    {
        let key = as_received(key);
        prop_assert!(
            (1..=255).contains(&key.len()) && std::str::from_utf8(key).is_ok(),
            "accepted with the Idempotency-Key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    Ok(())
}

#[test]
fn hostile_headers_get_the_error_body_and_valid_request_ids_only_are_echoed() {
    check(96, header_case(), header_property);
}

// --- the list's query string ----------------------------------------------------------------

/// One query parameter: a name and a value, each percent-encoded from arbitrary bytes, or a raw
/// piece of query text.
#[derive(Clone)]
enum Param {
    Pair(Vec<u8>, Vec<u8>),
    Raw(String),
}

/// As it is sent, so a failing case reads as its query string.
impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&query_string(std::slice::from_ref(self)))
    }
}

fn percent_encoded(bytes: &[u8]) -> String {
    let mut text = String::new();
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            text.push(byte as char);
        } else {
            let _ = write!(text, "%{byte:02X}");
        }
    }
    text
}

/// A cursor: hex of `<micros>:<id>` as the API makes them, with any micros and any id.
fn cursor() -> impl Strategy<Value = Vec<u8>> {
    let micros = prop_oneof![
        any::<i64>(),
        -300_000_000_000_000_000i64..300_000_000_000_000_000,
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
    ];
    let id = prop_oneof![
        3 => "env_[0-7][0-9a-hjkmnp-tv-z]{25}",
        1 => "env_[0-9a-z]{26}",
        1 => any::<String>(),
        1 => Just("\0".to_owned()),
        1 => Just("env_\u{0}x".to_owned()),
    ];
    prop_oneof![
        4 => (micros, id).prop_map(|(micros, id)| {
            let plain = format!("{micros}:{id}");
            plain.bytes().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()
        }),
        1 => "[0-9a-fA-F]{0,80}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => (500usize..530).prop_map(|n| "30".repeat(n / 2).into_bytes()),
    ]
}

fn query_value(name: &str) -> BoxedStrategy<Vec<u8>> {
    let status_words = bytes_of(&[
        "queued",
        "provisioning",
        "bootstrapping",
        "ready",
        "updating",
        "failed",
        "destroy_queued",
        "destroying",
        "destroyed",
        "READY",
        "ready ",
        "",
    ]);
    let anything = prop::collection::vec(any::<u8>(), 0..64);
    match name {
        "status" => prop_oneof![3 => status_words, 1 => anything].boxed(),
        "limit" => prop_oneof![
            3 => (0u64..=300).prop_map(|n| n.to_string().into_bytes()),
            1 => any::<i128>().prop_map(|n| n.to_string().into_bytes()),
            1 => bytes_of(&["", "1e2", "+5", "-0", " 5", "5 ", "0x10", "１０", "99999999999999999999999"]),
            1 => anything,
        ]
        .boxed(),
        "cursor" => cursor().boxed(),
        "name" => prop_oneof![
            3 => "[a-z][a-z0-9-]{0,45}".prop_map(String::into_bytes),
            1 => any::<String>().prop_map(String::into_bytes),
            1 => (40usize..2000).prop_map(|n| "n".repeat(n).into_bytes()),
            1 => anything,
        ]
        .boxed(),
        _ => anything.boxed(),
    }
}

fn param() -> impl Strategy<Value = Param> {
    let named = prop::sample::select(vec!["status", "limit", "cursor", "name", "follow", "x"])
        .prop_flat_map(|name| {
            query_value(name).prop_map(move |value| Param::Pair(name.as_bytes().to_vec(), value))
        });
    prop_oneof![
        8 => named,
        1 => (prop::collection::vec(any::<u8>(), 0..12), prop::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(name, value)| Param::Pair(name, value)),
        1 => prop::sample::select(vec!["%", "%zz", "limit=%FF", "&&", "=", "limit", "name=a=b", "status=+", "cursor=%00"])
            .prop_map(|raw| Param::Raw(raw.to_owned())),
    ]
}

fn query_string(params: &[Param]) -> String {
    params
        .iter()
        .map(|param| match param {
            Param::Pair(name, value) => {
                format!("{}={}", percent_encoded(name), percent_encoded(value))
            }
            Param::Raw(raw) => raw.clone(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn list_property(app: &App, params: Vec<Param>) -> Result<(), TestCaseError> {
    let query = query_string(&params);
    let answer = send(app.request(Method::GET, &format!("/v1/environments?{query}"))).await?;
    let code = answer.checked()?;
    match code.as_deref() {
        None => {
            prop_assert_eq!(answer.status, StatusCode::OK);
            let page: Value = serde_json::from_slice(&answer.body).map_err(|error| {
                TestCaseError::fail(format!("a page that is not JSON: {error}"))
            })?;
            prop_assert!(page["items"].is_array(), "{}", page);
            prop_assert!(
                page["next_cursor"].is_null() || page["next_cursor"].is_string(),
                "{}",
                page
            );
        }
        Some(code) => prop_assert_eq!(code, "bad_request", "?{}: {}", query, answer.text()),
    }
    Ok(())
}

#[test]
fn any_query_string_of_the_list_answers_a_page_or_400() {
    check(
        128,
        prop::collection::vec(param(), 0..5),
        async |app: &App, params: Vec<Param>| {
            // Something to page through, once.
            let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM environment_names")
                .fetch_one(&app.pool)
                .await
                .expect("count");
            if listed == 0 {
                for name in ["page-a", "page-b", "page-c"] {
                    app.create_ok(&system_tests::sandbox_yaml(name, "")).await;
                }
            }
            list_property(app, params).await
        },
    );
}

// --- path ids ------------------------------------------------------------------------------

fn path_id() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "env_[0-7][0-9a-hjkmnp-tv-z]{25}",
        1 => "env_[0-9A-Za-z]{0,30}",
        2 => prop::collection::vec(any::<u8>(), 1..80).prop_map(|bytes| percent_encoded(&bytes)),
        1 => any::<String>().prop_map(|text| percent_encoded(text.as_bytes())),
        1 => (1000usize..4000).prop_map(|n| "e".repeat(n)),
        1 => prop::sample::select(vec!["%2F", "%2e", "%00", "%FF%FE", "env_%00", "x%20y", "%E2%80%8B"])
            .prop_map(str::to_owned),
    ]
    // `..` is a dot segment: the client resolves it away, and the path names another route.
    .prop_filter("a dot segment", |id| {
        !matches!(
            id.to_ascii_lowercase().replace("%2e", ".").as_str(),
            "." | ".."
        )
    })
}

async fn path_property(app: &App, (route, id): (usize, String)) -> Result<(), TestCaseError> {
    let (method, template, body) = [
        (Method::GET, "/v1/environments/{id}", None),
        (Method::GET, "/v1/environments/{id}/outputs", None),
        (Method::GET, "/v1/environments/{id}/history", None),
        (Method::GET, "/v1/environments/{id}/logs", None),
        (Method::GET, "/v1/environments/{id}/events", None),
        (Method::DELETE, "/v1/environments/{id}", None),
        (Method::POST, "/v1/environments/{id}/retry", None),
        (Method::POST, "/v1/environments/{id}/cancel", None),
        (
            Method::POST,
            "/v1/environments/{id}/mark-failed",
            Some(r#"{"reason": "by hand"}"#),
        ),
        (
            Method::POST,
            "/v1/environments/{id}/mark-destroyed",
            Some(r#"{"reason": "gone"}"#),
        ),
        (
            Method::POST,
            "/v1/environments/{id}/force-unlock",
            Some(r#"{"lock_id": "abc-1"}"#),
        ),
    ][route % 11]
        .clone();
    let path = template.replace("{id}", &id);
    let mut request = app.request(method.clone(), &path);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let answer = send(request).await?;
    let code = answer.checked()?;
    // No environment exists here: every id is unknown.
    prop_assert_eq!(
        code.as_deref(),
        Some("not_found"),
        "{} {}: {}",
        method,
        path.chars().take(120).collect::<String>(),
        answer.text()
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count events");
    prop_assert_eq!(events, 0);
    Ok(())
}

#[test]
fn any_environment_id_in_a_path_answers_404_with_the_error_body() {
    check(96, (0usize..11, path_id()), path_property);
}

// --- bodies --------------------------------------------------------------------------------

/// A document as text is written: keys may repeat, numbers are kept as written.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    /// A number or a YAML plain scalar, as written.
    Plain(String),
    Str(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    fn json(&self, out: &mut String) {
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
            Node::Plain(text) => out.push_str(text),
            Node::Str(text) => out.push_str(&serde_json::to_string(text).expect("a string")),
            Node::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.json(out);
                }
                out.push(']');
            }
            Node::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&serde_json::to_string(key).expect("a key"));
                    out.push_str(": ");
                    value.json(out);
                }
                out.push('}');
            }
        }
    }

    /// Block-style YAML; scalars in flow style.
    fn yaml(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Node::List(items) if !items.is_empty() => {
                for item in items {
                    out.push_str(&pad);
                    out.push_str("-\n");
                    item.yaml(indent + 2, out);
                }
            }
            Node::Map(entries) if !entries.is_empty() => {
                for (key, value) in entries {
                    out.push_str(&pad);
                    out.push_str(&serde_json::to_string(key).expect("a key"));
                    out.push_str(":\n");
                    value.yaml(indent + 2, out);
                }
            }
            scalar => {
                out.push_str(&pad);
                scalar.json(out);
                out.push('\n');
            }
        }
    }
}

fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "sandbox", "aws", "gcp", "small", "medium", "large", "infra", "bootstrap", "destroy",
            "us-east-1", "sandbox-local", "123456789012", "arn:aws:iam::123456789012:role/r",
            "a.b", "", "~", "yes", "\u{0}", "\u{feff}", "\u{202e}rtl", "e\u{301}", "\u{1f600}",
            "\u{fffe}", "\u{85}", "\u{2028}", "*alias", "&anchor", "!!binary", "---", "...",
        ])
        .prop_map(str::to_owned),
        2 => any::<String>(),
        1 => (100usize..3000).prop_map(|n| "s".repeat(n)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "name", "cloud", "provider", "region", "account_id", "role_arn", "external_id",
            "simulate", "apply_seconds", "fail", "fail_times", "transient_failures", "cluster",
            "profile", "data", "postgres", "redis", "size", "multi_az", "ha", "beta9", "domain",
            "workers", "gpu_enabled", "<<",
        ])
        .prop_map(str::to_owned),
        2 => odd_text(),
        1 => (1000usize..3000).prop_map(|n| "k".repeat(n)),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        (1usize..400).prop_map(|n| "9".repeat(n)),
        (1usize..400).prop_map(|n| format!("-{}", "1".repeat(n))),
        prop::sample::select(vec![
            "-0",
            "1e999",
            "-1e999",
            "1e-999",
            "0.1e1",
            "5e-324",
            "1.7976931348623157e308",
            "18446744073709551616",
            ".inf",
            "-.inf",
            ".nan",
            "0x1F",
            "0o17",
            "1_000",
            "+1",
        ])
        .prop_map(str::to_owned),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just(Node::Null),
        any::<bool>().prop_map(Node::Bool),
        number().prop_map(Node::Plain),
        odd_text().prop_map(Node::Str),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Node::List),
            prop::collection::vec((key(), inner.clone()), 0..6).prop_map(Node::Map),
            // A key given twice.
            (key(), inner.clone(), inner).prop_map(|(key, first, second)| {
                Node::Map(vec![(key.clone(), first), (key, second)])
            }),
        ]
    })
}

/// A valid sandbox config with one field, anywhere, replaced by any value.
fn near_valid() -> impl Strategy<Value = Node> {
    let name = "[a-z][a-z0-9]{10}";
    (name, 0usize..9, node()).prop_map(|(name, at, value)| {
        let s = |text: &str| Node::Str(text.to_owned());
        let mut simulate = vec![("apply_seconds".to_owned(), Node::Plain("0.5".into()))];
        let mut cloud = vec![("provider".to_owned(), s("sandbox"))];
        let mut postgres = vec![("size".to_owned(), s("small"))];
        let mut root = vec![("name".to_owned(), s(&name))];
        let mut cluster = vec![("profile".to_owned(), s("small"))];
        match at {
            0 => root[0].1 = value,
            1 => cloud[0].1 = value,
            2 => simulate[0].1 = value,
            3 => simulate.push(("fail_times".to_owned(), value)),
            4 => cluster[0].1 = value,
            5 => postgres[0].1 = value,
            6 => postgres.push(("multi_az".to_owned(), value)),
            7 => root.push(("beta9".to_owned(), value)),
            _ => root.push(("name".to_owned(), value)),
        }
        cloud.push(("simulate".to_owned(), Node::Map(simulate)));
        root.push(("cloud".to_owned(), Node::Map(cloud)));
        root.push(("cluster".to_owned(), Node::Map(cluster)));
        root.push((
            "data".to_owned(),
            Node::Map(vec![("postgres".to_owned(), Node::Map(postgres))]),
        ));
        Node::Map(root)
    })
}

#[derive(Debug, Clone)]
struct BodyCase {
    plan: bool,
    json: bool,
    document: String,
}

fn body_case() -> impl Strategy<Value = BodyCase> {
    let nested = (1usize..120, any::<bool>()).prop_map(|(depth, lists)| {
        if lists {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("{}1{}", r#"{"a": "#.repeat(depth), "}".repeat(depth))
        }
    });
    let yaml_only = prop::sample::select(vec![
        "a: &x [1, 2]\nb: *x\nc: *x\n",
        "name: demo\ncloud: {provider: sandbox}\n---\nname: again\n",
        "? [a]\n: 1\n",
        "name: !custom demo\n",
        "name: !!binary aGVsbG8=\n",
        "name: |\n  multi\n  line\ncloud: {provider: sandbox}\n",
        "name: demo\n\tcloud: x\n",
        "<<: {name: merged}\ncloud: {provider: sandbox}\n",
        "a: &a [*a]\n",
        "%YAML 1.2\n---\nname: demo\n",
    ])
    .prop_map(str::to_owned);
    let document = prop_oneof![
        3 => (near_valid(), any::<bool>()).prop_map(|(node, json)| (node, json)),
        2 => (node(), any::<bool>()),
    ]
    .prop_map(|(node, json)| {
        let mut text = String::new();
        if json {
            node.json(&mut text)
        } else {
            node.yaml(0, &mut text)
        }
        text
    });
    let padded =
        (near_valid(), MAX_DOCUMENT_BYTES - 2..MAX_DOCUMENT_BYTES + 3).prop_map(|(node, size)| {
            let mut text = String::new();
            node.json(&mut text);
            let pad = size.saturating_sub(text.len());
            text.extend(std::iter::repeat_n(' ', pad));
            text
        });
    let text = prop_oneof![
        8 => document,
        2 => nested,
        1 => yaml_only,
        1 => padded,
        1 => any::<String>(),
    ];
    (any::<bool>(), any::<bool>(), text).prop_map(|(plan, json, document)| BodyCase {
        plan,
        json,
        document,
    })
}

async fn body_property(app: &App, case: BodyCase) -> Result<(), TestCaseError> {
    let path = if case.plan {
        "/v1/plans"
    } else {
        "/v1/environments"
    };
    let content_type = if case.json {
        "application/json"
    } else {
        "application/yaml"
    };
    let answer = send(
        app.request(Method::POST, path)
            .header("content-type", content_type)
            .body(case.document.clone()),
    )
    .await?;
    let code = answer.checked()?;
    let id = answer.request_id()?.to_owned();
    let expected: &[u16] = if case.plan {
        &[200, 400, 413, 422]
    } else {
        &[202, 400, 409, 413, 422]
    };
    prop_assert!(
        expected.contains(&answer.status.as_u16()),
        "{}: {}",
        answer.status,
        answer.text()
    );
    prop_assert_eq!(
        answer.status == StatusCode::PAYLOAD_TOO_LARGE,
        case.document.len() > MAX_DOCUMENT_BYTES,
        "the limit is {} bytes; the body had {}",
        MAX_DOCUMENT_BYTES,
        case.document.len()
    );
    if code.is_some() || case.plan {
        prop_assert_eq!(
            recorded(app, &id).await.0,
            0,
            "a refused request recorded events"
        );
    }
    Ok(())
}

#[test]
fn any_document_gets_an_answer_or_the_error_body_and_a_refusal_records_nothing() {
    check(128, body_case(), body_property);
}
