//! The HTTP transport against scripted raw TCP servers on 127.0.0.1: the CA
//! file, pool reuse and memory, body buffers sized by the server, retries on
//! stale keep-alive connections (RFC 9110 §9.2.2, RFC 9112 §9.3.1) and the
//! classification of transport failures.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_registration::{
    pool, Call, Error, Options, Outcome, ProxySetting, ProxyUrl, TransportError,
};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// -- A scripted server --------------------------------------------------------

/// What the server saw: accepted connections and complete request heads.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// Serves every accepted connection with `serve(connection_number, stream)`.
async fn server<F, Fut>(serve: F) -> (u16, Arc<Seen>)
where
    F: Fn(usize, TcpStream, Arc<Seen>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = counter.connections.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(serve(n, stream, counter.clone()));
        }
    });
    (port, seen)
}

/// Reads one request (head and `Content-Length` body); `false` at EOF.
async fn read_request(stream: &mut TcpStream, seen: &Seen) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if stream.read_exact(&mut body).await.is_err() {
        return false;
    }
    seen.requests.fetch_add(1, Ordering::SeqCst);
    true
}

const CLIENT: &str = r#"{"client_id":"abc"}"#;

fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers every request with `201 {"client_id":"abc"}`, keeping the
/// connection open.
async fn keep_alive(_: usize, mut stream: TcpStream, seen: Arc<Seen>) {
    while read_request(&mut stream, &seen).await {
        if stream.write_all(&answer("200 OK", CLIENT)).await.is_err() {
            return;
        }
    }
}

fn registration(port: u16) -> Map<String, Value> {
    json!({
        "registration_endpoint": format!("http://127.0.0.1:{port}/register"),
        "client_name": "Transport",
        "redirect_uris": ["http://localhost:8080/callback"],
    })
    .as_object()
    .unwrap()
    .clone()
}

fn uri(port: u16) -> String {
    format!("http://127.0.0.1:{port}/register/abc")
}

