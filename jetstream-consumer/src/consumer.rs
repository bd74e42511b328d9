//! The consumer loop: attach (get or create the durable pull consumer), fetch bounded batches
//! with a deadline, hand the messages to the caller's handler, settle each by its
//! [`Disposition`], and stop on shutdown.

use crate::backoff::Backoff;
use crate::disposition::{Disposition, Settler};
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Messages per fetch unless the caller says otherwise.
const DEFAULT_BATCH: usize = 64;
/// How long one fetch waits for messages on the server (and so how late a shutdown stops it).
const DEFAULT_FETCH_EXPIRES: Duration = Duration::from_secs(1);
/// How much longer than its expiry the client waits for a fetch's answer: the server may be
/// unreachable, and then no expiry ever arrives.
const FETCH_DEADLINE_MARGIN: Duration = Duration::from_secs(5);
/// The loop's own back-off (stream missing, consumer not creatable, fetch failed).
const DEFAULT_RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// The delay of [`Disposition::Retry`] without its own delay.
const DEFAULT_RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

/// One durable pull consumer on one stream, with how to run it.
///
/// ```no_run
/// # async fn example(js: async_nats::jetstream::Context, shutdown: tokio_util::sync::CancellationToken) {
/// use jetstream_consumer::{Consumer, Disposition};
/// let config = async_nats::jetstream::consumer::pull::Config {
///     durable_name: Some("example".into()),
///     ..Default::default()
/// };
/// let mut in_flight = Consumer::new(js, "EVENTS", config)
///     .run_each(8, &shutdown, |message| async move {
///         if message.payload.is_empty() {
///             Disposition::term("empty payload")
///         } else {
///             Disposition::Ack
///         }
///     })
///     .await;
/// in_flight.wait().await;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Consumer {
    js: jetstream::Context,
    stream: String,
    config: pull::Config,
    batch: usize,
    fetch_expires: Duration,
    heartbeat: Option<Duration>,
    reconnect: Backoff,
    settler: Settler,
}

impl Consumer {
    /// The durable consumer `config.durable_name` (required) on `stream`, created with `config`
    /// when missing. Its `max_deliver` (if > 0) bounds redelivery: see [`Disposition::Retry`].
    pub fn new(js: jetstream::Context, stream: impl Into<String>, config: pull::Config) -> Self {
        let name = config.durable_name.clone().unwrap_or_default();
        let max_deliver = config.max_deliver;
        Self {
            js,
            stream: stream.into(),
            config,
            batch: DEFAULT_BATCH,
            fetch_expires: DEFAULT_FETCH_EXPIRES,
            heartbeat: None,
            reconnect: DEFAULT_RECONNECT,
            settler: Settler {
                consumer: name,
                retry: DEFAULT_RETRY,
                max_deliver,
                confirm_acks: false,
            },
        }
    }

    /// The durable consumer's name.
    pub fn name(&self) -> &str {
        &self.settler.consumer
    }

    /// At most `batch` messages per fetch (at least 1).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// How long one fetch waits on the server for messages.
    pub fn fetch_expires(mut self, expires: Duration) -> Self {
        self.fetch_expires = expires;
        self
    }

