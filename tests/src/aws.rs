//! The AWS peers the tests run against, on loopback:
//!
//! - [`Moto`]: `moto[server]` from PyPI (installed once into `target/test-services/python`), a
//!   real implementation of STS's API: AssumeRole returns working session credentials, and
//!   GetCallerIdentity with them answers the role's account.
//! - [`StandinSts`]: a small STS at the HTTP boundary for the refusals moto does not model
//!   (it accepts any external id): it answers AWS's real `AccessDenied` error document when the
//!   external id is not the one the role expects, and can claim another account. On the same
//!   port it answers the three Secrets Manager calls the bootstrap makes (AWS's JSON 1.1
//!   protocol: `GetSecretValue`, `CreateSecret`, `DeleteSecret`), over secrets it is given.
//!
//! Both speak STS's query protocol (form-encoded POST, XML answers), so the executor's real
//! `aws-sdk-sts` client is what the tests exercise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use local_services::pypi::{Package, PypiTools};
use nix::sys::signal::Signal;

use crate::loopback::LoopbackServer;
use crate::services::services_dir;

/// The keys the executor signs with against both peers (neither checks signatures).
pub const EXECUTOR_ACCESS_KEY_ID: &str = "AKIDEXECUTOR000000000";
pub const EXECUTOR_SECRET_ACCESS_KEY: &str = "executor-secret-access-key";

/// A moto server on a free loopback port, killed on drop.
pub struct Moto {
    endpoint: String,
    _child: tokio::process::Child,
}

impl Moto {
    /// Installs `moto[server]` if needed (first run only) and starts it.
    pub async fn start() -> Moto {
        let tools = PypiTools::new(&services_dir());
        tools
            .ensure(Package::Moto)
            .await
            .unwrap_or_else(|e| panic!("moto[server] from PyPI: {e}"));
        let (python, python_path) = tools.python();
        let port = local_services::nats::free_port().expect("a free port");
        let mut command = child_process::command(&python, Signal::SIGKILL, &[]);
        command
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(path) = python_path {
            command.env("PYTHONPATH", path);
        }
        let child = command.spawn().expect("start moto's server");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until_answering(port, Duration::from_secs(60)).await;
        Moto {
            endpoint,
            _child: child,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Waits until moto accepts connections (it listens once it can serve).
async fn wait_until_answering(port: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto did not listen on port {port} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the stand-in STS is told to do.
#[derive(Clone, Debug, Default)]
pub struct StsBehaviour {
    /// The external id every role expects; `None` accepts any (or none).
    pub expected_external_id: Option<String>,
    /// The account GetCallerIdentity claims; `None` answers the assumed role's own account.
    pub claimed_account: Option<String>,
}

/// One call the stand-in received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsCall {
    pub action: String,
    pub role_arn: Option<String>,
    pub session_name: Option<String>,
    pub duration_seconds: Option<String>,
    /// Whether an external id was sent (the value itself is not kept).
    pub sent_external_id: bool,
}

#[derive(Default)]
struct StsState {
    behaviour: StsBehaviour,
    calls: Vec<StsCall>,
    /// Session access key → the role it was issued for.
    sessions: HashMap<String, String>,
    /// Secrets Manager: name → (value, deleted).
    secrets: HashMap<String, (String, bool)>,
}

/// The stand-in STS, serving on a loopback port until dropped.
pub struct StandinSts {
    server: LoopbackServer,
    state: Arc<Mutex<StsState>>,
}

impl StandinSts {
    pub async fn start(behaviour: StsBehaviour) -> StandinSts {
        let state = Arc::new(Mutex::new(StsState {
            behaviour,
            ..StsState::default()
        }));
        let app = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .with_state(state.clone());
        StandinSts {
            server: LoopbackServer::start(app, "stand-in STS").await,
            state,
        }
    }

    /// A stand-in whose roles trust only `external_id`.
    pub async fn expecting_external_id(external_id: &str) -> StandinSts {
        StandinSts::start(StsBehaviour {
            expected_external_id: Some(external_id.to_owned()),
            ..StsBehaviour::default()
        })
        .await
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    pub fn calls(&self) -> Vec<StsCall> {
        self.state.lock().expect("state").calls.clone()
    }

    /// Stores a secret its Secrets Manager answers for `name` (or its ARN).
    pub fn put_secret(&self, name: &str, value: &str) {
        self.state
            .lock()
            .expect("state")
            .secrets
            .insert(name.to_owned(), (value.to_owned(), false));
    }

    /// Whether the secret `name` exists and was not deleted.
    pub fn has_secret(&self, name: &str) -> bool {
        self.state
            .lock()
            .expect("state")
            .secrets
            .get(name)
            .is_some_and(|(_, deleted)| !deleted)
    }
}

async fn handle(
    State(state): State<Arc<Mutex<StsState>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut state = state.lock().expect("state");
    if let Some(action) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|target| target.strip_prefix("secretsmanager."))
    {
        return secrets_manager(&mut state, action, &body);
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let action = form.get("Action").cloned().unwrap_or_default();
    state.calls.push(StsCall {
        action: action.clone(),
        role_arn: form.get("RoleArn").cloned(),
        session_name: form.get("RoleSessionName").cloned(),
        duration_seconds: form.get("DurationSeconds").cloned(),
        sent_external_id: form.contains_key("ExternalId"),
    });
    match action.as_str() {
        "AssumeRole" => assume_role(&mut state, &form),
        "GetCallerIdentity" => caller_identity(&state, &headers),
        other => error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {other} for version 2011-06-15"),
        ),
    }
}

fn assume_role(state: &mut StsState, form: &HashMap<String, String>) -> Response {
    let role_arn = form.get("RoleArn").cloned().unwrap_or_default();
    let session = form.get("RoleSessionName").cloned().unwrap_or_default();
    if let Some(expected) = &state.behaviour.expected_external_id
        && form.get("ExternalId") != Some(expected)
    {
        return error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!(
                "User: arn:aws:iam::111111111111:user/provisioner is not authorized to perform: \
                 sts:AssumeRole on resource: {role_arn}"
            ),
        );
    }
    let key = format!("ASIASTANDIN{:09}", state.sessions.len());
    state.sessions.insert(key.clone(), role_arn.clone());
    let (account, name) = role_parts(&role_arn);
    xml(format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleResult><AssumedRoleUser>\
         <AssumedRoleId>AROASTANDIN:{session}</AssumedRoleId>\
         <Arn>arn:aws:sts::{account}:assumed-role/{name}/{session}</Arn>\
         </AssumedRoleUser><Credentials>\
         <AccessKeyId>{key}</AccessKeyId>\
         <SecretAccessKey>standin-session-secret</SecretAccessKey>\
         <SessionToken>standin-session-token</SessionToken>\
         <Expiration>2099-01-01T00:00:00Z</Expiration>\
         </Credentials></AssumeRoleResult>\
         <ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata>\
         </AssumeRoleResponse>"
    ))
}

fn caller_identity(state: &StsState, headers: &axum::http::HeaderMap) -> Response {
    // `Authorization: AWS4-HMAC-SHA256 Credential=<key>/<date>/...`
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split('/').next())
        .unwrap_or_default();
    let (account, arn) = match state.sessions.get(key) {
        Some(role_arn) => {
            let (account, name) = role_parts(role_arn);
            (
                account.to_owned(),
                format!("arn:aws:sts::{account}:assumed-role/{name}/session"),
            )
        }
        None => (
            "111111111111".to_owned(),
            "arn:aws:iam::111111111111:user/provisioner".to_owned(),
        ),
    };
    let account = state.behaviour.claimed_account.clone().unwrap_or(account);
    xml(format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <GetCallerIdentityResult><Arn>{arn}</Arn><UserId>AROASTANDIN:session</UserId>\
         <Account>{account}</Account></GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata>\
         </GetCallerIdentityResponse>"
    ))
}

