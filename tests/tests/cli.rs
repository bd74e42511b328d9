//! The client verbs of the `provisioner` binary against a running deployment.

use serde_json::Value;
use std::process::Output;
use system_tests::{ApiClient, App, binary_dir, sandbox_yaml};

fn provisioner(stack: &ApiClient, args: &[&str]) -> Output {
    std::process::Command::new(binary_dir().join("provisioner"))
        .args(args)
        .env("PROVISIONER_API_URL", &stack.base_url)
        .env("PROVISIONER_TOKEN", stack.token())
        .output()
        .expect("run provisioner")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json on stdout")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_watches_lists_shows_logs_and_destroys_an_environment() {
    let stack = system_tests::Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.yaml");
    std::fs::write(&file, sandbox_yaml("from-cli", "")).unwrap();

    let created = stdout_json(&provisioner(
        &stack,
        &["env", "create", "-f", file.to_str().unwrap(), "-o", "json"],
    ));
    let id = created["id"].as_str().unwrap().to_owned();

    // watch follows the live stream and exits 0 once the environment is ready (plain lines:
    // stdout is no terminal here).
    let watch = provisioner(&stack, &["env", "watch", &id]);
    assert_eq!(watch.status.code(), Some(0));
    let watched = String::from_utf8_lossy(&watch.stdout);
    assert!(watched.contains("BootstrapCompleted"), "{watched}");
    assert!(watched.contains("-> ready"), "{watched}");

    let list = stdout_json(&provisioner(
        &stack,
        &["env", "list", "--name", "from-cli", "-o", "json"],
    ));
    assert_eq!(list["items"][0]["id"], id.as_str());
    // By default, a table for people: headers, then a row per environment.
    let table = provisioner(&stack, &["env", "list", "--name", "from-cli"]);
    assert_eq!(table.status.code(), Some(0));
    let table = String::from_utf8_lossy(&table.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "STATUS", "PROVIDER", "COST/MONTH", "CREATED"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        [id.as_str(), "from-cli", "ready", "sandbox"],
        "{table}"
    );
    // Retrying an environment that has not failed is a conflict.
    let conflict = provisioner(&stack, &["env", "retry", &id]);
    assert_eq!(conflict.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&conflict.stderr);
    assert!(stderr.starts_with("error: not_failed: "), "{stderr}");

    // The outputs of a ready environment: the reported ones, never a sensitive one.
    let outputs = stdout_json(&provisioner(&stack, &["env", "outputs", &id, "-o", "json"]));
    assert_eq!(outputs["status"], "ready");
    for name in domain::outputs::InfraOutput::ALL {
        let shown = outputs["outputs"].get(name.name()).is_some();
        assert_eq!(shown, !name.is_sensitive(), "{name}: {outputs}");
    }

    let logs = provisioner(&stack, &["env", "logs", &id]);
    assert!(logs.status.success());
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("Apply complete!"), "{logs}");

    let deleted = stdout_json(&provisioner(&stack, &["env", "delete", &id, "-o", "json"]));
    assert_eq!(deleted["status"], "destroy_queued");
    let watch = provisioner(&stack, &["env", "watch", &id]);
    assert_eq!(watch.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&watch.stdout).contains("-> destroyed"));

    let history = stdout_json(&provisioner(&stack, &["env", "history", &id, "-o", "json"]));
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["type"],
        "InfraDestroyed"
    );
    // For scripts, watch prints each event as JSON, one per line.
    let events = provisioner(&stack, &["env", "watch", &id, "-o", "json"]);
    assert_eq!(events.status.code(), Some(0));
    let types: Vec<String> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line")["type"].to_string())
        .collect();
    assert_eq!(types.len(), history.as_array().unwrap().len());
    assert_eq!(types.last().unwrap(), "\"InfraDestroyed\"");

    // A bad file is refused with the API's field errors and a non-zero exit.
    std::fs::write(&file, "name: Bad Name\ncloud: {provider: sandbox}\n").unwrap();
    let refused = provisioner(&stack, &["env", "create", "-f", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("error: validation_failed: ") && stderr.contains("\n  name: "),
        "the API's code, message and each detail's path: {stderr}"
    );

    // An environment whose infrastructure fails: watch ends with exit 7 and says why.
    std::fs::write(
        &file,
        sandbox_yaml("cli-fails", "    apply_seconds: 0.2\n    fail: infra\n"),
    )
    .unwrap();
    let created = stdout_json(&provisioner(
        &stack,
        &["env", "create", "-f", file.to_str().unwrap(), "-o", "json"],
    ));
    let failing = created["id"].as_str().unwrap();
    let watch = provisioner(&stack, &["env", "watch", failing, "--plain"]);
    assert_eq!(watch.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&watch.stdout).contains("-> failed"));
    let stderr = String::from_utf8_lossy(&watch.stderr);
    assert!(
        stderr.starts_with("error: the environment failed in its infra step: ")
            && stderr.contains("simulated infra failure"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn results_parse_back_as_json_and_yaml_and_errors_have_their_exit_codes() {
    let app = App::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.yaml");
    std::fs::write(&file, sandbox_yaml("cli-formats", "")).unwrap();
    let file = file.to_str().unwrap();
    let created = stdout_json(&provisioner(
        &app,
        &["env", "create", "-f", file, "-o", "json"],
    ));
    let id = created["id"].as_str().unwrap();

    // A plan is the same each time: its YAML is its JSON.
    let json = stdout_json(&provisioner(&app, &["plan", "-f", file, "-o", "json"]));
    let yaml = provisioner(&app, &["plan", "-f", file, "-o", "yaml"]);
    assert_eq!(yaml.status.code(), Some(0));
    let yaml: Value = serde_saphyr::from_slice(&yaml.stdout).expect("yaml on stdout");
    assert_eq!(yaml, json);
    assert_eq!(json["name"], "cli-formats");
    // An environment moves on between two reads (the process manager starts its step).
    let json = stdout_json(&provisioner(&app, &["env", "get", id, "-o", "json"]));
    let yaml = provisioner(&app, &["env", "get", id, "-o", "yaml"]);
    assert_eq!(yaml.status.code(), Some(0));
    let yaml: Value = serde_saphyr::from_slice(&yaml.stdout).expect("yaml on stdout");
    for field in ["id", "name", "spec", "created_at"] {
        assert_eq!(yaml[field], json[field], "{field}");
    }
    let table = provisioner(&app, &["env", "get", id]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("FIELD") && table.contains("CONDITION"),
        "{table}"
    );

    // The same name again: a conflict.
    let taken = provisioner(&app, &["env", "create", "-f", file]);
    assert_eq!(taken.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&taken.stderr).starts_with("error: name_taken: "));
    // No such environment.
    let missing = provisioner(&app, &["env", "get", "env_01jd0000000000000000000000"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("error: not_found: "));
    // A wrong token.
    let refused = provisioner_alone(
        &["env", "list"],
        &[
            ("PROVISIONER_API_URL", &app.base_url),
            ("PROVISIONER_TOKEN", "pvt_wrong"),
        ],
    );
    assert_eq!(refused.status.code(), Some(5));
    // Nothing listening.
    let unreachable = provisioner_alone(
        &["env", "list"],
        &[
            ("PROVISIONER_API_URL", "http://127.0.0.1:1"),
            ("PROVISIONER_TOKEN", "pvt_x"),
        ],
    );
    assert_eq!(unreachable.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"));

    // No executor runs here: the environment never settles, and a watch gives up at its timeout.
    let watch = provisioner(&app, &["env", "watch", id, "--plain", "--timeout", "1"]);
    assert_eq!(watch.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&watch.stderr).contains("gave up after --timeout 1s"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_file_gives_url_and_token_below_flags_and_environment_and_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = App::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let content = format!("api_url: {}\ntoken: {}\n", app.base_url, app.token());
    let write_private = |path: &std::path::Path| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &content).unwrap();
        std::fs::set_permissions(path, PermissionsExt::from_mode(0o600)).unwrap();
    };
    let (xdg, home) = (dir.path().join("xdg"), dir.path().join("home"));
    let config = xdg.join("provisioner/config.yaml");
    write_private(&config);
    write_private(&home.join(".config/provisioner/config.yaml"));
    let named = config.to_str().unwrap();
    let dead = "http://127.0.0.1:1";

    // The file alone: named, or at its default place.
    for env in [
        ("PROVISIONER_CONFIG", named),
        ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
        ("HOME", home.to_str().unwrap()),
    ] {
        let listed = provisioner_alone(&["env", "list", "-o", "json"], &[env]);
        assert_eq!(listed.status.code(), Some(0), "{env:?}: {listed:?}");
    }
    // The environment beats the file; a flag beats the environment.
    let env_url = provisioner_alone(
        &["env", "list"],
        &[("PROVISIONER_CONFIG", named), ("PROVISIONER_API_URL", dead)],
    );
    assert_eq!(env_url.status.code(), Some(6));
    let flag_url = provisioner_alone(
        &["env", "--api-url", &app.base_url, "list"],
        &[("PROVISIONER_CONFIG", named), ("PROVISIONER_API_URL", dead)],
    );
    assert_eq!(flag_url.status.code(), Some(0));
    let env_token = provisioner_alone(
        &["env", "list"],
        &[
            ("PROVISIONER_CONFIG", named),
            ("PROVISIONER_TOKEN", "pvt_wrong"),
        ],
    );
    assert_eq!(env_token.status.code(), Some(5));

    // A token others may read is refused, naming the file and the fix, never showing the token.
    std::fs::set_permissions(&config, PermissionsExt::from_mode(0o644)).unwrap();
    let exposed = provisioner_alone(&["env", "list"], &[("PROVISIONER_CONFIG", named)]);
    assert_eq!(exposed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&exposed.stderr);
    assert!(
        stderr.contains(named) && stderr.contains("chmod 600") && stderr.contains("644"),
        "{stderr}"
    );
    assert!(!stderr.contains(app.token()), "{stderr}");
    // A named file that is missing, or not a config file, is an error naming it.
    let missing = dir.path().join("missing.yaml");
    let refused = provisioner_alone(
        &["env", "list"],
        &[("PROVISIONER_CONFIG", missing.to_str().unwrap())],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("missing.yaml"));
    std::fs::write(&config, "api_url: ftp://example.com\n").unwrap();
    let refused = provisioner_alone(&["env", "list"], &[("PROVISIONER_CONFIG", named)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("api_url \"ftp://example.com\""));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = provisioner_alone(&["completions", shell], &[]);
        assert_eq!(script.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&script.stdout);
        assert!(script.contains("provisioner"), "{shell}: {script}");
    }
    let bash = provisioner_alone(&["completions", "bash"], &[]);
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(
        bash.contains("_provisioner()") && bash.contains("watch"),
        "{bash}"
    );
    let refused = provisioner_alone(&["completions", "tcsh"], &[]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn each_verb_has_examples_and_the_exit_codes_are_in_help() {
    let help = provisioner_alone(&["env", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Exit codes:") && help.contains("7  the watched environment failed"));
    for verb in [
        "create", "list", "get", "outputs", "delete", "retry", "watch", "history", "logs",
    ] {
        let help = provisioner_alone(&["env", verb, "--help"], &[]);
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("Examples:") && help.contains(&format!("provisioner env {verb}")),
            "{verb}: {help}"
        );
    }
    for verb in ["create", "list", "revoke"] {
        let help = provisioner_alone(&["token", verb, "--help"], &[]);
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("Examples:") && help.contains(&format!("provisioner token {verb}")),
            "token {verb}: {help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_prints_a_readable_preview_or_the_json_and_creates_nothing() {
    let app = App::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.yaml");
    std::fs::write(
        &file,
        "name: preview\ncloud:\n  provider: sandbox\ncluster:\n  profile: large\n\
         beta9:\n  workers: {gpu_enabled: true}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let output = provisioner(&app, &["plan", "-f", file]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "Plan for preview (sandbox, sandbox-local); can be created here: yes",
        "gpu nodes g5.12xlarge × 2 (0..8)",
        "aws_eks_node_group",
        "EKS control plane",
        "Monthly cost estimate (USD)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    let plan = stdout_json(&provisioner(&app, &["plan", "-f", file, "--json"]));
    let total = plan["cost"]["monthly_total"].as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("total") && l.ends_with(total)),
        "the summary's total is the API's {total}:\n{text}"
    );
    assert_eq!(plan["resources"]["by_type"]["aws_eks_node_group"], 2);

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "a plan creates nothing");

    // A bad file: the API's field errors and a non-zero exit, as for create.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: Bad Name\ncloud: {provider: sandbox}\n").unwrap();
    let refused = provisioner(&app, &["plan", "-f", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("validation_failed"));
}

/// The binary alone, with a clean environment plus `env`.
fn provisioner_alone(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(binary_dir().join("provisioner"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run provisioner")
}

#[test]
fn serve_help_lists_the_variables_and_a_bad_value_names_its_variable() {
    let help = provisioner_alone(&["serve", "--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in [
        "NATS_URL",
        "PROVISIONER_NATS_PREFIX",
        "PROVISIONER_LISTEN",
        "PROVISIONER_PROVIDERS",
        "PROVISIONER_HTTP_MAX_CONNECTIONS",
        "PROVISIONER_INFRA_TIMEOUT_SECS",
        "DATABASE_URL",
        "PROVISIONER_ADMIN_TOKEN",
    ] {
        assert!(help.contains(variable), "{variable} missing from:\n{help}");
    }

    let refused = provisioner_alone(&["serve"], &[("PROVISIONER_HTTP_MAX_CONNECTIONS", "0")]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("PROVISIONER_HTTP_MAX_CONNECTIONS=\"0\""),
        "{stderr}"
    );

    // A secret is never a flag: argv is visible to every user of the machine.
    let refused = provisioner_alone(&["env", "--token", "pvt_x", "list"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    let missing = provisioner_alone(&["env", "list"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no token"));
}

/// `provisioner executor` configured for aws with `terraform` as its Terraform: its stderr
/// once it refused to start (the check comes before any connection: NATS is unreachable).
fn executor_refusal(data_dir: &std::path::Path, terraform: &std::path::Path) -> String {
    let refused = provisioner_alone(
        &["executor"],
        &[
            ("PROVISIONER_TF_STATE_BUCKET", "acme-provisioner-state"),
            ("PROVISIONER_TERRAFORM_BIN", terraform.to_str().unwrap()),
            ("PROVISIONER_DATA_DIR", data_dir.to_str().unwrap()),
            ("NATS_URL", "nats://127.0.0.1:1"),
            ("PROVISIONER_EXECUTOR_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(!refused.status.success());
    String::from_utf8_lossy(&refused.stderr).into_owned()
}

#[test]
fn an_executor_configured_for_aws_refuses_to_start_without_a_new_enough_terraform() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = executor_refusal(dir.path(), &dir.path().join("no-terraform-here"));
    assert!(
        stderr.contains("Terraform at") && stderr.contains("no-terraform-here"),
        "{stderr}"
    );
    assert!(stderr.contains("PROVISIONER_TERRAFORM_BIN"), "{stderr}");

    // A release older than the rendering needs (S3-native locking).
    let old = dir.path().join("terraform");
    std::fs::write(
        &old,
        "#!/bin/sh\necho '{\"terraform_version\":\"1.9.8\"}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let stderr = executor_refusal(dir.path(), &old);
    assert!(
        stderr.contains("1.9.8") && stderr.contains("older than 1.10.0"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_resumes_after_the_api_restarts_and_shows_each_event_once() {
    let mut stack = system_tests::Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.yaml");
    std::fs::write(&file, sandbox_yaml("cli-resumes", "    apply_seconds: 3\n")).unwrap();
    let created = stdout_json(&provisioner(
        &stack,
        &["env", "create", "-f", file.to_str().unwrap(), "-o", "json"],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    let watch = std::process::Command::new(binary_dir().join("provisioner"))
        .args(["env", "watch", &id, "--plain"])
        .env("PROVISIONER_API_URL", &stack.base_url)
        .env("PROVISIONER_TOKEN", stack.token())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run provisioner");
    // The API goes away while the infrastructure is applied, and comes back.
    stack.wait_for_run_start(&id).await;
    stack.restart_api(&[], &[]).await;

    let watch = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&watch.stdout);
    assert_eq!(
        watch.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&watch.stderr)
    );
    let sequences: Vec<u64> = stdout
        .lines()
        .map(|line| {
            line[1..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "every event once, in order:\n{stdout}");
    assert!(
        stdout.lines().last().unwrap().contains("-> ready"),
        "{stdout}"
    );
}

/// `token create|list|revoke`: the token printed once works with its role and tenant, the list
/// never shows it, a revoked one is refused (exit 5), and an operator may not manage tokens.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_issues_lists_and_revokes_tokens() {
    let app = App::spawn().await;
    let created = stdout_json(&provisioner(
        &app,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--tenant",
            "acme",
            "--role",
            "operator",
            "--expires-in-days",
            "30",
            "-o",
            "json",
        ],
    ));
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let table = provisioner(
        &app,
        &[
            "token", "create", "--name", "people", "--tenant", "acme", "--role", "viewer",
        ],
    );
    let printed = String::from_utf8_lossy(&table.stdout);
    assert!(printed.contains("viewer of tenant acme"), "{printed}");
    assert!(printed.contains("shown only now"), "{printed}");

    let as_operator = |args: &[&str]| {
        std::process::Command::new(binary_dir().join("provisioner"))
            .args(args)
            .env("PROVISIONER_API_URL", &app.base_url)
            .env("PROVISIONER_TOKEN", &token)
            .output()
            .expect("run provisioner")
    };
    let listed = as_operator(&["env", "list", "-o", "json"]);
    assert_eq!(stdout_json(&listed)["items"], serde_json::json!([]));
    let forbidden = as_operator(&["token", "list"]);
    assert_eq!(forbidden.status.code(), Some(5), "{forbidden:?}");

    let list = provisioner(&app, &["token", "list", "--tenant", "acme"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains(&id) && !list.contains(&token), "{list}");
    assert!(list.lines().next().unwrap().contains("ROLE"), "{list}");

    let revoked = provisioner(&app, &["token", "revoke", &id]);
    assert_eq!(revoked.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&revoked.stdout).trim(),
        format!("{id}: revoked")
    );
    let refused = as_operator(&["env", "list"]);
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
}
