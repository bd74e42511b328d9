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
use system_tests::{ApiClient, Member, Stack, StackOptions, sandbox_yaml};
use tokio::task::JoinSet;

/// Lifecycles per batch, all running at once; kills go on until each has ended, then the
/// batch ends with the invariant check.
const SLOTS: usize = 4;
/// At most this many kills per batch, so that batches end and the check runs often.
const KILLS_PER_BATCH: usize = 10;
const API_REPLICAS: usize = 2;
const EXECUTORS: usize = 2;
/// How long one lifecycle may take, kills and retries included.
const LIFECYCLE_WITHIN: Duration = Duration::from_secs(150);
/// How long one request may take before it is sent to another replica.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills in all: 50, or `PROVISIONER_TEST_FAULT_TRIALS`.
fn trials() -> usize {
    system_tests::trials("PROVISIONER_TEST_FAULT_TRIALS", 50, 10_000)
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
    /// Its bootstrap fails for good; the lifecycle deletes it from `failed`.
    FailsThenDeleted,
}

impl Twist {
    fn random(rng: &mut SmallRng) -> Self {
        match rng.random_range(0..8) {
            0 => Twist::FailsOnce("infra"),
            1 => Twist::FailsOnce("bootstrap"),
            2 => Twist::FailsOnce("destroy"),
            3 => Twist::DeletedMidStep,
            4 => Twist::FailsThenDeleted,
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
    took: Duration,
    /// The longest wait between two of its events, and the event after it.
    longest_gap: (f64, String),
}

/// create → ready → destroy, whatever is killed meanwhile: a failed step is retried, an
/// environment that is ready is deleted, and it ends destroyed.
async fn lifecycle(mut driver: Driver, name: String, twist: Twist) -> Outcome {
    let apply = driver.rng.random_range(1..8) as f64 / 10.0;
    let simulate = match twist {
        Twist::FailsOnce(step) => {
            format!("    apply_seconds: {apply}\n    fail: {step}\n    fail_times: 1\n")
        }
        Twist::FailsThenDeleted => format!("    apply_seconds: {apply}\n    fail: bootstrap\n"),
        _ => format!("    apply_seconds: {apply}\n"),
    };
    let yaml = sandbox_yaml(&name, &simulate);
    let started = Instant::now();
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
            "destroyed" => {
                outcome.took = started.elapsed();
                outcome.longest_gap = longest_gap(&mut driver, &path).await;
                return outcome;
            }
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
                if matches!(twist, Twist::FailsThenDeleted) && !delete_accepted {
                    let deleted = driver.send(Method::DELETE, &path, None).await;
                    delete_accepted = deleted.status == StatusCode::ACCEPTED;
                    if !delete_accepted {
                        retried_version = None;
                    }
                    continue;
                }
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

/// The longest time between two consecutive events of an environment (seconds), and the
/// second event's type: where a lifecycle waited.
async fn longest_gap(driver: &mut Driver, path: &str) -> (f64, String) {
    let history = driver
        .send(Method::GET, &format!("{path}/history"), None)
        .await;
    let events = history.body.as_array().cloned().unwrap_or_default();
    let at = |event: &Value| {
        event["recorded_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    events
        .windows(2)
        .filter_map(|pair| {
            let gap = (at(&pair[1])? - at(&pair[0])?).as_seconds_f64();
            Some((gap, pair[1]["type"].as_str().unwrap_or("?").to_owned()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or_default()
}

/// Whom a kill hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Aim {
    ApiReplica,
    /// The API replica holding the relay's lock (found in `pg_locks`).
    RelayLeader,
    Executor,
    /// Every executor at once: jobs wait for a new one, leases lapse.
    BothExecutors,
    /// An API replica and an executor at once.
    ApiAndExecutor,
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
        api_replicas: API_REPLICAS,
        executor_replicas: EXECUTORS,
        ..Default::default()
    })
    .await;
    eprintln!("stack started in {:?}", started.elapsed());
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let (mut lifecycles, mut retries) = (0, 0);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut batch = 0;
    // Relay-leader kills that found no replica holding the lock, and hit a random one.
    let mut leaderless = 0;
    while kills.values().sum::<usize>() < trials {
        batch += 1;
        let mut slots = JoinSet::new();
        for slot in 0..SLOTS {
            let twist = Twist::random(&mut rng);
            let driver = Driver {
                replicas: stack.replicas().to_vec(),
                http: reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .expect("http client"),
                rng: SmallRng::seed_from_u64(rng.random()),
                deadline: Instant::now() + LIFECYCLE_WITHIN,
                label: String::new(),
            };
            slots.spawn(lifecycle(driver, format!("f{batch}-{slot}"), twist));
        }
        // Kills at random moments until every lifecycle of the batch has ended.
        let (mut outcomes, mut batch_kills) = (Vec::new(), 0);
        loop {
            let pause = Duration::from_millis(rng.random_range(100..1500));
            let deadline = tokio::time::Instant::now() + pause;
            while let Ok(Some(ended)) = tokio::time::timeout_at(deadline, slots.join_next()).await {
                outcomes.push(ended.expect("a lifecycle panicked"));
            }
            if slots.is_empty() {
                break;
            }
            if kills.values().sum::<usize>() >= trials || batch_kills >= KILLS_PER_BATCH {
                continue;
            }
            batch_kills += 1;
            let aim = match rng.random_range(0..11) {
                0..3 => Aim::ApiReplica,
                3..6 => Aim::RelayLeader,
                6..9 => Aim::Executor,
                9 => Aim::BothExecutors,
                _ => Aim::ApiAndExecutor,
            };
            let replicas = stack.replicas().len();
            let random_api = Member::Api(rng.random_range(0..replicas));
            let random_executor = Member::Executor(rng.random_range(0..EXECUTORS));
            let members = match aim {
                Aim::ApiReplica => vec![random_api],
                Aim::RelayLeader => match stack.relay_leader().await {
                    Some(leader) => vec![Member::Api(leader)],
                    None => {
                        // Between a leader's death and the next one's start.
                        leaderless += 1;
                        vec![random_api]
                    }
                },
                Aim::Executor => vec![random_executor],
                Aim::BothExecutors => (0..EXECUTORS).map(Member::Executor).collect(),
                Aim::ApiAndExecutor => vec![random_api, random_executor],
            };
            for &member in &members {
                stack.kill9(member).await;
            }
            *kills.entry(format!("{aim:?}")).or_default() += 1;
            // Mostly back at once; sometimes the rest runs degraded for a while.
            let down = if rng.random_ratio(1, 5) {
                1000..4000
            } else {
                0..800
            };
            tokio::time::sleep(Duration::from_millis(rng.random_range(down))).await;
            for member in members {
                stack.respawn(member).await;
            }
        }
        if let Some(slowest) = outcomes.iter().max_by_key(|outcome| outcome.took) {
            eprintln!(
                "batch {batch}: slowest lifecycle {:?}, its longest wait {:.1}s before {}",
                slowest.took, slowest.longest_gap.0, slowest.longest_gap.1
            );
        }
        for outcome in outcomes {
            lifecycles += 1;
            retries += outcome.retries;
            for message in outcome.failures_seen {
                let first_line = message.lines().next().unwrap_or_default().to_owned();
                *failures.entry(first_line).or_default() += 1;
            }
        }
        let converged_at = started.elapsed();
        let report = stack.assert_invariants().await;
        eprintln!(
            "batch {batch}: {} kills so far, {lifecycles} lifecycles converged at {converged_at:?}, \
             checked at {:?}: {report}",
            kills.values().sum::<usize>(),
            started.elapsed()
        );
    }
    eprintln!(
        "fault suite: seed {seed}, kills {kills:?} ({leaderless} with no relay leader to find), \
         {lifecycles} lifecycles, {retries} retries, {:?} in all; failures seen: {failures:#?}",
        started.elapsed()
    );
    // A kill must not fail a step: the job is redelivered and the step resumes. Only the
    // simulated failures, and a job JetStream gave up on after `max_deliver` deliveries (each
    // killed), may reach the user.
    let caused_by_kills: Vec<&String> = failures
        .keys()
        .filter(|m| !m.contains("simulated") && !m.contains("no executor finished this step"))
        .collect();
    assert!(
        caused_by_kills.is_empty(),
        "steps failed because of kills: {caused_by_kills:?}"
    );
}

/// The check is able to fail: it names an environment stuck in a transitional status, two
/// overlapping runs, a read model that drifted from its replay, and an outbox row it cannot
/// drain.
#[tokio::test(flavor = "multi_thread")]
async fn the_invariant_check_finds_a_stuck_environment_overlapping_runs_a_drifted_read_model_and_a_stuck_outbox()
 {
    use system_tests::invariants::{Limits, Violation};
    let short = Limits {
        settle: Duration::from_secs(2),
        drain: Duration::from_secs(2),
    };
    let mut stack = Stack::start_with(StackOptions {
        executor: false,
        ..Default::default()
    })
    .await;
    // No executor: the first step never runs.
    let id = stack.create_ok(&sandbox_yaml("stuck", "")).await;
    let found = stack.check_invariants(short).await.unwrap_err();
    assert!(
        matches!(&found[..], [Violation::Unsettled { environment_id, status, last_events }]
            if *environment_id == id && status == "provisioning"
                && last_events.last().is_some_and(|e| e.ends_with("InfraApplyStarted"))),
        "{found:?}"
    );

    stack.restart_executor();
    stack
        .wait_for_status(&id, "ready", Duration::from_secs(60))
        .await;
    let report = stack.assert_invariants().await;
    assert_eq!(report.statuses.get("ready"), Some(&1), "{report}");

    // Two runs changing the environment's state at once, as if the state lock failed.
    let workdir = stack.workdir(&id);
    let mut first = standins::overlap::Run::start(&workdir, "apply").unwrap();
    first.enter_section();
    let mut second = standins::overlap::Run::start(&workdir, "apply").unwrap();
    second.enter_section();
    first.finish(standins::overlap::Outcome::Succeeded).unwrap();
    second
        .finish(standins::overlap::Outcome::Succeeded)
        .unwrap();
    // A read model that drifted from the events.
    sqlx::query("UPDATE environments_view SET status = 'failed' WHERE id = $1")
        .bind(&id)
        .execute(&stack.pool)
        .await
        .unwrap();
    // An outbox row the relay can never publish (its event does not exist): quarantined, kept.
    sqlx::query(
        "INSERT INTO event_outbox (aggregate_type, aggregate_id, sequence)
         VALUES ('Environment', 'env_01J00000000000000000000000', 1)",
    )
    .execute(&stack.pool)
    .await
    .unwrap();
    let found = stack.check_invariants(short).await.unwrap_err();
    let has = |wanted: fn(&Violation) -> bool| found.iter().any(wanted);
    assert!(has(|v| matches!(v, Violation::Overlap { .. })), "{found:?}");
    assert!(
        has(|v| matches!(v, Violation::ReplayDiffers { .. })),
        "{found:?}"
    );
    assert!(
        has(|v| matches!(
            v,
            Violation::OutboxLeft {
                outbox: 1,
                quarantined: 1
            }
        )),
        "{found:?}"
    );
}
