//! What the bench needs from the OS that Linux and FreeBSD provide differently: running a
//! server pinned to one CPU (`taskset -c` / `cpuset -l`), reading another process's CPU time
//! and memory (`/proc` / `ps`), and naming the machine for the report.
//!
//! A figure that cannot be read here is `None`, which the reports show as `-` or `null`; it
//! must never come out as 0, which would read as a measurement.

use std::path::Path;
use std::process::Command;

/// What a server process used so far, each figure `None` where this OS (or a process that is
/// gone) does not tell.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub cpu_secs: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    pub rss_kib: Option<u64>,
}

/// A command running `program`, on CPU `cpu` alone when given.
///
/// # Errors
/// Pinning was asked for on an OS where the bench does not know how.
pub fn command_on_cpu(program: &Path, cpu: Option<usize>) -> Result<Command, String> {
    let Some(cpu) = cpu else {
        return Ok(Command::new(program));
    };
    let (pinner, flag) = pinner()?;
    let mut c = Command::new(pinner);
    c.args([flag, &cpu.to_string()]).arg(program);
    Ok(c)
}

#[cfg(target_os = "linux")]
fn pinner() -> Result<(&'static str, &'static str), String> {
    Ok(("taskset", "-c"))
}

#[cfg(target_os = "freebsd")]
fn pinner() -> Result<(&'static str, &'static str), String> {
    Ok(("cpuset", "-l"))
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn pinner() -> Result<(&'static str, &'static str), String> {
    Err("--server-cpu: pinning a server is not available on this OS".into())
}

/// CPU time and RSS of any process, from /proc/PID/stat and /proc/PID/status.
#[cfg(target_os = "linux")]
pub fn usage_of(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let status = status.as_deref().unwrap_or_default();
    Usage {
        cpu_secs: stat.as_deref().and_then(cpu_secs),
        peak_rss_kib: kib_of(status, "VmHWM:"),
        rss_kib: kib_of(status, "VmRSS:"),
    }
}

/// CPU time and RSS of any process, from `ps`. FreeBSD keeps a process's peak RSS only for
/// the process itself (getrusage), so that figure is not available for the server.
#[cfg(target_os = "freebsd")]
pub fn usage_of(pid: u32) -> Usage {
    let out = Command::new("ps")
        .args(["-o", "time=,rss=", "-p", &pid.to_string()])
        .env("LC_ALL", "C")
        .output();
    let (cpu_secs, rss_kib) = match out {
        Ok(out) if out.status.success() => parse_ps(&String::from_utf8_lossy(&out.stdout)),
        _ => (None, None),
    };
    Usage {
        cpu_secs,
        peak_rss_kib: None,
        rss_kib,
    }
}

/// How many threads of process `pid` have a name starting with `prefix` (chatd names its
/// reactors `reactor-N`), from /proc/PID/task/*/comm; `None` when that cannot be read.
#[cfg(target_os = "linux")]
pub fn threads_named(pid: u32, prefix: &str) -> Option<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let names = tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok());
    Some(names.filter(|n| n.starts_with(prefix)).count())
}

/// Thread names of another process are not read here on other systems.
#[cfg(not(target_os = "linux"))]
pub fn threads_named(_pid: u32, _prefix: &str) -> Option<usize> {
    None
}

/// Nothing is known how to read on other systems.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn usage_of(_pid: u32) -> Usage {
    Usage::default()
}

/// The unit of utime/stime in /proc/PID/stat: USER_HZ, which Linux fixes at 100 for userspace
/// on every architecture it runs on.
#[cfg(any(target_os = "linux", test))]
const USER_HZ: f64 = 100.0;

