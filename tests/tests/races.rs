//! Races: fifty conflicting commands at once on one environment, at several moments of its
//! lifecycle; an event whose transaction commits after later ones (the outbox's id gap); and a
//! PostgreSQL server restarted while creates with an `Idempotency-Key` are in flight. Each ends
//! with a history that is serial (every event valid after the one before it, by the domain's own
//! fold) and every committed event on the stream exactly once.

use domain::aggregate::{Environment, Event, Status};
use domain::ids::OperationId;
use domain::spec::Step;
use domain::wire::EventEnvelope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use system_tests::services::{self, LocalPostgres};
use system_tests::{Stack, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(90);

/// `PROVISIONER_TEST_RACE_TRIALS` (default 1, at most 20): how many times each race runs.
fn trials() -> usize {
    system_tests::trials("PROVISIONER_TEST_RACE_TRIALS", 1, 20)
}

/// Every stored event of `id`, in sequence order, as the event store reads them.
async fn stored_history(stack: &Stack, id: &str) -> Vec<EventEnvelope> {
    event_store::reader::history(&stack.pool, id)
        .await
        .unwrap_or_else(|error| panic!("history of {id}: {error}"))
}

/// Why `event` cannot follow `state`, if it cannot: what `Environment::handle` would have had to
/// see to decide it. `apply` never refuses, so this is the check that the history is serial —
/// no event decided on a state that was no longer current (two `DestroyRequested`, a retry of a
/// retried environment, a result of an operation no longer in flight).
fn refused_after(state: &Environment, event: &Event) -> Option<String> {
    let in_flight = |operation_id: &OperationId, step: Option<Step>| match &state.in_flight {
        Some(current)
            if current.operation_id == *operation_id && step.is_none_or(|s| s == current.step) =>
        {
            None
        }
        other => Some(format!(
            "operation {operation_id} ({step:?}) is not the one in flight ({other:?})"
        )),
    };
    let started = |step: Step| {
        (state.in_flight.is_some() || state.pending != Some(step)).then(|| {
            format!(
                "{step:?} started while pending {:?}, in flight {:?}",
                state.pending, state.in_flight
            )
        })
    };
    let on_the_way_out = matches!(
        state.status,
        Status::DestroyQueued | Status::Destroying | Status::Destroyed
    );
    if !state.exists() && !matches!(event, Event::EnvironmentRequested { .. }) {
        return Some("the environment was never requested".into());
    }
    match event {
        Event::EnvironmentRequested { .. } => state.exists().then(|| "requested twice".into()),
        Event::InfraApplyStarted { .. } => started(Step::Infra),
        Event::BootstrapStarted { .. } => started(Step::Bootstrap),
        Event::DestroyStarted { .. } => started(Step::Destroy),
        Event::InfraApplied { operation_id, .. } | Event::InfraApplyFailed { operation_id, .. } => {
            in_flight(operation_id, Some(Step::Infra))
        }
        Event::BootstrapProgressed { operation_id, .. }
        | Event::BootstrapCompleted { operation_id, .. }
        | Event::BootstrapFailed { operation_id, .. } => {
            in_flight(operation_id, Some(Step::Bootstrap))
        }
        Event::InfraDestroyed { operation_id } | Event::DestroyFailed { operation_id, .. } => {
            in_flight(operation_id, Some(Step::Destroy))
        }
        Event::OperationTimedOut {
            operation_id,
            phase,
            ..
        } => in_flight(operation_id, Some(*phase)),
        Event::OperationCancelled {
            operation_id,
            failed_phase,
            ..
        } => in_flight(operation_id, *failed_phase),
        Event::MarkedFailed {
            operation_id: Some(operation_id),
            phase,
            ..
        } => in_flight(operation_id, Some(*phase)),
        Event::MarkedFailed {
            operation_id: None,
            phase,
            ..
        } => (state.in_flight.is_some() || state.pending != Some(*phase))
            .then(|| format!("marked failed in {phase:?} with nothing pending there")),
        Event::RetryRequested { phase } => {
            let failed_there = state.status == Status::Failed
                && state.failure.as_ref().is_some_and(|f| f.phase == *phase);
            (!failed_there).then(|| format!("retry of {phase:?} while {}", state.status))
        }
        Event::DestroyRequested {} => (state.in_flight.is_some() || on_the_way_out)
            .then(|| format!("destroy requested while {}", state.status)),
        Event::MarkedDestroyed { .. } => (state.in_flight.is_some()
            || state.status == Status::Destroyed)
            .then(|| format!("marked destroyed while {}", state.status)),
        Event::ForceUnlockAuthorized { .. } => (state.status == Status::Destroyed)
            .then(|| "force-unlock of a destroyed environment".into()),
    }
}

/// Fails unless `history` is serial: sequences 1..n without a gap, each event valid after the
/// ones before it. Returns the folded state.
fn assert_serial(id: &str, history: &[EventEnvelope]) -> Environment {
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    let mut state = Environment::default();
    for (n, envelope) in history.iter().enumerate() {
        assert_eq!(
            envelope.sequence,
            n as u64 + 1,
            "{id}: sequences are not 1..n: {types:?}"
        );
        let event = envelope
            .event()
            .unwrap_or_else(|error| panic!("{id}: event {n} does not decode: {error}"));
        if let Some(why) = refused_after(&state, &event) {
            panic!(
                "{id}: event {} ({}) cannot follow the ones before it: {why}\nhistory: {types:?}",
                envelope.sequence, envelope.event_type
            );
        }
        state.apply(&event);
    }
    state
}

/// Waits (bounded) until nothing is pending or in flight for `id` (nothing more happens without
/// a new command) and the read model shows its last event; returns the history then.
async fn settled(stack: &Stack, id: &str) -> Vec<EventEnvelope> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let history = stored_history(stack, id).await;
        let state = assert_serial(id, &history);
        let (code, view) = stack.get(id).await;
        let shown = code == StatusCode::OK
            && view["version"] == history.len()
            && view["status"] == state.status.as_str();
        if state.pending.is_none() && state.in_flight.is_none() && shown {
            return history;
        }
        assert!(
            Instant::now() < deadline,
            "{id} did not settle: {state:?}; read model {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The commands that conflict on one environment (there is no "update" command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Delete,
    Retry,
    Cancel,
    MarkFailed,
}

impl Verb {
    const ALL: [Verb; 4] = [Verb::Delete, Verb::Retry, Verb::Cancel, Verb::MarkFailed];

    fn request(self, stack: &Stack, id: &str) -> reqwest::RequestBuilder {
        let path = |verb: &str| format!("/v1/environments/{id}/{verb}");
        match self {
            Verb::Delete => stack.request(Method::DELETE, &format!("/v1/environments/{id}")),
            Verb::Retry => stack.request(Method::POST, &path("retry")),
            Verb::Cancel => stack.request(Method::POST, &path("cancel")),
            Verb::MarkFailed => stack
                .request(Method::POST, &path("mark-failed"))
                .json(&json!({"reason": "a race test"})),
        }
    }

    /// The event types one accepted command of this verb records (a delete while destroying
    /// records nothing).
    fn records(self, types: &[&str]) -> bool {
        match self {
            Verb::Delete => matches!(
                types,
                [] | ["DestroyRequested"] | ["OperationCancelled", "DestroyRequested"]
            ),
            Verb::Retry => types == ["RetryRequested"],
            Verb::Cancel => types == ["OperationCancelled"],
            Verb::MarkFailed => types == ["MarkedFailed"],
        }
    }

    /// The error code a refused command of this verb answers.
    fn refusal(self) -> Option<&'static str> {
        match self {
            Verb::Delete => None,
            Verb::Retry => Some("not_failed"),
            Verb::Cancel | Verb::MarkFailed => Some("invalid_state"),
        }
    }
}

