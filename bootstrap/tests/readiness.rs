//! The readiness checks with the real `kube` client against the stand-in Kubernetes API
//! (system-tests' `kube_api`): the ready path, nodes that never turn Ready, a gateway that never
//! becomes available, and the EKS bearer token on every request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bootstrap::cluster::{self, ClusterAuth};
use bootstrap::eks_token::{SessionCredentials, TokenSource, TokenTarget};
use bootstrap::readiness::{
    self, GATEWAY_DEPLOYMENT, GATEWAY_NAMESPACE, NodeMinimum, ReadinessTimeouts,
};
use system_tests::kube_api::{KubeBehaviour, StandinKubeApi, StandinNode};

fn timeouts(each: Duration) -> ReadinessTimeouts {
    ReadinessTimeouts {
        api: each,
        nodes: each,
        gateway: each,
        poll: Duration::from_millis(50),
    }
}

fn cpu(min: u16) -> Vec<NodeMinimum> {
    vec![NodeMinimum {
        pool: "cpu".into(),
        min,
    }]
}

/// The log lines the waits note.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<Vec<String>>>);

impl Notes {
    fn note(&self) -> impl Fn(&str) + Sync + use<> {
        let lines = self.0.clone();
        move |line: &str| lines.lock().unwrap().push(line.to_owned())
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn anonymous(api: &StandinKubeApi) -> kube::Client {
    cluster::client(&api.endpoint(), None, ClusterAuth::Anonymous).expect("a client")
}

#[tokio::test]
async fn the_cluster_answers_its_nodes_turn_ready_and_the_gateway_becomes_available() {
    let after = Duration::from_millis(300);
    let api = StandinKubeApi::start(
        KubeBehaviour::cpu_nodes_ready_after(2, after).with_deployment(
            GATEWAY_NAMESPACE,
            GATEWAY_DEPLOYMENT,
            Some(after),
        ),
    )
    .await;
    let client = anonymous(&api);
    let notes = Notes::default();
    let note = notes.note();
    let limits = timeouts(Duration::from_secs(10));
    readiness::api_server(&client, &limits, &note)
        .await
        .expect("the API answers");
    readiness::nodes(&client, &cpu(2), &limits, &note)
        .await
        .expect("the nodes turn Ready");
    readiness::gateway(&client, &limits, &note)
        .await
        .expect("the gateway becomes available");
    let lines = notes.lines();
    assert!(
        lines.iter().any(|l| l
            == "waiting for the cluster's nodes (2 cpu Ready): pool cpu: 0 of 2 Ready (not Ready: node-1, node-2)"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "the cluster's nodes (2 cpu Ready): ready (pool cpu: 2 of 2 Ready)"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("the Deployment beta9/beta9-gateway: ready")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn nodes_that_never_turn_ready_fail_the_wait_naming_them() {
    let api = StandinKubeApi::start(KubeBehaviour {
        nodes: vec![
            StandinNode::ready_after("node-a", "cpu", Duration::ZERO),
            StandinNode::never_ready("node-b", "cpu"),
            StandinNode::never_ready("gpu-a", "gpu"),
        ],
        ..KubeBehaviour::default()
    })
    .await;
    let notes = Notes::default();
    let error = readiness::nodes(
        &anonymous(&api),
        &cpu(2),
        &timeouts(Duration::from_secs(1)),
        &notes.note(),
    )
    .await
    .expect_err("never Ready");
    assert_eq!(
        error.to_string(),
        "the cluster's nodes (2 cpu Ready) never became ready within 1s: pool cpu: 1 of 2 \
         Ready (not Ready: node-b)"
    );
}

#[tokio::test]
async fn a_gateway_that_never_becomes_available_fails_the_wait_naming_it() {
    let api = StandinKubeApi::start(
        KubeBehaviour::cpu_nodes_ready_after(1, Duration::ZERO).with_deployment(
            GATEWAY_NAMESPACE,
            GATEWAY_DEPLOYMENT,
            None,
        ),
    )
    .await;
    let notes = Notes::default();
    let error = readiness::gateway(
        &anonymous(&api),
        &timeouts(Duration::from_secs(1)),
        &notes.note(),
    )
    .await
    .expect_err("never available");
    assert_eq!(
        error.to_string(),
        "the Deployment beta9/beta9-gateway never became ready within 1s: 0 of 1 replicas \
         available"
    );
}

#[tokio::test]
async fn a_missing_gateway_and_an_unreachable_api_say_so() {
    let api = StandinKubeApi::start(KubeBehaviour::default()).await;
    let error = readiness::gateway(
        &anonymous(&api),
        &timeouts(Duration::from_millis(300)),
        &Notes::default().note(),
    )
    .await
    .expect_err("no gateway");
    assert!(
        error.to_string().ends_with(": it does not exist"),
        "{error}"
    );

    let endpoint = api.endpoint();
    drop(api);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = cluster::client(&endpoint, None, ClusterAuth::Anonymous).unwrap();
    let error = readiness::api_server(
        &client,
        &timeouts(Duration::from_millis(300)),
        &Notes::default().note(),
    )
    .await
    .expect_err("unreachable");
    assert!(
        error.to_string().starts_with(
            "the cluster's API server never became ready within 300ms: the API server did not answer"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn every_request_carries_the_eks_bearer_token() {
    let api = StandinKubeApi::start(KubeBehaviour::cpu_nodes_ready_after(1, Duration::ZERO)).await;
    let source = Arc::new(TokenSource::new(
        TokenTarget {
            cluster_name: "beta9-env-x".into(),
            region: "us-east-1".into(),
            sts_endpoint: None,
        },
        SessionCredentials {
            access_key_id: "ASIAEXAMPLE000000000".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
        },
    ));
    let client = cluster::client(&api.endpoint(), None, ClusterAuth::Eks(source.clone())).unwrap();
    let limits = timeouts(Duration::from_secs(5));
    let note = Notes::default().note();
    readiness::api_server(&client, &limits, &note)
        .await
        .unwrap();
    readiness::nodes(&client, &cpu(1), &limits, &note)
        .await
        .unwrap();
    let expected = {
        use secrecy::ExposeSecret;
        format!("Bearer {}", source.current().unwrap().expose_secret())
    };
    let seen = api.authorizations();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|auth| auth.as_deref() == Some(expected.as_str())),
        "{seen:?}"
    );
}
