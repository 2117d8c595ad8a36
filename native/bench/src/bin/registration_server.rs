//! The embedded registration server in its own OS process, so that a
//! benchmark's load generators and the server do not share a runtime.
//!
//!     registration_server [--port 0] [--workers 2]
//!
//! Prints `LISTENING <registration endpoint>` once bound, then serves until
//! its standard input closes.

use std::io::Read;

use mcp_registration::server::{self, ServerConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 =
        mcp_registration_bench::flag(&args, "--port").map_or(0, |p| p.parse().expect("--port N"));
    let workers: usize = mcp_registration_bench::flag(&args, "--workers")
        .map_or(2, |w| w.parse().expect("--workers N"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = ServerConfig {
        bind: ([127, 0, 0, 1], port).into(),
        ..ServerConfig::default()
    };
    let server = server::start_on(runtime.handle(), config).expect("cannot start the server");
    println!("LISTENING {}", server.registration_endpoint());
    // Serve until the parent closes our stdin (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    server.shutdown();
}
