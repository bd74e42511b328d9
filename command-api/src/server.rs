//! The HTTP/1.1 server: accepts connections, bounds how long each may wait and how many may be
//! open, and drains them on shutdown (hyper's connection, our accept loop).
//!
//! A connection is always in one of three phases ([`Phase`]):
//! - idle: waiting for the first byte of a request. A new connection may wait
//!   `header_timeout`, a kept-alive one `idle_timeout`;
//! - head: from its first byte, a request head must be complete within `header_timeout`, so a
//!   header trickled line by line is cut there;
//! - busy: from the parsed head until hyper drops the response body. Not timed here: a request
//!   body that stops arriving fails after `body_timeout` (tower-http's `TimeoutBody`), and a
//!   response may last as long as it needs (SSE streams).
//!
//! At `max_connections`, a new connection takes the place of the connection that has waited the
//! longest without a request in progress (idle, or trickling a header); only when every
//! connection is busy does it wait, and the ones after it wait in the kernel's backlog, until a
//! connection closes. So sockets that send nothing can never lock out `/healthz` or anyone else,
//! whatever the timeouts. The limit is kept below the open-files limit, and accept errors
//! (EMFILE when other files use up the rest) back off instead of spinning.

use crate::settings::HttpSettings;
use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::http::head_limit::MAX_HEAD_BYTES;

/// File descriptors kept for everything but HTTP connections: the database pool, NATS, the
/// listener, and in `dev` the executor's child processes and files.
const RESERVED_FDS: u64 = 256;

/// Connections the kernel completes and queues while the accept loop waits (for a slot, or
/// between bursts); Linux caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const LAST_BACKOFF: Duration = Duration::from_secs(1);

/// Binds the listen address (port 0 picks a free port).
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets requests in
/// progress finish for at most `drain_timeout`, and closes what is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: CancellationToken,
) {
    let connections = Connections::new(connection_limit(settings.max_connections));
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let mut http = http1::Builder::new();
    // Our phases time the head (hyper would start its header timer as soon as a connection
    // goes idle, which would make the idle timeout and the header timeout one).
    http.header_read_timeout(None);
    // Bounds (roughly: hyper's buffer may grow to about twice this) what one connection buffers
    // for a request head; the exact limit is the router's (`http::head_limit`).
    http.max_buf_size(MAX_HEAD_BYTES);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            stream = accept(&listener, &mut backoff) => stream,
        };
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = connections.slot() => permit,
        };
        let _ = stream.set_nodelay(true);
        let (activity, slot) = connections.open(permit);
        let io = TokioIo::new(Tracked {
            stream,
            activity: activity.clone(),
        });
        let connection = http.serve_connection(io, service(&router, &activity, settings));
        tracker.spawn(run_connection(
            connection,
            activity,
            slot,
            settings.clone(),
            shutdown.clone(),
            hard_stop.clone(),
        ));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(settings.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "closing connections still busy after the drain timeout"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
}

/// The configured limit, with [`RESERVED_FDS`] to spare below the open-files limit: the soft
/// limit is raised as far as the hard limit allows (as Go programs do), and the connection limit
/// lowered if that is not enough.
fn connection_limit(configured: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return configured;
    };
    let wanted = open_files_wanted(configured, hard);
    let available = if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        wanted
    } else {
        soft
    };
    let fits = connections_fitting(available);
    if configured > fits {
        tracing::warn!(
            configured,
            lowered_to = fits,
            open_files_limit = available,
            "PROVISIONER_HTTP_MAX_CONNECTIONS does not fit the open-files limit (raise `ulimit -Hn`)"
        );
        fits
    } else {
        configured
    }
}

/// The soft open-files limit that `connections` need, as far as `hard` allows.
fn open_files_wanted(connections: usize, hard: u64) -> u64 {
    u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_FDS)
        .min(hard)
}

/// How many connections an open-files limit leaves room for (at least one).
fn connections_fitting(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(RESERVED_FDS))
        .unwrap_or(usize::MAX)
        .max(1)
}

