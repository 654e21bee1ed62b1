//! The server's whole process tree as Linux's /proc shows it: the daemon's pid, every
//! descendant found by walking /proc/*/stat by ppid, and for each its CPU time (utime + stime
//! of /proc/PID/stat, which already sums every thread of the process, the exited ones
//! included, plus cutime + cstime, the time of children it has reaped, so that a child that
//! exits between two samples does not take its CPU time with it), its memory (Pss of
//! /proc/PID/smaps_rollup, or VmRSS of /proc/PID/status where that is missing) and, per thread,
//! its context switches (/proc/PID/task/TID/status).
//!
//! It only reads /proc, except to kill what is left of a daemon's tree when the daemon would
//! not stop, and then only processes it saw in that tree (checked by their start time, so a
//! reused pid is never hit). On other systems every reading is an error saying it is
//! unavailable, never a zero.

use std::collections::BTreeMap;

/// What the tree had used at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// CPU seconds of the whole tree: every process, every thread, and reaped children.
    pub tree_secs: f64,
    /// CPU seconds of the root process alone, all its threads summed, no children: what
    /// `top` shows on the daemon's line.
    pub main_secs: f64,
    pub processes: usize,
    pub threads: u64,
    /// Memory of the whole tree in KiB (Pss where the kernel has smaps_rollup, else RSS);
    /// `None` when no process told.
    pub mem_kib: Option<u64>,
    /// `pss` or `rss`: which figure `mem_kib` sums (`rss` if any process lacked Pss).
    pub mem_kind: &'static str,
}

/// Context switches (voluntary, involuntary) of each thread of the tree, by thread id.
pub type Switches = BTreeMap<u32, (u64, u64)>;

#[cfg(not(target_os = "linux"))]
const UNAVAILABLE: &str = "process-tree sampling (CPU, memory and context switches of the \
    server's processes and threads from /proc) is unavailable on this OS";

/// The tree's figures now.
///
/// # Errors
/// The root process is gone, or this OS has no /proc to read.
#[cfg(target_os = "linux")]
pub fn snapshot(root: u32) -> Result<Snapshot, String> {
    let pids = pids(root)?;
    let (mut tree, mut main, mut threads) = (0u64, None, 0u64);
    let (mut mem, mut told, mut all_pss) = (0u64, false, true);
    for pid in &pids {
        let Some(stat) = read(&format!("/proc/{pid}/stat"))
            .as_deref()
            .and_then(parse_stat)
        else {
            // Gone since the walk: its time is in its parent's cutime once reaped.
            continue;
        };
        tree += stat.own + stat.children;
        threads += stat.threads;
        if *pid == root {
            main = Some(stat.own);
        }
        let pss = read(&format!("/proc/{pid}/smaps_rollup"))
            .as_deref()
            .and_then(|t| kib_of(t, "Pss:"));
        let kib = pss.or_else(|| {
            all_pss = false;
            read(&format!("/proc/{pid}/status"))
                .as_deref()
                .and_then(|t| kib_of(t, "VmRSS:"))
        });
        if let Some(k) = kib {
            mem += k;
            told = true;
        }
    }
    let main = main.ok_or_else(|| format!("the server (pid {root}) is gone"))?;
    Ok(Snapshot {
        tree_secs: ticks_to_secs(tree),
        main_secs: ticks_to_secs(main),
        processes: pids.len(),
        threads,
        mem_kib: told.then_some(mem),
        mem_kind: if all_pss { "pss" } else { "rss" },
    })
}

#[cfg(not(target_os = "linux"))]
pub fn snapshot(_root: u32) -> Result<Snapshot, String> {
    Err(UNAVAILABLE.into())
}