/// What the race came to, for the report.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    refused: usize,
    no_ops: usize,
    winners: usize,
}

/// Sends 50 commands (delete, retry, cancel, mark-failed, shuffled) on `id` at once and checks
/// every answer against the events its request id recorded: an accepted command recorded
/// exactly its decision (a delete of an environment on its way out, nothing), a refused one
/// nothing, and no answer is a 5xx.
async fn storm(stack: &Stack, id: &str, moment: &str) -> Tally {
    let mut verbs: Vec<Verb> = (0..50).map(|n| Verb::ALL[n % Verb::ALL.len()]).collect();
    rand::seq::SliceRandom::shuffle(verbs.as_mut_slice(), &mut rand::rng());
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(verbs.len()));
    let commands = futures::future::join_all(verbs.iter().enumerate().map(|(n, verb)| {
        let request_id = format!("race-{moment}-{n}");
        let request = verb
            .request(stack, id)
            .header("x-request-id", request_id.clone());
        let start = std::sync::Arc::clone(&start);
        async move {
            start.wait().await;
            let response = request.send().await.expect("the API answers");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (*verb, request_id, status, body)
        }
    }));
    let answers = tokio::time::timeout(WITHIN, commands)
        .await
        .unwrap_or_else(|_| {
            panic!("{moment}: the commands were not all answered within {WITHIN:?}")
        });

    let history = stored_history(stack, id).await;
    assert_serial(id, &history);
    let mut recorded: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    // The commands' own decisions: what the process manager and executors record after them
    // carries the request id too, as their actor's.
    for envelope in history
        .iter()
        .filter(|e| !e.metadata.actor.as_ref().starts_with("system:"))
    {
        recorded
            .entry(envelope.metadata.request_id.to_string())
            .or_default()
            .push(&envelope.event_type);
    }
    let mut tally = Tally::default();
    for (verb, request_id, status, body) in &answers {
        let types = recorded.remove(request_id).unwrap_or_default();
        match *status {
            StatusCode::ACCEPTED => {
                tally.accepted += 1;
                assert!(
                    verb.records(&types),
                    "{moment}: {verb:?} ({request_id}) answered 202 {body} but recorded {types:?}"
                );
                if types.is_empty() {
                    // Decided on an environment already on its way out; it answers the status
                    // it has when the answer is made (another command may have moved it since).
                    tally.no_ops += 1;
                    assert!(
                        history.iter().any(|e| e.event_type == "DestroyRequested"),
                        "{moment}: a delete changed nothing though no destroy was requested: \
                         {body}"
                    );
                } else {
                    tally.winners += 1;
                }
            }
            StatusCode::CONFLICT => {
                tally.refused += 1;
                assert_eq!(
                    body["error"]["code"].as_str(),
                    verb.refusal(),
                    "{moment}: {verb:?} ({request_id}) answered 409 {body}"
                );
                assert!(
                    types.is_empty(),
                    "{moment}: {verb:?} ({request_id}) was refused but recorded {types:?}"
                );
            }
            other => panic!("{moment}: {verb:?} ({request_id}) answered {other}: {body}"),
        }
    }
    let storm_ids: Vec<_> = recorded
        .keys()
        .filter(|request_id| request_id.starts_with(&format!("race-{moment}-")))
        .collect();
    assert!(
        storm_ids.is_empty(),
        "{moment}: events of requests no answer accounts for: {storm_ids:?}"
    );
    assert!(tally.winners >= 1, "{moment}: no command won: {answers:?}");
    tally
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_conflicting_commands_at_once_win_once_per_version_and_keep_the_history_serial() {
    let stack = Stack::start().await;
    let started = Instant::now();
    for trial in 0..trials() {
        let failed = async {
            let simulate = "    apply_seconds: 0.2\n    fail: infra\n    fail_times: 1\n";
            let id = stack
                .create_ok(&sandbox_yaml(&format!("race-failed-{trial}"), simulate))
                .await;
            stack
                .wait_for_failure(&id, "infra", "simulated infra failure", WITHIN)
                .await;
            (
                id.clone(),
                storm(&stack, &id, &format!("failed{trial}")).await,
            )
        };
        let in_flight = async {
            let id = stack
                .create_ok(&sandbox_yaml(
                    &format!("race-flight-{trial}"),
                    "    apply_seconds: 3\n",
                ))
                .await;
            stack.wait_for_run_start(&id).await;
            (
                id.clone(),
                storm(&stack, &id, &format!("flight{trial}")).await,
            )
        };
        let ready = async {
            let id = stack
                .create_ok(&sandbox_yaml(&format!("race-ready-{trial}"), ""))
                .await;
            stack.wait_for_status(&id, "ready", WITHIN).await;
            (
                id.clone(),
                storm(&stack, &id, &format!("ready{trial}")).await,
            )
        };
        let raced = tokio::join!(failed, in_flight, ready);
        for (id, tally) in [raced.0, raced.1, raced.2] {
            let history = settled(&stack, &id).await;
            eprintln!(
                "trial {trial} {id}: {tally:?}; settled at {} events: {:?}",
                history.len(),
                history
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>()
            );
            stack.assert_no_overlap(&id);
        }
    }
    let checked = stack.assert_invariants().await;
    eprintln!(
        "{} trials in {:?}; {} events of {} environments checked",
        trials(),
        started.elapsed(),
        checked.events,
        checked.environments
    );
}

