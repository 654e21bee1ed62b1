//! Why `chat` gives up: a one-line message for a person and an exit status a script can branch
//! on. Every way of failing that a user can meet maps to exactly one status here, and only
//! `main` turns a failure into an exit.

use std::io;

use chatd::protocol::ErrorCode;

/// Exit statuses, as documented in `chat --help`. The numbers are part of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything not listed below: I/O errors, answers the client does not expect.
    Other = 1,
    /// A bad flag, a bad config file, no token.
    Usage = 2,
    /// Connection refused, name not resolved, no answer in time.
    Unreachable = 3,
    /// AUTH_FAILED: unknown user or wrong token.
    Auth = 4,
    /// INVALID: a bad room name, an empty or too long message.
    Invalid = 5,
    /// RATE_LIMITED, still after retrying.
    RateLimited = 6,
    /// SHUTTING_DOWN: the server is stopping.
    ShuttingDown = 7,
    /// The connection dropped before the work was done.
    Lost = 8,
    /// The TLS handshake failed: the certificate is not trusted or not valid for the name,
    /// or the server does not speak TLS. Waiting does not fix it, so it is never retried.
    Tls = 9,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }

    /// An ERROR frame from the server, prefixed with what we were doing when it came.
    pub fn server(code: u16, message: &str, doing: &str) -> Failure {
        let exit = match ErrorCode::from_u16(code) {
            Some(ErrorCode::AuthFailed) => Exit::Auth,
            Some(ErrorCode::Invalid) => Exit::Invalid,
            Some(ErrorCode::RateLimited) => Exit::RateLimited,
            Some(ErrorCode::ShuttingDown) => Exit::ShuttingDown,
            _ => Exit::Other,
        };
        Failure::new(exit, format!("{doing}: {}", reason(code, message)))
    }

    /// Whether trying again later may succeed: the server was away, not saying no.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.exit,
            Exit::Unreachable | Exit::ShuttingDown | Exit::Lost
        )
    }
}

/// Refuses a room name the server would refuse, before connecting.
///
/// # Errors
/// `Exit::Invalid`, saying what a room name may hold.
pub fn check_room(room: &str) -> Result<(), Failure> {
    if chatd::protocol::name::is_valid_room(room) {
        Ok(())
    } else {
        Err(Failure::new(
            Exit::Invalid,
            format!(
                "invalid room name {room:?}: a room is 1-64 characters from A-Z a-z 0-9 . _ # -"
            ),
        ))
    }
}

/// `NAME (server's message)`, the way every server refusal is shown.
pub fn reason(code: u16, message: &str) -> String {
    let name =
        ErrorCode::from_u16(code).map_or_else(|| format!("error {code}"), |c| c.name().into());
    if message.is_empty() {
        name
    } else {
        format!("{name} ({message})")
    }
}

/// An I/O error in plain words, without the `(os error N)` tail.
pub fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "no answer in time".into(),
        io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
        io::ErrorKind::BrokenPipe => "the connection is closed".into(),
        io::ErrorKind::NotFound => "not found".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text.get(..i).unwrap_or(&text).to_string(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_map_to_their_exit_status() {
        let f = Failure::server(5, "unknown user or wrong token", "login");
        assert_eq!(f.exit, Exit::Auth);
        assert_eq!(
            f.message,
            "login: AUTH_FAILED (unknown user or wrong token)"
        );
        assert_eq!(Failure::server(7, "", "x").exit, Exit::Invalid);
        assert_eq!(Failure::server(9, "", "x").exit, Exit::RateLimited);
        assert_eq!(Failure::server(13, "", "x").exit, Exit::ShuttingDown);
        assert_eq!(Failure::server(8, "", "x").exit, Exit::Other);
        assert_eq!(Failure::server(99, "", "x").message, "x: error 99");
    }

    #[test]
    fn a_refused_certificate_is_not_worth_retrying_but_a_refused_connection_is() {
        assert!(!Failure::new(Exit::Tls, "unknown issuer").is_transient());
        assert!(Failure::new(Exit::Unreachable, "connection refused").is_transient());
        assert_eq!(Exit::Tls as u8, 9);
    }

    #[test]
    fn io_errors_lose_their_os_error_number() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(describe(&e), "connection refused");
        let e = io::Error::from_raw_os_error(113);
        assert!(!describe(&e).contains("os error"), "{}", describe(&e));
    }
}
