//! The one upcasting entry point: brings an event payload of any stored or published version to
//! its type's current version ([`super::current_version`]).
//!
//! Every read path goes through [`upcast`]: the aggregate's load (the event store's repository),
//! the event store's reader (history, relay, replay) and every consumer of the events stream
//! ([`crate::wire::EventEnvelope::event`]). To change a payload's shape, bump the type's version
//! in `current_version` and add a [`Step`] from the old version to `STEPS`; never tighten
//! deserialization (events are kept forever).

use serde_json::Value;

/// One migration of one event type's payload, from `from` to `from + 1`.
#[derive(Clone, Copy)]
pub(crate) struct Step {
    pub event_type: &'static str,
    pub from: u32,
    pub migrate: fn(Value) -> Result<Value, String>,
}

/// Every payload migration. None yet: every event type is still at its first version.
const STEPS: &[Step] = &[];

/// A payload at its type's current version.
#[derive(Clone, Debug, PartialEq)]
pub struct Upcasted {
    /// The version the payload now has (the stored one for a type this build does not know).
    pub version: u32,
    pub payload: Value,
}

/// Why a payload cannot be brought to its current version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("{event_type} has version {version:?}, which is not a version number")]
    NotAVersion { event_type: String, version: String },
    #[error("{event_type} version {version} is newer than this build's version {current}")]
    Newer {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("no upcaster brings {event_type} from version {version}")]
    NoStep { event_type: String, version: u32 },
    #[error("upcasting {event_type} from version {version} failed: {reason}")]
    Failed {
        event_type: String,
        version: u32,
        reason: String,
    },
}

/// Brings `payload` (the event's fields, without the type tag) of `event_type` at stored
/// `version` to the type's current version. A payload already current is returned as it is; so
/// is one of a type this build does not know (whoever decodes it reports that).
pub fn upcast(event_type: &str, version: &str, payload: Value) -> Result<Upcasted, UpcastError> {
    upcast_with(STEPS, super::current_version, event_type, version, payload)
}