fn options() -> Options {
    Options {
        timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

async fn read(port: u16, options: Options) -> Result<Outcome, Error> {
    Call::read(&uri(port), "rat".into(), options)
        .unwrap()
        .run()
        .await
}

/// `read` with `options()` over https, for servers that break the TLS handshake.
async fn read_https(port: u16) -> Result<Outcome, Error> {
    let url = format!("https://127.0.0.1:{port}/register/abc");
    Call::read(&url, "rat".into(), options())
        .unwrap()
        .run()
        .await
}

async fn register(port: u16, options: Options) -> Result<Outcome, Error> {
    Call::register(registration(port), options)
        .unwrap()
        .run()
        .await
}

/// Runs a call on its own task: a panic inside the call is a failed test
/// naming the panic, not an aborted test binary.
async fn no_panic(
    call: impl std::future::Future<Output = Result<Outcome, Error>> + Send + 'static,
) -> Result<Outcome, Error> {
    match tokio::spawn(call).await {
        Ok(result) => result,
        Err(e) => panic!("the call panicked: {e}"),
    }
}

fn transport(result: Result<Outcome, Error>) -> TransportError {
    match result {
        Err(Error::Transport(reason)) => reason,
        other => panic!("expected a transport error, got {other:?}"),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mcp_transport_{name}_{}_{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_ca(path: &Path) -> Options {
    Options {
        cacertfile: Some(path.to_owned()),
        ..options()
    }
}

// -- No allocation sized by the server (issue 9, point 9) -----------------------

/// A server announcing `length` bytes and sending two.
async fn lying_length(length: &'static str) -> u16 {
    let (port, _) = server(move |_, mut stream, seen| async move {
        if read_request(&mut stream, &seen).await {
            let head = format!("HTTP/1.1 201 Created\r\ncontent-length: {length}\r\n\r\n{{}}");
            let _ = stream.write_all(head.as_bytes()).await;
        }
    })
    .await;
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_of_2_pow_63_is_a_short_body_not_a_panic() {
    // RFC 9112 §6.3: the body ends early, which is a broken connection.
    let port = lying_length("9223372036854775808").await;
    let options = Options {
        max_response_bytes: u64::MAX,
        ..options()
    };
    let reason = transport(no_panic(register(port, options)).await);
    assert!(
        matches!(reason, TransportError::Connection(_)),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_of_10_pow_12_reserves_no_terabyte() {
    let port = lying_length("1000000000000").await;
    let options = Options {
        max_response_bytes: 2_000_000_000_000,
        ..options()
    };
    let reason = transport(no_panic(register(port, options)).await);
    assert!(
        matches!(reason, TransportError::Connection(_)),
        "{reason:?}"
    );
}

// -- Stale keep-alive connections (issue 9, point 10) ----------------------------

/// The second request the server receives is taken and its connection
/// closed without an answer, the way a server closes an idle keep-alive
/// connection just as the client reuses it. Every other request is answered
/// and its connection kept open. (Counted over the server, not per
/// connection: the client may carry the second request on a new connection
/// when the first is not back in its pool yet.)
async fn closes_on_second_request(_: usize, mut stream: TcpStream, seen: Arc<Seen>) {
    while read_request(&mut stream, &seen).await {
        if seen.requests.load(Ordering::SeqCst) == 2 {
            return;
        }
        if stream.write_all(&answer("200 OK", CLIENT)).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_a_connection_closed_before_the_answer_is_sent_again_once() {
    // RFC 9110 §9.2.2: GET is idempotent, so it may be repeated.
    let (port, seen) = server(closes_on_second_request).await;
    assert!(read(port, options()).await.is_ok());
    assert!(read(port, options()).await.is_ok());
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_a_connection_closed_before_the_answer_is_sent_again_once() {
    // RFC 9110 §9.2.2: DELETE is idempotent.
    let (port, seen) = server(closes_on_second_request).await;
    let delete = |port| async move {
        Call::delete(&uri(port), "rat".into(), options())
            .unwrap()
            .run()
            .await
    };
    assert!(delete(port).await.is_ok());
    assert!(delete(port).await.is_ok());
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_may_have_reached_the_server_is_never_sent_again() {
    // RFC 9112 §9.3.1: a non-idempotent request is not retried automatically.
    let (port, seen) = server(closes_on_second_request).await;
    assert!(register(port, options()).await.is_ok());
    let reason = transport(register(port, options()).await);
    assert!(
        matches!(reason, TransportError::Connection(_)),
        "{reason:?}"
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_server_that_closes_every_connection_after_answering() {
    // The server answers without `Connection: close`, then closes: the client
    // pools the connection and may reuse it before it sees the close.
    let (port, seen) = server(|_, mut stream, seen| async move {
        if read_request(&mut stream, &seen).await {
            let _ = stream.write_all(&answer("200 OK", CLIENT)).await;
        }
    })
    .await;
    let calls = 300;
    let mut failures = Vec::new();
    for _ in 0..calls {
        if let Err(e) = read(port, options()).await {
            failures.push(e);
        }
    }
    assert_eq!(
        failures,
        vec![],
        "{} of {calls} calls failed",
        failures.len()
    );
    // Each call sent its request at most twice.
    let requests = seen.requests.load(Ordering::SeqCst);
    eprintln!("{calls} reads took {requests} requests");
    assert!((calls..=2 * calls).contains(&requests), "{requests}");
}

// -- Pools: bounded whatever the options (issue 9, point 8) ---------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_connect_timeouts_share_one_pool_and_one_connection() {
    let (port, seen) = server(keep_alive).await;
    for ms in 0..3_000u64 {
        let options = Options {
            connect_timeout: Duration::from_millis(1_000 + ms),
            ..options()
        };
        assert!(read(port, options).await.is_ok());
    }
    // The idle connection is reused by the next call (it was 3,000 pools and
    // 3,000 sockets). A call may start a connection before the previous
    // call's connection is back in the pool: hyper returns it from its
    // connection task, which a loaded 2-core machine may run late. So the
    // bound is 1 % of the calls, loose on purpose: it still tells one pool
    // per value (3,000 connections) from a shared pool (1 to 5 measured).
    let connections = seen.connections.load(Ordering::SeqCst);
    assert!(
        connections <= 30,
        "{connections} connections for 3,000 calls"
    );
    assert!(pool::pool_count() <= pool::MAX_POOLS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_stay_bounded_whatever_the_proxies_and_ca_files() {
    // Each distinct proxy makes a pool; none of these proxies listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for user in 0..(3 * pool::MAX_POOLS) {
        let url = format!("http://user{user}:pw@127.0.0.1:{port}");
        let options = Options {
            proxy: ProxySetting::Url(ProxyUrl::parse(&url).unwrap()),
            ..options()
        };
        let reason = transport(read(port, options).await);
        assert!(matches!(reason, TransportError::Connect(_)), "{reason:?}");
        assert!(pool::pool_count() <= pool::MAX_POOLS);
    }
}

/// Accepts and then never answers: a TLS handshake to it never ends.
async fn silent(_: usize, mut stream: TcpStream, _: Arc<Seen>) {
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_keeps_its_own_connect_timeout() {
    let (port, _) = server(silent).await;
    let url = format!("https://127.0.0.1:{port}/register/abc");
    for connect_ms in [200u64, 900] {
        let options = Options {
            connect_timeout: Duration::from_millis(connect_ms),
            timeout: Duration::from_secs(10),
            ..Options::default()
        };
        let started = Instant::now();
        let result = Call::read(&url, "rat".into(), options).unwrap().run().await;
        let elapsed = started.elapsed();
        let reason = transport(result);
        assert!(matches!(reason, TransportError::Connect(_)), "{reason:?}");
        assert!(
            elapsed >= Duration::from_millis(connect_ms)
                && elapsed < Duration::from_millis(connect_ms + 700),
            "connect_timeout {connect_ms} ms took {elapsed:?}"
        );
    }
}

// -- The CA file (issue 9, point 7) ---------------------------------------------

/// A CA file that is refused must be refused quickly, without blocking the
/// runtime: a call without a CA file, made at the same time, still answers.
async fn refused_quickly(path: &Path) -> String {
    let (port, _) = server(keep_alive).await;
    let started = Instant::now();
    let call = tokio::spawn(register(port, with_ca(path)));
    let other = tokio::time::timeout(Duration::from_secs(3), register(port, options())).await;
    assert!(matches!(other, Ok(Ok(_))), "an unrelated call: {other:?}");
    let result = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .expect("the call with the CA file ended")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match transport(result) {
        TransportError::CaCertFile(message) => message,
        other => panic!("expected {{:cacertfile, _}}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_without_writer_is_refused_and_wedges_nothing() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("ca.pem");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let message = refused_quickly(&fifo).await;
    assert!(message.contains("not a regular file"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_zero_is_refused_without_reading_it() {
    let message = refused_quickly(Path::new("/dev/zero")).await;
    assert!(message.contains("not a regular file"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_file_is_refused_by_its_size() {
    let dir = temp_dir("huge");
    let path = dir.join("ca.pem");
    // Sparse: 200 MB long, no disk used.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(200 * 1024 * 1024)
        .unwrap();
    let message = refused_quickly(&path).await;
    assert!(message.contains("larger than"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_sections_that_are_not_certificates_are_refused() {
    let dir = temp_dir("not_cert");
    let armoured = dir.join("armoured.pem");
    std::fs::write(
        &armoured,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let message = refused_quickly(&armoured).await;
    assert!(
        message.contains("not a valid X.509 certificate"),
        "{message}"
    );

    let key = dir.join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let message = refused_quickly(&key).await;
    assert!(message.contains("PRIVATE KEY"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

// -- Classification by error type (issue 9, point 14) ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_http_port_is_a_tls_failure() {
    // The plain server answers the ClientHello with an HTTP 400.
    let (port, _) = server(|_, mut stream, _| async move {
        let mut hello = [0u8; 512];
        let _ = stream.read(&mut hello).await;
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
    })
    .await;
    let reason = transport(read_https(port).await);
    assert!(matches!(reason, TransportError::Tls(_)), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_during_the_tls_handshake_is_a_tls_failure() {
    let (port, _) = server(|_, mut stream, _| async move {
        let mut hello = [0u8; 512];
        let _ = stream.read(&mut hello).await;
    })
    .await;
    let reason = transport(read_https(port).await);
    assert!(matches!(reason, TransportError::Tls(_)), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_connect_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    for url in [
        format!("http://127.0.0.1:{port}/r"),
        format!("https://127.0.0.1:{port}/r"),
    ] {
        let result = Call::read(&url, "rat".into(), options())
            .unwrap()
            .run()
            .await;
        let reason = transport(result);
        assert!(matches!(reason, TransportError::Connect(_)), "{reason:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_the_request_is_a_connection_failure() {
    let (port, _) = server(|_, mut stream, seen| async move {
        if read_request(&mut stream, &seen).await {
            stream.set_zero_linger().unwrap();
        }
    })
    .await;
    let reason = transport(register(port, options()).await);
    assert!(
        matches!(reason, TransportError::Connection(_)),
        "{reason:?}"
    );
}
