//! A [`Stack`] set up for the `aws` provider, as `tests/tests/aws.rs` and
//! `tests/tests/bootstrap.rs` run it: the executor's real `aws-sdk-sts` client against an STS
//! (moto's, or the stand-in's), Terraform's and Helm's command lines played by the stand-ins
//! built into the binary behind wrapper scripts on `PROVISIONER_TERRAFORM_BIN` /
//! `PROVISIONER_HELM_BIN` (as a deployment would configure the real ones), and the cluster the
//! outputs name pointed at a stand-in Kubernetes API.
//!
//! The wrappers also record, in [`TOOL_RUNS`] of their directory, the arguments and the
//! environment of every run (never a file's contents: the values file helm reads holds the
//! database password by design), and the helm wrapper can be made to take its time over the
//! `beta9` release's install once ([`slow_down_next_beta9_install`]).

use std::path::{Path, PathBuf};

use domain::spec::SIMULATE_FILE;

use crate::{Stack, StackOptions, binary_dir};

pub const BUCKET: &str = "acme-provisioner-state";
pub const EXTERNAL_ID: &str = "canary-ext-id-3c9d1f";
pub const ACCOUNT: &str = "210987654321";
/// The database password the customer's RDS secret holds.
pub const DB_PASSWORD: &str = "canary-db-password-77e1";

/// The raw bytes of [`SECRETS_KEY`], themselves a canary.
pub const SECRETS_KEY_BYTES: &[u8; 32] = b"canary-secrets-key-0123456789abc";
/// `PROVISIONER_SECRETS_KEY` of the `aws` stacks (the API's and the executor's): the base64 of
/// [`SECRETS_KEY_BYTES`].
pub const SECRETS_KEY: &str = "Y2FuYXJ5LXNlY3JldHMta2V5LTAxMjM0NTY3ODlhYmM=";

/// [`SECRETS_KEY`] as the API's and the executor's settings hold it.
pub fn sealing_key() -> domain::sealed::SealingKey {
    domain::sealed::SealingKey::from_bytes(SECRETS_KEY_BYTES).expect("32 bytes")
}

/// The file, in the tools' directory, the wrappers append each run's arguments and environment
/// to.
pub const TOOL_RUNS: &str = "tool-runs.log";
/// While this file is in the tools' directory, the next install of the `beta9` release removes
/// it, writes its process id ([`slow_beta9_helm_pid`]) and a `simulate.json` that makes the
/// helm stand-in's install take 60 s into the workdir (the executor removes that file at the
/// next step's start: fault injection is the sandbox's), and runs the stand-in.
const SLOW_BETA9: &str = "slow-beta9-install";
/// The line the helm wrapper records when it begins such a slow install.
pub const SLOW_BETA9_STARTED: &str = "slow beta9 install: sleeping";
/// Where the slow install's helm (the stand-in, exec'd by the wrapper) writes its process id.
const SLOW_BETA9_PID: &str = "slow-beta9-install.pid";

/// `terraform` and `helm` on the executor's settings: the stand-ins built into the binary; the
/// cluster endpoint terraform reports (the stand-in's `https://….sandbox.invalid`) is replaced by
/// `cluster`, and the database's password secret by `database_secret_arn`, as a real apply
/// reports the real cluster's and the secret RDS made.
pub fn tools(dir: &Path, cluster: &str, database_secret_arn: &str) -> (PathBuf, PathBuf) {
    let provisioner = binary_dir().join("provisioner");
    let runs = dir.join(TOOL_RUNS);
    let slow = dir.join(SLOW_BETA9);
    let pid = dir.join(SLOW_BETA9_PID);
    let write = |tool: &str| {
        let path = dir.join(tool);
        let standin = format!("'{}' standin {tool}", provisioner.display());
        let record = format!(
            "{{ echo '=== {tool}'; printf 'arg %s\\n' \"$@\"; env | sed 's/^/env /'; }} >> '{}'\n",
            runs.display()
        );
        let script = if tool == "terraform" {
            format!(
                "#!/bin/sh\n{record}if [ \"$1\" = output ]; then\n  out=$({standin} \"$@\") || exit $?\n  printf '%s\\n' \"$out\" | sed -e 's#\"https://[0-9a-f]*[.]sandbox[.]invalid\"#\"{cluster}\"#' -e 's#\"master-user-secret-[0-9a-f]*\"#\"{database_secret_arn}\"#'\n  exit 0\nfi\nexec {standin} \"$@\"\n"
            )
        } else {
            let slow = slow.display();
            let runs = runs.display();
            let pid = pid.display();
            format!(
                "#!/bin/sh\n{record}if [ \"$1 $2 $3\" = 'upgrade --install beta9' ] && rm '{slow}' 2>/dev/null; then\n  echo $$ > '{pid}'\n  echo '{{\"apply_seconds\": 60}}' > {SIMULATE_FILE}\n  echo '{SLOW_BETA9_STARTED}' >> '{runs}'\nfi\nexec {standin} \"$@\"\n"
            )
        };
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    };
    (write("terraform"), write("helm"))
}

