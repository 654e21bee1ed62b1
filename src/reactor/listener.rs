//! Listening sockets. The chat listeners are a group per address, one per reactor, sharing the
//! port so the kernel spreads new connections over the reactors and no accept lock is shared:
//! `SO_REUSEPORT` on Linux, `SO_REUSEPORT_LB` on FreeBSD (where plain `SO_REUSEPORT` hands
//! every connection to one socket). A single listener (the metrics server) shares nothing.
//!
//! Every listener here is bound the same way on every OS: an IPv6 address listens on IPv6
//! only, so `[::]` and `0.0.0.0` can be bound side by side on Linux and FreeBSD alike, and
//! each asks for the same backlog. This module must never leave a socket half set up: any
//! option that fails fails the bind.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

/// Pending connections the kernel may queue per listener before refusing more. The kernel
/// lowers it to `net.core.somaxconn` (Linux) or `kern.ipc.soacceptqueue` (FreeBSD).
const BACKLOG: i32 = 1024;

/// Whether a listener shares its port with the rest of its group.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sharing {
    Group,
    Alone,
}

/// Binds `count` listeners to `addr`. Port 0 picks a free port once, and every further
/// listener joins that same port.
///
/// # Errors
/// The address is in use by another program, not ours to bind, or not an address here.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<StdListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let listener = bind_listener(addr, Sharing::Group)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Binds one listener to `addr` that shares its port with no other socket: the same IPv6-only
/// rule and backlog as the chat listeners, without joining a group.
///
/// # Errors
/// As `bind_group`.
pub fn bind_single(addr: SocketAddr) -> io::Result<StdListener> {
    bind_listener(addr, Sharing::Alone)
}

fn bind_listener(addr: SocketAddr, sharing: Sharing) -> io::Result<StdListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if sharing == Sharing::Group {
        share_port(&fd)?;
    }
    if addr.is_ipv6() {
        // Keep [::] to IPv6, so that 0.0.0.0 on the same port can be listened on beside it
        // (Linux defaults to dual-stack, FreeBSD to IPv6 only: say it, don't inherit it).
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    let sockaddr = SockaddrStorage::from(addr);
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &sockaddr).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot listen on {addr}: {e}"),
        )
    })?;
    listen(&fd, backlog(BACKLOG))?;
    Ok(StdListener::from(fd))
}

/// Lets the reactors' listeners share one port, with the kernel spreading connections.
#[cfg(target_os = "freebsd")]
fn share_port(fd: &OwnedFd) -> io::Result<()> {
    // FreeBSD 12+: SO_REUSEPORT_LB forms a load-balancing group; plain SO_REUSEPORT would let
    // the sockets share the port but give new connections to one of them.
    setsockopt(fd, sockopt::ReusePortLb, &true).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("SO_REUSEPORT_LB (needs FreeBSD 12 or later): {e}"),
        )
    })
}

/// Lets the reactors' listeners share one port, with the kernel spreading connections.
#[cfg(not(target_os = "freebsd"))]
fn share_port(fd: &OwnedFd) -> io::Result<()> {
    // Linux hashes each new connection to one socket of the SO_REUSEPORT group.
    Ok(setsockopt(fd, sockopt::ReusePort, &true)?)
}

