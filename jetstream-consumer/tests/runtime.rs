//! The consumer runtime against a real nats-server (`system_tests::services::nats`): poison
//! messages end terminated, transient failures are retried, redelivery is bounded, heartbeats
//! keep a long handler's message, batches run one after the other, and shutdown is prompt.

use async_nats::jetstream::{self, consumer::pull, stream};
use jetstream_consumer::{Backoff, Consumer, Delivery, Disposition};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const FAST_RETRY: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));

async fn jetstream_with_stream(url: &str, name: &str) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    js
}

fn config(name: &str, ack_wait: Duration, max_deliver: i64) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        ack_wait,
        max_deliver,
        ..Default::default()
    }
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &str) {
    js.publish(subject.to_owned(), payload.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("stream ack");
}

/// Deliveries per payload.
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<BTreeMap<String, u64>>>);

impl Deliveries {
    fn record(&self, message: &jetstream::Message) -> u64 {
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        let mut seen = self.0.lock().unwrap();
        let count = seen.entry(payload).or_default();
        *count += 1;
        *count
    }

    fn of(&self, payload: &str) -> u64 {
        self.0.lock().unwrap().get(payload).copied().unwrap_or(0)
    }
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn settled(js: &jetstream::Context, stream: &str, consumer: &str) {
    let stream = js.get_stream(stream).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = stream.consumer_info(consumer).await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "messages left pending: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cancels a running consumer and fails the test unless it ends within 5 s.
async fn stop<T: std::fmt::Debug>(
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<T>,
) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops promptly")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_is_terminated_never_redelivered_and_a_transient_failure_is_retried() {
    let nats = system_tests::services::nats().await;
    let js = jetstream_with_stream(&nats.url(), "POISON").await;
    let deliveries = Deliveries::default();
    let shutdown = CancellationToken::new();
    let consumer = Consumer::new(
        js.clone(),
        "POISON",
        config("poison", Duration::from_millis(500), -1),
    )
    .retry_backoff(FAST_RETRY);
    let running = {
        let deliveries = deliveries.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            consumer
                .run_each(4, &shutdown, move |message| {
                    let deliveries = deliveries.clone();
                    async move {
                        let count = deliveries.record(&message);
                        assert_eq!(Delivery::of(&message).unwrap().delivered, count);
                        match &*message.payload {
                            b"poison" => Disposition::term("not a message this consumer knows"),
                            // Fails twice (the database is away), then succeeds.
                            b"flaky" if count < 3 => Disposition::retry(),
                            _ => Disposition::Ack,
                        }
                    }
                })
                .await
                .wait()
                .await;
        })
    };

    publish(&js, "poison.a", "poison").await;
    publish(&js, "poison.b", "flaky").await;
    publish(&js, "poison.c", "fine").await;

    eventually(
        "the transient failure is retried until it succeeds",
        Duration::from_secs(10),
        || deliveries.of("flaky") == 3,
    )
    .await;
    settled(&js, "POISON", "poison").await;
    // Several ack_waits later: nothing came back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        deliveries.of("poison"),
        1,
        "a terminated message is never redelivered"
    );
    assert_eq!(deliveries.of("flaky"), 3);
    assert_eq!(deliveries.of("fine"), 1);
    settled(&js, "POISON", "poison").await;

    stop(shutdown, running).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivery_stops_at_max_deliver_with_the_max_deliveries_advisory() {
    let nats = system_tests::services::nats().await;
    let js = jetstream_with_stream(&nats.url(), "BOUNDED").await;
    let mut advisories = js
        .client()
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BOUNDED.bounded")
        .await
        .unwrap();
    let deliveries = Deliveries::default();
    let shutdown = CancellationToken::new();
    let consumer = Consumer::new(
        js.clone(),
        "BOUNDED",
        config("bounded", Duration::from_secs(5), 3),
    )
    .retry_backoff(FAST_RETRY);
    let running = {
        let deliveries = deliveries.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            consumer
                .run_each(1, &shutdown, move |message| {
                    let deliveries = deliveries.clone();
                    async move {
                        deliveries.record(&message);
                        Disposition::retry()
                    }
                })
                .await
                .wait()
                .await;
        })
    };
    publish(&js, "bounded.a", "always failing").await;

    use futures::StreamExt;
    let advisory = tokio::time::timeout(Duration::from_secs(10), advisories.next())
        .await
        .expect("a MAX_DELIVERIES advisory")
        .unwrap();
    let advisory: serde_json::Value = serde_json::from_slice(&advisory.payload).unwrap();
    assert_eq!(advisory["deliveries"], 3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        deliveries.of("always failing"),
        3,
        "delivered max_deliver times"
    );

    stop(shutdown, running).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_a_long_handlers_message_and_concurrency_is_bounded() {
    let nats = system_tests::services::nats().await;
    let js = jetstream_with_stream(&nats.url(), "LONG").await;
    let deliveries = Deliveries::default();
    let running_now = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    // Each handler outlasts the ack_wait three times over.
    let consumer = Consumer::new(
        js.clone(),
        "LONG",
        config("long", Duration::from_secs(1), -1),
    )
    .heartbeat(Duration::from_millis(250));
    let running = {
        let deliveries = deliveries.clone();
        let running_now = Arc::clone(&running_now);
        let most_at_once = Arc::clone(&most_at_once);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            consumer
                .run_each(2, &shutdown, move |message| {
                    let deliveries = deliveries.clone();
                    let running_now = Arc::clone(&running_now);
                    let most_at_once = Arc::clone(&most_at_once);
                    async move {
                        deliveries.record(&message);
                        let now = running_now.fetch_add(1, Ordering::SeqCst) + 1;
                        most_at_once.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        running_now.fetch_sub(1, Ordering::SeqCst);
                        Disposition::Ack
                    }
                })
                .await
                .wait()
                .await;
        })
    };
    for n in 0..3 {
        publish(&js, &format!("long.{n}"), &format!("job {n}")).await;
    }
    eventually("every job ran", Duration::from_secs(20), || {
        (0..3).all(|n| deliveries.of(&format!("job {n}")) > 0)
    })
    .await;
    settled(&js, "LONG", "long").await;
    for n in 0..3 {
        assert_eq!(
            deliveries.of(&format!("job {n}")),
            1,
            "job {n} was not redelivered"
        );
    }
    assert_eq!(most_at_once.load(Ordering::SeqCst), 2);

    stop(shutdown, running).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_run_one_after_the_other_and_a_failed_batch_is_retried() {
    let nats = system_tests::services::nats().await;
    let js = jetstream_with_stream(&nats.url(), "BATCHES").await;
    for n in 0..10 {
        publish(&js, "batches.x", &format!("{n}")).await;
    }
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let consumer = Consumer::new(
        js.clone(),
        "BATCHES",
        config("batches", Duration::from_secs(30), -1),
    )
    .batch(4)
    .retry_backoff(FAST_RETRY);
    let running = {
        let handled = Arc::clone(&handled);
        let failures = Arc::clone(&failures);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            consumer
                .run_batches(&shutdown, |messages| {
                    let handled = Arc::clone(&handled);
                    let failures = Arc::clone(&failures);
                    async move {
                        assert!(messages.len() <= 4, "bounded batches");
                        // The first batch fails as a whole (the database is away).
                        if failures.fetch_add(1, Ordering::SeqCst) == 0 {
                            return Err("database unavailable");
                        }
                        let mut handled = handled.lock().unwrap();
                        Ok(messages
                            .iter()
                            .map(|message| {
                                handled.push(String::from_utf8_lossy(&message.payload).into());
                                Disposition::Ack
                            })
                            .collect())
                    }
                })
                .await;
        })
    };
    eventually("every message handled", Duration::from_secs(10), || {
        handled.lock().unwrap().len() >= 10
    })
    .await;
    settled(&js, "BATCHES", "batches").await;
    let mut handled = handled.lock().unwrap().clone();
    handled.sort_by_key(|n| n.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..10).map(|n| n.to_string()).collect();
    assert_eq!(
        handled, expected,
        "each message handled once after the retry"
    );

    stop(shutdown, running).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_while_waiting_for_the_stream_is_prompt() {
    let nats = system_tests::services::nats().await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let shutdown = CancellationToken::new();
    let consumer = Consumer::new(js, "MISSING", config("missing", Duration::from_secs(5), -1));
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let in_flight = consumer
                .run_each(1, &shutdown, |_| async { Disposition::Ack })
                .await;
            assert!(in_flight.is_empty());
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), running)
        .await
        .expect("stops promptly")
        .unwrap();
}
