//! Tenants, tokens and their limits at the HTTP edge, against the API in this test's own
//! process (no executor: a created environment's infra step starts and stays in flight):
//! tokens shown once, stored as digests, revoked and expired; what each role may do; another
//! tenant's environments answer exactly as ids nobody has, everywhere; every event carries its
//! environment's tenant; the quota under concurrent creates; allowed regions; per-token rate
//! limits; failed authentications counted.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;
use system_tests::{ApiClient, App, sandbox_yaml};

const WAIT: Duration = Duration::from_secs(30);

async fn send(
    client: &ApiClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("a response");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// Reads an SSE response's `data:` lines for `window`, then gives up on it.
async fn sse_data(client: &ApiClient, path: &str, window: Duration) -> Vec<Value> {
    let mut response = client
        .request(Method::GET, path)
        .send()
        .await
        .expect("a stream");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let mut text = String::new();
    let _ = tokio::time::timeout(window, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

#[tokio::test]
async fn a_token_is_shown_once_kept_as_a_digest_listed_without_it_and_dies_when_revoked_or_expired()
{
    let app = App::spawn().await;
    let (status, created) = send(
        &app,
        Method::POST,
        "/v1/tokens",
        Some(json!({"name": "ci", "tenant": "acme", "role": "viewer", "expires_in_days": 7})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("bp9_") && token.len() > 40, "{token}");
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["role"], "viewer");

    // Only the digest is kept: no column of the row holds the token.
    let digest: Vec<u8> = Sha256::digest(token.as_bytes()).to_vec();
    let row: String =
        sqlx::query_scalar("SELECT row_to_json(t)::text FROM api_tokens t WHERE digest = $1")
            .bind(&digest)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!row.contains(&token), "{row}");

    let (status, listed) = send(&app, Method::GET, "/v1/tokens?tenant=acme", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed_text = listed.to_string();
    assert!(!listed_text.contains(&token), "{listed_text}");
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(listed["items"][0].get("token").is_none());
    assert_eq!(listed["items"][0]["id"], id.as_str());

    let viewer = app.issue_token("acme", "viewer").await;
    let (status, _) = send(&viewer, Method::GET, "/v1/environments", None).await;
    assert_eq!(status, StatusCode::OK);
    let viewer_id: String = sqlx::query_scalar("SELECT id FROM api_tokens WHERE digest = $1")
        .bind(Sha256::digest(viewer.token().as_bytes()).to_vec())
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // Revoked: refused from the next request on; revoking again keeps the first time.
    let (status, revoked) = send(
        &app,
        Method::DELETE,
        &format!("/v1/tokens/{viewer_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let (status, body) = send(&viewer, Method::GET, "/v1/environments", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (_, again) = send(
        &app,
        Method::DELETE,
        &format!("/v1/tokens/{viewer_id}"),
        None,
    )
    .await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    assert_eq!(revoked["revoked_by"], "token:admin");
    let (status, body) = send(&app, Method::DELETE, "/v1/tokens/tok_nothing", None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // Expired: refused.
    let expiring = app.issue_token("acme", "operator").await;
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE digest = $1")
        .bind(Sha256::digest(expiring.token().as_bytes()).to_vec())
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, _) = send(&expiring, Method::GET, "/v1/environments", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bad requests name the field and record nothing.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for (body, field) in [
        (
            json!({"name": "x", "tenant": "Acme", "role": "viewer"}),
            "tenant",
        ),
        (
            json!({"name": "x", "tenant": "acme", "role": "root"}),
            "role",
        ),
        (
            json!({"name": "", "tenant": "acme", "role": "viewer"}),
            "name",
        ),
        (
            json!({"name": "x", "tenant": "acme", "role": "viewer", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "x", "tenant": "acme", "role": "viewer", "expires_in_days": 366}),
            "expires_in_days",
        ),
    ] {
        let (status, answer) = send(&app, Method::POST, "/v1/tokens", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["details"][0]["path"], field, "{answer}");
    }
    let (status, _) = send(&app, Method::POST, "/v1/tokens", Some(json!({"name": "x"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn each_role_may_do_what_it_says_and_no_more() {
    let app = App::spawn().await;
    let viewer = app.issue_token("acme", "viewer").await;
    let operator = app.issue_token("acme", "operator").await;

    // The operator creates, retries and destroys its tenant's environments.
    let id = operator.create_ok(&sandbox_yaml("roles", "")).await;
    let envs = format!("/v1/environments/{id}");
    app.wait_for_status(&id, "provisioning", WAIT).await;

    // The viewer reads everything of its tenant…
    for path in [
        envs.clone(),
        format!("{envs}/outputs"),
        format!("{envs}/history"),
        format!("{envs}/logs"),
        "/v1/environments".to_owned(),
    ] {
        let (status, body) = send(&viewer, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let plan = viewer.plan(&sandbox_yaml("preview", "")).await;
    assert_eq!(plan.status(), StatusCode::OK);
    // …and changes nothing.
    let created = viewer.create(&sandbox_yaml("nope", "")).await;
    assert_eq!(created.status(), StatusCode::FORBIDDEN);
    for (method, path) in [
        (Method::DELETE, envs.clone()),
        (Method::POST, format!("{envs}/retry")),
        (Method::POST, format!("{envs}/cancel")),
        (Method::POST, "/v1/tokens".to_owned()),
        (Method::GET, "/v1/tokens".to_owned()),
    ] {
        let (status, body) = send(&viewer, method.clone(), &path, Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(code(&body), "forbidden");
    }
    // The operator may not run the runbook or manage tokens.
    for (method, path, body) in [
        (Method::POST, format!("{envs}/cancel"), None),
        (
            Method::POST,
            format!("{envs}/mark-failed"),
            Some(json!({"reason": "x"})),
        ),
        (Method::POST, "/v1/requeue-stuck".to_owned(), None),
        (Method::GET, "/v1/tokens".to_owned(), None),
    ] {
        let (status, answer) = send(&operator, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("admin role"),
            "{answer}"
        );
    }
    // Nothing a refused request asked for was recorded.
    let types = app.history_types(&id).await;
    assert_eq!(types, ["EnvironmentRequested", "InfraApplyStarted"]);
    let (status, body) = send(&operator, Method::DELETE, &envs, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn another_tenants_environments_answer_as_ids_nobody_has_and_every_event_says_whose_it_is() {
    let app = App::spawn().await;
    let acme = app.issue_token("acme", "operator").await;
    let globex = app.issue_token("globex", "operator").await;
    let globex_viewer = app.issue_token("globex", "viewer").await;

    let id = acme.create_ok(&sandbox_yaml("shared-name", "")).await;
    app.wait_for_status(&id, "provisioning", WAIT).await;
    // Names are per tenant: globex may use acme's, and learns nothing about it.
    let theirs = globex.create_ok(&sandbox_yaml("shared-name", "")).await;
    app.wait_for_status(&theirs, "provisioning", WAIT).await;

    let nobody = "env_01jd0000000000000000000000";
    for client in [&globex, &globex_viewer] {
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::GET, "/outputs"),
            (Method::GET, "/history"),
            (Method::GET, "/logs"),
            (Method::GET, "/events"),
            (Method::DELETE, ""),
            (Method::POST, "/retry"),
        ] {
            let (status, body) = send(
                client,
                method.clone(),
                &format!("/v1/environments/{id}{suffix}"),
                None,
            )
            .await;
            let (nobody_status, nobody_body) = send(
                client,
                method.clone(),
                &format!("/v1/environments/{nobody}{suffix}"),
                None,
            )
            .await;
            if status == StatusCode::FORBIDDEN {
                // A viewer's command is refused for its role before the id is looked at, the
                // same for both ids.
                assert_eq!(nobody_status, StatusCode::FORBIDDEN);
                continue;
            }
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {suffix}: {body}");
            assert_eq!(nobody_status, StatusCode::NOT_FOUND);
            assert_eq!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace(&id, "ID"),
                nobody_body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace(nobody, "ID"),
            );
        }
        let (_, listed) = send(client, Method::GET, "/v1/environments", None).await;
        let ids: Vec<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["id"].as_str())
            .collect();
        assert_eq!(ids, [theirs.as_str()], "{listed}");
    }
    // The all-environments stream: each tenant's own, an admin's all.
    let seen = |events: Vec<Value>| -> BTreeMap<String, usize> {
        let mut by_env = BTreeMap::new();
        for event in events {
            *by_env
                .entry(
                    event["environment_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
                .or_insert(0) += 1;
        }
        by_env
    };
    let globex_stream =
        seen(sse_data(&globex_viewer, "/v1/events?after=0", Duration::from_secs(2)).await);
    assert_eq!(
        globex_stream.keys().collect::<Vec<_>>(),
        [&theirs],
        "{globex_stream:?}"
    );
    let admin_stream = seen(sse_data(&app, "/v1/events?after=0", Duration::from_secs(2)).await);
    assert!(
        admin_stream.contains_key(&id) && admin_stream.contains_key(&theirs),
        "{admin_stream:?}"
    );

    // An admin acts on acme's environment; every event, the process manager's included, is
    // acme's, and says who acted.
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/v1/environments/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let history = app.history(&id).await;
    assert!(history.len() >= 3, "{history:?}");
    for event in &history {
        assert_eq!(event["metadata"]["tenant"], "acme", "{event}");
    }
    let cancelled = history
        .iter()
        .find(|e| e["type"] == "OperationCancelled")
        .unwrap();
    assert_eq!(cancelled["metadata"]["actor"], "token:admin");
    assert_eq!(history[0]["payload"]["tenant"], "acme");
    let (_, view) = app.get(&id).await;
    assert_eq!(view["tenant"], "acme");
}

#[tokio::test]
async fn the_quota_holds_under_concurrent_creates_and_frees_when_one_is_destroyed() {
    let app = App::spawn_with(|settings| {
        settings.tenant_policy.quotas = command_api::tenancy::parse_quotas("acme=3").unwrap();
    })
    .await;
    let acme = app.issue_token("acme", "operator").await;
    let creates = (0..12).map(|n| {
        let acme = acme.clone();
        async move { acme.create(&sandbox_yaml(&format!("quota-{n}"), "")).await }
    });
    let mut accepted = Vec::new();
    let mut refused = 0;
    for response in futures::future::join_all(creates).await {
        match response.status() {
            StatusCode::ACCEPTED => accepted.push(
                response.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().get("retry-after").is_none());
                let body: Value = response.json().await.unwrap();
                assert_eq!(code(&body), "quota_exceeded", "{body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("tenant acme already has 3 active environments"),
                    "{body}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted.len(), refused), (3, 9));
    let requested: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'EnvironmentRequested'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(requested, 3, "a refused create recorded nothing");
    // The default tenant's quota is its own.
    app.create_ok(&sandbox_yaml("other-tenant", "")).await;

    // Destroyed (here by hand) frees a place.
    let freed = &accepted[0];
    app.wait_for_status(freed, "provisioning", WAIT).await;
    for (verb, body) in [
        ("cancel", None),
        ("mark-destroyed", Some(json!({"reason": "quota test"}))),
    ] {
        let (status, answer) = send(
            &app,
            Method::POST,
            &format!("/v1/environments/{freed}/{verb}"),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{verb}: {answer}");
    }
    let again = acme.create(&sandbox_yaml("quota-again", "")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let full = acme.create(&sandbox_yaml("quota-full", "")).await;
    assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_region_outside_the_allowed_ones_is_refused_naming_them_and_recording_nothing() {
    let app = App::spawn_with(|settings| {
        settings.tenant_policy.allowed_regions = vec!["eu-west-1".into()];
    })
    .await;
    let yaml = "name: elsewhere\ncloud:\n  provider: sandbox\n  region: us-west-2\n";
    let response = app.create(yaml).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][0]["path"], "cloud.region",
        "{body}"
    );
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("allowed: eu-west-1"),
        "{body}"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
    let allowed = "name: here\ncloud:\n  provider: sandbox\n  region: eu-west-1\n";
    assert_eq!(app.create(allowed).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_tenants_own_providers_and_regions_hold_for_its_creates_and_previews() {
    let app = App::spawn_with(|settings| {
        let tenancy = &mut settings.tenant_policy;
        tenancy.tenant_providers = command_api::tenancy::parse_tenant_lists("acme=aws", |_| {
            Ok(domain::spec::Provider::Aws)
        })
        .unwrap();
        tenancy.tenant_regions =
            command_api::tenancy::parse_tenant_lists("globex=eu-west-1", |r| Ok(r.to_owned()))
                .unwrap();
    })
    .await;
    let acme = app.issue_token("acme", "operator").await;
    let globex = app.issue_token("globex", "operator").await;
    let refused = acme.create(&sandbox_yaml("acme-sandbox", "")).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][0]["path"], "cloud.provider",
        "{body}"
    );
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not allowed for tenant acme (allowed: aws"),
        "{body}"
    );
    // The preview says the same, creating nothing.
    let plan: Value = acme
        .plan(&sandbox_yaml("acme-sandbox", ""))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        plan.to_string().contains("not allowed for tenant acme"),
        "{plan}"
    );
    let far = "name: far\ncloud:\n  provider: sandbox\n  region: us-west-2\n";
    let refused = globex.create(far).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let near = "name: near\ncloud:\n  provider: sandbox\n  region: eu-west-1\n";
    assert_eq!(globex.create(near).await.status(), StatusCode::ACCEPTED);
    // A tenant named nowhere keeps the deployment's rules.
    assert_eq!(app.create(far).await.status(), StatusCode::ACCEPTED);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'EnvironmentRequested'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(events, 2);
}

#[tokio::test]
async fn a_token_past_its_rate_gets_429_with_retry_after_and_others_and_reads_go_on() {
    let app = App::spawn_with(|settings| {
        settings.rate_limit = command_api::http::rate_limit::RateLimit {
            per_minute: std::num::NonZeroU32::new(6).unwrap(),
            burst: std::num::NonZeroU32::new(3).unwrap(),
        };
    })
    .await;
    let acme = app.issue_token("acme", "operator").await;
    let globex = app.issue_token("globex", "operator").await;
    for n in 0..3 {
        let response = acme.create(&sandbox_yaml(&format!("rate-{n}"), "")).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let limited = acme.create(&sandbox_yaml("rate-3", "")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(code(&body), "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 6 per minute"),
        "{body}"
    );
    // Reads are not commands; another token has its own allowance.
    for _ in 0..10 {
        let (status, _) = send(&acme, Method::GET, "/v1/environments", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        globex
            .create(&sandbox_yaml("rate-other", ""))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        sample(&metrics, "api_rate_limited_total") >= 1.0,
        "{metrics}"
    );
}

/// The value of one sample of a Prometheus text exposition (0 when it is absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn failed_authentications_are_counted_by_reason() {
    let app = App::spawn().await;
    // The process's one recorder is shared by this file's tests, which run at once: deltas.
    let series = |reason: &str| format!("api_auth_failures_total{{reason=\"{reason}\"}}");
    let before = app.get_text("/metrics").await;
    let url = format!("{}/v1/environments", app.base_url);
    let http = reqwest::Client::new();
    let _ = http.get(&url).send().await.unwrap();
    let _ = http
        .get(&url)
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let response = http
            .get(&url)
            .bearer_auth("bp9_not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let after = app.get_text("/metrics").await;
    for (reason, at_least) in [("missing", 1.0), ("malformed", 1.0), ("rejected", 2.0)] {
        let counted = sample(&after, &series(reason)) - sample(&before, &series(reason));
        assert!(counted >= at_least, "{reason}: {counted} in:\n{after}");
    }
}

/// API replicas starting together each write the quotas: none fails (the second replica of a
/// two-replica stack used to stop at start with a duplicate key on `tenant_quotas`).
#[tokio::test]
async fn replicas_publishing_the_quotas_at_once_all_succeed() {
    let app = App::spawn().await;
    let policy = command_api::tenancy::TenantPolicy {
        quotas: command_api::tenancy::parse_quotas("acme=3,globex=4").unwrap(),
        ..Default::default()
    };
    for _ in 0..5 {
        let publishes = (0..8).map(|_| policy.publish(&app.pool));
        for result in futures::future::join_all(publishes).await {
            result.expect("publish the quotas");
        }
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_quotas")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);
}
