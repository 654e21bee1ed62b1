//! The private-rooms file's format: one `ROOM USER…` line per private room, naming the users
//! who may use it (none at all: nobody may), comments and blank lines ignored; reading it whole
//! with the stamp of the version read, and parsing it strictly.
//!
//! Only the watcher thread and the admin commands come here; a reactor never does.

use std::collections::HashMap;
use std::path::Path;

use super::AccessError;
use crate::protocol::name::{is_direct_room, is_valid_room, is_valid_user};
use crate::watched::{Stamp, read_stamped};

/// Who may see the list: the daemon's user only. It names who talks to whom.
pub const ACCESS_MODE: u32 = 0o600;

/// Written at the top of a new private-rooms file.
pub const HEADER: &str = "\
# chatd private rooms: one room per line, as ROOM USER..., the users who may use ROOM.
# A room not listed is public. Direct rooms (@alice+bob) are never listed: their name says who.
# Manage with `chatd room allow|deny|public|list`; a running daemon rereads this file when it
# changes, and users who lost a room they had joined get ERROR FORBIDDEN and LEFT.
# Lines starting with '#' and blank lines are ignored.
";

/// One private room's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub room: String,
    /// Sorted, each once.
    pub users: Vec<String>,
    /// Counted from 1, as in error messages.
    pub line: usize,
}

impl Entry {
    /// The file's line for this room, newline included.
    pub fn render(&self) -> String {
        let mut line = self.room.clone();
        for user in &self.users {
            line.push(' ');
            line.push_str(user);
        }
        line.push('\n');
        line
    }
}

/// Reads the file and the stamp of the very version read. `None`: there is no file.
pub fn read(path: &Path) -> Result<Option<(String, Stamp)>, AccessError> {
    read_stamped(path).map_err(|source| AccessError::Io {
        action: "read private-rooms file",
        path: path.to_path_buf(),
        source,
    })
}

/// Checks a room name an operator gave: a room of version 1's grammar, not a direct room.
pub fn check_room(room: &str) -> Result<(), AccessError> {
    if is_direct_room(room) {
        Err(AccessError::DirectRoom(room.to_string()))
    } else if !is_valid_room(room) {
        Err(AccessError::InvalidRoom(room.to_string()))
    } else {
        Ok(())
    }
}

/// Parses the file; the first bad line is an error naming it.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, AccessError> {
    let mut entries = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    // split_inclusive, not lines: the admin commands count lines the same way when they edit.
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = index + 1;
        let malformed = |reason: String| AccessError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut fields = content.split_ascii_whitespace();
        let Some(room) = fields.next() else {
            continue;
        };
        if let Err(e) = check_room(room) {
            return Err(malformed(e.to_string()));
        }
        let mut users: Vec<String> = Vec::new();
        for user in fields {
            if !is_valid_user(user) {
                return Err(malformed(format!(
                    "'{}' is not a valid user name",
                    user.escape_debug()
                )));
            }
            users.push(user.to_string());
        }
        users.sort();
        users.dedup();
        if let Some(first) = seen.insert(room, line) {
            return Err(malformed(format!(
                "room '{room}' is already listed on line {first}"
            )));
        }
        entries.push(Entry {
            room: room.to_string(),
            users,
            line,
        });
    }
    Ok(entries)
}

/// `text` with line `line` (counted from 1) replaced by `new`, or dropped if `new` is `None`;
/// with `line` `None`, `new` is appended. Every other line, comments included, stays.
pub fn edit(text: &str, line: Option<usize>, new: Option<&str>) -> String {
    let Some(line) = line else {
        let mut out = if text.trim().is_empty() {
            HEADER.to_string()
        } else {
            text.to_string()
        };
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(new.unwrap_or(""));
        return out;
    };
    text.split_inclusive('\n')
        .enumerate()
        .filter_map(
            |(index, old)| {
                if index + 1 == line { new } else { Some(old) }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_sorted_lists_and_bad_lines_are_named() {
        let path = Path::new("private-rooms");
        let text = "# staff only\n\nstaff carol alice alice\nvault\n";
        let entries = parse(path, text).unwrap_or_default();
        assert_eq!(
            entries,
            [
                Entry {
                    room: "staff".into(),
                    users: vec!["alice".into(), "carol".into()],
                    line: 3
                },
                Entry {
                    room: "vault".into(),
                    users: vec![],
                    line: 4
                },
            ]
        );
        for (bad, why) in [
            (
                "staff alice\nstaff bob\n",
                "line 2: room 'staff' is already listed on line 1",
            ),
            (
                "@alice+bob alice\n",
                "line 1: '@alice+bob' is a direct room",
            ),
            ("sta ff!\n", "line 1: 'ff!' is not a valid user name"),
            ("a/b alice\n", "line 1: 'a/b' is not a valid room name"),
        ] {
            let err = parse(path, bad).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn edits_keep_every_other_line() {
        let text = "# c\nstaff alice\nvault\n";
        assert_eq!(
            edit(text, Some(2), Some("staff bob\n")),
            "# c\nstaff bob\nvault\n"
        );
        assert_eq!(edit(text, Some(2), None), "# c\nvault\n");
        assert_eq!(edit("# c", None, Some("x a\n")), "# c\nx a\n");
        assert!(edit("", None, Some("x a\n")).starts_with(HEADER));
    }
}
