#![allow(clippy::print_stdout)] // a benchmark reports on stdout

//! The command path against the machine's raw limit, at 64 concurrent clients.
//!
//! 1. raw: plain durable INSERTs of an event-sized row (one transaction each, synchronous
//!    commit) — the most a Postgres-backed command path could do here;
//! 2. store: `EventStore::request` — decide, insert the event and (by trigger) its outbox row
//!    and name, in one statement;
//! 3. http: `POST /v1/environments` through the whole API process (validation, idempotency-free
//!    create, store) while the relay, process manager and projection run beside it.
//!
//! Run: `cargo bench -p system-tests --bench command_path` (needs Postgres and nats-server >=
//! 2.10 like the tests). `BENCH_SECONDS` sets each phase's length (default 10).

use command_api::app::Application;
use command_api::settings::Settings;
use domain::config::{Format, parse};
use domain::ids::EnvironmentId;
use domain::wire::{Actor, EventMetadata, RequestId};
use event_store::{self as store, EventStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 64;

fn yaml(n: u64) -> String {
    format!("name: bench-{n}\ncloud:\n  provider: sandbox\n")
}

/// A new database on the test PostgreSQL; returns its URL.
async fn fresh_database(prefix: &str) -> String {
    let postgres = system_tests::services::postgres().await;
    postgres.url(&postgres.create_database(prefix).await)
}

/// Runs `op` from `CLIENTS` tasks for `seconds`; returns operations per second.
async fn measure<F, Fut>(seconds: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let counter = counter.clone();
            let op = op.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    op(n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    counter.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let url = fresh_database("provisioner_bench").await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(&url)
        .await
        .expect("pool");
    store::migrate(&pool).await.expect("migrate");

    // 1. raw durable inserts of the same shape and size as an EnvironmentRequested event.
    sqlx::query(
        "CREATE TABLE raw_events (aggregate_id text, sequence bigint, event_type text,
           payload json, metadata json, PRIMARY KEY (aggregate_id, sequence))",
    )
    .execute(&pool)
    .await
    .expect("raw table");
    let spec = parse(&yaml(0), Format::Yaml).expect("spec");
    let sample = serde_json::to_value(domain::Event::EnvironmentRequested {
        id: EnvironmentId::generate(),
        infra_model: domain::infra_model::InfraModel::for_spec(&spec),
        spec: spec.clone(),
        tenant: domain::tenant::TenantId::default(),
    })
    .expect("json");
    let raw = {
        let pool = pool.clone();
        let sample = sample.clone();
        measure(seconds, move |_| {
            let pool = pool.clone();
            let sample = sample.clone();
            async move {
                sqlx::query(
                    "INSERT INTO raw_events VALUES ($1, 1, 'EnvironmentRequested', $2, '{}')",
                )
                .bind(EnvironmentId::generate().as_str())
                .bind(&sample)
                .execute(&pool)
                .await
                .expect("insert");
            }
        })
        .await
    };

    // 2. the command path at the store (specs parsed beforehand: this phase measures the store).
    let specs: Arc<Vec<_>> = Arc::new(
        (0..(20_000 * seconds))
            .map(|n| parse(&yaml(1_000_000 + n), Format::Yaml).expect("spec"))
            .collect(),
    );
    let event_store = EventStore::new(pool.clone());
    let store_rate = {
        let event_store = event_store.clone();
        measure(seconds, move |n| {
            let event_store = event_store.clone();
            let specs = specs.clone();
            async move {
                let spec = specs[n as usize].clone();
                let id = EnvironmentId::generate();
                let metadata = EventMetadata::request(
                    Actor::caller("bench"),
                    None,
                    RequestId::new(format!("req_{n}")),
                );
                event_store
                    .request(&id, spec, domain::tenant::TenantId::default(), &metadata)
                    .await
                    .expect("request");
            }
        })
        .await
    };

    // 3. the whole API over HTTP, with the relay, process manager and projection running.
    let nats = system_tests::services::nats().await;
    let settings = Settings {
        database_url: url.clone().into(),
        nats_url: nats.url(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        subject_prefix: "bench".into(),
        // Measured: the command path, not the limits meant for one token's traffic.
        rate_limit: system_tests::unlimited(),
        tenant_policy: command_api::tenancy::TenantPolicy {
            max_environments: u32::MAX,
            ..Default::default()
        },
        ..Settings::default()
    };
    let app = Application::build(&settings, "bench-token", system_tests::metrics_handle())
        .await
        .expect("app");
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    command_api::install_tls_provider();
    let client = reqwest::Client::new();
    let http_rate = measure(seconds, move |n| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let response = client
                .post(format!("{base}/v1/environments"))
                .bearer_auth("bench-token")
                .header("content-type", "application/yaml")
                .body(yaml(2_000_000 + n))
                .send()
                .await
                .expect("post");
            assert_eq!(response.status(), 202);
        }
    })
    .await;
    shutdown.cancel();
    let _ = server.await;

    // 4. the relay alone draining the backlog the phases above left (nothing else running),
    //    against plain JetStream publishes (64 publishers, each awaiting its ack).
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
        .fetch_one(&pool)
        .await
        .expect("outbox count");
    let js_client = async_nats::connect(nats.url()).await.expect("nats");
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(
        command_api::relay::Relay::new(
            pool.clone(),
            async_nats::jetstream::new(js_client),
            domain::wire::Subjects::new("bench"),
            Arc::new(tokio::sync::Notify::new()),
        )
        .run(relay_stop.clone()),
    );
    let drain_started = Instant::now();
    let mut left = backlog;
    while left > 0 && drain_started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
            .fetch_one(&pool)
            .await
            .expect("outbox count");
    }
    let relay_rate = (backlog - left) as f64 / drain_started.elapsed().as_secs_f64();
    relay_stop.cancel();
    let _ = relay.await;

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await
    .expect("raw stream");
    let payload = bytes::Bytes::from(serde_json::to_vec(&sample).expect("json"));
    let publish_rate = measure(seconds, move |n| {
        let js = js.clone();
        let payload = payload.clone();
        async move {
            js.publish(format!("raw.{}", n % 1000), payload)
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    })
    .await;

    println!("clients: {CLIENTS}, {seconds}s per phase");
    println!("raw durable inserts      {raw:>9.0} /s");
    println!(
        "store command (Request)  {store_rate:>9.0} /s  ({:.2} of raw)",
        store_rate / raw
    );
    println!(
        "POST /v1/environments    {http_rate:>9.0} /s  ({:.2} of raw)",
        http_rate / raw
    );
    println!("plain JetStream publishes {publish_rate:>9.0} /s");
    println!(
        "relay drain ({backlog} events) {relay_rate:>9.0} /s  ({:.2} of plain publishes){}",
        relay_rate / publish_rate,
        if left > 0 {
            format!(", {left} left after 120s")
        } else {
            String::new()
        }
    );
    pool.close().await;
}
