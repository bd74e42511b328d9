//! The `aws` bootstrap's failures and recoveries, through the real `serve` and `executor`
//! processes set up as in `tests/tests/aws.rs` ([`system_tests::aws_stack`]: moto's STS and
//! Secrets Manager, the stand-in terraform and helm behind recording wrappers, the stand-in
//! Kubernetes API reached with the real `kube` client): nodes that never turn Ready, a retry
//! that re-runs only the bootstrap, kill -9 of the executor in the middle of an install, and a
//! search for every secret over a whole lifecycle.
//!
//! The sandbox's bootstrap failure → retry → one infra apply is `tests/tests/faults.rs`
//! (`a_failed_bootstrap_is_retried_without_re_applying_infra`).

use std::path::Path;
use std::time::{Duration, Instant};

use bootstrap::helm::VALUES_DIR;
use bootstrap::kubeconfig::KUBECONFIG_FILE;
use bootstrap::readiness::{
    GATEWAY_DEPLOYMENT, GATEWAY_NAMESPACE, INGRESS_NAMESPACE, INGRESS_SERVICE,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use system_tests::aws::Moto;
use system_tests::aws_stack::{
    DB_PASSWORD, EXTERNAL_ID, SLOW_BETA9_STARTED, aws_stack_options, aws_yaml, customer_secrets,
    rds_password_secret, slow_beta9_helm_pid, slow_down_next_beta9_install, tool_runs,
};
use system_tests::canary::{
    Canary, Source, WireTap, assert_absent, files_under, search, sse_text_until, stream_messages,
};
use system_tests::kube_api::{KubeBehaviour, StandinKubeApi, StandinNode};
use system_tests::{Stack, StackOptions, count};

const WITHIN: Duration = Duration::from_secs(90);

/// moto (STS and the customer's Secrets Manager, holding RDS's secret with [`DB_PASSWORD`]), a
/// stand-in cluster, and the tools' directory of one test.
struct AwsWorld {
    moto: Moto,
    cluster: StandinKubeApi,
    secrets: aws_sdk_secretsmanager::Client,
    database_secret_arn: String,
    tools_dir: tempfile::TempDir,
}

impl AwsWorld {
    async fn start(cluster: KubeBehaviour) -> AwsWorld {
        let moto = Moto::start().await;
        let cluster = StandinKubeApi::start(cluster).await;
        let secrets = customer_secrets(moto.endpoint()).await;
        let database_secret_arn = rds_password_secret(&secrets).await;
        AwsWorld {
            moto,
            cluster,
            secrets,
            database_secret_arn,
            tools_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The stack's options, with `executor_env` added.
    fn stack_options(&self, executor_env: &[(&str, &str)]) -> StackOptions {
        let mut options = aws_stack_options(
            self.moto.endpoint(),
            self.tools_dir.path(),
            &self.cluster.endpoint(),
            &self.database_secret_arn,
        );
        options.executor_env.extend(
            executor_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        options
    }

    /// What the terraform/helm wrappers recorded: each run's arguments and environment.
    fn tool_runs(&self) -> String {
        tool_runs(self.tools_dir.path())
    }
}

/// The gateway Deployment and the ingress load balancer, ready as soon as they are looked at.
fn with_gateway(behaviour: KubeBehaviour) -> KubeBehaviour {
    behaviour
        .with_deployment(GATEWAY_NAMESPACE, GATEWAY_DEPLOYMENT, Some(Duration::ZERO))
        .with_load_balancer(
            INGRESS_NAMESPACE,
            INGRESS_SERVICE,
            "k8s-ingress-0123456789.elb.us-east-1.amazonaws.com",
            Some(Duration::ZERO),
        )
}

/// A cluster that is ready at once (the small profile's CPU pool wants 1 node).
fn ready_cluster() -> KubeBehaviour {
    with_gateway(KubeBehaviour::cpu_nodes_ready_after(1, Duration::ZERO))
}

/// How many runs of `tool` the wrappers recorded whose arguments begin with `args`.
fn runs_of(recorded: &str, tool: &str, args: &[&str]) -> usize {
    let head: String = args.iter().map(|arg| format!("\narg {arg}")).collect();
    recorded.matches(&format!("=== {tool}{head}\n")).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_that_never_turn_ready_fail_the_bootstrap_naming_them_and_a_retry_runs_only_the_bootstrap()
 {
    let world = AwsWorld::start(with_gateway(KubeBehaviour {
        nodes: vec![
            StandinNode::never_ready("node-a", "cpu"),
            StandinNode::never_ready("node-b", "cpu"),
        ],
        ..KubeBehaviour::default()
    }))
    .await;
    // The wait looks at once and again when its timeout is up (its poll, 5 s, is longer).
    let stack = Stack::start_with(
        world.stack_options(&[("PROVISIONER_BOOTSTRAP_NODES_TIMEOUT_SECS", "2")]),
    )
    .await;
    let id = stack.create_ok(&aws_yaml("unready")).await;

    let failed = stack
        .wait_for_failure(
            &id,
            "bootstrap",
            "the cluster's nodes (1 cpu Ready) never became ready within 2s",
            WITHIN,
        )
        .await;
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("pool cpu: 0 of 1 Ready (not Ready: node-a, node-b)"),
        "{message}"
    );
    assert_eq!(
        runs_of(&world.tool_runs(), "helm", &["upgrade"]),
        0,
        "nothing is installed on a cluster without Ready nodes"
    );

    // The nodes come up; the retry resumes at the bootstrap.
    world.cluster.make_everything_ready();
    assert_eq!(stack.retry(&id).await.status(), StatusCode::ACCEPTED);
    let ready = stack.wait_for_status(&id, "ready", WITHIN).await;
    assert!(ready["error"].is_null(), "{ready}");

    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplyStarted"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");
    assert_eq!(count(&types, "BootstrapFailed"), 1, "{types:?}");
    assert_eq!(count(&types, "RetryRequested"), 1, "{types:?}");
    assert_eq!(count(&types, "BootstrapStarted"), 2, "{types:?}");
    assert_eq!(types.last().unwrap(), "BootstrapCompleted", "{types:?}");
    // Terraform's own records: one apply, before the failure; the retry applied nothing.
    let runs = standins::overlap::read(&stack.workdir(&id)).unwrap();
    let applies = runs
        .started
        .iter()
        .filter(|run| run.operation == "apply")
        .count();
    assert_eq!(applies, 1, "{runs:?}");
    let recorded = world.tool_runs();
    assert_eq!(runs_of(&recorded, "terraform", &["apply"]), 1);
    assert_eq!(
        runs_of(&recorded, "helm", &["upgrade", "--install", "beta9"]),
        1
    );
    stack.assert_no_overlap(&id);
}

/// Waits (bounded) until the wrappers' record holds `line`.
async fn wait_for_recorded(world: &AwsWorld, line: &str) {
    let deadline = Instant::now() + WITHIN;
    while !world.tool_runs().lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "never recorded: {line}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of the `beta9` release in the helm stand-in's releases of `workdir`.
fn beta9_status(workdir: &Path) -> Option<String> {
    let store = standins::helm::Store::load(workdir).ok()?;
    Some(store.find("beta9", "beta9")?.status.clone())
}

async fn wait_for_beta9_status(workdir: &Path, status: &str) {
    let deadline = Instant::now() + WITHIN;
    while beta9_status(workdir).as_deref() != Some(status) {
        assert!(Instant::now() < deadline, "beta9 never became {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_executor_mid_install_resumes_the_bootstrap_and_leaves_no_token_or_values_behind()
 {
    let world = AwsWorld::start(ready_cluster()).await;
    slow_down_next_beta9_install(world.tools_dir.path());
    let mut stack = Stack::start_with(world.stack_options(&[])).await;
    let id = stack.create_ok(&aws_yaml("interrupted")).await;

    // Crash the executor while helm installs Beta9: its token-bearing kubeconfig and the
    // values file with the database password are on disk then, and helm has recorded the
    // release pending-install.
    wait_for_recorded(&world, SLOW_BETA9_STARTED).await;
    let workdir = stack.workdir(&id);
    wait_for_beta9_status(&workdir, "pending-install").await;
    let kubeconfig = workdir.join(KUBECONFIG_FILE);
    let values = workdir.join(VALUES_DIR).join("beta9.json");
    assert!(kubeconfig.is_file(), "helm's kubeconfig during the install");
    assert!(values.is_file(), "the beta9 values file during the install");
    // As when the machine is lost, helm dies by SIGKILL with the executor, the release left
    // pending: stopped first, it never handles the parent-death SIGTERM (on which helm, like its
    // stand-in, would mark the release failed).
    let helm = Pid::from_raw(slow_beta9_helm_pid(world.tools_dir.path()));
    kill(helm, Signal::SIGSTOP).unwrap();
    stack.kill9_executor().await;
    kill(helm, Signal::SIGKILL).unwrap();
    assert_eq!(beta9_status(&workdir).as_deref(), Some("pending-install"));
    stack.restart_executor();

    stack.wait_for_status(&id, "ready", WITHIN).await;
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");
    assert_eq!(count(&types, "BootstrapStarted"), 1, "{types:?}");
    assert_eq!(count(&types, "BootstrapFailed"), 0, "{types:?}");
    assert_eq!(count(&types, "BootstrapCompleted"), 1, "{types:?}");
    // The job was redelivered and the bootstrap ran again from its start, Beta9 included.
    assert_eq!(
        runs_of(
            &world.tool_runs(),
            "helm",
            &["upgrade", "--install", "beta9"]
        ),
        2
    );
    // It found Beta9 pending-install and uninstalled it first.
    assert_eq!(
        runs_of(&world.tool_runs(), "helm", &["uninstall", "beta9"]),
        1
    );
    assert_eq!(beta9_status(&workdir).as_deref(), Some("deployed"));
    stack.assert_no_overlap(&id);
    stack.assert_committed_events_published_once().await;
    // The second run's end removed what the crashed one left.
    assert!(!kubeconfig.exists(), "helm's kubeconfig outlived the step");
    assert!(!values.exists(), "the values file outlived the step");
    assert!(
        !workdir.join("customer.auto.tfvars.json").exists(),
        "the customer role's variables outlived the step"
    );
}

/// How many times the search finds `value` in `sources` (for the checks that the search looks
/// at texts that are there).
fn found(sources: &[Source], value: &str) -> usize {
    search(
        sources,
        &[Canary {
            name: "expected",
            value,
        }],
    )
    .len()
}

/// The texts of one lifecycle, in two heaps: those that carry the submitted spec (events and
/// read models) and all the others.
#[derive(Default)]
struct Texts {
    carrying_the_spec: Vec<Source>,
    others: Vec<Source>,
}

impl Texts {
    /// Adds one kind of text, after checking it holds `expected` (the environment's id, or the
    /// executor's output), so that the search cannot pass by reading nothing.
    fn add(&mut self, kind: &str, sources: Vec<Source>, expected: &str) {
        assert!(
            found(&sources, expected) > 0,
            "{kind}: {expected} not found in {} sources",
            sources.len()
        );
        self.others.extend(sources);
    }

    /// Like [`Texts::add`], for texts that carry the submitted spec.
    fn add_carrying_the_spec(&mut self, kind: &str, sources: Vec<Source>, expected: &str) {
        assert!(
            found(&sources, expected) > 0,
            "{kind}: {expected} not found in {} sources",
            sources.len()
        );
        self.carrying_the_spec.extend(sources);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_of_a_whole_aws_lifecycle_shows_anywhere() {
    let world = AwsWorld::start(ready_cluster()).await;
    let stack = Stack::start_with(StackOptions {
        log_filter: Some("debug".to_owned()),
        ..world.stack_options(&[])
    })
    .await;
    let tap = WireTap::start(&stack.nats.url(), &stack.subjects).await;
    let mut texts = Texts::default();

    let created = stack.create(&aws_yaml("canary")).await;
    assert_eq!(created.status(), StatusCode::ACCEPTED);
    let created = created.text().await.unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    texts.add(
        "the create response",
        vec![Source::new("the create response", created)],
        &id,
    );
    let sse = sse_text_until(
        &stack.client,
        &format!("/v1/environments/{id}/events"),
        "InfraDestroyed",
        WITHIN,
    );

    let ready = stack.wait_for_status(&id, "ready", WITHIN).await;
    let encryption_key = world
        .secrets
        .get_secret_value()
        .secret_id(executors::beta9_secrets::encryption_key_name(&id))
        .send()
        .await
        .expect("the encryption key the bootstrap kept")
        .secret_string()
        .unwrap()
        .to_owned();
    // While the environment exists, its workdir is in the data dir.
    texts.add(
        "the data dir when ready",
        files_under(stack.data_dir()),
        &id,
    );
    texts.add_carrying_the_spec(
        "the read model when ready",
        vec![
            Source::new("the read model when ready", ready.to_string()),
            Source::new(
                "the list when ready",
                stack.get_text("/v1/environments").await,
            ),
        ],
        &id,
    );
    let outputs = stack
        .get_text(&format!("/v1/environments/{id}/outputs"))
        .await;
    texts.add(
        "the outputs",
        vec![Source::new("the outputs", outputs)],
        &id,
    );

    let deleted = stack.delete(&id).await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let deleted = deleted.text().await.unwrap();
    texts.add(
        "the delete response",
        vec![Source::new("the delete response", deleted)],
        &id,
    );
    let destroyed = stack.wait_for_status(&id, "destroyed", WITHIN).await;
    texts.add_carrying_the_spec(
        "the read model when destroyed",
        vec![Source::new(
            "the read model when destroyed",
            destroyed.to_string(),
        )],
        &id,
    );

    let history = stack
        .get_text(&format!("/v1/environments/{id}/history"))
        .await;
    texts.add_carrying_the_spec("the history", vec![Source::new("history", history)], &id);
    let sse = tokio::time::timeout(WITHIN, sse)
        .await
        .expect("the SSE reader ends")
        .expect("the SSE reader");
    texts.add_carrying_the_spec("the SSE stream", vec![sse], &id);
    let nats_url = stack.nats.url();
    texts.add_carrying_the_spec(
        "the events stream",
        stream_messages(&nats_url, &stack.subjects.events_stream()).await,
        &id,
    );
    let executor_output = "preflight: the customer role was assumed";
    let logs = stack.get_text(&format!("/v1/environments/{id}/logs")).await;
    texts.add(
        "the logs endpoint",
        vec![Source::new("GET logs", logs)],
        executor_output,
    );
    texts.add(
        "the logs stream",
        stream_messages(&nats_url, &stack.subjects.logs_stream()).await,
        executor_output,
    );
    // Every message published while the lifecycle ran: events, results (gone from their
    // work-queue stream once handled), log lines, leases.
    let on_events = format!("nats message on {}.events.", stack.subjects.prefix());
    let (events, others): (Vec<Source>, Vec<Source>) = tap
        .sources()
        .into_iter()
        .partition(|s| s.name.starts_with(&on_events));
    assert!(
        others
            .iter()
            .any(|s| s.name.ends_with(&stack.subjects.result(&id))),
        "the tap heard the results"
    );
    texts.add_carrying_the_spec("the events published", events, &id);
    texts.add("the other NATS messages", others, &id);
    let process_logs = stack
        .process_logs()
        .into_iter()
        .map(|(name, text)| Source::new(format!("process log {name}"), text))
        .collect();
    texts.add("the processes' logs", process_logs, &id);
    texts.add(
        "the tools' runs",
        vec![Source::new(
            "terraform/helm arguments and environments",
            world.tool_runs(),
        )],
        &id,
    );
    // What is left after destroy (on aws the workdir is gone).
    texts.others.extend(files_under(stack.data_dir()));

    let secrets = [
        Canary {
            name: "the database password",
            value: DB_PASSWORD,
        },
        Canary {
            name: "the encryption key",
            value: &encryption_key,
        },
    ];
    let external_id = Canary {
        name: "the external id",
        value: EXTERNAL_ID,
    };
    assert_absent(&texts.others, &[secrets[0], secrets[1], external_id]);
    assert_absent(&texts.carrying_the_spec, &secrets);
    // Known and documented (docs/ARCHITECTURE.md, "Not yet true of it"; issue 10): the external
    // id is part of the submitted spec, so events, jobs and read models still carry it. When
    // that is fixed this fails: search those texts for it too.
    assert!(
        found(&texts.carrying_the_spec, EXTERNAL_ID) > 0,
        "the external id no longer reaches events and read models: add it to their search"
    );
}