/// What the wrappers in `dir` recorded so far (empty before the first run).
pub fn tool_runs(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(TOOL_RUNS)).unwrap_or_default()
}

/// Makes the next install of the `beta9` release (only that one) take a minute in helm, so a
/// test can act in the middle of the bootstrap; [`SLOW_BETA9_STARTED`] in [`tool_runs`] says it
/// began.
pub fn slow_down_next_beta9_install(dir: &Path) {
    std::fs::write(dir.join(SLOW_BETA9), "").unwrap();
}

/// The process id of the helm of the slow `beta9` install, once it began.
pub fn slow_beta9_helm_pid(dir: &Path) -> i32 {
    let text = std::fs::read_to_string(dir.join(SLOW_BETA9_PID)).unwrap();
    text.trim().parse().unwrap()
}

/// The options of a stack whose executor reaches STS (and Secrets Manager) at `sts_endpoint`
/// with its own (test) keys, and the cluster at `cluster`; the wrappers go into `tools_dir`.
pub fn aws_stack_options(
    sts_endpoint: &str,
    tools_dir: &Path,
    cluster: &str,
    database_secret_arn: &str,
) -> StackOptions {
    let (terraform, helm) = tools(tools_dir, cluster, database_secret_arn);
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    StackOptions {
        api_env: env(&[
            ("PROVISIONER_PROVIDERS", "sandbox,aws"),
            ("PROVISIONER_TF_STATE_BUCKET", BUCKET),
            ("PROVISIONER_SECRETS_KEY", SECRETS_KEY),
        ]),
        executor_env: env(&[
            ("PROVISIONER_TF_STATE_BUCKET", BUCKET),
            ("PROVISIONER_SECRETS_KEY", SECRETS_KEY),
            ("PROVISIONER_TERRAFORM_BIN", terraform.to_str().unwrap()),
            ("PROVISIONER_HELM_BIN", helm.to_str().unwrap()),
            ("PROVISIONER_AWS_STS_ENDPOINT", sts_endpoint),
            // moto serves every API on one port.
            ("PROVISIONER_AWS_SECRETSMANAGER_ENDPOINT", sts_endpoint),
            // The executor's own identity, through the standard chain (its environment here).
            ("AWS_ACCESS_KEY_ID", "AKIDEXECUTOR000000000"),
            ("AWS_SECRET_ACCESS_KEY", "executor-secret-access-key"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]),
        ..StackOptions::default()
    }
}

/// A stack of [`aws_stack_options`].
pub async fn aws_stack(
    sts_endpoint: &str,
    tools_dir: &Path,
    cluster: &str,
    database_secret_arn: &str,
) -> Stack {
    Stack::start_with(aws_stack_options(
        sts_endpoint,
        tools_dir,
        cluster,
        database_secret_arn,
    ))
    .await
}

/// Secrets Manager at `endpoint` as the customer role the executor assumes (moto keeps each
/// account's secrets apart).
pub async fn customer_secrets(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    use executors::customer_account::{AwsSettings, CustomerAccounts, ExecutorIdentity};
    let accounts = CustomerAccounts::new(AwsSettings {
        sts_endpoint: Some(endpoint.to_owned()),
        secrets_manager_endpoint: Some(endpoint.to_owned()),
        identity: ExecutorIdentity::Static {
            access_key_id: "AKIDTEST".to_owned(),
            secret_access_key: "test".to_owned(),
        },
        ..AwsSettings::default()
    });
    let spec = domain::config::parse(&aws_yaml("setup"), domain::config::Format::Yaml).unwrap();
    let session = accounts
        .preflight(
            "env_setup",
            "us-east-1",
            spec.cloud.customer_role().as_ref(),
        )
        .await
        .expect("moto lets the test assume the role");
    accounts
        .secrets_manager("us-east-1", &session.credentials)
        .await
}

/// Makes the secret RDS makes for the instance's master password ([`DB_PASSWORD`]) in the
/// customer's Secrets Manager; returns its ARN.
pub async fn rds_password_secret(secrets: &aws_sdk_secretsmanager::Client) -> String {
    secrets
        .create_secret()
        .name("rds-db-acme")
        .secret_string(format!(
            "{{\"username\":\"beta9\",\"password\":\"{DB_PASSWORD}\"}}"
        ))
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

/// The MetaConfig of an `aws` environment `name` in [`ACCOUNT`], small profile.
pub fn aws_yaml(name: &str) -> String {
    format!(
        "name: {name}\ncloud:\n  provider: aws\n  region: us-east-1\n  account_id: \"{ACCOUNT}\"\n  role_arn: arn:aws:iam::{ACCOUNT}:role/beta9-provisioner\n  external_id: {EXTERNAL_ID}\ncluster:\n  profile: small\n"
    )
}
