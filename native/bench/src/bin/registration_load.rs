//! A pure-Rust load loop over the same client code path as the NIF
//! (`mcp_registration::Call`), with no BEAM: the limit of our stack.
//!
//!     registration_load --endpoint URL --concurrency N --seconds S [--workers 2]
//!
//! Prints one JSON line: count, errors, seconds, rps, p50/p99/max latency in
//! microseconds and the CPU time this process used per registration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_registration::{Call, Options};
use mcp_registration_bench::{cpu_time, flag, percentile};
use serde_json::{json, Map, Value};

fn request(endpoint: &str) -> Map<String, Value> {
    json!({
        "registration_endpoint": endpoint,
        "client_name": "Benchmark Client",
        "redirect_uris": ["http://127.0.0.1:8080/callback"],
        "scope": "mcp:read mcp:write"
    })
    .as_object()
    .cloned()
    .expect("an object")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = flag(&args, "--endpoint").expect("--endpoint URL");
    let concurrency: usize =
        flag(&args, "--concurrency").map_or(16, |v| v.parse().expect("--concurrency N"));
    let seconds: f64 = flag(&args, "--seconds").map_or(3.0, |v| v.parse().expect("--seconds S"));
    let workers: usize = flag(&args, "--workers").map_or(2, |v| v.parse().expect("--workers N"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let template = Arc::new(request(&endpoint));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let results: Vec<(Vec<Duration>, usize)> = runtime.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let template = Arc::clone(&template);
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    while Instant::now() < deadline {
                        let began = Instant::now();
                        let call = Call::register((*template).clone(), Options::default())
                            .expect("valid request");
                        match call.run().await {
                            Ok(_) => latencies.push(began.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("load task"));
        }
        results
    });
    let elapsed = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    let errors: usize = results.iter().map(|(_, e)| e).sum();
    let mut latencies: Vec<Duration> = results.into_iter().flat_map(|(l, _)| l).collect();
    latencies.sort_unstable();
    let count = latencies.len();
    let us = |d: Duration| d.as_micros() as u64;
    println!(
        "{}",
        json!({
            "count": count,
            "errors": errors,
            "seconds": elapsed.as_secs_f64(),
            "rps": count as f64 / elapsed.as_secs_f64(),
            "p50_us": us(percentile(&latencies, 0.50)),
            "p99_us": us(percentile(&latencies, 0.99)),
            "max_us": us(latencies.last().copied().unwrap_or_default()),
            "cpu_us_per_registration": if count > 0 { cpu.as_micros() as f64 / count as f64 } else { 0.0 },
        })
    );
}
