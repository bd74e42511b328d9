//! Values the crates' tests build their cases from, written once: a valid spec through the real
//! parser, the metadata of an admin's request, and an environment whose first step has started.

use domain::aggregate::{Command, StepTimeouts};
use domain::config::{self, Format};
use domain::ids::{EnvironmentId, OperationId};
use domain::spec::EnvironmentSpec;
use domain::wire::{Actor, EventMetadata, RequestId};
use event_store::EventStore;

/// A valid sandbox spec named `name`, through the parser (every default).
pub fn sandbox_spec(name: &str) -> EnvironmentSpec {
    let yaml = format!("name: {name}\ncloud:\n  provider: sandbox\n");
    config::parse(&yaml, Format::Yaml).expect("valid sandbox config")
}

/// Command metadata of an admin token's request with the given request id.
pub fn admin_request(request_id: &str) -> EventMetadata {
    EventMetadata::request(
        Actor::caller("token:admin"),
        None,
        RequestId::new(request_id),
    )
}

/// A new sandbox environment named `name` whose infra step has started (events 1 and 2), as the
/// API and the process manager would have recorded them.
pub async fn started_environment(store: &EventStore, name: &str) -> (EnvironmentId, OperationId) {
    let id = EnvironmentId::generate();
    store
        .request(
            &id,
            sandbox_spec(name),
            domain::tenant::TenantId::default(),
            &admin_request("req_1"),
        )
        .await
        .expect("request");
    let requested = store.history(id.as_str()).await.expect("history");
    let operation_id = OperationId::generate();
    store
        .execute(
            id.as_str(),
            Command::StartPendingOperation {
                operation_id: operation_id.clone(),
                timeouts: StepTimeouts::DEFAULT,
            },
            &EventMetadata::trigger(&requested[0], &operation_id),
        )
        .await
        .expect("start");
    (id, operation_id)
}
