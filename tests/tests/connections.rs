//! What the server does with connections that send nothing, send slowly, or come by the
//! thousand: header, body and idle timeouts, the connection limit, the file-descriptor limit,
//! and memory given back after the connections close. Raw sockets, no token unless needed.

use reqwest::StatusCode;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous upper bound for anything that should happen after a sub-second timeout.
const WITHIN: Duration = Duration::from_secs(10);

async fn api_with(settings: &[(&str, &str)]) -> Stack {
    Stack::start_with(StackOptions {
        executor: false,
        api_env: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    })
    .await
}

fn address(stack: &Stack) -> String {
    stack.base_url.trim_start_matches("http://").to_owned()
}

fn api_pid(stack: &Stack) -> u32 {
    stack.api.id().expect("the API process runs")
}

async fn connect(stack: &Stack) -> TcpStream {
    TcpStream::connect(address(stack)).await.expect("connect")
}

/// Reads until the server closes the connection; `None` if it is still open after `bound`.
/// Returns what the server sent before closing.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read_to_close = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read_to_close).await.ok()?;
    Some(String::from_utf8_lossy(&received).into_owned())
}

/// Sends `GET path` on a kept-alive connection and reads one response; returns its status line.
async fn get(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("read response");
            assert!(n > 0, "closed before answering");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return head.lines().next().unwrap_or_default().to_owned();
                }
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("a response")
}

/// A line of /proc/<pid>/status, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}

/// User + system CPU time of a process, in clock ticks (USER_HZ, 100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Lowers a running process's open-files limit (util-linux `prlimit`).
fn limit_open_files(pid: u32, limit: u32) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(status.success(), "prlimit failed");
}

