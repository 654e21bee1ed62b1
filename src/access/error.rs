//! Why reading or changing the private-rooms file failed, in words for the operator.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why loading the private-rooms file or a `chatd room` command failed.
#[derive(Debug)]
pub enum AccessError {
    /// Not a room name of version 1's grammar (direct rooms are refused on their own).
    InvalidRoom(String),
    /// A direct room: who may use it is its name, not a list.
    DirectRoom(String),
    /// Not a valid user name.
    InvalidUser(String),
    /// `deny` on a room that is public: there is no list to take users off.
    Public(String),
    /// A line of the file does not parse; `line` counts from 1.
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Reading, writing or locking the file failed.
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names are escaped: one that failed validation may hold anything, newlines included.
        match self {
            AccessError::InvalidRoom(room) => write!(
                f,
                "'{}' is not a valid room name: use 1-64 characters from A-Z a-z 0-9 . _ # -",
                room.escape_debug()
            ),
            AccessError::DirectRoom(room) => write!(
                f,
                "'{}' is a direct room: only the users its name lists may use it, and no list \
                 changes that",
                room.escape_debug()
            ),
            AccessError::InvalidUser(user) => write!(
                f,
                "'{}' is not a valid user name: use 1-32 characters from A-Z a-z 0-9 . _ -",
                user.escape_debug()
            ),
            AccessError::Public(room) => write!(
                f,
                "room '{}' is public, so everyone may use it; make it private with \
                 `chatd room allow {} USER...` first",
                room.escape_debug(),
                room.escape_debug()
            ),
            AccessError::Malformed { path, line, reason } => {
                write!(
                    f,
                    "private-rooms file {} line {line}: {reason}",
                    path.display()
                )
            }
            AccessError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for AccessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AccessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<AccessError> for io::Error {
    fn from(e: AccessError) -> io::Error {
        let kind = match &e {
            AccessError::Io { source, .. } => source.kind(),
            AccessError::Malformed { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}
