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
    DB_PASSWORD, EXTERNAL_ID, SECRETS_KEY, SECRETS_KEY_BYTES, SLOW_BETA9_STARTED,
    aws_stack_options, aws_yaml, customer_secrets, rds_password_secret, slow_beta9_helm_pid,
    slow_down_next_beta9_install, tool_runs,
};
use system_tests::canary::{
    Canary, Source, WireTap, all_stream_messages, assert_absent, files_under, search,
    sse_text_until,
};
use system_tests::kube_api::{KubeBehaviour, StandinKubeApi, StandinNode};
use system_tests::{Stack, StackOptions, TOKEN, count};

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

/// Every text of one lifecycle that is searched.
#[derive(Default)]
struct Texts {
    sources: Vec<Source>,
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
        self.sources.extend(sources);
    }
}

/// The executor's own AWS secret key and session token (its identity through the standard
/// chain, here its environment).
const EXECUTOR_SECRET_KEY: &str = "canary-executor-secret-key-4a0b";
const EXECUTOR_SESSION_TOKEN: &str = "canary-executor-session-token-92cd";
/// A client token the API does not know (`PROVISIONER_TOKEN` of a refused CLI run).
const UNKNOWN_CLIENT_TOKEN: &str = "canary-client-token-d41f";

/// The session token inside an EKS token (`k8s-aws-v1.` + the base64url of a presigned STS
/// `GetCallerIdentity` URL): the assumed customer session's own secret.
fn session_token_in(eks_token: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = eks_token.strip_prefix("k8s-aws-v1.")?;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    let url = reqwest::Url::parse(std::str::from_utf8(&url).ok()?).ok()?;
    url.query_pairs()
        .find(|(name, _)| name == "X-Amz-Security-Token")
        .map(|(_, value)| value.into_owned())
}