/// Every thread's context switches in the tree now. A thread that exits takes its counts
/// with it (the kernel keeps them only for getrusage of the process itself), so deltas
/// across a thread's exit undercount.
///
/// # Errors
/// As `snapshot`.
#[cfg(target_os = "linux")]
pub fn switches(root: u32) -> Result<Switches, String> {
    let mut out = Switches::new();
    for pid in pids(root)? {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let status = read(&format!("/proc/{pid}/task/{tid}/status"));
            if let Some(pair) = status.as_deref().and_then(switch_counts) {
                out.insert(tid, pair);
            }
        }
    }
    Ok(out)
}

#[cfg(not(target_os = "linux"))]
pub fn switches(_root: u32) -> Result<Switches, String> {
    Err(UNAVAILABLE.into())
}

/// Switches made between `before` and `after`, per thread (a thread new since `before`
/// counts from zero), summed: (voluntary, involuntary).
pub fn switches_between(before: &Switches, after: &Switches) -> (u64, u64) {
    after.iter().fold((0, 0), |(v, i), (tid, (av, ai))| {
        let (bv, bi) = before.get(tid).copied().unwrap_or((0, 0));
        (v + av.saturating_sub(bv), i + ai.saturating_sub(bi))
    })
}

/// The processes below `root` now (not `root` itself), each with its start time.
///
/// # Errors
/// As `snapshot`.
#[cfg(target_os = "linux")]
pub fn descendants_now(root: u32) -> Result<Vec<(u32, u64)>, String> {
    Ok(pids(root)?
        .into_iter()
        .filter(|pid| *pid != root)
        .filter_map(|pid| {
            let stat = read(&format!("/proc/{pid}/stat"))?;
            Some((pid, parse_stat(&stat)?.start))
        })
        .collect())
}

#[cfg(not(target_os = "linux"))]
pub fn descendants_now(_root: u32) -> Result<Vec<(u32, u64)>, String> {
    Err(UNAVAILABLE.into())
}

/// SIGKILLs each process of `seen` that is still the one seen (same pid, same start time):
/// what a daemon that would not stop left behind, orphaned once the daemon itself was killed.
/// Returns how many it killed.
#[cfg(target_os = "linux")]
pub fn kill_leftovers(seen: &[(u32, u64)]) -> usize {
    use nix::sys::signal::{Signal, kill};
    seen.iter()
        .filter(|(pid, start)| {
            let now = read(&format!("/proc/{pid}/stat"));
            now.as_deref().and_then(parse_stat).map(|s| s.start) == Some(*start)
        })
        .filter_map(|(pid, _)| i32::try_from(*pid).ok())
        .filter(|pid| kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL).is_ok())
        .count()
}

#[cfg(not(target_os = "linux"))]
pub fn kill_leftovers(_seen: &[(u32, u64)]) -> usize {
    0
}

/// The root and every descendant of it, from the ppid of each /proc/*/stat.
#[cfg(target_os = "linux")]
pub fn pids(root: u32) -> Result<Vec<u32>, String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    let mut parents = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = read(&format!("/proc/{pid}/stat"))
            .as_deref()
            .and_then(parse_stat)
        {
            parents.push((pid, stat.ppid));
        }
    }
    Ok(descendants(root, &parents))
}

#[cfg(target_os = "linux")]
fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `root` and, breadth first, every pid whose parent chain leads to it.
#[cfg(any(target_os = "linux", test))]
pub fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        for (pid, ppid) in parents {
            if *ppid == p && *pid != root && !out.contains(pid) {
                out.push(*pid);
            }
        }
        i += 1;
    }
    out
}

/// The fields of /proc/PID/stat the lab needs, in clock ticks.
#[cfg(any(target_os = "linux", test))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime.
    pub own: u64,
    /// cutime + cstime: children reaped so far.
    pub children: u64,
    pub threads: u64,
    /// When the process started, in ticks after boot: with the pid, it names one process.
    pub start: u64,
}