    /// Tells JetStream every `every` that a message whose handler still runs is in progress
    /// (`AckKind::Progress`), so it is not redelivered meanwhile. Keep it below `ack_wait`.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// The back-off of [`Disposition::Retry`] without a delay (by the message's delivery
    /// count) and of a failed batch (by failures in a row).
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.settler.retry = backoff;
        self
    }

    /// The loop's own back-off after NATS errors (by errors in a row).
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Waits for the server to confirm each ack (`double_ack`): for handlers whose work must
    /// not run twice because an ack was lost.
    pub fn confirm_acks(mut self) -> Self {
        self.settler.confirm_acks = true;
        self
    }

    /// Runs `handler` on every message, up to `concurrency` at once (1: one after the other, in
    /// delivery order), until `shutdown`. Each handler runs in its own task; the runtime settles
    /// its message by the returned [`Disposition`].
    ///
    /// On shutdown it stops fetching (at the latest when the fetch under way expires) and hands
    /// back at once the messages that fetch still brings; it returns the handlers still
    /// running, for the caller to wait for, bound, or abort ([`InFlight`]).
    pub async fn run_each<H, F>(
        self,
        concurrency: usize,
        shutdown: &CancellationToken,
        handler: H,
    ) -> InFlight
    where
        H: Fn(Message) -> F + Send + Sync + 'static,
        F: Future<Output = Disposition> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut errors = 0;
        'attach: while let Some(consumer) = this.attach(shutdown).await {
            loop {
                while tasks.try_join_next().is_some() {}
                let first = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break 'attach,
                    permit = Arc::clone(&slots).acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                };
                let mut permits = vec![first];
                while permits.len() < this.batch {
                    match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => permits.push(permit),
                        Err(_) => break,
                    }
                }
                // Not raced against shutdown: the fetch expires soon, and what it brings after
                // shutdown is handed back below instead of waiting out the ack_wait.
                let messages = match this.fetch(&consumer, permits.len()).await {
                    Ok(messages) => messages,
                    Err(error) => {
                        errors += 1;
                        if !this.pause_after_error(errors, &error, shutdown).await {
                            break 'attach;
                        }
                        continue 'attach;
                    }
                };
                errors = 0;
                for message in messages {
                    if shutdown.is_cancelled() {
                        this.settler
                            .settle(&message, Disposition::hand_back())
                            .await;
                        continue;
                    }
                    let permit = permits.pop();
                    let this = Arc::clone(&this);
                    let handler = Arc::clone(&handler);
                    tasks.spawn(async move {
                        this.handle(message, |message| handler(message)).await;
                        drop(permit);
                    });
                }
            }
        }
        InFlight { tasks }
    }

    /// Runs `handler` on batches of messages, one batch after the other, until `shutdown`:
    /// for handlers that apply a batch at once (one transaction) and care about order.
    ///
    /// The handler returns one disposition per message, in order (a message without one is
    /// retried), or an error when the whole batch failed for now: then every message of the
    /// batch is retried and the loop pauses, both by the retry back-off (failures in a row).
    /// A handler still running at shutdown is dropped and its messages handed back.
    pub async fn run_batches<H, F, E>(self, shutdown: &CancellationToken, mut handler: H)
    where
        H: FnMut(Vec<Message>) -> F,
        F: Future<Output = Result<Vec<Disposition>, E>>,
        E: Display,
    {
        let mut errors = 0;
        let mut failures = 0;
        'attach: while let Some(consumer) = self.attach(shutdown).await {
            loop {
                if shutdown.is_cancelled() {
                    break 'attach;
                }
                let messages = match self.fetch(&consumer, self.batch).await {
                    Ok(messages) => messages,
                    Err(error) => {
                        errors += 1;
                        if !self.pause_after_error(errors, &error, shutdown).await {
                            break 'attach;
                        }
                        continue 'attach;
                    }
                };
                errors = 0;
                if messages.is_empty() {
                    continue;
                }
                let outcome = tokio::select! {
                    () = shutdown.cancelled() => None,
                    outcome = handler(messages.clone()) => Some(outcome),
                };
                let Some(outcome) = outcome else {
                    for message in &messages {
                        self.settler.settle(message, Disposition::hand_back()).await;
                    }
                    break 'attach;
                };
                match outcome {
                    Ok(dispositions) => {
                        failures = 0;
                        let mut dispositions = dispositions.into_iter();
                        for message in &messages {
                            let disposition = dispositions.next().unwrap_or(Disposition::retry());
                            self.settler.settle(message, disposition).await;
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        let delay = self.settler.retry.delay(failures);
                        tracing::error!(
                            consumer = self.name(),
                            messages = messages.len(),
                            failures,
                            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            %error,
                            "handling a batch failed; will retry"
                        );
                        for message in &messages {
                            self.settler
                                .settle(message, Disposition::retry_after(delay))
                                .await;
                        }
                        if !pause(shutdown, delay).await {
                            break 'attach;
                        }
                    }
                }
            }
        }
    }

    /// Runs one handler, with heartbeats if configured, and settles its message.
    async fn handle<F, Fut>(&self, message: Message, handler: F)
    where
        F: FnOnce(Message) -> Fut,
        Fut: Future<Output = Disposition>,
    {
        let handled = handler(message.clone());
        let disposition = match self.heartbeat {
            None => handled.await,
            Some(every) => {
                tokio::pin!(handled);
                let mut ticks = tokio::time::interval(every);
                ticks.tick().await; // the first tick is immediate
                loop {
                    tokio::select! {
                        disposition = &mut handled => break disposition,
                        _ = ticks.tick() => {
                            if let Err(error) = message.ack_with(jetstream::AckKind::Progress).await {
                                tracing::warn!(consumer = self.name(), %error, "heartbeat failed");
                            }
                        }
                    }
                }
            }
        };
        self.settler.settle(&message, disposition).await;
    }

    /// Waits for the stream and gets or creates the consumer; `None` on shutdown.
    async fn attach(&self, shutdown: &CancellationToken) -> Option<PullConsumer> {
        let mut attempts = 0;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            attempts += 1;
            match self.js.get_stream(&self.stream).await {
                Ok(stream) => {
                    match stream
                        .get_or_create_consumer(self.name(), self.config.clone())
                        .await
                    {
                        Ok(consumer) => {
                            tracing::info!(
                                stream = %self.stream,
                                consumer = self.name(),
                                "consumer attached"
                            );
                            return Some(consumer);
                        }
                        Err(error) => tracing::warn!(
                            stream = %self.stream,
                            consumer = self.name(),
                            %error,
                            "getting or creating the consumer failed; retrying"
                        ),
                    }
                }
                Err(error) if attempts == 1 => {
                    tracing::info!(stream = %self.stream, %error, "waiting for the stream");
                }
                Err(error) => {
                    tracing::debug!(stream = %self.stream, %error, "stream not there yet");
                }
            }
            if !pause(shutdown, self.reconnect.delay(attempts)).await {
                return None;
            }
        }
    }

    /// One fetch of up to `max` messages: returns when they arrived, or fewer once the stream
    /// has no more for now (at the latest when the fetch expires). Bounded on this side too.
    async fn fetch(
        &self,
        consumer: &PullConsumer,
        max: usize,
    ) -> Result<Vec<Message>, async_nats::Error> {
        let deadline = self.fetch_expires + FETCH_DEADLINE_MARGIN;
        let request = consumer
            .fetch()
            .max_messages(max)
            .expires(self.fetch_expires)
            .messages();
        let mut batch = tokio::time::timeout(deadline, request)
            .await
            .map_err(|_| format!("fetch request unanswered within {deadline:?}"))??;
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout(deadline, batch.next()).await {
                Ok(Some(Ok(message))) => messages.push(message),
                Ok(None) => break,
                // Keep what arrived; the next fetch reports a lasting problem.
                Ok(Some(Err(error))) if !messages.is_empty() => {
                    tracing::debug!(consumer = self.name(), %error, "fetch ended early");
                    break;
                }
                Ok(Some(Err(error))) => return Err(error),
                Err(_) if !messages.is_empty() => break,
                Err(_) => return Err(format!("fetch unanswered within {deadline:?}").into()),
            }
        }
        Ok(messages)
    }

    /// Logs a loop error and pauses by the reconnect back-off; false if shutdown came first.
    async fn pause_after_error(
        &self,
        errors: u64,
        error: &async_nats::Error,
        shutdown: &CancellationToken,
    ) -> bool {
        let delay = self.reconnect.delay(errors);
        tracing::warn!(
            consumer = self.name(),
            errors,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            %error,
            "fetching failed; reattaching"
        );
        pause(shutdown, delay).await
    }
}

/// The handlers still running when [`Consumer::run_each`] returned.
#[derive(Debug, Default)]
pub struct InFlight {
    tasks: JoinSet<()>,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for every handler to finish (and settle its message).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits at most `bound`; true if every handler finished.
    pub async fn wait_for(&mut self, bound: Duration) -> bool {
        tokio::time::timeout(bound, self.wait()).await.is_ok()
    }

    /// Aborts the handlers still running: their messages are redelivered after `ack_wait`.
    pub async fn abort(&mut self) {
        self.tasks.shutdown().await;
    }
}

/// Waits until the stream `name` exists, backing off between looks; `None` on shutdown.
pub async fn wait_for_stream(
    js: &jetstream::Context,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<jetstream::stream::Stream> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match js.get_stream(name).await {
            Ok(stream) => return Some(stream),
            Err(error) if attempts == 1 => {
                tracing::info!(stream = name, %error, "waiting for the stream to exist");
            }
            Err(_) => {}
        }
        if !pause(shutdown, DEFAULT_RECONNECT.delay(attempts)).await {
            return None;
        }
    }
}

/// Sleeps for `delay`; false if shutdown came first.
async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
