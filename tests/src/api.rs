//! The API as a test talks to it: an authenticated HTTP client with the requests and waits the
//! tests share, whether the API runs in another process ([`crate::Stack`]) or in the test's own
//! ([`crate::App`]).

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The admin token every test deployment is started with.
pub const TOKEN: &str = "test-admin-token";

/// A client of one running API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    pub http: reqwest::Client,
    token: &'static str,
}

impl ApiClient {
    pub fn new(base_url: String, token: &'static str) -> Self {
        Self {
            base_url,
            http: reqwest::Client::new(),
            token,
        }
    }

    /// The token the requests carry (the admin's, unless [`Self::issue_token`] made this client).
    pub fn token(&self) -> &'static str {
        self.token
    }

    /// Issues a token of `tenant` with `role` through this (admin) client and answers a client
    /// of the same API carrying it. The token is leaked for the test's life (`&'static`).
    pub async fn issue_token(&self, tenant: &str, role: &str) -> ApiClient {
        let response = self
            .request(Method::POST, "/v1/tokens")
            .json(&serde_json::json!({"name": format!("{tenant}-{role}"), "tenant": tenant, "role": role}))
            .send()
            .await
            .expect("POST /v1/tokens");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let token = body["token"].as_str().expect("the token").to_owned();
        ApiClient {
            base_url: self.base_url.clone(),
            http: self.http.clone(),
            token: Box::leak(token.into_boxed_str()),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_readiness(StatusCode::OK).await;
    }

    /// Waits until `/readyz` answers `status` (panics after 30 s).
    pub async fn wait_readiness(&self, status: StatusCode) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let response = self
                .http
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/readyz did not answer {status} within 30s");
    }

    /// An authenticated request.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(self.token)
    }

    pub async fn create(&self, yaml: &str) -> reqwest::Response {
        self.request(Method::POST, "/v1/environments")
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .expect("POST /v1/environments")
    }

    /// `POST /v1/plans` with a YAML document.
    pub async fn plan(&self, yaml: &str) -> reqwest::Response {
        self.request(Method::POST, "/v1/plans")
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .expect("POST /v1/plans")
    }

    /// Creates an environment and returns its id, asserting 202.
    pub async fn create_ok(&self, yaml: &str) -> String {
        let response = self.create(yaml).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json body");
        assert_eq!(status, StatusCode::ACCEPTED, "create failed: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// `DELETE /v1/environments/{id}`
    pub async fn delete(&self, id: &str) -> reqwest::Response {
        self.request(Method::DELETE, &format!("/v1/environments/{id}"))
            .send()
            .await
            .expect("DELETE environment")
    }

    /// `POST /v1/environments/{id}/retry`
    pub async fn retry(&self, id: &str) -> reqwest::Response {
        self.request(Method::POST, &format!("/v1/environments/{id}/retry"))
            .send()
            .await
            .expect("POST retry")
    }

    pub async fn get(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .request(Method::GET, &format!("/v1/environments/{id}"))
            .send()
            .await
            .expect("GET environment");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the read model until the environment has `status` (panics after `timeout`).
    pub async fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |body| body["status"] == status)
            .await
    }

    /// Polls the read model until the environment is `failed`, and asserts its error names
    /// `phase` and says `message`.
    pub async fn wait_for_failure(
        &self,
        id: &str,
        phase: &str,
        message: &str,
        timeout: Duration,
    ) -> Value {
        let failed = self.wait_for_status(id, "failed", timeout).await;
        let error = &failed["error"];
        assert_eq!(error["phase"], phase, "error: {error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "error: {error}"
        );
        failed
    }

    /// Polls the read model until `done` holds for the environment (panics after `timeout`).
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (code, body) = self.get(id).await;
            if code == StatusCode::OK && done(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "environment {id} did not reach the expected state within {timeout:?}; last: {last}"
        );
    }

    /// The body of `GET path` as text (for searching it), asserting 200.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.expect("a text body")
    }

    pub async fn history(&self, id: &str) -> Vec<Value> {
        let response = self
            .request(Method::GET, &format!("/v1/environments/{id}/history"))
            .send()
            .await
            .expect("GET history");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("history json")
    }

    /// The event types of an environment's history, in order.
    pub async fn history_types(&self, id: &str) -> Vec<String> {
        self.history(id)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}