/// Secrets Manager's JSON 1.1 protocol, for the calls the bootstrap makes.
fn secrets_manager(state: &mut StsState, action: &str, body: &[u8]) -> Response {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let arn =
        |name: &str| format!("arn:aws:secretsmanager:us-east-1:210987654321:secret:{name}-AbCdEf");
    // A secret is named by its name or its ARN.
    let id = request["SecretId"]
        .as_str()
        .or(request["Name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let name = state
        .secrets
        .keys()
        .find(|name| **name == id || arn(name) == id)
        .cloned();
    let not_found = || {
        json_error(
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        )
    };
    match (action, name) {
        ("GetSecretValue", Some(name)) => match &state.secrets[&name] {
            (_, true) => json_error(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
            ),
            (value, false) => json_ok(serde_json::json!({
                "ARN": arn(&name), "Name": name, "SecretString": value, "VersionId": "v1",
            })),
        },
        ("CreateSecret", Some(_)) => json_error(
            "ResourceExistsException",
            "The operation failed because the secret already exists.",
        ),
        ("CreateSecret", None) => {
            let value = request["SecretString"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            state.secrets.insert(id.clone(), (value, false));
            json_ok(serde_json::json!({"ARN": arn(&id), "Name": id, "VersionId": "v1"}))
        }
        ("DeleteSecret", Some(name)) => {
            state.secrets.get_mut(&name).expect("found").1 = true;
            json_ok(serde_json::json!({
                "ARN": arn(&name), "Name": name, "DeletionDate": 4_102_444_800.0,
            }))
        }
        _ => not_found(),
    }
}

fn json_ok(body: serde_json::Value) -> Response {
    (
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

fn json_error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        serde_json::json!({"__type": code, "Message": message}).to_string(),
    )
        .into_response()
}

/// `arn:aws:iam::<account>:role/<path/name>` → (account, name).
fn role_parts(role_arn: &str) -> (&str, &str) {
    let account = role_arn.split(':').nth(4).unwrap_or("000000000000");
    let name = role_arn.rsplit('/').next().unwrap_or("role");
    (account, name)
}

fn xml(body: String) -> Response {
    ([("content-type", "text/xml")], body).into_response()
}

/// AWS's error document for the query protocol.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>standin</RequestId></ErrorResponse>"
    );
    (status, [("content-type", "text/xml")], body).into_response()
}
