//! The streams' replica count (`PROVISIONER_STREAM_REPLICAS`) against a real JetStream cluster
//! of two servers: every stream gets the configured copies, and more copies than servers is a
//! clear error naming the setting, creating nothing.

use command_api::jetstream::{TopologyError, ensure_streams};
use domain::wire::Subjects;
use system_tests::services::NatsCluster;

async fn jetstream(cluster: &NatsCluster) -> async_nats::jetstream::Context {
    let client = async_nats::connect(cluster.url()).await.expect("connect");
    async_nats::jetstream::new(client)
}

fn streams(subjects: &Subjects) -> [String; 3] {
    [
        subjects.events_stream(),
        subjects.results_stream(),
        subjects.logs_stream(),
    ]
}

#[tokio::test]
async fn every_stream_gets_the_configured_replicas_and_a_changed_count_is_applied() {
    let cluster = NatsCluster::start(2).await;
    let js = jetstream(&cluster).await;
    let subjects = Subjects::new("replicas");

    ensure_streams(&js, &subjects, 1).await.expect("R1 streams");
    for name in streams(&subjects) {
        let info = js.get_stream(&name).await.expect(&name).get_info().await;
        assert_eq!(info.expect(&name).config.num_replicas, 1, "{name}");
    }

    // The deployment moves to 2 copies: the existing streams follow.
    ensure_streams(&js, &subjects, 2).await.expect("R2 streams");
    for name in streams(&subjects) {
        let info = js.get_stream(&name).await.expect(&name).get_info().await;
        assert_eq!(info.expect(&name).config.num_replicas, 2, "{name}");
    }
}

#[tokio::test]
async fn more_replicas_than_servers_is_an_error_naming_the_setting_and_creates_nothing() {
    let cluster = NatsCluster::start(2).await;
    let js = jetstream(&cluster).await;
    let subjects = Subjects::new("toomany");

    let error = ensure_streams(&js, &subjects, 3)
        .await
        .expect_err("3 copies on 2 servers");
    assert!(
        matches!(&error, TopologyError::Replicas { replicas: 3, stream, .. }
                 if *stream == subjects.events_stream()),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("PROVISIONER_STREAM_REPLICAS"), "{message}");
    for name in streams(&subjects) {
        assert!(js.get_stream(&name).await.is_err(), "{name} was created");
    }
}