/// utime + stime of /proc/PID/stat, in seconds. The fields are counted after the command
/// name's closing parenthesis, since the name itself may hold spaces.
#[cfg(any(target_os = "linux", test))]
pub fn cpu_secs(stat: &str) -> Option<f64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// A `kB` field of /proc/PID/status, such as `VmHWM:` (peak RSS) or `VmRSS:`.
#[cfg(any(target_os = "linux", test))]
fn kib_of(status: &str, field: &str) -> Option<u64> {
    let v = status.lines().find_map(|l| l.strip_prefix(field))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

/// `ps -o time=,rss=` output: CPU time (`[[DD-]HH:]MM:SS[.hh]`; FreeBSD prints minutes past
/// 59 as `MMM:SS.hh`) and RSS in KiB.
#[cfg(any(target_os = "freebsd", test))]
fn parse_ps(out: &str) -> (Option<f64>, Option<u64>) {
    let mut words = out.split_whitespace();
    let cpu = words.next().and_then(clock_secs);
    let rss = words.next().and_then(|w| w.parse().ok());
    (cpu, rss)
}

#[cfg(any(target_os = "freebsd", test))]
fn clock_secs(clock: &str) -> Option<f64> {
    let (days, clock) = match clock.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().ok()?, rest),
        None => (0.0, clock),
    };
    let mut secs = 0.0;
    for part in clock.split(':') {
        let part: f64 = part.parse().ok()?;
        secs = secs * 60.0 + part;
    }
    Some(days * 86_400.0 + secs)
}

/// CPUs, model and kernel, for the report's header. Counted from the system, not from the
/// bench's affinity: the bench is pinned by now, so that would say 1.
#[cfg(target_os = "linux")]
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

/// CPUs, model and kernel, for the report's header, from sysctl(8).
#[cfg(target_os = "freebsd")]
pub fn machine() -> String {
    let sysctl = |name: &str| {
        Command::new("sysctl")
            .args(["-n", name])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "{} CPUs ({}), FreeBSD {}",
        sysctl("hw.ncpu"),
        sysctl("hw.model"),
        sysctl("kern.osrelease")
    )
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn machine() -> String {
    format!(
        "? CPUs, {} (not described on this OS)",
        std::env::consts::OS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_counted_after_the_command_name() {
        // pid (comm with spaces) state ppid ... utime=250 stime=50 at fields 14 and 15.
        let stat = "42 (chatd x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0";
        assert_eq!(cpu_secs(stat), Some(3.0));
        assert_eq!(cpu_secs("garbage"), None);
    }

    #[test]
    fn peak_rss_is_vm_hwm() {
        let status = "Name:\tchatd\nVmPeak:\t  9000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(kib_of(status, "VmHWM:"), Some(5120));
        assert_eq!(kib_of(status, "VmRSS:"), Some(4000));
        assert_eq!(kib_of("", "VmRSS:"), None);
    }

    #[test]
    fn ps_time_and_rss_are_read_in_both_clock_formats() {
        // FreeBSD: minutes past 59, hundredths; procps: [DD-]HH:MM:SS.
        assert_eq!(parse_ps("  61:02.50  5120\n"), (Some(3662.5), Some(5120)));
        assert_eq!(parse_ps("1-01:00:02 64"), (Some(90_002.0), Some(64)));
        assert_eq!(parse_ps(""), (None, None));
        assert_eq!(parse_ps("x:y 12"), (None, Some(12)));
    }

    #[test]
    fn a_process_that_is_gone_has_no_figures_not_zeros() {
        let mut gone = Command::new("true").spawn().expect("run true");
        gone.wait().expect("wait");
        assert_eq!(usage_of(gone.id()), Usage::default());
    }

    #[test]
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    fn a_running_process_has_cpu_time_and_rss() {
        let me = usage_of(std::process::id());
        assert!(me.cpu_secs.is_some(), "{me:?}");
        assert!(me.rss_kib.is_some_and(|k| k > 0), "{me:?}");
        #[cfg(target_os = "linux")]
        assert!(me.peak_rss_kib.is_some_and(|k| k > 0), "{me:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn servers_are_pinned_with_taskset() {
        let c = command_on_cpu(Path::new("/bin/chatd"), Some(3)).expect("linux pins");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(c.get_program(), "taskset");
        assert_eq!(args, ["-c", "3", "/bin/chatd"]);
    }

    #[test]
    #[cfg(target_os = "freebsd")]
    fn servers_are_pinned_with_cpuset() {
        let c = command_on_cpu(Path::new("/bin/chatd"), Some(3)).expect("freebsd pins");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(c.get_program(), "cpuset");
        assert_eq!(args, ["-l", "3", "/bin/chatd"]);
    }
}
