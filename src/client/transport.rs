//! What carries the client's frames: a plain TCP socket or TLS over one. The client's codec
//! never learns which; the plain arm costs one `match` and nothing else.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

use super::tls::TlsStream;

/// A connection to chatd, plain or TLS.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl Transport {
    /// The TCP socket beneath, for timeouts, addresses and socket options (and for tests
    /// that need to misbehave on it).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.tcp(),
        }
    }

    /// Another handle on the same connection, for a second thread (one reads, one writes).
    ///
    /// # Errors
    /// The socket cannot be duplicated.
    pub fn try_clone(&self) -> io::Result<Transport> {
        Ok(match self {
            Transport::Plain(s) => Transport::Plain(s.try_clone()?),
            Transport::Tls(t) => Transport::Tls(t.try_clone()?),
        })
    }

    /// Shuts the socket down in both directions, which also ends a read blocked in another
    /// thread. TLS's close_notify is not sent: it could block on a server that stopped
    /// reading, and chatd's BYE is the orderly goodbye.
    pub fn close(&self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(buf),
            Transport::Tls(t) => t.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}
