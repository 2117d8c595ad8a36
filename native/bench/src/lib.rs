//! Shared bits of the benchmark binaries.

/// The same allocator as the NIF (see `ex_mcp_nif`), so that the pure-Rust
/// loop and the standalone server run exactly what the library runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

/// Reads `--name value` flags; panics with a usage line on anything else.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

/// This process's CPU time (user + system), from /proc/self/stat.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5): indices 11 and 12 here.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 1000 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    100
}

/// The value at quantile `q` of sorted samples.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