/// The backlog to hand listen(2) for `wanted`. nix refuses values not below the C headers'
/// `SOMAXCONN` (128 on FreeBSD and musl, however the kernel is tuned); then ask for the
/// kernel's own ceiling (-1, which Linux and FreeBSD read as `net.core.somaxconn` or
/// `kern.ipc.soacceptqueue`) rather than settle for the header's 128.
fn backlog(wanted: i32) -> Backlog {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    let ceiling = Backlog::MAXALLOWABLE;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let ceiling = Backlog::MAXCONN;
    Backlog::new(wanted).unwrap_or(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    use nix::sys::socket::getsockopt;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("literal")
    }

    #[test]
    fn port_zero_gives_every_listener_the_same_port() {
        let group = bind_group(loopback(), 3).expect("bind loopback");
        let ports: Vec<u16> = group
            .iter()
            .map(|l| l.local_addr().expect("bound").port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]));
    }

    #[test]
    fn group_listeners_ask_the_kernel_to_balance() {
        for l in bind_group(loopback(), 2).expect("bind loopback") {
            #[cfg(target_os = "freebsd")]
            assert!(getsockopt(&l, sockopt::ReusePortLb).expect("getsockopt"));
            #[cfg(not(target_os = "freebsd"))]
            assert!(getsockopt(&l, sockopt::ReusePort).expect("getsockopt"));
        }
    }

    #[test]
    fn a_single_listener_shares_its_port_with_nobody() {
        let one = bind_single(loopback()).expect("bind loopback");
        let taken = one.local_addr().expect("bound");
        assert!(!getsockopt(&one, sockopt::ReusePort).expect("getsockopt"));
        let err = bind_group(taken, 1).expect_err("the port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }

    #[test]
    fn ipv6_listeners_are_ipv6_only_and_leave_ipv4_free() {
        let any6: SocketAddr = "[::]:0".parse().expect("literal");
        // Dual-stack [::] would hold the IPv4 port too, and the IPv4 bind would always fail.
        // Any one port may also be held on IPv4 by another test running beside this one, so
        // a few ports are tried: one success proves the point.
        let mut last = None;
        for _ in 0..20 {
            let v6 = match bind_single(any6) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("SKIPPED ipv6_listeners_are_ipv6_only: no IPv6 here ({e})");
                    return;
                }
            };
            assert!(getsockopt(&v6, sockopt::Ipv6V6Only).expect("getsockopt"));
            let port = v6.local_addr().expect("bound").port();
            match bind_single(SocketAddr::from(([0, 0, 0, 0], port))) {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        assert!(last.is_none(), "0.0.0.0 beside [::]: {last:?}");
        for l in bind_group(SocketAddr::from(([0u16; 8], 0)), 2).expect("bind [::]") {
            assert!(getsockopt(&l, sockopt::Ipv6V6Only).expect("getsockopt"));
        }
    }

    #[test]
    fn a_backlog_past_the_header_limit_asks_for_the_kernel_ceiling() {
        // nix refuses this on every OS; the old code fell back to SOMAXCONN (128 on FreeBSD).
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        assert_eq!(backlog(i32::MAX), Backlog::MAXALLOWABLE);
        let asked = i32::from(backlog(BACKLOG));
        assert!(asked == BACKLOG || asked == -1, "asked for {asked}");
    }

    /// The kernel's queue limit for a listener, as it reports it, and the ceiling it applies.
    #[cfg(target_os = "linux")]
    fn queue_limit(l: &StdListener) -> Option<(i64, i64)> {
        // `ss` shows a listening socket's backlog as its Send-Q.
        let port = l.local_addr().ok()?.port();
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains(&format!(":{port} ")))?;
        let limit = line.split_whitespace().nth(2)?.parse().ok()?;
        let ceiling = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?;
        Some((limit, ceiling.trim().parse().ok()?))
    }

    /// The kernel's queue limit for a listener, as it reports it, and the ceiling it applies.
    #[cfg(target_os = "freebsd")]
    fn queue_limit(l: &StdListener) -> Option<(i64, i64)> {
        let limit = getsockopt(l, sockopt::ListenQLimit).ok()?;
        let out = std::process::Command::new("sysctl")
            .args(["-n", "kern.ipc.soacceptqueue"])
            .output()
            .ok()?;
        let ceiling = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some((i64::from(limit), ceiling))
    }

    #[test]
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    fn the_kernel_grants_the_backlog_up_to_its_ceiling() {
        let l = bind_single(loopback()).expect("bind loopback");
        let Some((limit, ceiling)) = queue_limit(&l) else {
            eprintln!("SKIPPED the_kernel_grants_the_backlog: cannot read the listen queue limit");
            return;
        };
        assert!(
            limit >= i64::from(BACKLOG).min(ceiling),
            "backlog {limit}, kernel ceiling {ceiling}, wanted {BACKLOG}"
        );
    }
}