/// Raises this test process's open-files limit to its hard limit; returns it.
fn raise_own_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_trickling_connections_are_closed_after_the_header_timeout() {
    let stack = api_with(&[
        ("PROVISIONER_HTTP_HEADER_TIMEOUT_MS", "500"),
        ("PROVISIONER_HTTP_IDLE_TIMEOUT_MS", "60000"),
    ])
    .await;

    let mut idle = connect(&stack).await;
    let sent = closed_within(&mut idle, WITHIN)
        .await
        .expect("a connection that sends nothing is closed");
    assert_eq!(sent, "", "closed without an answer");

    // One header line every 200 ms: each arrives well within any per-read timeout, but the
    // head is never complete.
    let mut trickle = connect(&stack).await;
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for n in 0.. {
        if started.elapsed() > WITHIN {
            break;
        }
        let line = format!("X-Trickle-{n}: x\r\n");
        if trickle.write_all(line.as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut trickle, Duration::from_millis(200))
            .await
            .is_some()
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a header trickled line by line was still being read after {WITHIN:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_waits_the_idle_timeout_not_the_header_timeout() {
    let stack = api_with(&[
        ("PROVISIONER_HTTP_HEADER_TIMEOUT_MS", "300"),
        ("PROVISIONER_HTTP_IDLE_TIMEOUT_MS", "3000"),
    ])
    .await;
    let mut connection = connect(&stack).await;
    assert_eq!(get(&mut connection, "/healthz").await, "HTTP/1.1 200 OK");
    // Longer than the header timeout: still open, and serves the next request.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(get(&mut connection, "/healthz").await, "HTTP/1.1 200 OK");
    let sent = closed_within(&mut connection, WITHIN)
        .await
        .expect("an idle kept-alive connection is closed after the idle timeout");
    assert_eq!(sent, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_that_stops_arriving_is_answered_and_the_connection_closed() {
    let stack = api_with(&[("PROVISIONER_HTTP_BODY_TIMEOUT_MS", "500")]).await;
    let mut connection = connect(&stack).await;
    let head = format!(
        "POST /v1/environments HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/yaml\r\nContent-Length: 1000\r\n\r\nname: stalled\n",
        stack.token()
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    let sent = closed_within(&mut connection, WITHIN)
        .await
        .expect("a body that never finishes ends its connection");
    let status = sent.lines().next().unwrap_or_default();
    assert!(
        status.starts_with("HTTP/1.1 408"),
        "expected 408 before the close, got {sent:?}"
    );
    assert!(sent.contains(r#""code":"request_timeout""#), "{sent}");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_streams_outlive_the_idle_and_body_timeouts() {
    let stack = api_with(&[
        ("PROVISIONER_HTTP_HEADER_TIMEOUT_MS", "300"),
        ("PROVISIONER_HTTP_IDLE_TIMEOUT_MS", "300"),
        ("PROVISIONER_HTTP_BODY_TIMEOUT_MS", "300"),
    ])
    .await;
    let response = stack
        .request(reqwest::Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let started = Instant::now();
    let mut chunks = 0;
    while started.elapsed() < Duration::from_secs(3) {
        use futures::StreamExt;
        match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
            Ok(Some(Ok(_))) => chunks += 1,
            other => panic!("the stream ended or stalled after {chunks} chunks: {other:?}"),
        }
    }
    assert!(
        chunks >= 2,
        "keep-alive comments every second; got {chunks}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_while_idle_sockets_fill_the_connection_limit() {
    const LIMIT: usize = 64;
    let stack = api_with(&[
        ("PROVISIONER_HTTP_MAX_CONNECTIONS", &LIMIT.to_string()),
        // Long timeouts: room must come from the limit, not from timing the sockets out.
        ("PROVISIONER_HTTP_HEADER_TIMEOUT_MS", "120000"),
        ("PROVISIONER_HTTP_IDLE_TIMEOUT_MS", "120000"),
    ])
    .await;
    let pid = api_pid(&stack);
    let baseline_fds = open_fds(pid);
    // Fewer files than idle sockets: without a limit, accepting them exhausts the process.
    limit_open_files(pid, 200);

    let mut idle = Vec::new();
    for _ in 0..300 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address(&stack)))
            .await
        {
            Ok(Ok(stream)) => idle.push(stream),
            _ => break,
        }
    }
    assert!(idle.len() > LIMIT, "opened only {} sockets", idle.len());

    let client = reqwest::Client::builder().timeout(WITHIN).build().unwrap();
    for _ in 0..3 {
        let response = client
            .get(format!("{}/healthz", stack.base_url))
            .send()
            .await
            .expect("/healthz answers on a new connection at the limit");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Room for a few more database connections, far from the 300 sockets offered.
    let fds = open_fds(pid);
    assert!(
        fds <= baseline_fds + LIMIT + 16,
        "{fds} files open with {LIMIT} connections allowed (baseline {baseline_fds})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_the_server_backs_off_and_recovers() {
    let stack = api_with(&[
        ("PROVISIONER_HTTP_HEADER_TIMEOUT_MS", "120000"),
        ("PROVISIONER_HTTP_IDLE_TIMEOUT_MS", "120000"),
    ])
    .await;
    let pid = api_pid(&stack);
    // Below the configured connection limit: accept itself fails with EMFILE.
    limit_open_files(pid, 100);
    let mut idle = Vec::new();
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address(&stack)))
            .await
        {
            Ok(Ok(stream)) => idle.push(stream),
            _ => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 50,
        "{spent} ticks of CPU in 2 s at the file-descriptor limit: accept is spinning"
    );
    drop(idle);
    let client = reqwest::Client::builder().timeout(WITHIN).build().unwrap();
    let response = client
        .get(format!("{}/healthz", stack.base_url))
        .send()
        .await
        .expect("/healthz answers once the sockets are gone");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_returns_near_its_baseline_after_thousands_of_connections_close() {
    let hard = raise_own_open_files_limit();
    let count = 4000.min(usize::try_from(hard).unwrap_or(4000).saturating_sub(500));
    let stack = api_with(&[
        ("PROVISIONER_HTTP_HEADER_TIMEOUT_MS", "600000"),
        ("PROVISIONER_HTTP_IDLE_TIMEOUT_MS", "600000"),
    ])
    .await;
    let pid = api_pid(&stack);
    // Warm up: the first requests allocate what stays for the process's life.
    for _ in 0..20 {
        let mut connection = connect(&stack).await;
        get(&mut connection, "/healthz").await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = status_kb(pid, "VmRSS");

    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let mut connection = connect(&stack).await;
        get(&mut connection, "/healthz").await;
        open.push(connection);
    }
    let during = status_kb(pid, "VmRSS");
    let growth = during.saturating_sub(baseline);
    assert!(
        growth > 8 * 1024,
        "{count} connections grew RSS by only {growth} kB: nothing to measure"
    );
    drop(open);

    let bound = baseline + growth / 3;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = status_kb(pid, "VmRSS");
    while after > bound && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = status_kb(pid, "VmRSS");
    }
    assert!(
        after <= bound,
        "RSS {baseline} kB before, {during} kB with {count} connections, still {after} kB a \
         minute after they closed"
    );
}

/// Whether a child process has exited (gone, or a zombie not yet reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat[stat.rfind(')').expect("comm") + 2..].starts_with('Z'),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_requests_in_progress_only_up_to_the_drain_timeout() {
    let stack = api_with(&[
        ("PROVISIONER_HTTP_BODY_TIMEOUT_MS", "600000"),
        ("PROVISIONER_HTTP_DRAIN_TIMEOUT_MS", "500"),
    ])
    .await;
    let pid = api_pid(&stack);
    // A create whose body stops arriving: in progress until the body timeout, ten minutes.
    let mut stalled = connect(&stack).await;
    let head = format!(
        "POST /v1/environments HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/yaml\r\nContent-Length: 1000\r\n\r\nname: stalled\n",
        stack.token()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut idle = connect(&stack).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    assert!(
        closed_within(&mut idle, WITHIN).await.is_some(),
        "an idle connection is closed at shutdown"
    );
    let deadline = Instant::now() + WITHIN;
    while !exited(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        exited(pid),
        "`serve` still running {WITHIN:?} after SIGTERM, with a 500 ms drain timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_over_64_kib_is_refused_with_431() {
    let stack = api_with(&[]).await;
    let mut connection = connect(&stack).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    // The server may stop reading (and answer) before the whole head is written.
    let _ = connection.write_all(head.as_bytes()).await;
    let sent = closed_within(&mut connection, WITHIN)
        .await
        .expect("an oversized head ends its connection");
    assert!(
        sent.starts_with("HTTP/1.1 431"),
        "expected 431, got {:?}",
        sent.lines().next()
    );
}
