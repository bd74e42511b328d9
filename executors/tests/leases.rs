//! Step leases across executor processes, against a real JetStream key-value bucket: two
//! `Leases` with different identities play two executors.

use std::time::Duration;

use async_nats::jetstream;
use domain::OperationId;
use domain::wire::Subjects;
use executors::lease::{Acquired, HeldLease, LeaseError, Leases};

const TTL: Duration = Duration::from_millis(400);

async fn two_executors() -> (system_tests::services::LocalNats, Leases, Leases) {
    let nats = system_tests::services::nats().await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let subjects = Subjects::new("leasetest");
    let a = Leases::open(&js, &subjects, "executor-a".into(), TTL, 1)
        .await
        .unwrap();
    let b = Leases::open(&js, &subjects, "executor-b".into(), TTL, 1)
        .await
        .unwrap();
    (nats, a, b)
}

fn held(acquired: Acquired) -> HeldLease {
    match acquired {
        Acquired::Held(held) => held,
        other => panic!("expected the lease, got {other:?}"),
    }
}

#[tokio::test]
async fn a_fresh_lease_keeps_others_out_and_a_lapsed_one_is_taken_over() {
    let (_nats, a, b) = two_executors().await;
    let op = OperationId::generate();
    let mut first = held(a.acquire("env_1", &op, 1).await.unwrap());
    assert!(first.takeover.is_none());

    // Attempt 2 arrives while attempt 1 renews: it may be running, so it is kept out.
    a.renew(&mut first).await.unwrap();
    match b.acquire("env_1", &op, 2).await.unwrap() {
        Acquired::Busy { holder } => assert_eq!(holder.executor, "executor-a"),
        other => panic!("expected Busy, got {other:?}"),
    }

    // Attempt 1 stops renewing (paused); once its lease lapsed, attempt 2 takes over and knows
    // whom it replaced.
    tokio::time::sleep(TTL * 2).await;
    let second = held(b.acquire("env_1", &op, 2).await.unwrap());
    let takeover = second.takeover.clone().expect("a takeover");
    assert_eq!(takeover.previous.executor, "executor-a");
    assert_eq!(takeover.previous.attempt, 1);

    // Attempt 1 resumes: its renewal finds the lease taken, and it learns by whom.
    match a.renew(&mut first).await {
        Err(LeaseError::Lost { holder }) => {
            assert_eq!(holder.executor, "executor-b");
            assert_eq!(holder.attempt, 2);
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    // A late delivery of attempt 1 is superseded, not let in.
    assert!(matches!(
        a.acquire("env_1", &op, 1).await.unwrap(),
        Acquired::Superseded { .. }
    ));
    // The lease says who fences results out.
    let current = a.current("env_1").await.unwrap().unwrap();
    assert!(current.fences_out(&op, 1));
    assert!(!current.fences_out(&op, 2));
    b.release(second).await;
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_without_a_takeover() {
    let (_nats, a, b) = two_executors().await;
    let first = held(
        a.acquire("env_2", &OperationId::generate(), 1)
            .await
            .unwrap(),
    );
    a.release(first).await;
    let next = held(
        b.acquire("env_2", &OperationId::generate(), 1)
            .await
            .unwrap(),
    );
    assert!(
        next.takeover.is_none(),
        "a holder that let go is not presumed dead"
    );
    // Leases of other environments are independent.
    held(
        a.acquire("env_3", &OperationId::generate(), 1)
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn the_lease_bucket_has_the_streams_replica_count() {
    let cluster = system_tests::services::NatsCluster::start(2).await;
    let js = jetstream::new(async_nats::connect(cluster.url()).await.unwrap());
    let subjects = Subjects::new("leasereplicas");
    // A bucket is the stream KV_<bucket>.
    let copies = || async {
        let stream = js
            .get_stream(format!("KV_{}", subjects.leases_bucket()))
            .await
            .expect("the bucket's stream");
        stream
            .get_info()
            .await
            .expect("its info")
            .config
            .num_replicas
    };
    Leases::open(&js, &subjects, "executor-a".into(), TTL, 1)
        .await
        .expect("the bucket with 1 copy");
    assert_eq!(copies().await, 1);
    // The deployment moves to 2 copies: the existing bucket follows.
    Leases::open(&js, &subjects, "executor-a".into(), TTL, 2)
        .await
        .expect("the bucket with 2 copies");
    assert_eq!(copies().await, 2);
}
