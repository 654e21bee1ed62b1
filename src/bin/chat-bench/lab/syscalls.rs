//! System calls per message: the server's whole tree traced with `strace -f -c` (every
//! process and thread it has, and, through `-f`, every one it starts while traced), and the
//! summary strace writes when it is interrupted, read into counts by name.
//!
//! strace stops the server at every system call, so a traced run is slowed many times over:
//! its counts are kept, its CPU and latency never are. Where strace is missing, ptrace is not
//! permitted or the OS has no strace, it says so, and the count is unknown, never 0. It only
//! ever traces and signals the strace it started, and the daemon's tree.

use std::path::PathBuf;
use std::process::Child;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long strace may take to attach to every thread, or to write its summary and exit
/// once told to stop.
const PATIENCE: Duration = Duration::from_secs(30);

/// How many of the most frequent system calls a line names.
pub const TOP: usize = 6;

/// strace's summary: every system call it counted, and their total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscalls {
    pub total: u64,
    /// Calls by name, the most frequent first.
    pub by_name: Vec<(String, u64)>,
}

impl Syscalls {
    /// The `TOP` most frequent.
    pub fn top(&self) -> &[(String, u64)] {
        self.by_name.get(..TOP).unwrap_or(&self.by_name)
    }
}

/// Reads the table `strace -c` writes:
///
/// ```text
/// % time     seconds  usecs/call     calls    errors syscall
/// ------ ----------- ----------- --------- --------- ----------------
///  68.18    0.003724         931         4         2 wait4
///   6.06    0.000331          25        13           read
/// ------ ----------- ----------- --------- --------- ----------------
/// 100.00    0.005462          15       359        52 total
/// ```
///
/// The `calls` column is found by its header (only the columns after it, `errors`, may be
/// blank in a row); a second table (another personality, e.g. 32-bit calls) adds to the
/// first. The total is strace's `total` row where there is one.
///
/// # Errors
/// No table in the text (strace counted nothing, or wrote something else).
pub fn parse_summary(text: &str) -> Result<Syscalls, String> {
    let mut calls_col = None;
    let mut by_name: Vec<(String, u64)> = Vec::new();
    let mut total = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.trim_start().starts_with("% time") {
            // "% time" is two words; a row has one figure there.
            calls_col = words
                .iter()
                .position(|w| *w == "calls")
                .and_then(|i| i.checked_sub(1));
            continue;
        }
        let Some(col) = calls_col else { continue };
        let (Some(name), Some(calls)) = (
            words.last(),
            words.get(col).and_then(|w| w.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if *name == "total" {
            total = Some(total.unwrap_or(0) + calls);
        } else if let Some(entry) = by_name.iter_mut().find(|(n, _)| n == name) {
            entry.1 += calls;
        } else {
            by_name.push(((*name).to_string(), calls));
        }
    }
    if calls_col.is_none() || by_name.is_empty() {
        return Err("strace left no summary table (it counted no system calls)".into());
    }
    by_name.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total = total.unwrap_or_else(|| by_name.iter().map(|(_, n)| n).sum());
    Ok(Syscalls { total, by_name })
}

/// A running `strace -f -c` attached to the daemon's tree.
pub struct Tracer {
    child: Child,
    dir: PathBuf,
    out: PathBuf,
    stderr: Option<JoinHandle<Vec<String>>>,
}

impl Tracer {
    /// Attaches strace to every process of the tree under `root` (all their threads: `-f`
    /// with `-p`), and returns once the kernel shows every thread traced.
    ///
    /// # Errors
    /// strace is missing or could not attach (ptrace not permitted), or this OS has no strace.
    #[cfg(target_os = "linux")]
    pub fn attach(root: u32) -> Result<Tracer, String> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let pids = super::tree::pids(root)?;
        let dir = crate::daemon::fresh_dir()?;
        let out = dir.join("strace-c.txt");
        let mut cmd = Command::new("strace");
        // -q: no "attached" line per thread on stderr; -o: the summary goes to the file.
        cmd.args(["-f", "-c", "-q", "-o"]).arg(&out);
        for pid in &pids {
            cmd.args(["-p", &pid.to_string()]);
        }
        let spawned = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(if e.kind() == std::io::ErrorKind::NotFound {
                    "strace is not installed; syscalls per message need it \
                     (apt install strace, dnf install strace)"
                        .into()
                } else {
                    format!("cannot run strace: {e}")
                });
            }
        };
        let stderr = child.stderr.take().map(|err| {
            std::thread::spawn(move || BufReader::new(err).lines().map_while(Result::ok).collect())
        });
        let mut tracer = Tracer {
            child,
            dir,
            out,
            stderr,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = tracer.child.try_wait() {
                return Err(format!(
                    "strace exited ({status}) before tracing the server (is ptrace \
                     permitted? see /proc/sys/kernel/yama/ptrace_scope, or a container \
                     without CAP_SYS_PTRACE): {}",
                    tracer.stderr_tail()
                ));
            }
            if all_traced_by(&pids, tracer.child.id()) {
                return Ok(tracer);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "strace did not attach to every thread of the server within {} s: {}",
                    PATIENCE.as_secs(),
                    tracer.stderr_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn attach(_root: u32) -> Result<Tracer, String> {
        Err(
            "syscall counting is not available on this OS (the lab uses Linux's \
             strace -f -c; FreeBSD's truss -f -c is not wired in)"
                .into(),
        )
    }

    /// Stops strace, which detaches and writes its summary, and reads the summary.
    ///
    /// # Errors
    /// strace did not exit in time or left no summary.
    pub fn detach(mut self) -> Result<Syscalls, String> {
        let pid = i32::try_from(self.child.id()).map_err(|e| e.to_string())?;
        // SIGTERM rather than SIGINT: strace takes either as "detach and summarise", but a
        // bench started in the background by a shell has SIGINT ignored, and so would strace.
        kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("SIGTERM to strace: {e}"))?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.child.try_wait() {
                // Its exit status is the signal's; the summary file says whether it worked.
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => return Err("strace did not exit within 30 s of SIGTERM".into()),
                Err(e) => return Err(format!("waiting for strace: {e}")),
            }
        }
        let text = std::fs::read_to_string(&self.out)
            .map_err(|e| format!("strace's summary {}: {e}", self.out.display()))?;
        parse_summary(&text).map_err(|e| format!("{e}: {}", self.stderr_tail()))
    }

    /// The last lines strace wrote on stderr, for an error message.
    fn stderr_tail(&mut self) -> String {
        // Only once strace has exited does its stderr end; before, say nothing rather than wait.
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            return "(strace still running)".into();
        }
        let lines = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let tail: Vec<String> = lines.iter().rev().take(5).rev().cloned().collect();
        if tail.is_empty() {
            "(strace said nothing)".into()
        } else {
            tail.join("; ")
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Only our own strace: killing it detaches the kernel's tracees with it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether every thread of every process in `pids` shows `tracer` as its TracerPid.
#[cfg(target_os = "linux")]
fn all_traced_by(pids: &[u32], tracer: u32) -> bool {
    pids.iter().all(|pid| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            // Gone: nothing left of it to trace.
            return true;
        };
        tasks.flatten().all(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let traced = status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<u32>().ok());
            // A task that vanished between the listing and the read has no status: not ours
            // to wait for.
            status.is_empty() || traced == Some(tracer)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `strace -f -c` of a small shell script, as strace 6.1 wrote it: rows with and without
    /// a figure in the `errors` column, and the `total` row.
    const WITH_ERRORS: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 68.18    0.003724         931         4         2 wait4
  8.31    0.000454           6        69        26 openat
  6.06    0.000331          25        13           read
  4.85    0.000265           4        60           mmap
  4.82    0.000263           5        51           close
  4.36    0.000238           3        63        16 newfstatat
  2.76    0.000151          37         4           munmap
  0.35    0.000019          19         1           fadvise64
  0.31    0.000017           8         2           futex
  0.00    0.000000           0         2           write
  0.00    0.000000           0        11           mprotect
  0.00    0.000000           0         9           brk
  0.00    0.000000           0         7           rt_sigaction
  0.00    0.000000           0         6           rt_sigprocmask
  0.00    0.000000           0         2           rt_sigreturn
  0.00    0.000000           0         2         2 ioctl
  0.00    0.000000           0         6           pread64
  0.00    0.000000           0         4         4 access
  0.00    0.000000           0         4           dup2
  0.00    0.000000           0         1           getpid
  0.00    0.000000           0         2           vfork
  0.00    0.000000           0         3           execve
  0.00    0.000000           0         4           fcntl
  0.00    0.000000           0         1           getuid
  0.00    0.000000           0         1           getgid
  0.00    0.000000           0         2           geteuid
  0.00    0.000000           0         1           getegid
  0.00    0.000000           0         1           getppid
  0.00    0.000000           0         2         2 statfs
  0.00    0.000000           0         3           arch_prctl
  0.00    0.000000           0         2           getdents64
  0.00    0.000000           0         3           set_tid_address
  0.00    0.000000           0         3           set_robust_list
  0.00    0.000000           0         3           prlimit64
  0.00    0.000000           0         3           getrandom
  0.00    0.000000           0         1           statx
  0.00    0.000000           0         3           rseq
------ ----------- ----------- --------- --------- ----------------
100.00    0.005462          15       359        52 total
";

    /// `strace -f -c -p` of a process that writes a line and sleeps 10 ms in a loop, where no
    /// call failed: the `errors` column is blank in every row, the total's included.
    const NO_ERRORS: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 77.35    0.000181           1        97           clock_nanosleep
 22.65    0.000053           0        97           write
------ ----------- ----------- --------- --------- ----------------
100.00    0.000234           1       194           total
";

    /// `strace -f -c -p` of `chatd serve --driver threads` under two senders (strace 6.1;
    /// wider last column): `accept4` fails with EAGAIN about once per message.
    const THREADS: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ------------------
 43.13    0.183016         104      1759           epoll_wait
 19.96    0.084692         218       388           fdatasync
 12.48    0.052937          36      1440           write
  9.82    0.041648          51       813           writev
  4.41    0.018724          47       395       393 accept4
  4.14    0.017586          21       809       404 recvfrom
  3.62    0.015353          39       388           pwrite64
  2.19    0.009285          66       139        18 futex
  0.16    0.000671          24        27           mprotect
  0.04    0.000180          90         2           shutdown
  0.02    0.000091          30         3           close
  0.01    0.000039          13         3           fcntl
  0.01    0.000026          26         1           madvise
  0.01    0.000024           4         5           epoll_ctl
  0.00    0.000016           3         5           sigaltstack
  0.00    0.000013           6         2           munmap
  0.00    0.000003           0         7           rt_sigprocmask
  0.00    0.000000           0         6           mmap
  0.00    0.000000           0         2           setsockopt
  0.00    0.000000           0         2           prctl
  0.00    0.000000           0         2           gettid
  0.00    0.000000           0         2           sched_getaffinity
  0.00    0.000000           0         2           restart_syscall
  0.00    0.000000           0         3           clock_nanosleep
  0.00    0.000000           0         2           set_robust_list
  0.00    0.000000           0         2           eventfd2
  0.00    0.000000           0         2           epoll_create1
  0.00    0.000000           0         4           statx
  0.00    0.000000           0         2           rseq
  0.00    0.000000           0         2           clone3
------ ----------- ----------- --------- --------- ------------------
100.00    0.424304          68      6219       815 total
";

    #[test]
    fn calls_are_read_from_rows_with_and_without_errors_and_the_total_row() {
        let s = parse_summary(WITH_ERRORS).expect("a table");
        assert_eq!(s.total, 359);
        assert_eq!(s.by_name.iter().map(|(_, n)| n).sum::<u64>(), 359);
        let top: Vec<(&str, u64)> = s.top().iter().map(|(n, c)| (n.as_str(), *c)).collect();
        assert_eq!(
            top,
            [
                ("openat", 69),
                ("newfstatat", 63),
                ("mmap", 60),
                ("close", 51),
                ("read", 13),
                ("mprotect", 11)
            ]
        );
        let s = parse_summary(NO_ERRORS).expect("a table");
        assert_eq!((s.total, s.by_name.len()), (194, 2));
        assert_eq!(s.top().len(), 2);
        assert_eq!(
            s.by_name.first(),
            Some(&("clock_nanosleep".to_string(), 97))
        );
        let s = parse_summary(THREADS).expect("a table");
        assert_eq!((s.total, s.by_name.len()), (6219, 30));
        let top: Vec<&str> = s.top().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            top,
            [
                "epoll_wait",
                "write",
                "writev",
                "recvfrom",
                "accept4",
                "fdatasync"
            ]
        );
    }

    #[test]
    fn a_second_personality_adds_to_the_first_and_no_table_is_an_error() {
        let two = format!("{NO_ERRORS}System call usage summary for 32 bit mode:\n{NO_ERRORS}");
        let s = parse_summary(&two).expect("two tables");
        assert_eq!(s.total, 388);
        assert_eq!(
            s.by_name.first(),
            Some(&("clock_nanosleep".to_string(), 194))
        );
        let no_total: String = NO_ERRORS
            .lines()
            .filter(|l| !l.ends_with("total"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse_summary(&no_total).map(|s| s.total), Ok(194));
        assert!(parse_summary("").is_err());
        assert!(
            parse_summary("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted")
                .is_err()
        );
        let header_only = "% time     seconds  usecs/call     calls    errors syscall\n\
                           ------ ----------- ----------- --------- --------- ----------------\n";
        assert!(parse_summary(header_only).is_err());
    }
}
