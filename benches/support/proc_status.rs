//! What `/proc` says of a process the benchmarks started.
//!
//! Peak RSS comes from `VmHWM`, not from `getrusage`/`wait4`: Linux carries the high-water
//! mark of the address space a child replaced at `exec` into its `ru_maxrss`, and a
//! spawned child starts on the benchmark's own address space (its simulator, its generated
//! events), so `ru_maxrss` reports the benchmark. `VmHWM` belongs to the address space the
//! service runs in, and only grows.

/// The peak resident set (`VmHWM`) of a running process, in KiB; `None` once it is gone,
/// which includes a child that exited and is not yet reaped (its status has no `VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
