//! Live lifecycle streams over SSE: order, resume, the all-environments stream, and that a
//! client that does not read — its socket full — does not hold anyone else up.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(60);

/// Reads SSE events (id, type) until `until` appears.
async fn read_until(response: reqwest::Response, until: &str) -> Vec<(String, String)> {
    let mut events = response.bytes_stream().eventsource();
    let mut seen = Vec::new();
    let read = async {
        while let Some(Ok(event)) = events.next().await {
            let done = event.event == until;
            seen.push((event.id.clone(), event.event.clone()));
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .unwrap_or_else(|_| panic!("no {until} within {WITHIN:?}; saw {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_delivers_an_environments_events_in_order_and_resumes_after_last_event_id() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("streamed", "")).await;
    let path = format!("/v1/environments/{id}/events");
    let response = stack.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let seen = read_until(response, "BootstrapCompleted").await;
    let ids: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    let expected: Vec<String> = (1..=seen.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected, "every event, in order");
    // Apart from the bootstrap's observations on the way, recorded while it runs.
    let types: Vec<&str> = seen
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| *t != "BootstrapProgressed")
        .collect();
    assert_eq!(
        types,
        [
            "EnvironmentRequested",
            "InfraApplyStarted",
            "InfraApplied",
            "BootstrapStarted",
            "BootstrapCompleted"
        ]
    );

    let resumed = stack
        .request(Method::GET, &path)
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let seen = read_until(resumed, "BootstrapCompleted").await;
    assert_eq!(seen[0], ("4".to_owned(), "BootstrapStarted".to_owned()));

    let after = stack
        .request(Method::GET, &format!("{path}?after=4"))
        .send()
        .await
        .unwrap();
    let seen = read_until(after, "BootstrapCompleted").await;
    assert_eq!(seen[0].0, "5", "{seen:?}");
    assert_eq!(seen.len(), ids.len() - 4, "{seen:?}");
}

/// The kernel's queues of one TCP connection on this machine, from `/proc/net/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Queues {
    /// Bytes sent and not yet acknowledged by the peer (its window is shut when it never reads).
    send: u64,
    /// Bytes received and not yet read by the application.
    receive: u64,
}

/// The queues of the socket bound to `local` port and connected to `remote` port on 127.0.0.1.
fn tcp_queues(local: u16, remote: u16) -> Option<Queues> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let address = |port: u16| format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1)? != &address(local) || fields.get(2)? != &address(remote) {
            return None;
        }
        let (send, receive) = fields.get(4)?.split_once(':')?;
        Some(Queues {
            send: u64::from_str_radix(send, 16).ok()?,
            receive: u64::from_str_radix(receive, 16).ok()?,
        })
    })
}

/// Subscribes to `/v1/events?after=0` over a raw socket with a small receive buffer, reads the
/// response head, and from then on never reads.
async fn stalled_subscriber(stack: &Stack) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address: std::net::SocketAddr = stack.base_url["http://".len()..].parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let request = format!(
        "GET /v1/events?after=0 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
        stack.token()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    stream
}

/// Creates `count` environments, `parallel` at a time; returns how many were accepted.
async fn create_many(stack: &Stack, prefix: &str, count: usize, parallel: usize) -> usize {
    futures::stream::iter(0..count)
        .map(|n| {
            let yaml = sandbox_yaml(&format!("{prefix}-{n}"), "");
            async move { stack.create(&yaml).await.status() == 202 }
        })
        .buffer_unordered(parallel)
        .filter(|accepted| std::future::ready(*accepted))
        .count()
        .await
}