/// A client verb of the binary against the stack, with `token` as `PROVISIONER_TOKEN` and an
/// empty home (no config file): its exit status, stdout and stderr as one text.
fn client_verb(stack: &Stack, args: &[&str], token: &str) -> String {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(system_tests::binary_dir().join("provisioner"))
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("PROVISIONER_API_URL", &stack.base_url)
        .env("PROVISIONER_TOKEN", token)
        .output()
        .expect("run provisioner");
    format!(
        "{:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Issue 10: canaries in every secret input of an `aws` lifecycle — the external id, the
/// database password and the encryption key (Secrets Manager), the executor's own AWS secret key
/// and session token, the assumed customer session's token (inside the EKS tokens), the EKS
/// tokens themselves, the admin token, a client token, the secrets key — and none of them in
/// anything the stack says or leaves: every log line of both processes at `trace`, events,
/// read models, history, SSE, every JetStream message (heard on the wire, and what every stream
/// and key-value bucket keeps after), API responses and error messages (some provoked), the
/// client verbs' output, the processes' arguments, terraform's and helm's arguments and
/// environments, and the files left in the data directory. After destroy, the secrets bucket
/// keeps nothing of the environment.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_of_a_whole_aws_lifecycle_shows_anywhere() {
    let world = AwsWorld::start(ready_cluster()).await;
    let stack = Stack::start_with(StackOptions {
        log_filter: Some("trace".to_owned()),
        ..world.stack_options(&[
            ("AWS_SECRET_ACCESS_KEY", EXECUTOR_SECRET_KEY),
            ("AWS_SESSION_TOKEN", EXECUTOR_SESSION_TOKEN),
        ])
    })
    .await;
    let tap = WireTap::start(&stack.nats.url(), &stack.subjects).await;
    let mut texts = Texts::default();

    // Refusals that see the secrets: each answer (and the log) must not repeat them.
    let mut refusals = Vec::new();
    for (what, document) in [
        (
            "an invalid external id",
            aws_yaml("canary").replace(EXTERNAL_ID, &format!("{EXTERNAL_ID}!~")),
        ),
        (
            "a document that does not parse, at the external id",
            aws_yaml("canary").replace(
                &format!("external_id: {EXTERNAL_ID}"),
                &format!("external_id: [{EXTERNAL_ID}\n  x: }}"),
            ),
        ),
        (
            "an unknown field beside the external id",
            aws_yaml("canary").replace(
                &format!("external_id: {EXTERNAL_ID}"),
                &format!("external_id: {EXTERNAL_ID}\n  externalid: {EXTERNAL_ID}"),
            ),
        ),
    ] {
        let refused = stack.create(&document).await;
        assert!(refused.status().is_client_error(), "{what}");
        refusals.push(Source::new(
            format!("the refusal of {what}"),
            refused.text().await.unwrap(),
        ));
    }
    texts.add("the refusals", refusals, "\"error\"");

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
    let all_sse = sse_text_until(&stack.client, "/v1/events", "InfraDestroyed", WITHIN);

    let ready = stack.wait_for_status(&id, "ready", WITHIN).await;
    assert_eq!(
        ready["spec"]["cloud"]["external_id"],
        serde_json::json!({"sealed": true}),
        "{ready}"
    );
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
    texts.add(
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
    // A token issued through the API (its create answer, the one place it is shown, is not
    // searched): used, then revoked and refused.
    let issued = stack.issue_token("default", "viewer").await;
    let issued_token = issued.token();
    let by_issued = client_verb(&stack, &["env", "get", &id, "-o", "json"], issued_token);
    let listed: serde_json::Value = stack
        .request(reqwest::Method::GET, "/v1/tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token_id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    let revoked = stack
        .request(reqwest::Method::DELETE, &format!("/v1/tokens/{token_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let refused_revoked = client_verb(&stack, &["env", "get", &id], issued_token);
    assert!(by_issued.contains("\"status\""), "{by_issued}");
    assert!(
        refused_revoked.contains("unauthorized"),
        "{refused_revoked}"
    );
    texts.add(
        "the client verbs",
        vec![
            Source::new("env get with an issued token", by_issued),
            Source::new("env get with a revoked token", refused_revoked),
            Source::new("the token list", listed.to_string()),
            Source::new(
                "env get -o json",
                client_verb(&stack, &["env", "get", &id, "-o", "json"], TOKEN),
            ),
            Source::new(
                "env history",
                client_verb(&stack, &["env", "history", &id], TOKEN),
            ),
            Source::new(
                "env get with an unknown token",
                client_verb(&stack, &["env", "get", &id], UNKNOWN_CLIENT_TOKEN),
            ),
        ],
        &id,
    );
    // A bearer token the API refuses, and a retry it refuses (the environment is not failed).
    let unknown = reqwest::Client::new()
        .get(format!("{}/v1/environments", stack.base_url))
        .bearer_auth(UNKNOWN_CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let retried = stack.retry(&id).await;
    assert!(retried.status().is_client_error());
    texts.add(
        "the refused requests",
        vec![
            Source::new("401", unknown.text().await.unwrap()),
            Source::new("retry refused", retried.text().await.unwrap()),
        ],
        "\"error\"",
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
    texts.add(
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
    texts.add("the history", vec![Source::new("history", history)], &id);
    for sse in [sse, all_sse] {
        let sse = tokio::time::timeout(WITHIN, sse)
            .await
            .expect("the SSE reader ends")
            .expect("the SSE reader");
        texts.add("an SSE stream", vec![sse], &id);
    }
    let nats_url = stack.nats.url();
    let executor_output = "preflight: the customer role was assumed";
    let logs = stack.get_text(&format!("/v1/environments/{id}/logs")).await;
    texts.add(
        "the logs endpoint",
        vec![Source::new("GET logs", logs)],
        executor_output,
    );
    // The secrets bucket forgets a destroyed environment (the process manager, on its final
    // event), a little after the read model says destroyed.
    let secrets_bucket = async_nats::jetstream::new(async_nats::connect(&nats_url).await.unwrap())
        .get_key_value(stack.subjects.secrets_bucket())
        .await
        .expect("the secrets bucket");
    let deadline = Instant::now() + WITHIN;
    while secrets_bucket.get(&id).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the sealed external id outlived the environment"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What every stream and key-value bucket keeps now.
    let (streams, kept) = all_stream_messages(&nats_url, &stack.subjects).await;
    for expected in [
        stack.subjects.events_stream(),
        stack.subjects.logs_stream(),
        format!("KV_{}", stack.subjects.secrets_bucket()),
        format!("KV_{}", stack.subjects.leases_bucket()),
    ] {
        assert!(streams.contains(&expected), "{expected} in {streams:?}");
    }
    texts.add("what the streams keep", kept, &id);
    // Every message published while the lifecycle ran: events, results (gone from their
    // work-queue stream once handled), log lines, leases, the sealed value.
    let heard = tap.sources();
    assert!(
        heard
            .iter()
            .any(|s| s.name.ends_with(&stack.subjects.result(&id))),
        "the tap heard the results"
    );
    assert!(
        heard.iter().any(|s| s
            .name
            .contains(&format!("$KV.{}.", stack.subjects.secrets_bucket()))),
        "the tap heard the sealed value"
    );
    texts.add("the NATS messages", heard, &id);
    let process_logs: Vec<Source> = stack
        .process_logs()
        .into_iter()
        .map(|(name, text)| Source::new(format!("process log {name}"), text))
        .collect();
    assert!(
        process_logs.iter().any(|s| s.text.contains("TRACE")),
        "the processes log at trace"
    );
    texts.add("the processes' logs", process_logs, &id);
    let arguments: Vec<Source> = [Some(&stack.api), stack.executor.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|process| process.id())
        .filter_map(|pid| system_tests::procfs::cmdline(pid).map(|line| (pid, line)))
        .map(|(pid, line)| Source::new(format!("the arguments of process {pid}"), line))
        .collect();
    texts.add("the processes' arguments", arguments, "provisioner");
    texts.add(
        "the tools' runs",
        vec![Source::new(
            "terraform/helm arguments and environments",
            world.tool_runs(),
        )],
        &id,
    );
    // What is left after destroy (on aws the workdir is gone).
    texts.sources.extend(files_under(stack.data_dir()));

    let eks_tokens: Vec<String> = world
        .cluster
        .authorizations()
        .into_iter()
        .flatten()
        .filter_map(|header| header.strip_prefix("Bearer ").map(str::to_owned))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(!eks_tokens.is_empty(), "the executor reached the cluster");
    let session_tokens: Vec<String> = eks_tokens
        .iter()
        .filter_map(|token| session_token_in(token))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        !session_tokens.is_empty(),
        "the EKS tokens carry the customer session's token"
    );
    let key_bytes = std::str::from_utf8(SECRETS_KEY_BYTES).unwrap();
    let mut canaries = vec![
        Canary {
            name: "the external id",
            value: EXTERNAL_ID,
        },
        Canary {
            name: "the database password",
            value: DB_PASSWORD,
        },
        Canary {
            name: "the encryption key",
            value: &encryption_key,
        },
        Canary {
            name: "the executor's AWS secret key",
            value: EXECUTOR_SECRET_KEY,
        },
        Canary {
            name: "the executor's AWS session token",
            value: EXECUTOR_SESSION_TOKEN,
        },
        Canary {
            name: "the admin token",
            value: TOKEN,
        },
        Canary {
            name: "a client token",
            value: UNKNOWN_CLIENT_TOKEN,
        },
        Canary {
            name: "an issued token",
            value: issued_token,
        },
        Canary {
            name: "the secrets key",
            value: SECRETS_KEY,
        },
        Canary {
            name: "the secrets key's bytes",
            value: key_bytes,
        },
    ];
    canaries.extend(eks_tokens.iter().map(|token| Canary {
        name: "an EKS token",
        value: token,
    }));
    canaries.extend(session_tokens.iter().map(|token| Canary {
        name: "the customer session's token",
        value: token,
    }));
    assert_absent(&texts.sources, &canaries);
}