async fn accept(listener: &TcpListener, backoff: &mut Duration) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                *backoff = FIRST_BACKOFF;
                return stream;
            }
            // The peer gave up before we took the connection: nothing to wait for.
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => {}
            // Out of file descriptors or memory: wait for connections to close.
            Err(error) => {
                tracing::warn!(error = %error, retry_in = ?*backoff, "cannot accept a connection");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(LAST_BACKOFF);
            }
        }
    }
}

/// The per-connection hyper service: the router, with request bodies timed and the connection
/// busy until the response body is dropped.
fn service(
    router: &Router,
    activity: &Arc<Activity>,
    settings: &HttpSettings,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Finishing>,
    Error = Infallible,
    Future: Send,
> + Send
+ use<> {
    let (router, activity, body_timeout) =
        (router.clone(), activity.clone(), settings.body_timeout);
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = activity.request_started();
        let request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await?;
            Ok(response.map(|body| Finishing {
                body,
                _in_flight: in_flight,
            }))
        }
    })
}

async fn run_connection<S>(
    connection: http1::Connection<TokioIo<Tracked>, S>,
    activity: Arc<Activity>,
    slot: Slot,
    settings: HttpSettings,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) where
    S: hyper::service::HttpService<Incoming, ResBody = Finishing, Error = Infallible>,
{
    let mut connection = pin!(connection);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&settings);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                break;
            }
            () = sleep_until(deadline) => {
                if activity.deadline(&settings).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing a connection that sent no request in time");
                    break;
                }
            }
            () = activity.wake.notified() => {
                if activity.evicting.load(Ordering::Acquire) {
                    if !activity.busy() {
                        tracing::debug!("closing the connection idle the longest to make room");
                        break;
                    }
                    // A request started meanwhile: let the accept loop pick another.
                    activity.evicting.store(false, Ordering::Release);
                    activity.became_idle.notify_one();
                }
            }
            () = shutdown.cancelled(), if !draining => {
                if !activity.busy() {
                    break;
                }
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = hard_stop.cancelled() => break,
        }
    }
    drop(slot);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// No request in progress or arriving since `since`; `kept_alive` once a request was served.
    Idle { since: Instant, kept_alive: bool },
    /// The first byte of a request head arrived at `since`.
    Head { since: Instant },
    /// Requests whose head was parsed and whose response is not finished.
    Busy(usize),
}

/// One connection's phase, shared by its socket, its service, its task and the accept loop.
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the connection's task: its deadline changed, or the accept loop wants its slot.
    wake: Notify,
    /// The accept loop asked this connection to close to make room.
    evicting: AtomicBool,
    /// Shared by all connections: a waiting accept loop may find a connection to close.
    became_idle: Arc<Notify>,
}

impl Activity {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
            drop(phase);
            self.wake.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Idle { .. } | Phase::Head { .. } => Phase::Busy(1),
        };
        InFlight(self.clone())
    }

    fn request_finished(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle {
                since: Instant::now(),
                kept_alive: true,
            },
        };
        if let Phase::Idle { .. } = *phase {
            drop(phase);
            self.wake.notify_one();
            self.became_idle.notify_one();
        }
    }

    fn busy(&self) -> bool {
        matches!(*self.phase(), Phase::Busy(_))
    }

    /// When the connection is closed unless its phase changes first.
    fn deadline(&self, settings: &HttpSettings) -> Option<Instant> {
        match *self.phase() {
            Phase::Idle {
                since,
                kept_alive: true,
            } => Some(since + settings.idle_timeout),
            Phase::Idle {
                since,
                kept_alive: false,
            }
            | Phase::Head { since } => Some(since + settings.header_timeout),
            Phase::Busy(_) => None,
        }
    }

    /// Since when the connection has had no request in progress.
    fn waiting_since(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Idle { since, .. } | Phase::Head { since } => Some(since),
            Phase::Busy(_) => None,
        }
    }
}