/// Creates environments until a stalled client's socket is full: both kernel buffers, then the
/// server's own. Full means the server has bytes queued that the client's shut window does not
/// take, and neither queue moves while events keep coming. Returns how many were created and the
/// (client, server) queues then.
async fn fill_stalled_socket(
    stack: &Stack,
    queues: &impl Fn() -> (Queues, Queues),
) -> (usize, (Queues, Queues)) {
    let mut created = 0;
    // Twice in a row: a busy API may write nothing for a moment although the socket would
    // still take more.
    let mut unmoved = 0;
    loop {
        created += create_many(stack, &format!("fill{created}"), 50, 8).await;
        let before = queues();
        created += create_many(stack, &format!("more{created}"), 25, 8).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = queues();
        if before == after && after.0.receive > 0 && after.1.send > 0 {
            unmoved += 1;
            if unmoved == 2 {
                return (created, after);
            }
        } else {
            unmoved = 0;
        }
        assert!(
            created < 3000,
            "the stalled client's socket did not fill: {after:?}"
        );
    }
}

/// Fails unless the stalled client took nothing since its socket was `full`: its receive queue
/// is as it was, and the server's send queue did not drain (the kernel may still let it grow).
fn assert_stalled(now: (Queues, Queues), full: (Queues, Queues)) {
    assert!(
        now.0 == full.0 && now.1.send >= full.1.send,
        "the stalled client read: {now:?}, full at {full:?}"
    );
}

