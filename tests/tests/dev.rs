//! `provisioner dev` as a user runs it: its private PostgreSQL and nats-server, the children it
//! starts (what they see, and that they die with it), its data directory, its token.

use nix::sys::signal::Signal;
use std::time::Duration;
use system_tests::dev::{self, DevProcess, wait_gone};
use system_tests::{procfs, sandbox_yaml, services};

const TOKEN: &str = "pvt_given_by_the_operator_0123456789";
const WITHIN: Duration = Duration::from_secs(90);

/// A scratch database on the tests' Postgres, for a dev that is given `DATABASE_URL`.
async fn scratch_database() -> String {
    let postgres = services::postgres().await;
    postgres.url(&postgres.create_database("provisioner_dev").await)
}

async fn create(dev: &DevProcess, name: &str, simulate: &str) -> String {
    let created = dev
        .client(TOKEN)
        .create(sandbox_yaml(name, simulate), "application/yaml", None)
        .await
        .expect("create");
    created["id"].as_str().expect("an id").to_owned()
}

async fn wait_for_status(dev: &DevProcess, id: &str, status: &str) {
    let client = dev.client(TOKEN);
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let view = client.get(id).await.expect("get");
        if view["status"] == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} is {} after {WITHIN:?}, not {status}",
            view["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_dev_kills_its_children_and_a_restart_reuses_its_data_alone() {
    let data = tempfile::tempdir().unwrap();
    // No DATABASE_URL, no NATS_URL: dev runs its own PostgreSQL and nats-server.
    let mut dev = DevProcess::start(data.path(), &[("PROVISIONER_ADMIN_TOKEN", TOKEN)]).await;
    let nats = dev.wait_for_child("nats-server", WITHIN).await;
    let postgres = dev.wait_for_child("postgres -D", WITHIN).await;
    // Without PROVISIONER_SECRETS_KEY, dev made one for its data dir, owner-only.
    let key_file = data.path().join("secrets.key");
    let key = std::fs::read(&key_file).expect("dev made its secrets key");
    assert_eq!(key.len(), 32);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let id = create(&dev, "orphan-check", "    apply_seconds: 60\n").await;
    let terraform = dev.wait_for_child("standin terraform apply", WITHIN).await;

    // A second dev on the same data directory is refused while the first one runs.
    let mut second = DevProcess::spawn(data.path(), &[("PROVISIONER_ADMIN_TOKEN", TOKEN)]).await;
    let status = second.wait_exit(WITHIN).await;
    assert!(!status.success(), "a second dev shared the data directory");

    dev.kill9().await;
    let survivors = wait_gone(&[nats, postgres, terraform], Duration::from_secs(15)).await;
    let survivors: Vec<_> = survivors
        .iter()
        .map(|&pid| (pid, procfs::cmdline(pid)))
        .collect();
    assert!(survivors.is_empty(), "outlived a killed dev: {survivors:?}");

    // Started again, dev finds its data: the environment carries on to ready, on one
    // nats-server per store.
    let dev = DevProcess::start(data.path(), &[("PROVISIONER_ADMIN_TOKEN", TOKEN)]).await;
    let store = data.path().join("nats");
    assert_eq!(
        procfs::find(&store.display().to_string()).len(),
        1,
        "one nats-server on {}",
        store.display()
    );
    let view = dev.client(TOKEN).get(&id).await.expect("get");
    assert_eq!(view["name"], "orphan-check", "the environment survived");
    assert_eq!(
        std::fs::read(&key_file).unwrap(),
        key,
        "the restart kept the secrets key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn children_see_none_of_the_provisioners_secrets() {
    let data = tempfile::tempdir().unwrap();
    let database_url = scratch_database().await;
    let dev = DevProcess::start(
        data.path(),
        &[
            ("PROVISIONER_ADMIN_TOKEN", TOKEN),
            ("DATABASE_URL", &database_url),
        ],
    )
    .await;
    create(&dev, "no-secrets", "    apply_seconds: 30\n").await;
    let terraform = dev.wait_for_child("standin terraform apply", WITHIN).await;
    let nats = dev.wait_for_child("nats-server", WITHIN).await;
    for pid in [terraform, nats] {
        let environ = procfs::environ(pid).expect("a running child's environment");
        let names: Vec<&str> = environ
            .iter()
            .filter_map(|entry| entry.split('=').next())
            .collect();
        for secret in ["PROVISIONER_ADMIN_TOKEN", "DATABASE_URL"] {
            assert!(
                !names.contains(&secret),
                "{:?} sees {secret}: {names:?}",
                procfs::cmdline(pid)
            );
        }
        assert!(
            !environ.iter().any(|entry| entry.contains(TOKEN)),
            "{:?} sees the token",
            procfs::cmdline(pid)
        );
        assert!(names.contains(&"PATH"), "{names:?}");
    }
    // And the parent really had them: the check reads the right processes.
    let own = procfs::environ(dev.pid()).expect("dev's environment");
    assert!(own.iter().any(|entry| entry.starts_with("DATABASE_URL=")));
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_prints_the_token_only_when_it_made_one() {
    let database_url = scratch_database().await;
    let data = tempfile::tempdir().unwrap();
    let mut given = DevProcess::start(
        data.path(),
        &[
            ("PROVISIONER_ADMIN_TOKEN", TOKEN),
            ("DATABASE_URL", &database_url),
        ],
    )
    .await;
    given.terminate();
    assert!(given.wait_exit(WITHIN).await.success());
    let printed = given.stdout();
    assert!(printed.contains("provisioner dev is running"), "{printed}");
    assert!(
        !printed.contains(TOKEN),
        "a given token was printed: {printed}"
    );

    let mut generated = DevProcess::start(data.path(), &[("DATABASE_URL", &database_url)]).await;
    generated.terminate();
    assert!(generated.wait_exit(WITHIN).await.success());
    let printed = generated.stdout();
    assert!(
        printed.contains("export PROVISIONER_TOKEN=pvt_"),
        "a generated token must be shown: {printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_restarts_a_private_server_that_died_and_exits_1_when_it_cannot() {
    // A copy of the nats-server binary this test can take away later.
    let tools = tempfile::tempdir().unwrap();
    let nats_binary = tools.path().join("nats-server");
    std::fs::copy(services::nats_binary().await, &nats_binary).expect("copy nats-server");
    let data = tempfile::tempdir().unwrap();
    let mut dev = DevProcess::start(
        data.path(),
        &[
            ("PROVISIONER_ADMIN_TOKEN", TOKEN),
            ("PROVISIONER_NATS_SERVER", nats_binary.to_str().unwrap()),
        ],
    )
    .await;

    // Each private server, killed, comes back, and the stack works on.
    for server in ["nats-server", "postgres -D"] {
        let pid = dev.wait_for_child(server, WITHIN).await;
        dev::signal(pid, Signal::SIGKILL);
        assert!(wait_gone(&[pid], Duration::from_secs(10)).await.is_empty());
        let again = dev.wait_for_child(server, WITHIN).await;
        assert_ne!(again, pid, "{server} was started again");
        dev.wait_ready(WITHIN).await;
    }
    let id = create(&dev, "after-restarts", "").await;
    wait_for_status(&dev, &id, "ready").await;

    // A server that cannot be started again stops dev, with a failing exit code.
    std::fs::remove_file(&nats_binary).unwrap();
    let pid = dev.wait_for_child("nats-server", WITHIN).await;
    dev::signal(pid, Signal::SIGKILL);
    let status = dev.wait_exit(WITHIN).await;
    assert_eq!(
        status.code(),
        Some(1),
        "dev must exit 1 without its nats-server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_serves_the_api_and_the_executor_metrics_at_one_endpoint() {
    let data = tempfile::tempdir().unwrap();
    let database_url = scratch_database().await;
    let dev = DevProcess::start(
        data.path(),
        &[
            ("PROVISIONER_ADMIN_TOKEN", TOKEN),
            ("DATABASE_URL", &database_url),
        ],
    )
    .await;
    let id = create(&dev, "measured", "").await;
    wait_for_status(&dev, &id, "ready").await;
    let wanted = [
        r#"api_requests_total{route="/v1/environments",method="POST",status="202"} 1"#,
        r#"executor_jobs_total{step="infra",outcome="succeeded"} 1"#,
        r#"executor_jobs_total{step="bootstrap",outcome="succeeded"} 1"#,
        r#"provisioning_operations_total{phase="bootstrap",outcome="succeeded"} 1"#,
        "executor_jobs_in_flight 0",
    ];
    // The operations' ends are counted as the process manager consumes them: soon after.
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let scrape = reqwest::get(format!("{}/metrics", dev.base_url))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("a body");
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|series| !scrape.contains(series))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
