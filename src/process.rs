//! What the kernel says about this process (`/proc/self`), for `/metrics`: memory, CPU time,
//! threads and file descriptors. Linux only; elsewhere every figure is absent.

/// One reading; a figure the kernel did not give is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    /// User plus system CPU time.
    pub cpu_seconds: Option<f64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    /// Unix seconds at which the process started.
    pub start_time_seconds: Option<f64>,
}

/// Reads `/proc/self`. Blocking, but cheap: a few small in-memory files and the fd directory.
pub fn read() -> ProcessStats {
    let mut out = ProcessStats::default();
    let ticks = clock_ticks();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The command name (field 2) is in parentheses and may hold spaces: fields are
        // counted from the last ')'.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // `rest` starts at field 3 (state), so field N is fields[N - 3].
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            if let (Some(utime), Some(stime), Some(ticks)) = (field(14), field(15), ticks) {
                out.cpu_seconds = Some((utime + stime) as f64 / ticks as f64);
            }
            out.threads = field(20);
            out.virtual_bytes = field(23);
            if let (Some(start), Some(ticks), Some(boot)) = (field(22), ticks, boot_time()) {
                out.start_time_seconds = Some(boot as f64 + start as f64 / ticks as f64);
            }
            if let (Some(pages), Some(page)) = (field(24), page_size()) {
                out.resident_bytes = Some(pages * page);
            }
        }
    }
    out.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    out.max_fds = max_open_files();
    out
}

fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (n > 0).then_some(n as u64)
}

fn page_size() -> Option<u64> {
    // SAFETY: as above.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (n > 0).then_some(n as u64)
}

/// When the machine booted, in Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit on open files.
fn max_open_files() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_threads_and_open_files() {
        let s = super::read();
        assert!(s.resident_bytes.unwrap() > 1 << 20, "{s:?}");
        assert!(s.threads.unwrap() >= 1);
        assert!(s.open_fds.unwrap() >= 3);
        // No figure when the soft limit is unlimited: nothing to compare then.
        if let Some(max) = s.max_fds {
            assert!(max >= s.open_fds.unwrap());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0, "{started} vs {now}");
        // CPU time counts what this thread burns: spin for 50 ms of wall time and see it grow.
        let before = s.cpu_seconds.unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = super::read().cpu_seconds.unwrap();
        assert!(after >= before + 0.01, "CPU seconds {before} then {after} after a 50 ms spin");
    }
}
