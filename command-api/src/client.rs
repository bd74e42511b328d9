//! A small typed client of the REST API, used by the `provisioner` binary's verbs and demo and
//! by the system tests (`system_tests::dev`). It lives here, beside the API it speaks, because
//! both users already depend on this crate: no new crate, and no cycle (a module of the binary
//! could not be imported by `system-tests`).

use domain::aggregate::{Environment, Status};
use domain::wire::{EventEnvelope, LogLine};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::{Method, RequestBuilder};

/// The HTTP status of an API error ([`ClientError::Api`]).
pub use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the provisioner at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {body}")]
    Api { status: StatusCode, body: String },
    #[error("unexpected response")]
    Decode(#[source] reqwest::Error),
    #[error("the event stream broke: {0}")]
    Stream(String),
}

/// The token is kept as a secret (it cannot be printed) and only exposed into the
/// `Authorization` header of each request.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: impl Into<String>, token: SecretString) -> Self {
        crate::install_tls_provider();
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Connect {
                url: self.base.clone(),
                source,
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(ClientError::Api { status, body })
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, ClientError> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(ClientError::Decode)
    }

    /// Submits a MetaConfig document (YAML or JSON, by `content_type`).
    pub async fn create(
        &self,
        document: String,
        content_type: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .request(Method::POST, "/v1/environments")
            .header("content-type", content_type)
            .body(document);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.json(request).await
    }

    /// Previews a MetaConfig document (YAML or JSON, by `content_type`): resources by type, the
    /// infrastructure model and a monthly cost estimate. Creates nothing.
    pub async fn plan(&self, document: String, content_type: &str) -> Result<Value, ClientError> {
        let request = self
            .request(Method::POST, "/v1/plans")
            .header("content-type", content_type)
            .body(document);
        self.json(request).await
    }

    /// An environment's non-sensitive outputs: `{id, name, status, outputs}`.
    pub async fn outputs(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/environments/{id}/outputs")))
            .await
    }

    pub async fn list(
        &self,
        status: Option<&str>,
        name: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut query = Vec::new();
        if let Some(status) = status {
            query.push(("status", status));
        }
        if let Some(name) = name {
            query.push(("name", name));
        }
        self.json(self.request(Method::GET, "/v1/environments").query(&query))
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/environments/{id}")))
            .await
    }

    pub async fn delete(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/v1/environments/{id}")))
            .await
    }

    pub async fn retry(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/environments/{id}/retry")))
            .await
    }

    /// Admin: cancels the operation in flight (the environment ends `failed`).
    pub async fn cancel(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/environments/{id}/cancel")))
            .await
    }

    /// Admin: authorises the next run of a step to force open the state lock `lock_id` (on a
    /// failed environment it also queues the retry).
    pub async fn force_unlock(
        &self,
        id: &str,
        lock_id: &str,
        reason: Option<&str>,
    ) -> Result<Value, ClientError> {
        let body = serde_json::json!({"lock_id": lock_id, "reason": reason});
        let path = format!("/v1/environments/{id}/force-unlock");
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Admin: declares the environment's resources removed by hand (destroyed, name freed).
    pub async fn mark_destroyed(&self, id: &str, reason: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/environments/{id}/mark-destroyed");
        let body = serde_json::json!({ "reason": reason });
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Admin: declares the in-flight or stuck environment failed.
    pub async fn mark_failed(&self, id: &str, reason: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/environments/{id}/mark-failed");
        let body = serde_json::json!({ "reason": reason });
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Admin: starts missed pending steps and times out overdue operations:
    /// `{"started": [ids], "timed_out": [ids]}`.
    pub async fn requeue_stuck(&self) -> Result<Value, ClientError> {
        self.json(self.request(Method::POST, "/v1/requeue-stuck"))
            .await
    }

    /// Admin: issues a token of `tenant` with `role`; the answer holds the token, once.
    pub async fn create_token(
        &self,
        name: &str,
        tenant: &str,
        role: &str,
        expires_in_days: Option<u64>,
    ) -> Result<Value, ClientError> {
        let body = serde_json::json!({
            "name": name,
            "tenant": tenant,
            "role": role,
            "expires_in_days": expires_in_days,
        });
        self.json(self.request(Method::POST, "/v1/tokens").json(&body))
            .await
    }

    /// Admin: the tokens (of `tenant`), never the tokens themselves: `{"items": [...]}`.
    pub async fn list_tokens(&self, tenant: Option<&str>) -> Result<Value, ClientError> {
        let query: Vec<(&str, &str)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
        self.json(self.request(Method::GET, "/v1/tokens").query(&query))
            .await
    }

    /// Admin: revokes a token.
    pub async fn revoke_token(&self, id: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/v1/tokens/{id}")))
            .await
    }

    pub async fn history(&self, id: &str) -> Result<Vec<EventEnvelope>, ClientError> {
        let items = self
            .json(self.request(Method::GET, &format!("/v1/environments/{id}/history")))
            .await?;
        let items: Vec<Value> = serde_json::from_value(items).unwrap_or_default();
        Ok(items
            .into_iter()
            .filter_map(|mut item| {
                item["environment_id"] = Value::String(id.to_owned());
                serde_json::from_value(item).ok()
            })
            .collect())
    }

    fn logs_request(&self, id: &str, operation: Option<&str>) -> RequestBuilder {
        let request = self.request(Method::GET, &format!("/v1/environments/{id}/logs"));
        match operation {
            Some(operation) => request.query(&[("operation", operation)]),
            None => request,
        }
    }

    /// Executor output so far (all operations, or one).
    pub async fn logs(
        &self,
        id: &str,
        operation: Option<&str>,
    ) -> Result<Vec<LogLine>, ClientError> {
        let body = self.json(self.logs_request(id, operation)).await?;
        Ok(serde_json::from_value(body["lines"].clone()).unwrap_or_default())
    }

    /// Follows executor output live, calling `on_line` for each line, until the stream ends.
    pub async fn follow_logs(
        &self,
        id: &str,
        operation: Option<&str>,
        mut on_line: impl FnMut(&LogLine),
    ) -> Result<(), ClientError> {
        let request = self
            .logs_request(id, operation)
            .query(&[("follow", "true")]);
        let mut events = self.send(request).await?.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| ClientError::Stream(e.to_string()))?;
            if let Ok(line) = serde_json::from_str::<LogLine>(&event.data) {
                on_line(&line);
            }
        }
        Ok(())
    }

    /// An environment's events after sequence `after` (0: from the first), live: the SSE stream
    /// of `GET …/events`, resumed with `Last-Event-ID`. The stream ends when the server ends it
    /// (after `InfraDestroyed`) or the connection drops; resume it from the last sequence seen.
    pub async fn event_stream(
        &self,
        id: &str,
        after: u64,
    ) -> Result<BoxStream<'static, Result<EventEnvelope, ClientError>>, ClientError> {
        let request = self
            .request(Method::GET, &format!("/v1/environments/{id}/events"))
            .header("last-event-id", after.to_string());
        let events = self.send(request).await?.bytes_stream().eventsource();
        Ok(events
            .filter_map(|event| async move {
                match event {
                    Err(e) => Some(Err(ClientError::Stream(e.to_string()))),
                    Ok(event) => serde_json::from_str::<EventEnvelope>(&event.data)
                        .ok()
                        .map(Ok),
                }
            })
            .boxed())
    }

    /// Executor output live (all operations), each line with its position in the logs stream:
    /// the SSE stream of `GET …/logs?follow=true`, resumed after `after` when given.
    pub async fn log_stream(
        &self,
        id: &str,
        after: Option<u64>,
    ) -> Result<BoxStream<'static, Result<(Option<u64>, LogLine), ClientError>>, ClientError> {
        let mut request = self.logs_request(id, None).query(&[("follow", "true")]);
        if let Some(after) = after {
            request = request.query(&[("after", after)]);
        }
        let events = self.send(request).await?.bytes_stream().eventsource();
        Ok(events
            .filter_map(|event| async move {
                match event {
                    Err(e) => Some(Err(ClientError::Stream(e.to_string()))),
                    Ok(event) => serde_json::from_str::<LogLine>(&event.data)
                        .ok()
                        .map(|line| Ok((event.id.parse().ok(), line))),
                }
            })
            .boxed())
    }

    /// Follows an environment's events, calling `on_event` for each one after sequence
    /// `shown` (0: all of them), until its status settles (ready, failed, destroyed) or the
    /// stream ends. Returns the status.
    pub async fn watch(
        &self,
        id: &str,
        shown: u64,
        mut on_event: impl FnMut(&EventEnvelope, Status),
    ) -> Result<Status, ClientError> {
        let history = self.history(id).await?;
        let mut state = Environment::default();
        for envelope in &history {
            if let Ok(event) = envelope.event() {
                state.apply(&event);
            }
            if envelope.sequence > shown {
                on_event(envelope, state.status);
            }
        }
        if state.status.is_settled() && state.in_flight.is_none() && state.pending.is_none() {
            return Ok(state.status);
        }
        let after = history.last().map(|e| e.sequence).unwrap_or(0);
        let response = self
            .send(
                self.request(Method::GET, &format!("/v1/environments/{id}/events"))
                    .query(&[("after", after)]),
            )
            .await?;
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| ClientError::Stream(e.to_string()))?;
            let Ok(envelope) = serde_json::from_str::<EventEnvelope>(&event.data) else {
                continue;
            };
            if let Ok(domain_event) = envelope.event() {
                state.apply(&domain_event);
            }
            on_event(&envelope, state.status);
            if state.status.is_settled() && state.in_flight.is_none() && state.pending.is_none() {
                return Ok(state.status);
            }
        }
        Ok(state.status)
    }
}