/// A request in progress; finished when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that finishes its request when hyper drops it (written, or the connection
/// gone).
struct Finishing {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Finishing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when request bytes arrive on an idle connection.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The open connections, for the limit and for eviction.
struct Connections {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    became_idle: Arc<Notify>,
}

impl Connections {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(limit)),
            became_idle: Arc::new(Notify::new()),
        })
    }

    fn open_connections(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free slot: at the limit, the connection waiting the longest without a request in
    /// progress is asked to give up its slot; if every connection is busy, waits for one to end.
    async fn slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return permit;
            }
            self.evict_longest_waiting();
            tokio::select! {
                permit = self.slots.clone().acquire_owned() => {
                    return permit.expect("the semaphore is never closed");
                }
                () = self.became_idle.notified() => {}
            }
        }
    }

    /// Asks the connection waiting the longest to close, unless one was asked already.
    fn evict_longest_waiting(&self) {
        let open = self.open_connections();
        if open.values().any(|a| a.evicting.load(Ordering::Acquire)) {
            return;
        }
        let longest = open
            .values()
            .filter_map(|activity| Some((activity.waiting_since()?, activity)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, activity)) = longest {
            activity.evicting.store(true, Ordering::Release);
            activity.wake.notify_one();
        }
    }

    fn open(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> (Arc<Activity>, Slot) {
        let activity = Arc::new(Activity {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
                kept_alive: false,
            }),
            wake: Notify::new(),
            evicting: AtomicBool::new(false),
            became_idle: self.became_idle.clone(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open_connections().insert(id, activity.clone());
        let slot = Slot {
            id,
            connections: self.clone(),
            _permit: permit,
        };
        (activity, slot)
    }
}

/// A connection's place: leaves the registry, then frees its slot, when dropped.
struct Slot {
    id: u64,
    connections: Arc<Connections>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.open_connections().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_for_the_connections_up_to_the_hard_limit() {
        assert_eq!(open_files_wanted(4096, 1_048_576), 4096 + RESERVED_FDS);
        assert_eq!(open_files_wanted(4096, 2000), 2000);
        assert_eq!(open_files_wanted(usize::MAX, u64::MAX), u64::MAX);
    }

    #[tokio::test]
    async fn a_head_gets_the_header_timeout_and_a_kept_alive_wait_the_idle_timeout() {
        let settings = HttpSettings::default();
        let connections = Connections::new(1);
        let (activity, _slot) = connections.open(connections.slot().await);
        let soon =
            |d: Option<Instant>| d.is_some_and(|d| d <= Instant::now() + settings.header_timeout);
        assert!(soon(activity.deadline(&settings)), "a new connection");
        let request = activity.request_started();
        assert_eq!(activity.deadline(&settings), None, "busy: not timed");
        drop(request);
        let kept_alive = activity.deadline(&settings).expect("idle again");
        assert!(kept_alive > Instant::now() + settings.header_timeout);
        activity.bytes_arrived();
        assert!(soon(activity.deadline(&settings)), "a head is arriving");
    }

    #[tokio::test]
    async fn at_the_limit_the_connection_waiting_longest_is_asked_to_leave_never_a_busy_one() {
        let connections = Connections::new(3);
        let (oldest_busy, _a) = connections.open(connections.slot().await);
        let (older_idle, _b) = connections.open(connections.slot().await);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (newer_idle, _c) = connections.open(connections.slot().await);
        let _request = oldest_busy.request_started();
        connections.evict_longest_waiting();
        let asked = |a: &Activity| a.evicting.load(Ordering::Acquire);
        assert!(!asked(&oldest_busy) && asked(&older_idle) && !asked(&newer_idle));
        // One at a time: nothing more is asked while that one is leaving.
        connections.evict_longest_waiting();
        assert!(!asked(&newer_idle));
    }

    #[test]
    fn connections_leave_the_reserved_files_free() {
        assert_eq!(connections_fitting(4096 + RESERVED_FDS), 4096);
        assert_eq!(connections_fitting(1024), 1024 - 256);
        assert_eq!(connections_fitting(10), 1);
    }
}
