//! Adapts the pure `domain::Environment` to cqrs-es. The domain decides; this only moves the
//! decided events into cqrs-es's sink.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::aggregate::{Command, DomainError, Environment, Event};
use serde::{Deserialize, Serialize};

/// The aggregate type name stored in the `events` table.
pub const AGGREGATE_TYPE: &str = "Environment";

/// `domain::Environment` as a cqrs-es aggregate.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvironmentAggregate(pub Environment);

/// `domain::Event` as a cqrs-es event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredEvent(pub Event);

impl DomainEvent for StoredEvent {
    fn event_type(&self) -> String {
        self.0.event_type().to_owned()
    }

    fn event_version(&self) -> String {
        self.0.version().to_string()
    }
}

impl Aggregate for EnvironmentAggregate {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = Command;
    type Event = StoredEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.0.handle(command)? {
            sink.write(StoredEvent(event), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.0.apply(&event.0);
    }
}
