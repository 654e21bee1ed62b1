//! Why reading or changing the users file failed, in words for the operator.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why loading the users file or an admin command on it failed.
#[derive(Debug)]
pub enum UserError {
    /// The name is not 1–32 bytes of `[A-Za-z0-9._-]`.
    InvalidName(String),
    /// `add` of a user who is already there.
    Exists(String),
    /// `remove` or `rotate` of a user who is not there.
    NotFound(String),
    /// A line of the users file does not parse; `line` counts from 1.
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The OS gave no random bytes for a token.
    Random(io::Error),
    /// Reading, writing or locking the users file failed.
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names are escaped: one that failed validation may hold anything, newlines included.
        match self {
            UserError::InvalidName(name) => write!(
                f,
                "'{}' is not a valid user name: use 1-32 characters from A-Z a-z 0-9 . _ -",
                name.escape_debug()
            ),
            UserError::Exists(name) => write!(f, "user '{}' already exists", name.escape_debug()),
            UserError::NotFound(name) => write!(f, "no user '{}'", name.escape_debug()),
            UserError::Malformed { path, line, reason } => {
                write!(f, "users file {} line {line}: {reason}", path.display())
            }
            UserError::Random(e) => write!(f, "cannot get random bytes from the OS: {e}"),
            UserError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UserError::Random(e) | UserError::Io { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<UserError> for io::Error {
    fn from(e: UserError) -> io::Error {
        let kind = match &e {
            UserError::Io { source, .. } | UserError::Random(source) => source.kind(),
            UserError::Exists(_) => io::ErrorKind::AlreadyExists,
            UserError::NotFound(_) => io::ErrorKind::NotFound,
            UserError::InvalidName(_) => io::ErrorKind::InvalidInput,
            UserError::Malformed { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
