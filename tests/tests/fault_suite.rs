//! The random kill -9 fault suite. Two API replicas and two executors throughout; several
//! environments go through random lifecycles at once (create → ready → destroy; some with a
//! simulated step failure and a retry, some deleted mid-step) while a random member — an API
//! replica, the relay's leader, an executor — is killed with SIGKILL at a random moment and
//! started again. Every batch of kills ends with every lifecycle converged (ready, then
//! destroyed) and the one invariant check (`Stack::assert_invariants`).
//!
//! `PROVISIONER_TEST_FAULT_TRIALS` sets the number of kills (50 by default); the seed is printed
//! at the start and `PROVISIONER_TEST_FAULT_SEED` sets it: the same seed plans the same
//! lifecycles, targets and pauses (the interleaving with the processes stays the machine's).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use system_tests::{ApiClient, Stack, StackOptions, sandbox_yaml};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Kills per batch; every batch ends with the invariant check.
const KILLS_PER_BATCH: usize = 10;
/// Lifecycles running at once.
const SLOTS: usize = 4;
/// How long one lifecycle may take, kills and retries included.
const LIFECYCLE_WITHIN: Duration = Duration::from_secs(150);
/// How long one request may take before it is sent to another replica.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills in all: 50, or `PROVISIONER_TEST_FAULT_TRIALS`.
fn trials() -> usize {
    std::env::var("PROVISIONER_TEST_FAULT_TRIALS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(50)
        .clamp(1, 10_000)
}

/// `PROVISIONER_TEST_FAULT_SEED`, or a fresh one.
fn seed() -> u64 {
    std::env::var("PROVISIONER_TEST_FAULT_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(rand::random)
}

/// What a lifecycle does besides create → ready → destroy.
#[derive(Clone, Copy, Debug)]
enum Twist {
    None,
    /// A step fails once (simulated); the lifecycle retries it.
    FailsOnce(&'static str),
    /// Deleted while its first step runs (the step is cancelled).
    DeletedMidStep,
}

impl Twist {
    fn random(rng: &mut SmallRng) -> Self {
        match rng.random_range(0..8) {
            0 => Twist::FailsOnce("infra"),
            1 => Twist::FailsOnce("bootstrap"),
            2 => Twist::FailsOnce("destroy"),
            3 => Twist::DeletedMidStep,
            _ => Twist::None,
        }
    }
}

/// The lifecycles' client: every request goes to a random API replica and, when that one
/// does not answer (it may be dead), to the other, until `LIFECYCLE_WITHIN` runs out.
struct Driver {
    replicas: Vec<ApiClient>,
    http: reqwest::Client,
    rng: SmallRng,
    deadline: Instant,
    label: String,
}

impl Driver {
    async fn send(&mut self, method: Method, path: &str, body: Option<(&str, &str)>) -> Response {
        loop {
            let replica = &self.replicas[self.rng.random_range(0..self.replicas.len())];
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", replica.base_url))
                .bearer_auth(replica.token());
            if let Some((key, yaml)) = body {
                request = request
                    .header("content-type", "application/yaml")
                    .header("idempotency-key", key)
                    .body(yaml.to_owned());
            }
            if let Ok(response) = request.send().await {
                let status = response.status();
                // A replica starting or stopping may answer 503; try again.
                if status != StatusCode::SERVICE_UNAVAILABLE {
                    let body = response.json().await.unwrap_or(Value::Null);
                    return Response { status, body };
                }
            }
            assert!(
                Instant::now() < self.deadline,
                "{}: no API replica answered {method} {path}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Response {
    status: StatusCode,
    body: Value,
}

/// How one lifecycle went.
#[derive(Default)]
struct Outcome {
    failures_seen: Vec<String>,
    retries: usize,
}

/// create → ready → destroy, whatever is killed meanwhile: a failed step is retried, an
/// environment that is ready is deleted, and it ends destroyed.
async fn lifecycle(mut driver: Driver, name: String, twist: Twist) -> Outcome {
    let apply = driver.rng.random_range(2..12) as f64 / 10.0;
    let simulate = match twist {
        Twist::FailsOnce(step) => {
            format!("    apply_seconds: {apply}\n    fail: {step}\n    fail_times: 1\n")
        }
        _ => format!("    apply_seconds: {apply}\n"),
    };
    let yaml = sandbox_yaml(&name, &simulate);
    let created = driver
        .send(Method::POST, "/v1/environments", Some((&name, &yaml)))
        .await;
    assert!(
        created.status.is_success(),
        "{name}: create answered {}: {}",
        created.status,
        created.body
    );
    let id = created.body["id"].as_str().expect("an id").to_owned();
    driver.label = format!("{name} ({id})");
    let path = format!("/v1/environments/{id}");
    let mut outcome = Outcome::default();
    let mut delete_accepted = false;
    if let Twist::DeletedMidStep = twist {
        // Once; if it is refused, the environment is deleted when it is ready.
        let pause = driver.rng.random_range(0..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let deleted = driver.send(Method::DELETE, &path, None).await;
        delete_accepted = deleted.status == StatusCode::ACCEPTED;
    }
    let mut retried_version = None;
    loop {
        assert!(
            Instant::now() < driver.deadline,
            "{}: did not end destroyed within {LIFECYCLE_WITHIN:?}",
            driver.label
        );
        let view = driver.send(Method::GET, &path, None).await;
        if view.status != StatusCode::OK {
            // Not yet in the read model.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let body = view.body;
        match body["status"].as_str().unwrap_or_default() {
            "destroyed" => return outcome,
            "ready" if !delete_accepted => {
                let deleted = driver.send(Method::DELETE, &path, None).await;
                delete_accepted = deleted.status == StatusCode::ACCEPTED;
            }
            "failed" if retried_version != body["version"].as_i64() => {
                retried_version = body["version"].as_i64();
                outcome
                    .failures_seen
                    .push(body["error"]["message"].as_str().unwrap_or("?").to_owned());
                assert!(
                    outcome.retries < 6,
                    "{}: still failing after {} retries: {body}",
                    driver.label,
                    outcome.retries
                );
                let retried = driver
                    .send(Method::POST, &format!("{path}/retry"), None)
                    .await;
                if retried.status == StatusCode::ACCEPTED {
                    outcome.retries += 1;
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Whom a kill hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Aim {
    ApiReplica,
    RelayLeader,
    Executor,
}

#[tokio::test(flavor = "multi_thread")]
async fn random_kills_of_api_replicas_relay_leaders_and_executors_keep_every_invariant() {
    let trials = trials();
    let seed = seed();
    eprintln!(
        "fault suite: {trials} kills, seed {seed} (PROVISIONER_TEST_FAULT_SEED={seed} replays the plan)"
    );
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut stack = Stack::start_with(StackOptions {
        api_replicas: 2,
        executor_replicas: 2,
        ..Default::default()
    })
    .await;
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let (mut lifecycles, mut retries, mut failures) = (0, 0, Vec::new());
    let mut batch = 0;
    while kills.values().sum::<usize>() < trials {
        batch += 1;
        let stop = CancellationToken::new();
        let mut slots = JoinSet::new();
        for slot in 0..SLOTS {
            let (stop, replicas) = (stop.clone(), stack.replicas().to_vec());
            let mut slot_rng = SmallRng::seed_from_u64(rng.random());
            slots.spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = 0;
                while !stop.is_cancelled() {
                    n += 1;
                    let twist = Twist::random(&mut slot_rng);
                    let driver = Driver {
                        replicas: replicas.clone(),
                        http: reqwest::Client::builder()
                            .timeout(REQUEST_TIMEOUT)
                            .build()
                            .expect("http client"),
                        rng: SmallRng::seed_from_u64(slot_rng.random()),
                        deadline: Instant::now() + LIFECYCLE_WITHIN,
                        label: String::new(),
                    };
                    let name = format!("f{batch}-{slot}-{n}");
                    outcomes.push(lifecycle(driver, name, twist).await);
                }
                outcomes
            });
        }
        let this_batch = KILLS_PER_BATCH.min(trials - kills.values().sum::<usize>());
        for _ in 0..this_batch {
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..2500))).await;
            let aim = match rng.random_range(0..3) {
                0 => Aim::ApiReplica,
                1 => Aim::RelayLeader,
                _ => Aim::Executor,
            };
            let replicas = stack.replicas().len();
            let member = match aim {
                Aim::ApiReplica => system_tests::Member::Api(rng.random_range(0..replicas)),
                Aim::RelayLeader => system_tests::Member::Api(
                    stack
                        .relay_leader()
                        .await
                        .unwrap_or_else(|| rng.random_range(0..replicas)),
                ),
                Aim::Executor => system_tests::Member::Executor(rng.random_range(0..2)),
            };
            stack.kill9(member).await;
            *kills.entry(format!("{aim:?}")).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
            stack.respawn(member).await;
        }
        stop.cancel();
        while let Some(outcomes) = slots.join_next().await {
            for outcome in outcomes.expect("a lifecycle panicked") {
                lifecycles += 1;
                retries += outcome.retries;
                failures.extend(outcome.failures_seen);
            }
        }
        let report = stack.assert_invariants().await;
        eprintln!(
            "batch {batch}: {} kills so far, {lifecycles} lifecycles, {:?} elapsed; checked {report}",
            kills.values().sum::<usize>(),
            started.elapsed()
        );
    }
    eprintln!(
        "fault suite: seed {seed}, kills {kills:?}, {lifecycles} lifecycles, {retries} retries, \
         {:?} in all; failures seen: {failures:?}",
        started.elapsed()
    );
}
