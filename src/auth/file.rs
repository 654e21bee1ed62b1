//! The users file's format: one `NAME SHA256HEX` line per user, comments and blank lines
//! ignored; reading it whole with the stamp of the version read, and parsing it strictly.
//!
//! Only the watcher thread and the admin commands come here; a reactor never does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::UserError;
use crate::protocol::name::is_valid_user;
use crate::watched::{Stamp, read_stamped};

/// SHA-256 of a token.
pub type Digest = [u8; 32];

/// The users file is readable by the daemon's user only: digests are not tokens, but there is
/// no reason to let anyone else try to guess them offline.
pub const USERS_MODE: u32 = 0o600;

/// Written at the top of a new users file.
pub const HEADER: &str = "\
# chatd users: one user per line, as NAME SHA256HEX, where SHA256HEX is the SHA-256 of the
# user's token in 64 lowercase hex digits. Tokens themselves are never stored.
# Manage with `chatd user add|remove|rotate|list`; a running daemon rereads this file when it
# changes and ends the sessions of users removed or rotated.
# Lines starting with '#' and blank lines are ignored.
";

/// One user line of the users file.
pub struct Entry {
    pub name: String,
    pub digest: Digest,
    /// Counted from 1, as in error messages.
    pub line: usize,
}

/// Reads the file and the stamp of the very version read. `None`: there is no file.
pub fn read(path: &Path) -> Result<Option<(String, Stamp)>, UserError> {
    read_stamped(path).map_err(|source| UserError::Io {
        action: "read users file",
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the users file; the first bad line is an error naming it.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, UserError> {
    let mut entries = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    // split_inclusive, not lines: the admin commands count lines the same way when they edit.
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = index + 1;
        let malformed = |reason: String| UserError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut fields = content.split_ascii_whitespace();
        let (Some(name), Some(hex_digest), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed("expected NAME SHA256HEX".to_string()));
        };
        if !is_valid_user(name) {
            return Err(malformed(format!(
                "'{}' is not a valid user name",
                name.escape_debug()
            )));
        }
        let Some(digest) = unhex(hex_digest) else {
            return Err(malformed(format!(
                "the digest of '{name}' is not 64 lowercase hex digits"
            )));
        };
        if let Some(first) = seen.insert(name, line) {
            return Err(malformed(format!(
                "user '{name}' is already listed on line {first}"
            )));
        }
        entries.push(Entry {
            name: name.to_string(),
            digest,
            line,
        });
    }
    Ok(entries)
}

pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes exactly 64 lowercase hex digits.
pub fn unhex(text: &str) -> Option<Digest> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; 32];
    if text.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (nibble(*high)? << 4) | nibble(*low)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_digits() {
        let d = digest(b"abc");
        let text = hex(&d);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(unhex(&text), Some(d));
        assert_eq!(unhex(&text[..62]), None);
        assert_eq!(unhex(&format!("{}g", &text[..63])), None);
        assert_eq!(unhex(&format!("{}é", &text[..62])), None);
    }
}
