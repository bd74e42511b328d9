//! The JetStream consumer against a real nats-server and Postgres.

mod support;

use async_nats::jetstream::{self, stream};
use domain::wire::{EventEnvelope, Subjects};
use projections::environment_view::{self, EnvironmentView};
use projections::{CONSUMER_NAME, consumer, queries};
use std::time::Duration;
use support::{History, NatsServer, TestDb, eventually};
use tokio_util::sync::CancellationToken;

fn fold(history: &History) -> EnvironmentView {
    environment_view::fold(&history.envelopes())
        .unwrap()
        .unwrap()
        .into_view()
}

async fn publish(js: &jetstream::Context, subjects: &Subjects, envelope: &EventEnvelope) {
    let subject = subjects.event(envelope.environment_id.as_str(), &envelope.event_type);
    js.publish(subject, serde_json::to_vec(envelope).unwrap().into())
        .await
        .expect("publish")
        .await
        .expect("stream ack");
}

async fn wait_for_version(db: &TestDb, history: &History) -> EnvironmentView {
    let last = history.last_sequence() as i64;
    eventually(
        &format!("{} to reach version {last}", history.env_id),
        Duration::from_secs(20),
        || async {
            queries::get(&db.pool, history.env_id.as_str())
                .await
                .unwrap()
                .filter(|view| view.version == last)
        },
    )
    .await
}

#[tokio::test]
async fn the_consumer_projects_published_events_in_order_despite_gaps_and_garbage() {
    let nats = NatsServer::start().await;
    let db = TestDb::new().await;
    let subjects = Subjects::new("projtest");
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    // Started before the stream exists, as when the projection comes up before command-api.
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer::run(
        js.clone(),
        subjects.clone(),
        db.pool.clone(),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    js.create_stream(stream::Config {
        name: subjects.events_stream(),
        subjects: vec![subjects.all_events()],
        ..Default::default()
    })
    .await
    .unwrap();

    let in_order = History::ready("alpha").destroy_requested();
    let out_of_order = History::requested("beta")
        .infra_started(1)
        .infra_failed(1, "boom");

    // Something on the stream that is not an envelope must not block anything.
    js.publish(
        subjects.event(out_of_order.env_id.as_str(), "Garbage"),
        "not json".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // beta's events arrive 3, 1, 2: 3 is a gap until 1 and 2 are in.
    for sequence in [3, 1] {
        publish(&js, &subjects, &out_of_order.envelope(sequence)).await;
    }
    for envelope in in_order.envelopes() {
        publish(&js, &subjects, &envelope).await;
    }
    publish(&js, &subjects, &out_of_order.envelope(2)).await;
    // A redelivered duplicate changes nothing.
    publish(&js, &subjects, &in_order.envelope(2)).await;

    assert_eq!(wait_for_version(&db, &in_order).await, fold(&in_order));
    assert_eq!(
        wait_for_version(&db, &out_of_order).await,
        fold(&out_of_order)
    );

    // Every message ends acknowledged (or terminated): nothing left pending.
    let stream = js.get_stream(subjects.events_stream()).await.unwrap();
    eventually("no pending messages", Duration::from_secs(10), || async {
        let info = stream.consumer_info(CONSUMER_NAME).await.ok()?;
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
    })
    .await;

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("run returns promptly on shutdown")
        .unwrap();
    assert!(stopped.is_ok());
}

#[tokio::test]
async fn the_consumer_stops_while_still_waiting_for_the_stream() {
    let nats = NatsServer::start().await;
    let db = TestDb::new().await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer::run(
        js,
        Subjects::new("nostream"),
        db.pool.clone(),
        shutdown.clone(),
    ));

    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();

    let stopped = tokio::time::timeout(Duration::from_secs(2), running)
        .await
        .expect("run returns promptly on shutdown")
        .unwrap();
    assert!(stopped.is_ok());
}