pub(crate) fn upcast_with(
    steps: &[Step],
    current_version: fn(&str) -> Option<u32>,
    event_type: &str,
    version: &str,
    mut payload: Value,
) -> Result<Upcasted, UpcastError> {
    let mut at: u32 = version
        .trim()
        .parse()
        .map_err(|_| UpcastError::NotAVersion {
            event_type: event_type.to_owned(),
            version: version.to_owned(),
        })?;
    let Some(current) = current_version(event_type) else {
        return Ok(Upcasted {
            version: at,
            payload,
        });
    };
    if at > current {
        return Err(UpcastError::Newer {
            event_type: event_type.to_owned(),
            version: at,
            current,
        });
    }
    while at < current {
        let step = steps
            .iter()
            .find(|step| step.event_type == event_type && step.from == at)
            .ok_or_else(|| UpcastError::NoStep {
                event_type: event_type.to_owned(),
                version: at,
            })?;
        payload = (step.migrate)(payload).map_err(|reason| UpcastError::Failed {
            event_type: event_type.to_owned(),
            version: at,
            reason,
        })?;
        at += 1;
    }
    Ok(Upcasted {
        version: at,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Event;
    use crate::wire::EventEnvelope;
    use serde_json::json;

    /// A fixture, not product history: `InfraApplied` as if its version 1 had carried the
    /// outputs as a list of `[name, value]` pairs and version 2 (today's shape) as an object.
    fn pairs_to_object(mut payload: Value) -> Result<Value, String> {
        let pairs = payload
            .get_mut("outputs")
            .map(Value::take)
            .ok_or("no outputs")?;
        let pairs: Vec<(String, String)> =
            serde_json::from_value(pairs).map_err(|error| error.to_string())?;
        payload["outputs"] = json!(
            pairs
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        );
        Ok(payload)
    }

    const FIXTURE_STEPS: &[Step] = &[Step {
        event_type: "InfraApplied",
        from: 1,
        migrate: pairs_to_object,
    }];

    fn fixture_versions(event_type: &str) -> Option<u32> {
        match event_type {
            "InfraApplied" => Some(2),
            other => crate::aggregate::current_version(other),
        }
    }

    fn fixture_upcast(
        event_type: &str,
        version: &str,
        payload: Value,
    ) -> Result<Upcasted, UpcastError> {
        upcast_with(
            FIXTURE_STEPS,
            fixture_versions,
            event_type,
            version,
            payload,
        )
    }

    #[test]
    fn every_event_type_has_a_current_version() {
        for event_type in [
            "EnvironmentRequested",
            "InfraApplyStarted",
            "InfraApplied",
            "InfraApplyFailed",
            "BootstrapStarted",
            "BootstrapProgressed",
            "BootstrapCompleted",
            "BootstrapFailed",
            "RetryRequested",
            "DestroyRequested",
            "OperationCancelled",
            "DestroyStarted",
            "InfraDestroyed",
            "DestroyFailed",
            "OperationTimedOut",
            "MarkedFailed",
            "MarkedDestroyed",
            "ForceUnlockAuthorized",
        ] {
            assert_eq!(
                super::super::current_version(event_type),
                Some(1),
                "{event_type}"
            );
        }
        let event = Event::DestroyRequested {};
        assert_eq!(event.version(), 1);
    }

    #[test]
    fn a_current_payload_is_returned_unchanged() {
        let payload = json!({"operation_id": "op_x", "outputs": {"a": "b"}});
        let upcasted = upcast("InfraApplied", "1", payload.clone()).unwrap();
        assert_eq!(
            upcasted,
            Upcasted {
                version: 1,
                payload
            }
        );
    }

    #[test]
    fn an_older_payload_is_migrated_step_by_step_to_the_current_shape() {
        let stored = json!({"operation_id": "op_01h", "outputs": [["vpc_id", "vpc-1"]]});
        let upcasted = fixture_upcast("InfraApplied", "1", stored).unwrap();
        assert_eq!(upcasted.version, 2);
        assert_eq!(
            upcasted.payload,
            json!({"operation_id": "op_01h", "outputs": {"vpc_id": "vpc-1"}})
        );
        // Already current: untouched.
        let current = fixture_upcast("InfraApplied", "2", upcasted.payload.clone()).unwrap();
        assert_eq!(current, upcasted);
    }

    #[test]
    fn versions_that_cannot_be_brought_forward_are_typed_errors() {
        let payload = json!({});
        assert!(matches!(
            upcast("InfraApplied", "2", payload.clone()),
            Err(UpcastError::Newer {
                version: 2,
                current: 1,
                ..
            })
        ));
        assert!(matches!(
            upcast("InfraApplied", "one", payload.clone()),
            Err(UpcastError::NotAVersion { .. })
        ));
        assert!(matches!(
            fixture_upcast("InfraApplied", "0", payload.clone()),
            Err(UpcastError::NoStep { version: 0, .. })
        ));
        let failed = fixture_upcast("InfraApplied", "1", json!({"outputs": 3})).unwrap_err();
        assert!(
            matches!(failed, UpcastError::Failed { version: 1, .. }),
            "{failed}"
        );
        assert!(failed.to_string().contains("InfraApplied"), "{failed}");
    }

    #[test]
    fn an_unknown_type_passes_through_for_its_decoder_to_report() {
        let payload = json!({"drift": true});
        let upcasted = upcast("DriftDetected", "7", payload.clone()).unwrap();
        assert_eq!(
            upcasted,
            Upcasted {
                version: 7,
                payload
            }
        );
    }

    #[test]
    fn envelopes_decode_their_event_through_the_upcaster() {
        let envelope: EventEnvelope = serde_json::from_value(json!({
            "environment_id": "env_01h",
            "sequence": 2,
            "type": "InfraApplied",
            "version": "2",
            "payload": {"operation_id": "op_01h", "outputs": {}},
            "metadata": {"actor": "system:executor", "request_id": "r", "correlation_id": "c",
                         "causation_id": "x", "recorded_at": "2025-01-01T00:00:00.000000Z"},
            "recorded_at": "2025-01-01T00:00:00.000000Z",
        }))
        .unwrap();
        let error = envelope.event().unwrap_err();
        assert!(error.to_string().contains("newer"), "{error}");
    }
}