/// Fails unless the read model shows, for every environment, the fold of all its committed
/// events: its version is the last sequence and its status the folded one (nothing skipped,
/// nothing applied out of order). Waits up to `WITHIN` for the projection to catch up.
async fn assert_projection_complete(stack: &Stack) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT aggregate_id FROM events")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
        let mut behind = Vec::new();
        for id in &ids {
            let history = stored_history(stack, id).await;
            let state = assert_serial(id, &history);
            let row: Option<(i64, String)> =
                sqlx::query_as("SELECT version, status FROM environments_view WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&stack.pool)
                    .await
                    .unwrap();
            let expected = (history.len() as i64, state.status.as_str().to_owned());
            if row.as_ref() != Some(&expected) {
                behind.push(format!("{id}: view {row:?}, events {expected:?}"));
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the read model does not show every committed event:\n{}",
            behind.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_committed_after_later_ones_is_published_and_projected_in_order() {
    let stack = Stack::start().await;
    let started = Instant::now();
    let held_id = stack.create_ok(&sandbox_yaml("gap-held", "")).await;
    stack.wait_for_status(&held_id, "ready", WITHIN).await;
    let before = stored_history(&stack, &held_id).await.len();

    // A transaction records the environment's next event (a destroy request, as the API would)
    // and stays open: its outbox row's id is taken, and invisible to the relay.
    let event = Event::DestroyRequested {};
    let metadata = event_store::reader::stored_metadata(
        &system_tests::fixtures::admin_request("req_gap_held"),
        chrono::Utc::now(),
    );
    let mut held = stack.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events
             (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Environment', $1, $2, $3, $4, $5::json, $6::json)",
    )
    .bind(&held_id)
    .bind(before as i64 + 1)
    .bind(event.event_type())
    .bind(event.version().to_string())
    .bind(serde_json::to_value(&event).unwrap())
    .bind(serde_json::to_value(&metadata).unwrap())
    .execute(&mut *held)
    .await
    .unwrap();
    let held_row: i64 =
        sqlx::query_scalar("SELECT id FROM event_outbox WHERE aggregate_id = $1 AND sequence = $2")
            .bind(&held_id)
            .bind(before as i64 + 1)
            .fetch_one(&mut *held)
            .await
            .unwrap();

    // Later transactions commit whole lifecycles of other environments (outbox ids above the
    // held one), and the relay publishes and forgets them while the held row is open.
    let later: Vec<String> = futures::future::join_all((0..4).map(|n| {
        let stack = &stack;
        async move {
            stack
                .create_ok(&sandbox_yaml(&format!("gap-later-{n}"), ""))
                .await
        }
    }))
    .await;
    for id in &later {
        stack.wait_for_status(id, "ready", WITHIN).await;
    }
    stack
        .wait_outbox_published_after(
            held_row,
            Duration::from_secs(30),
            "the relay did not publish the later rows",
        )
        .await;
    let last_id: i64 = sqlx::query_scalar("SELECT last_value FROM event_outbox_id_seq")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert!(
        last_id > held_row + 10,
        "later events took outbox ids above the held one ({held_row}, last {last_id})"
    );
    assert_eq!(
        stack.stream_events(&held_id).await.len(),
        before,
        "the held event is not published before it commits"
    );

    // It commits last: published after all of them, projected, and its lifecycle goes on.
    held.commit().await.unwrap();
    stack.assert_committed_events_published_once().await;
    stack.wait_for_status(&held_id, "destroyed", WITHIN).await;
    let checked = stack.assert_invariants().await;
    assert_projection_complete(&stack).await;
    stack.assert_no_overlap(&held_id);
    eprintln!(
        "held outbox row {held_row}, committed after rows up to {last_id}; {} events of {} \
         environments checked in {:?}",
        checked.events,
        checked.environments,
        started.elapsed()
    );
}

/// Creates with `key` until an answer that is not a failure of the server (a 5xx, or no
/// answer): the client's retry with the same key. Returns the answer and how many tries failed;
/// try `n` has the request id `<key>.<n>`.
async fn create_retrying(
    http: &reqwest::Client,
    stack: &Stack,
    key: &str,
    yaml: &str,
) -> ((StatusCode, Value), usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        let sent = http
            .post(format!("{}/v1/environments", stack.base_url))
            .bearer_auth(stack.token())
            .header("content-type", "application/yaml")
            .header("idempotency-key", key)
            .header("x-request-id", format!("{key}.{failed}"))
            .body(yaml.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) if !response.status().is_server_error() => {
                let status = response.status();
                let body = response.json().await.unwrap_or(Value::Null);
                return ((status, body), failed);
            }
            Ok(_) | Err(_) => failed += 1,
        }
        assert!(
            Instant::now() < deadline,
            "create with key {key} kept failing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fast shutdown of `server` (SIGINT: every connection cut, in-flight transactions rolled
/// back), then a start on the same port and data after `down`.
async fn restart_postgres(server: &mut LocalPostgres, down: Duration) {
    let pid = server.pid().expect("postgres runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal postgres");
    tokio::time::timeout(Duration::from_secs(30), server.exited())
        .await
        .expect("postgres stops within 30s")
        .expect("postgres exit status");
    tokio::time::sleep(down).await;
    server.restart().await.expect("postgres starts again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_mid_command_with_the_same_idempotency_key_creates_each_environment_once()
 {
    let dir = tempfile::tempdir().unwrap();
    let (mut postgres, url) = services::private_postgres(dir.path(), "races").await;
    let mut stack = Stack::start().await;
    stack.move_to_database(&url).await;
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (mut restarts, mut interrupted) = (0, 0);
    // Keys whose create failed at least once, with how many tries failed.
    let mut retried: BTreeMap<String, usize> = BTreeMap::new();
    let mut answers: BTreeMap<String, (String, String)> = BTreeMap::new();
    for trial in 0..trials() {
        // Creators keep creating (each create once, retried with its key until answered) until
        // the server has been restarted under them.
        let stop = tokio_util::sync::CancellationToken::new();
        let creators = futures::future::join_all((0..8).map(|creator| {
            let (http, stack, stop) = (&http, &stack, stop.clone());
            async move {
                let mut made = Vec::new();
                let mut failed = 0;
                let mut n = 0;
                while !stop.is_cancelled() {
                    let key = format!("key-{trial}-{creator}-{n}");
                    let yaml = sandbox_yaml(&format!("idem-{trial}-{creator}-{n}"), "");
                    let ((status, body), tries) = create_retrying(http, stack, &key, &yaml).await;
                    assert_eq!(status, StatusCode::ACCEPTED, "{key}: {body}");
                    failed += tries;
                    made.push((key, yaml, body, tries));
                    n += 1;
                }
                (made, failed)
            }
        }));
        let restart = async {
            tokio::time::sleep(Duration::from_millis(rand::random_range(300..1200))).await;
            restart_postgres(&mut postgres, Duration::from_millis(500)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        };
        let (made, ()) = tokio::join!(creators, restart);
        restarts += 1;
        for (creates, failed) in made {
            interrupted += failed;
            for (key, yaml, body, tries) in creates {
                if tries > 0 {
                    retried.insert(key.clone(), tries);
                }
                let id = body["id"].as_str().expect("an id").to_owned();
                // The same key again, after it all: the same environment.
                let ((status, again), _) = create_retrying(&http, &stack, &key, &yaml).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{key}: {again}");
                assert_eq!(
                    again["id"],
                    id.as_str(),
                    "{key}: first {body}, then {again}"
                );
                answers.insert(key, (id, yaml));
            }
        }
    }
    assert!(
        interrupted > 0,
        "no create was interrupted by the restart: the race did not happen"
    );

    // One environment per key, requested once, each of them brought to ready.
    let requested: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events
          WHERE event_type = 'EnvironmentRequested' GROUP BY aggregate_id",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    let ids: BTreeSet<&str> = answers.values().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids.len(),
        answers.len(),
        "two keys answered one environment"
    );
    assert_eq!(
        requested
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<BTreeSet<_>>(),
        ids,
        "the environments requested are exactly those the keys answered"
    );
    assert!(
        requested.iter().all(|(_, count)| *count == 1),
        "{requested:?}"
    );
    // Which try of an interrupted create committed: an earlier one than the answered one
    // means its commit survived while its answer was lost.
    let mut answer_lost = 0;
    for (key, tries) in &retried {
        let (id, _) = &answers[key];
        let history = stored_history(&stack, id).await;
        let committed_by = history[0].metadata.request_id.to_string();
        if committed_by != format!("{key}.{tries}") {
            answer_lost += 1;
        }
    }
    for id in &ids {
        stack.wait_for_status(id, "ready", WITHIN).await;
        assert_serial(id, &stored_history(&stack, id).await);
        stack.assert_no_overlap(id);
    }
    let checked = stack.assert_invariants().await;
    eprintln!(
        "{restarts} restarts, {interrupted} tries of {} creates failed and were retried with \
         their keys ({answer_lost} of them committed though their answer was lost); {} keys, {} \
         events of {} environments checked in {:?}",
        retried.len(),
        answers.len(),
        checked.events,
        checked.environments,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tries_with_one_idempotency_key_answer_one_environment() {
    // A client that gave up waiting and tried again while its first try still runs: the tries
    // race each other with the same key and body.
    let stack = Stack::start().await;
    for n in 0..5 * trials() {
        let key = format!("same-{n}");
        let yaml = sandbox_yaml(&format!("same-{n}"), "");
        let tries = futures::future::join_all((0..8).map(|_| async {
            let response = stack
                .request(Method::POST, "/v1/environments")
                .header("content-type", "application/yaml")
                .header("idempotency-key", &key)
                .body(yaml.clone())
                .send()
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }));
        let answers = tokio::time::timeout(WITHIN, tries)
            .await
            .unwrap_or_else(|_| panic!("{key}: the tries were not all answered within {WITHIN:?}"));
        let ids: BTreeSet<&str> = answers
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, StatusCode::ACCEPTED, "{key}: {answers:?}");
                body["id"].as_str().unwrap()
            })
            .collect();
        assert_eq!(ids.len(), 1, "{key}: {answers:?}");
        let id = ids.into_iter().next().unwrap();
        let requested = stored_history(&stack, id)
            .await
            .iter()
            .filter(|e| e.event_type == "EnvironmentRequested")
            .count();
        assert_eq!(requested, 1, "{key}");
    }
    stack.assert_invariants().await;
}