/// Stalled clients: their number, and how long events keep flowing past them while the API's
/// memory is watched — longer than an ordered consumer's pull request lives (30 s), after which
/// its client library asks for another batch whether or not anything was read.
const STALLED: usize = 32;
const FLOW: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_never_read_neither_stall_other_subscribers_nor_grow_the_apis_memory() {
    // No executor: every create adds two events (~ a few KB each) and nothing else runs.
    let stack = Stack::start_with(StackOptions {
        executor: false,
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let api = stack.api.id().expect("the API runs");
    let api_port = stack.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stalled_subscriber(&stack).await);
    }
    let stalled_port = stalled[0].local_addr().unwrap().port();
    let queues = || {
        let client = tcp_queues(stalled_port, api_port).expect("the stalled client's socket");
        let server = tcp_queues(api_port, stalled_port).expect("the server's socket");
        (client, server)
    };

    // The reading client records when each environment's first event reaches it.
    let reader = stack
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        let mut events = reader.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if event.event == "EnvironmentRequested" {
                let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                let id = data["environment_id"].as_str().unwrap().to_owned();
                if seen_tx.send((id, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });

    let (mut created, full) = fill_stalled_socket(&stack, &queues).await;
    // And more, so everything between JetStream and the socket is backed up too.
    created += create_many(&stack, "backlog", 300, 8).await;
    assert_stalled(queues(), full);
    while seen_rx.try_recv().is_ok() {}

    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream_bytes = async || {
        let mut stream = js.get_stream(stack.subjects.events_stream()).await.unwrap();
        stream.info().await.unwrap().state.bytes
    };
    let rss = || system_tests::procfs::rss_bytes(api).expect("the API's RSS");
    let (rss_before, bytes_before) = (rss(), stream_bytes().await);

    // Events keep flowing past the stalled clients for a while; meanwhile the other reader
    // keeps up: each new environment reaches it promptly.
    let flowing = Instant::now();
    let flow = async {
        let mut n = 0;
        while flowing.elapsed() < FLOW {
            n += create_many(&stack, &format!("flow{n}"), 20, 4).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        n
    };
    let markers = async {
        let mut latencies = Vec::new();
        for n in 0..20 {
            let id = stack
                .create_ok(&sandbox_yaml(&format!("marker-{n}"), ""))
                .await;
            let accepted = Instant::now();
            let seen_at = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let (seen, at) = seen_rx.recv().await.expect("the reader is still reading");
                    if seen == id {
                        return at;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("marker {n} did not reach the reading client within 10s"));
            latencies.push(seen_at.saturating_duration_since(accepted));
            tokio::time::sleep(FLOW / 25).await;
        }
        latencies
    };
    let (flowed_creates, mut latencies) = tokio::join!(flow, markers);
    created += flowed_creates + latencies.len();
    let (rss_after, bytes_after) = (rss(), stream_bytes().await);

    latencies.sort();
    let (client, server) = full;
    let flowed = bytes_after - bytes_before;
    let growth = rss_after.saturating_sub(rss_before);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{STALLED} stalled sockets full after {created} creates: client receive queue {} B, \
         server send queue {} B; reader latency median {:?}, max {:?}; while {:.1} MiB of events \
         flowed for {:?}, the API's RSS went {:.1} -> {:.1} MiB (+{:.1}; kept per stalled \
         client, +{:.1}); {:?} in all",
        client.receive,
        server.send,
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        mib(flowed),
        flowing.elapsed(),
        mib(rss_before),
        mib(rss_after),
        mib(growth),
        mib(flowed * STALLED as u64),
        started.elapsed(),
    );
    assert!(
        latencies[latencies.len() - 1] < Duration::from_secs(5),
        "the reading client fell behind: {latencies:?}"
    );
    assert!(
        flowed > 512 * 1024,
        "too few events flowed to tell: {flowed} B"
    );
    // Bounded: far less than what flowed, kept once per stalled client (holding another batch
    // per pull request's life, as the client library does unpaced, came to about a quarter).
    assert!(
        growth < flowed * STALLED as u64 / 8,
        "the API's memory grew by {growth} B while {flowed} B of events flowed past {STALLED} \
         stalled clients"
    );
    assert_stalled(queues(), full);
    reading.abort();
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_stream_sends_keep_alive_comments() {
    let stack = Stack::start().await;
    // The harness sets PROVISIONER_SSE_KEEPALIVE_MS=1000; nothing happens on this stream.
    let mut response = stack
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    let mut received = Vec::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            received.extend_from_slice(&chunk);
            if received.starts_with(b":") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a keep-alive comment within 5s");
    assert!(String::from_utf8_lossy(&received).starts_with(':'));
}

/// Reads a whole SSE response; panics if it does not end within `WITHIN`.
async fn read_to_end(response: reqwest::Response) -> Vec<(String, String)> {
    let mut events = response.bytes_stream().eventsource();
    let mut seen = Vec::new();
    let read = async {
        while let Some(Ok(event)) = events.next().await {
            seen.push((event.id.clone(), event.event.clone()));
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {WITHIN:?}; saw {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_environments_stream_ends_even_when_resumed_after_its_last_event() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("ended", "")).await;
    stack.wait_for_status(&id, "ready", WITHIN).await;
    stack.delete(&id).await;
    stack.wait_for_status(&id, "destroyed", WITHIN).await;
    let last = stack.history(&id).await.len();
    let path = format!("/v1/environments/{id}/events");

    let whole = stack.request(Method::GET, &path).send().await.unwrap();
    let seen = read_to_end(whole).await;
    assert_eq!(seen.len(), last);
    assert_eq!(seen.last().unwrap().1, "InfraDestroyed");

    let after_last = format!("{path}?after={last}");
    let resumed = stack
        .request(Method::GET, &after_last)
        .send()
        .await
        .unwrap();
    assert_eq!(read_to_end(resumed).await, Vec::new());
    let resumed = stack
        .request(Method::GET, &path)
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(read_to_end(resumed).await, Vec::new());
    let beyond = format!("{path}?after={}", u64::MAX);
    let resumed = stack.request(Method::GET, &beyond).send().await.unwrap();
    assert_eq!(read_to_end(resumed).await, Vec::new());
}

/// `PROVISIONER_TEST_RACE_TRIALS` (default 1, at most 20): how many lifecycles the resume test
/// follows.
fn trials() -> usize {
    system_tests::trials("PROVISIONER_TEST_RACE_TRIALS", 1, 20)
}

/// Follows `path` in pieces: reads 1 to `piece` events, drops the connection, reconnects with
/// `Last-Event-ID` of the last event read (or `first_after`), until `done` says so of an event or
/// the server ends the stream. Returns every event read, as (id, type), and how many
/// connections it took.
async fn follow_reconnecting(
    stack: &Stack,
    path: &str,
    first_after: Option<u64>,
    piece: usize,
    done: impl Fn(u64, &str) -> bool,
) -> (Vec<(u64, String)>, usize) {
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut connections = 0;
    let follow = async {
        loop {
            let mut request = stack.request(Method::GET, path);
            if let Some(last) = seen.last().map(|(id, _)| *id).or(first_after) {
                request = request.header("last-event-id", last.to_string());
            }
            let response = request.send().await.expect("the stream answers");
            assert_eq!(response.status(), 200, "{path}");
            connections += 1;
            let mut events = response.bytes_stream().eventsource();
            for _ in 0..rand::random_range(1..=piece) {
                match events.next().await {
                    Some(Ok(event)) => {
                        let id: u64 = event.id.parse().expect("a numeric id");
                        let end = done(id, &event.event);
                        seen.push((id, event.event));
                        if end {
                            return;
                        }
                    }
                    Some(Err(error)) => panic!("{path}: {error}"),
                    // The server ended the stream (after the environment's last event).
                    None => return,
                }
            }
            // Mid-stream: dropped here, with events still coming.
        }
    };
    tokio::time::timeout(WITHIN, follow)
        .await
        .unwrap_or_else(|_| panic!("{path} did not end within {WITHIN:?}"));
    (seen, connections)
}

/// The events stream's last position.
async fn last_position(stack: &Stack) -> u64 {
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stack.subjects.events_stream()).await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnecting_with_last_event_id_mid_stream_misses_and_repeats_nothing() {
    let stack = Stack::start().await;
    let started = Instant::now();
    let mut connections = 0;

    // One environment's stream, across its whole lifecycle and destroy, while its events are
    // still being recorded: reconnect after every 1-3 events.
    for trial in 0..trials() {
        let id = stack
            .create_ok(&sandbox_yaml(
                &format!("resumed-{trial}"),
                "    apply_seconds: 0.3\n",
            ))
            .await;
        let path = format!("/v1/environments/{id}/events");
        let destroy = async {
            stack.wait_for_status(&id, "ready", WITHIN).await;
            assert_eq!(stack.delete(&id).await.status(), 202);
        };
        let ((seen, made), ()) = tokio::join!(
            follow_reconnecting(&stack, &path, None, 3, |_, _| false),
            destroy
        );
        connections += made;
        let history = stack.history(&id).await;
        let expected: Vec<(u64, String)> = history
            .iter()
            .map(|e| {
                let sequence = e["sequence"].as_u64().unwrap();
                (sequence, e["type"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(seen, expected, "{made} connections");
        assert_eq!(seen.last().unwrap().1, "InfraDestroyed");
    }

    // Every environment's stream while other clients create and delete environments: reconnect
    // after every 1-20 events, until 200 events were read, then read on to the last one.
    let first_after = last_position(&stack).await;
    let traffic = system_tests::Traffic::start(&stack.base_url, stack.token(), 3);
    let (mut seen, made) =
        follow_reconnecting(&stack, "/v1/events", Some(first_after), 20, |id, _| {
            id >= first_after + 200
        })
        .await;
    connections += made;
    traffic.stop().await;
    stack.assert_committed_events_published_once().await;
    let last = last_position(&stack).await;
    if last > seen.last().unwrap().0 {
        let (rest, made) = follow_reconnecting(
            &stack,
            "/v1/events",
            Some(seen.last().unwrap().0),
            20,
            |id, _| id >= last,
        )
        .await;
        connections += made;
        seen.extend(rest);
    }
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (first_after + 1..=last).collect();
    assert_eq!(ids, expected, "positions in the events stream, each once");
    eprintln!(
        "{} events of /v1/events and {} lifecycles read over {connections} connections in {:?}",
        ids.len(),
        trials(),
        started.elapsed()
    );
}
