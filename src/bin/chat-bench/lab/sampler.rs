//! Sampling the server's process tree at a fixed period on a thread of its own, the way the
//! paper sampled `top` every 500 ms, and what the samples come to: per interval, the CPU the
//! tree used (and, apart, the CPU of the daemon's main process alone, the line `top` shows),
//! as a per cent of one CPU; then the mean, the coefficient of variation σ/μ and the peak of
//! the tree's summed memory.
//!
//! The times come from /proc in clock ticks of 10 ms, as `top`'s do: over 500 ms one tick is
//! 2 % of a CPU, so at small loads single intervals read 0 % or 2 % and the Cv is mostly that
//! quantum. The sampler only reads; it never signals the server.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::tree::{Snapshot, snapshot};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub snap: Snapshot,
}

pub struct Sampler {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<Result<Vec<Sample>, String>>,
}

impl Sampler {
    /// Takes a first sample now, then one every `every` until `finish`.
    ///
    /// # Errors
    /// The first sample could not be read (no /proc on this OS, or the server is gone).
    pub fn start(root: u32, every: Duration) -> Result<Sampler, String> {
        let first = Sample {
            at: Instant::now(),
            snap: snapshot(root)?,
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("lab-sampler".into())
            .spawn(move || {
                let mut samples = vec![first];
                let mut next = first.at + every;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    match stopped.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        // Asked to stop, or the lab is gone: either way, done.
                        _ => return Ok(samples),
                    }
                    let at = Instant::now();
                    samples.push(Sample {
                        at,
                        snap: snapshot(root)?,
                    });
                    next += every;
                    // Fell behind by more than a period (a loaded machine): skip, don't burst.
                    if next < at {
                        next = at + every;
                    }
                }
            })
            .map_err(|e| format!("starting the sampler: {e}"))?;
        Ok(Sampler { stop, handle })
    }

    /// Stops sampling and hands back every sample, the first included.
    ///
    /// # Errors
    /// A sample could not be read (the server died), or the thread panicked.
    pub fn finish(self) -> Result<Vec<Sample>, String> {
        let _ = self.stop.send(());
        self.handle
            .join()
            .map_err(|_| "the sampler thread panicked".to_string())?
    }
}

/// What the samples come to.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Intervals measured (samples - 1).
    pub intervals: usize,
    pub cpu_mean_pct: f64,
    pub cpu_cv: Option<f64>,
    pub paper_style_cpu_pct: f64,
    pub paper_style_cv: Option<f64>,
    pub peak_mem_kib: Option<u64>,
    pub mem_kind: &'static str,
    pub max_processes: usize,
    pub max_threads: u64,
}

/// `None` for fewer than two samples.
pub fn summarise(samples: &[Sample]) -> Option<Summary> {
    let pct = |get: fn(&Snapshot) -> f64| -> Vec<f64> {
        samples
            .windows(2)
            .filter_map(|w| {
                let [a, b] = w else { return None };
                let dt = b.at.duration_since(a.at).as_secs_f64();
                (dt > 0.0).then(|| 100.0 * (get(&b.snap) - get(&a.snap)).max(0.0) / dt)
            })
            .collect()
    };
    let tree = pct(|s| s.tree_secs);
    let main = pct(|s| s.main_secs);
    let (cpu_mean_pct, cpu_cv) = mean_cv(&tree)?;
    let (paper_style_cpu_pct, paper_style_cv) = mean_cv(&main)?;
    Some(Summary {
        intervals: tree.len(),
        cpu_mean_pct,
        cpu_cv,
        paper_style_cpu_pct,
        paper_style_cv,
        peak_mem_kib: samples.iter().filter_map(|s| s.snap.mem_kib).max(),
        mem_kind: if samples.iter().all(|s| s.snap.mem_kind == "pss") {
            "pss"
        } else {
            "rss"
        },
        max_processes: samples.iter().map(|s| s.snap.processes).max().unwrap_or(0),
        max_threads: samples.iter().map(|s| s.snap.threads).max().unwrap_or(0),
    })
}

/// The mean and the coefficient of variation σ/μ (population σ, as the paper's figures
/// read); the Cv is `None` when the mean is 0. `None` for no values.
pub fn mean_cv(values: &[f64]) -> Option<(f64, Option<f64>)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let cv = (mean > 0.0).then(|| var.sqrt() / mean);
    Some((mean, cv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(tree: f64, main: f64, mem: u64) -> Snapshot {
        Snapshot {
            tree_secs: tree,
            main_secs: main,
            processes: 3,
            threads: 4,
            mem_kib: Some(mem),
            mem_kind: "pss",
        }
    }

    #[test]
    fn mean_and_cv_of_known_values() {
        let (m, cv) = mean_cv(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).expect("values");
        assert_eq!(m, 5.0);
        assert_eq!(cv, Some(0.4), "σ = 2");
        assert_eq!(mean_cv(&[0.0, 0.0]), Some((0.0, None)));
        assert_eq!(mean_cv(&[]), None);
    }

    #[test]
    fn the_tree_and_the_main_process_are_rated_per_interval() {
        let t0 = Instant::now();
        let half = Duration::from_millis(500);
        let samples = [
            Sample {
                at: t0,
                snap: snap(1.0, 0.5, 100),
            },
            Sample {
                at: t0 + half,
                snap: snap(1.25, 0.55, 300),
            },
            Sample {
                at: t0 + 2 * half,
                snap: snap(1.5, 0.6, 200),
            },
        ];
        let s = summarise(&samples).expect("two intervals");
        assert_eq!(s.intervals, 2);
        assert!((s.cpu_mean_pct - 50.0).abs() < 1e-9, "{s:?}");
        assert!(s.cpu_cv.is_some_and(|c| c.abs() < 1e-9), "{s:?}");
        assert!((s.paper_style_cpu_pct - 10.0).abs() < 1e-9, "{s:?}");
        assert_eq!((s.peak_mem_kib, s.max_processes), (Some(300), 3));
        assert!(summarise(&samples[..1]).is_none());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_running_sampler_collects_samples_of_this_process() {
        let s = Sampler::start(std::process::id(), Duration::from_millis(10)).expect("starts");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(60) {
            std::hint::spin_loop();
        }
        let samples = s.finish().expect("samples");
        assert!(samples.len() >= 2, "{}", samples.len());
    }
}
