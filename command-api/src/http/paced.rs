//! An ordered consumer paced by the client that reads it: what a client does not read is left in
//! JetStream, not in the API's memory.
//!
//! The client library's ordered consumer asks the server for another batch (500 messages) each
//! time its pull request expires (30 s), whether or not anything was read, and keeps what comes
//! in the subscription's channel (up to 65 536 messages). A client that never reads — its socket
//! full — would so make the API hold another batch every 35 s for as long as events flow. Here a
//! task reads the consumer into a small channel; when the client leaves that channel full for
//! [`PAUSE_AFTER`], the task drops the consumer (its subscription and what waits in it) and,
//! once the client takes the message it holds, opens a new one at the next position. At most
//! [`CLIENT_BUFFER`] messages, plus one batch for at most [`PAUSE_AFTER`], are held per client.

use super::error::AppError;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::Stream as JetStream;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Decoded messages waiting for their client.
const CLIENT_BUFFER: usize = 64;
/// How long a client may leave [`CLIENT_BUFFER`] full before its consumer is dropped: well
/// within a pull request's life, so no second batch arrives for it meanwhile.
const PAUSE_AFTER: Duration = Duration::from_secs(5);
/// How long to wait before opening a consumer again after the server refused.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// One decoded message of an ordered consumer.
pub(super) struct Delivered<T> {
    /// Position in the stream.
    pub position: u64,
    /// Messages after this one that matched the filter when it was delivered.
    pub pending: u64,
    pub value: T,
}

/// A private ordered consumer over `stream` for one SSE client or read, from `deliver_policy`:
/// messages that do not decode as `T` are skipped; the stream ends when `shutdown` is cancelled.
/// Fails (the caller answers 503) when the first consumer cannot be opened.
pub(super) async fn ordered<T: DeserializeOwned + Send + 'static>(
    stream: JetStream,
    filter_subject: String,
    deliver_policy: DeliverPolicy,
    shutdown: CancellationToken,
) -> Result<impl Stream<Item = Delivered<T>> + use<T>, AppError> {
    let consumer = Consumer {
        stream,
        filter_subject,
    };
    let first = consumer
        .open(deliver_policy)
        .await
        .map_err(AppError::Unavailable)?;
    let (sender, receiver) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(consumer.feed(first, sender, shutdown));
    Ok(futures::stream::unfold(
        receiver,
        |mut receiver| async move {
            let delivered = receiver.recv().await?;
            Some((delivered, receiver))
        },
    ))
}

type Messages = async_nats::jetstream::consumer::pull::Ordered;

/// What is needed to open the client's consumer again.
struct Consumer {
    stream: JetStream,
    filter_subject: String,
}

impl Consumer {
    async fn open(&self, deliver_policy: DeliverPolicy) -> Result<Messages, async_nats::Error> {
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: self.filter_subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }

    /// Opens the consumer at `start_sequence`, retrying until it opens or the client or the
    /// process is gone (`None`).
    async fn reopen(
        &self,
        start_sequence: u64,
        sender: &mpsc::Sender<impl Send>,
        shutdown: &CancellationToken,
    ) -> Option<Messages> {
        loop {
            match self
                .open(DeliverPolicy::ByStartSequence { start_sequence })
                .await
            {
                Ok(messages) => return Some(messages),
                Err(error) => {
                    tracing::warn!(%error, "reopening a client's ordered consumer failed; retrying")
                }
            }
            tokio::select! {
                _ = sender.closed() => return None,
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(REOPEN_BACKOFF) => {}
            }
        }
    }

    /// Reads the consumer into `sender` until the client goes away, the consumer ends or
    /// `shutdown`; pauses the consumer while the client does not read.
    async fn feed<T: DeserializeOwned + Send>(
        self,
        mut messages: Messages,
        sender: mpsc::Sender<Delivered<T>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = sender.closed() => return,
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, "ordered consumer error");
                    continue;
                }
                None => return,
            };
            let (position, pending) = message
                .info()
                .map(|i| (i.stream_sequence, i.pending))
                .unwrap_or_default();
            let Ok(value) = serde_json::from_slice::<T>(&message.payload) else {
                continue;
            };
            let delivered = Delivered {
                position,
                pending,
                value,
            };
            let permit = match tokio::time::timeout(PAUSE_AFTER, sender.reserve()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => return,
                Err(_full) => {
                    // The client does not read: let go of everything pulled for it.
                    drop(messages);
                    let permit = tokio::select! {
                        permit = sender.reserve() => match permit {
                            Ok(permit) => permit,
                            Err(_closed) => return,
                        },
                        _ = shutdown.cancelled() => return,
                    };
                    match self
                        .reopen(position.saturating_add(1), &sender, &shutdown)
                        .await
                    {
                        Some(reopened) => messages = reopened,
                        None => return,
                    }
                    permit
                }
            };
            permit.send(delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_reader_that_stops_past_the_pause_gets_every_message_once_in_order_from_a_new_consumer()
     {
        let nats = system_tests::services::nats().await;
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let mut stream = js
            .create_stream(jetstream::stream::Config {
                name: "PACED".into(),
                subjects: vec!["paced.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let publish = |numbers: std::ops::Range<u64>| {
            let js = js.clone();
            async move {
                for n in numbers {
                    let payload = serde_json::to_vec(&n).unwrap();
                    js.publish(format!("paced.{n}"), payload.into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
            }
        };
        publish(0..200).await;
        let shutdown = CancellationToken::new();
        let mut messages = Box::pin(
            ordered::<u64>(
                stream.clone(),
                "paced.>".into(),
                DeliverPolicy::All,
                shutdown.clone(),
            )
            .await
            .unwrap(),
        );
        let mut seen = Vec::new();
        while seen.len() < 10 {
            seen.push(messages.next().await.unwrap());
        }
        // The reader stops: its channel fills, and past the pause its consumer is let go.
        tokio::time::sleep(PAUSE_AFTER + Duration::from_secs(1)).await;
        publish(200..400).await;
        while seen.len() < 400 {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("the reader gets the rest")
                .expect("the stream goes on");
            seen.push(next);
        }
        let values: Vec<u64> = seen.iter().map(|d| d.value).collect();
        assert_eq!(values, (0..400).collect::<Vec<_>>());
        let positions: Vec<u64> = seen.iter().map(|d| d.position).collect();
        assert_eq!(positions, (1..=400).collect::<Vec<_>>());
        // A second consumer took over (the first lingers until the server's inactivity limit).
        assert_eq!(stream.info().await.unwrap().state.consumer_count, 2);
        shutdown.cancel();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("the stream ends at shutdown")
                .is_none()
        );
    }
}
