//! What a handler decides about one message, and how the runtime settles it with JetStream.

use crate::backoff::Backoff;
use async_nats::jetstream::{AckKind, Message};
use std::time::Duration;

/// What to do with a message once its handler is done with it. The one disposition type of
/// every consumer in the workspace.
///
/// While a handler runs, the runtime can also tell JetStream the message is in progress
/// (`AckKind::Progress` heartbeats, [`crate::Consumer::heartbeat`]), so a long handler is not
/// redelivered elsewhere meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done: acknowledge it.
    Ack,
    /// Failed for now (the database is unavailable, a conflict, the message came too early):
    /// negatively acknowledge it so JetStream delivers it again after `after` — `None` for the
    /// consumer's back-off by delivery count (exponential with jitter, bounded),
    /// `Some(Duration::ZERO)` for at once.
    ///
    /// Redelivery is bounded by the consumer's `max_deliver` when it sets one: a retry of the
    /// last delivery is logged as an error and JetStream does not deliver the message again
    /// (it publishes a `MAX_DELIVERIES` advisory instead, which the caller may act on).
    Retry { after: Option<Duration> },
    /// Can never succeed (undecodable, refused for good): terminate it, so it is never
    /// delivered again. Logged as an error with the message's subject, stream sequence and
    /// `reason`.
    Term { reason: String },
}

impl Disposition {
    /// A retry after the consumer's back-off for this delivery.
    pub const fn retry() -> Self {
        Self::Retry { after: None }
    }

    /// A retry after exactly `after`.
    pub const fn retry_after(after: Duration) -> Self {
        Self::Retry { after: Some(after) }
    }

    /// Handed back to be delivered again at once (e.g. this process is shutting down).
    pub const fn hand_back() -> Self {
        Self::Retry {
            after: Some(Duration::ZERO),
        }
    }

    pub fn term(reason: impl Into<String>) -> Self {
        Self::Term {
            reason: reason.into(),
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Retry { .. } => "retry",
            Self::Term { .. } => "term",
        }
    }
}

/// Where a delivered message stands: its stream sequence and how often it has been delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u64,
}

impl Delivery {
    /// Reads the message's reply subject (`None` for a message without JetStream metadata).
    pub fn of(message: &Message) -> Option<Self> {
        let info = message.info().ok()?;
        Some(Self {
            stream_sequence: info.stream_sequence,
            delivered: u64::try_from(info.delivered).unwrap_or(1).max(1),
        })
    }
}

/// How the runtime settles messages: shared by every handler of one consumer.
#[derive(Clone, Debug)]
pub(crate) struct Settler {
    pub consumer: String,
    pub retry: Backoff,
    /// The consumer's `max_deliver` (≤ 0: unbounded).
    pub max_deliver: i64,
    /// Wait for the server to confirm acks.
    pub confirm_acks: bool,
}

impl Settler {
    /// The ack kind for `disposition` of a message on its `delivery`.
    pub(crate) fn ack_kind(
        &self,
        disposition: &Disposition,
        delivery: Option<Delivery>,
    ) -> AckKind {
        match disposition {
            Disposition::Ack => AckKind::Ack,
            Disposition::Retry {
                after: Some(Duration::ZERO),
            } => AckKind::Nak(None),
            Disposition::Retry { after: Some(after) } => AckKind::Nak(Some(*after)),
            Disposition::Retry { after: None } => {
                let delivered = delivery.map_or(1, |d| d.delivered);
                AckKind::Nak(Some(self.retry.delay(delivered)))
            }
            Disposition::Term { .. } => AckKind::Term,
        }
    }

    /// Whether `delivery` is the last one JetStream makes.
    pub(crate) fn is_last(&self, delivery: Option<Delivery>) -> bool {
        self.max_deliver > 0
            && delivery.is_some_and(|d| d.delivered >= self.max_deliver.unsigned_abs())
    }

    /// Settles `message` by `disposition`; failures are logged (the message is then redelivered
    /// after the consumer's `ack_wait`).
    pub(crate) async fn settle(&self, message: &Message, disposition: Disposition) {
        let delivery = Delivery::of(message);
        let stream_sequence = delivery.map_or(0, |d| d.stream_sequence);
        let delivered = delivery.map_or(0, |d| d.delivered);
        match &disposition {
            Disposition::Term { reason } => tracing::error!(
                consumer = %self.consumer,
                subject = %message.subject,
                stream_sequence,
                delivered,
                reason = %reason,
                "poison message: terminated, it is never delivered again"
            ),
            Disposition::Retry { .. } if self.is_last(delivery) => tracing::error!(
                consumer = %self.consumer,
                subject = %message.subject,
                stream_sequence,
                delivered,
                "the last delivery failed: JetStream gives up on the message (MAX_DELIVERIES advisory)"
            ),
            _ => {}
        }
        let kind = self.ack_kind(&disposition, delivery);
        let result = if matches!(kind, AckKind::Ack) && self.confirm_acks {
            message.double_ack().await
        } else {
            message.ack_with(kind).await
        };
        if let Err(error) = result {
            tracing::warn!(
                consumer = %self.consumer,
                subject = %message.subject,
                stream_sequence,
                disposition = disposition.name(),
                %error,
                "failed to settle a message; it will be redelivered"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settler(max_deliver: i64) -> Settler {
        Settler {
            consumer: "test".into(),
            retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            max_deliver,
            confirm_acks: false,
        }
    }

    fn delivery(delivered: u64) -> Option<Delivery> {
        Some(Delivery {
            stream_sequence: 7,
            delivered,
        })
    }

    #[test]
    fn each_disposition_has_its_ack_kind() {
        let settler = settler(-1);
        assert!(matches!(
            settler.ack_kind(&Disposition::Ack, delivery(1)),
            AckKind::Ack
        ));
        assert!(matches!(
            settler.ack_kind(&Disposition::term("bad"), delivery(1)),
            AckKind::Term
        ));
        assert!(matches!(
            settler.ack_kind(&Disposition::hand_back(), delivery(1)),
            AckKind::Nak(None)
        ));
        assert!(matches!(
            settler.ack_kind(&Disposition::retry_after(Duration::from_secs(5)), delivery(1)),
            AckKind::Nak(Some(d)) if d == Duration::from_secs(5)
        ));
    }

    #[test]
    fn a_retry_without_a_delay_backs_off_by_delivery_count() {
        let settler = settler(-1);
        let AckKind::Nak(Some(first)) = settler.ack_kind(&Disposition::retry(), delivery(1)) else {
            panic!("a nak with a delay");
        };
        let AckKind::Nak(Some(fourth)) = settler.ack_kind(&Disposition::retry(), delivery(4))
        else {
            panic!("a nak with a delay");
        };
        assert!(first < Duration::from_millis(200));
        assert!(fourth >= Duration::from_millis(800));
    }

    #[test]
    fn the_last_delivery_is_known_only_with_a_bound() {
        assert!(!settler(-1).is_last(delivery(1000)));
        assert!(!settler(0).is_last(delivery(1000)));
        assert!(!settler(3).is_last(delivery(2)));
        assert!(settler(3).is_last(delivery(3)));
    }
}