/// Parses /proc/PID/stat, counting fields after the command name's closing parenthesis
/// (the name itself may hold spaces and parentheses).
#[cfg(any(target_os = "linux", test))]
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // cutime and cstime are signed in the kernel's format; negative never happens in practice.
    let c = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|x| u64::try_from(x).unwrap_or(0))
    };
    Some(Stat {
        ppid: u32::try_from(n(1)?).ok()?,
        own: n(11)? + n(12)?,
        children: c(13)? + c(14)?,
        threads: n(17)?,
        start: n(19)?,
    })
}

/// The unit of the times in /proc/PID/stat: USER_HZ, fixed at 100 for userspace.
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

#[cfg(target_os = "linux")]
fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / USER_HZ
}

/// A `kB` field such as `Pss:` of smaps_rollup or `VmRSS:` of status.
#[cfg(any(target_os = "linux", test))]
pub fn kib_of(text: &str, field: &str) -> Option<u64> {
    let v = text.lines().find_map(|l| l.strip_prefix(field))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of a task's status.
#[cfg(any(target_os = "linux", test))]
pub fn switch_counts(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        field("voluntary_ctxt_switches:")?,
        field("nonvoluntary_ctxt_switches:")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // pid (name) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice num_threads ...
        // ... itrealvalue starttime
        let stat =
            "42 (chatd (x) y) S 7 42 42 0 -1 4194560 1 0 0 0 250 50 30 20 20 0 5 0 8123 9000";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 7,
                own: 300,
                children: 50,
                threads: 5,
                start: 8123,
            })
        );
        assert_eq!(parse_stat("42 (cut) S 7"), None);
    }

    #[test]
    fn the_tree_is_the_root_and_every_descendant_and_nothing_else() {
        // 10 forks 11 and 12; 12 forks 13; 20 is a stranger, 1 the root's parent.
        let parents = [(10, 1), (11, 10), (12, 10), (13, 12), (20, 1), (21, 20)];
        let mut t = descendants(10, &parents);
        t.sort_unstable();
        assert_eq!(t, [10, 11, 12, 13]);
        assert_eq!(descendants(99, &parents), [99]);
    }

    #[test]
    fn switches_are_summed_per_thread_and_new_threads_count_from_zero() {
        let before = Switches::from([(1, (10, 1)), (2, (5, 0))]);
        let after = Switches::from([(1, (15, 3)), (2, (5, 0)), (3, (4, 2))]);
        assert_eq!(switches_between(&before, &after), (9, 4));
        let status = "Name:\tchatd\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(switch_counts(status), Some((12, 3)));
        assert_eq!(switch_counts("Name:\tchatd\n"), None);
        assert_eq!(kib_of("Rss:  100 kB\nPss:   40 kB\n", "Pss:"), Some(40));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_a_tree_of_one_with_cpu_time_and_memory() {
        let s = snapshot(std::process::id()).expect("our own /proc entry");
        assert!(s.processes >= 1 && s.threads >= 1, "{s:?}");
        assert!(s.mem_kib.is_some_and(|k| k > 0), "{s:?}");
        assert!(s.tree_secs >= s.main_secs, "{s:?}");
        let sw = switches(std::process::id()).expect("our own tasks");
        assert!(!sw.is_empty());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_child_is_part_of_the_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("run sleep");
        let s = snapshot(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(s.expect("our tree").processes >= 2);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn only_a_leftover_with_the_start_time_seen_is_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("run sleep");
        let below = descendants_now(std::process::id()).expect("our tree");
        let seen: Vec<(u32, u64)> = below
            .into_iter()
            .filter(|(p, _)| *p == child.id())
            .collect();
        let [(pid, start)] = seen.as_slice() else {
            let _ = child.kill();
            panic!("the child is not in the tree: {seen:?}");
        };
        // Another process under the same pid (a different start time) is left alone.
        assert_eq!(kill_leftovers(&[(*pid, start + 1)]), 0);
        assert!(matches!(child.try_wait(), Ok(None)));
        assert_eq!(kill_leftovers(&seen), 1);
        let status = child.wait().expect("reaped");
        assert!(!status.success(), "killed: {status}");
    }
}
