//! The daemon's signals as a descriptor `poll` can wait on beside its listeners: a
//! `signalfd` on Linux, a kqueue watching `EVFILT_SIGNAL` on FreeBSD. The signals stay blocked
//! (the caller blocks them first), so none is ever delivered to a handler and no code runs in
//! signal context; they are read here, one by one, as data.
//!
//! It belongs to the daemon alone: a child gives it up at once ([`Signals::leave`]), and must
//! never read it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, Signal};

/// The daemon's blocked signals, readable.
pub struct Signals {
    #[cfg(target_os = "linux")]
    fd: nix::sys::signalfd::SignalFd,
    #[cfg(target_os = "freebsd")]
    kqueue: nix::sys::event::Kqueue,
}

#[cfg(target_os = "linux")]
impl Signals {
    /// Watches `set`, which the caller has blocked.
    ///
    /// # Errors
    /// The kernel refused a signalfd.
    pub fn new(set: &SigSet) -> io::Result<Signals> {
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
        Ok(Signals {
            fd: SignalFd::with_flags(set, flags)?,
        })
    }

    /// The signals that arrived since the last call, without waiting.
    ///
    /// # Errors
    /// The signalfd cannot be read.
    pub fn take(&mut self) -> io::Result<Vec<Signal>> {
        let mut got = Vec::new();
        while let Some(info) = self.fd.read_signal()? {
            let number = i32::try_from(info.ssi_signo).unwrap_or(0);
            if let Ok(signal) = Signal::try_from(number) {
                got.push(signal);
            }
        }
        Ok(got)
    }

    /// Gives the descriptor up in a child.
    pub fn leave(self) {
        drop(self);
    }
}

#[cfg(target_os = "freebsd")]
impl Signals {
    /// Watches `set`, which the caller has blocked. kqueue records a signal even when it is
    /// blocked, as a delivery attempt.
    ///
    /// # Errors
    /// The kernel refused a kqueue or the registration.
    pub fn new(set: &SigSet) -> io::Result<Signals> {
        use nix::sys::event::{EventFilter, EventFlag, FilterFlag, KEvent, Kqueue};
        let kqueue = Kqueue::new()?;
        let changes: Vec<KEvent> = set
            .iter()
            .map(|s| {
                KEvent::new(
                    s as usize,
                    EventFilter::EVFILT_SIGNAL,
                    EventFlag::EV_ADD,
                    FilterFlag::empty(),
                    0,
                    0,
                )
            })
            .collect();
        kqueue.kevent(&changes, &mut [], None)?;
        Ok(Signals { kqueue })
    }

    /// The signals that arrived since the last call, without waiting.
    ///
    /// # Errors
    /// The kqueue cannot be read.
    pub fn take(&mut self) -> io::Result<Vec<Signal>> {
        use nix::libc::timespec;
        use nix::sys::event::{EventFilter, EventFlag, FilterFlag, KEvent};
        let now = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let empty = KEvent::new(
            0,
            EventFilter::EVFILT_SIGNAL,
            EventFlag::empty(),
            FilterFlag::empty(),
            0,
            0,
        );
        let mut events = [empty; 16];
        let mut got = Vec::new();
        loop {
            let n = self.kqueue.kevent(&[], &mut events, Some(now))?;
            for ev in events.iter().take(n) {
                let number = i32::try_from(ev.ident()).unwrap_or(0);
                if let Ok(signal) = Signal::try_from(number) {
                    got.push(signal);
                }
            }
            if n < events.len() {
                return Ok(got);
            }
        }
    }

    /// Gives the kqueue up in a child: a kqueue is not inherited across fork, so the child's
    /// copy of the number names nothing, and closing it would be closing a stranger's file.
    pub fn leave(self) {
        std::mem::forget(self);
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
impl Signals {
    /// # Errors
    /// Always: this OS has neither signalfd nor the kqueue filter this driver was built for.
    pub fn new(_set: &SigSet) -> io::Result<Signals> {
        Err(io::Error::other(
            "--driver fork is not available on this OS (it needs Linux or FreeBSD)",
        ))
    }

    /// # Errors
    /// Never reached: `new` fails.
    pub fn take(&mut self) -> io::Result<Vec<Signal>> {
        Ok(Vec::new())
    }

    pub fn leave(self) {}
}

impl AsFd for Signals {
    #[cfg(target_os = "linux")]
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    #[cfg(target_os = "freebsd")]
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.kqueue.as_fd()
    }

    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    fn as_fd(&self) -> BorrowedFd<'_> {
        // No instance exists on such an OS (`new` fails); stdin stands in for the type.
        std::io::stdin().as_fd()
    }
}
