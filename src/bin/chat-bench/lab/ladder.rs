//! The survival ladder: for one (workload, model), the connection counts are climbed in
//! increasing order, and once the model fails at some N every larger N is skipped without
//! being run, so the lab finds the largest N each model survives on this machine without
//! spending an hour on counts already known to fail. Also the one limit the bench itself
//! cannot get past: its open files (one per connection), checked before a run is started
//! rather than met half way through it.
//!
//! It decides only; it never runs or prints anything.

/// File descriptors the bench needs beside one per connection: the poll, the pipes to the
/// daemon, a connection being logged in (two for a moment), /proc files read by the sampler,
/// strace's output file, and room to spare.
pub const FD_SLACK: u64 = 64;

/// What to do at the next N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Run,
    /// The model failed at a smaller N: the reason for the skipped line.
    Skip(String),
    /// N connections cannot fit in the bench's open-file limit: the error for the line.
    Unfit(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ladder {
    failed_at: Option<usize>,
}

impl Ladder {
    /// What to do at `n`, given the bench's open-file limit (`None`: not known, so not
    /// checked).
    pub fn step(&self, n: usize, fd_limit: Option<u64>) -> Step {
        if let Some(at) = self.failed_at {
            return Step::Skip(format!("failed at N={at}"));
        }
        match fits(n, fd_limit) {
            Ok(()) => Step::Run,
            Err(e) => Step::Unfit(e),
        }
    }

    /// Notes how `n` went; the first failure is the one the skipped lines name.
    pub fn record(&mut self, n: usize, survived: bool) {
        if !survived && self.failed_at.is_none() {
            self.failed_at = Some(n);
        }
    }
}

/// Whether `n` connections and the bench's own files fit under `limit` open files.
///
/// # Errors
/// A message with the numbers, for the line's `error` field.
pub fn fits(n: usize, limit: Option<u64>) -> Result<(), String> {
    let need = (n as u64).saturating_add(FD_SLACK);
    match limit {
        Some(limit) if need > limit => Err(format!(
            "not run: {n} connections need {need} open files in the bench ({n} sockets and \
             {FD_SLACK} to spare), over its limit of {limit} (RLIMIT_NOFILE, soft; `ulimit -n` \
             raises it where the hard limit allows)"
        )),
        _ => Ok(()),
    }
}

/// The bench's soft limit on open files; `None` when the OS does not say or sets none.
pub fn fd_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        // rlim_t is unsigned on Linux and signed on FreeBSD: widen, then narrow.
        Ok((soft, _)) if soft != RLIM_INFINITY => u64::try_from(i128::from(soft)).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_first_failure_every_larger_n_is_skipped_and_names_it() {
        let mut l = Ladder::default();
        assert_eq!(l.step(1, None), Step::Run);
        l.record(1, true);
        assert_eq!(l.step(4, None), Step::Run);
        l.record(4, false);
        assert_eq!(l.step(8, None), Step::Skip("failed at N=4".into()));
        l.record(8, false);
        assert_eq!(l.step(16, None), Step::Skip("failed at N=4".into()));
    }

    #[test]
    fn a_count_past_the_open_file_limit_is_refused_before_it_runs() {
        let l = Ladder::default();
        assert_eq!(l.step(20_000 - FD_SLACK as usize, Some(20_000)), Step::Run);
        match l.step(20_000, Some(20_000)) {
            Step::Unfit(e) => assert!(e.contains("20064") && e.contains("20000"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.step(1_000_000, None), Step::Run);
        assert!(fd_limit().is_none_or(|n| n > 0));
    }
}
