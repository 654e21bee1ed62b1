//! Listening sockets: one per reactor and address, all bound with `SO_REUSEPORT`, so the kernel
//! spreads new connections over the reactors and no accept lock is shared.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

/// Pending connections the kernel may queue per listener before refusing more.
const BACKLOG: i32 = 1024;

/// Binds `count` listeners to `addr`. Port 0 picks a free port once, and every further
/// listener joins that same port.
///
/// # Errors
/// The address is in use by another program, not ours to bind, or not an address here.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<StdListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let listener = bind_one(addr)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<StdListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    if addr.is_ipv6() {
        // Keep [::] to IPv6, so that 0.0.0.0 on the same port can be listened on beside it.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    let sockaddr = SockaddrStorage::from(addr);
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &sockaddr).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot listen on {addr}: {e}"),
        )
    })?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(StdListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_every_listener_the_same_port() {
        let group = bind_group("127.0.0.1:0".parse().expect("literal"), 3).expect("bind loopback");
        let ports: Vec<u16> = group
            .iter()
            .map(|l| l.local_addr().expect("bound").port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]));
    }
}
