//! The core's deadline covers the whole call (README "Guarantees"; the
//! `timeout` option): an update is a GET and a PUT (RFC 7592 §2.2: read,
//! merge, replace), and both round trips together must end at the deadline.
//! The Elixir side waits with the same timeout, so only a test of the core
//! itself can tell a whole-call deadline from a per-round-trip one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mcp_registration::{Call, Error, Options, Outcome, TransportError};
use serde_json::{json, Map, Value};

const DEADLINE: Duration = Duration::from_millis(500);
/// Each round trip takes 60 % of the deadline: one fits, two do not.
const ROUND_TRIP: Duration = Duration::from_millis(300);
/// How late past the deadline a call may end on a loaded two-core machine
/// (the timer fires, the task is woken, the connection is dropped).
const SLACK: Duration = Duration::from_millis(150);

/// A keep-alive HTTP/1.1 server on 127.0.0.1 that answers every request
/// after `delay` with a client information document. Returns its address
/// and the count of requests it has fully read.
fn slow_server(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            thread::spawn(move || serve(stream, delay, &counter));
        }
    });
    (addr, requests)
}

fn serve(stream: TcpStream, delay: Duration, requests: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut content_length = 0;
        let mut line = String::new();
        // Request line and headers; EOF means the client hung up.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        // The fault under test: a slow server, not a synchronisation.
        thread::sleep(delay);
        let document = r#"{"client_id":"c1","client_name":"Old"}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{document}",
            document.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn options() -> Options {
    Options {
        timeout: DEADLINE,
        ..Options::default()
    }
}

fn updates() -> Map<String, Value> {
    json!({"client_name": "New"}).as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_two_round_trips_exceed_the_deadline_times_out_at_the_deadline() {
    let (addr, requests) = slow_server(ROUND_TRIP);
    let uri = format!("http://{addr}/register/c1");

    // One round trip fits in the deadline on its own.
    let read = Call::read(&uri, "token".into(), options()).unwrap();
    assert!(matches!(read.run().await, Ok(Outcome::Client(_))));

    let update = Call::update(&uri, "token".into(), updates(), false, options()).unwrap();
    let started = Instant::now();
    let result = update.run().await;
    let elapsed = started.elapsed();

    assert_eq!(result, Err(Error::Transport(TransportError::Timeout)));
    assert!(
        elapsed >= DEADLINE,
        "ended before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < DEADLINE + SLACK,
        "ended {elapsed:?} after it started, past the {DEADLINE:?} deadline"
    );
    // The read, the update's GET and its PUT reached the server: the
    // deadline struck during the PUT, not before it.
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacing_update_is_one_round_trip_and_fits_the_same_deadline() {
    let (addr, requests) = slow_server(ROUND_TRIP);
    let uri = format!("http://{addr}/register/c1");

    let update = Call::update(&uri, "token".into(), updates(), true, options()).unwrap();
    assert!(matches!(update.run().await, Ok(Outcome::Client(_))));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}
