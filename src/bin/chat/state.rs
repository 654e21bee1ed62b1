//! The state file: for one user on one server, the server's epoch and the last seq seen in
//! each room, so that a later run can show what was missed. It is only ever replaced whole
//! (write a temporary file, sync, rename), so a crash leaves the old state or the new one,
//! never half of each; and a seq it holds never goes backwards within an epoch.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub epoch: u64,
    pub seqs: BTreeMap<String, u64>,
}

impl State {
    /// Takes `other` in: the same epoch keeps the larger seq of each room, a different one
    /// replaces everything (seqs of another epoch mean nothing).
    pub fn merge(&mut self, other: &State) {
        if self.epoch != other.epoch {
            *self = other.clone();
            return;
        }
        for (room, &seq) in &other.seqs {
            let mine = self.seqs.entry(room.clone()).or_insert(0);
            *mine = (*mine).max(seq);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# chat: the last message seen in each room, for one server epoch. Safe to delete.\n",
        );
        out.push_str(&format!("epoch {:016x}\n", self.epoch));
        for (room, seq) in &self.seqs {
            out.push_str(&format!("room {room} {seq}\n"));
        }
        out
    }

    /// Reads what [`State::render`] wrote; `None` if it is not that.
    pub fn parse(text: &str) -> Option<State> {
        let mut epoch = None;
        let mut seqs = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                None => {}
                Some(w) if w.starts_with('#') => {}
                Some("epoch") => epoch = Some(u64::from_str_radix(words.next()?, 16).ok()?),
                Some("room") => {
                    let room = words.next()?;
                    let seq = words.next()?.parse().ok()?;
                    seqs.insert(room.to_string(), seq);
                }
                Some(_) => return None,
            }
        }
        Some(State {
            epoch: epoch?,
            seqs,
        })
    }
}

/// The state file of one user on one server.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `DIR/USER@SERVER`, with anything unusual in the server name replaced by `_`.
    pub fn new(dir: &Path, server: &str, user: &str) -> StateFile {
        let server: String = server
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        StateFile {
            path: dir.join(format!("{user}@{server}")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `None` if there is none yet or it is not readable as state.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn load(&self) -> io::Result<Option<State>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(State::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Merges `state` into what is saved (another `chat` may have saved meanwhile) and
    /// replaces the file atomically.
    ///
    /// # Errors
    /// The directory or the file cannot be written.
    pub fn save(&self, state: &State) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut merged = self.load().ok().flatten().unwrap_or_default();
        merged.merge(state);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(merged.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64, seqs: &[(&str, u64)]) -> State {
        State {
            epoch,
            seqs: seqs.iter().map(|(r, s)| (r.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn state_survives_render_and_parse() {
        let s = state(0xabc, &[("#general", 42), ("#", 1), ("dev", 0)]);
        assert_eq!(State::parse(&s.render()), Some(s));
        assert_eq!(State::parse("garbage here"), None);
        assert_eq!(State::parse("room #a 1\n"), None, "no epoch");
    }

    #[test]
    fn merge_keeps_the_larger_seq_within_an_epoch_and_restarts_across_epochs() {
        let mut saved = state(1, &[("#a", 10), ("#b", 5)]);
        saved.merge(&state(1, &[("#a", 7), ("#c", 2)]));
        assert_eq!(saved, state(1, &[("#a", 10), ("#b", 5), ("#c", 2)]));
        saved.merge(&state(2, &[("#a", 1)]));
        assert_eq!(saved, state(2, &[("#a", 1)]));
    }

    #[test]
    fn save_replaces_the_file_and_merges_with_what_another_run_saved() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = StateFile::new(&dir.path().join("chat"), "127.0.0.1:7667", "alice");
        assert!(file.path().ends_with("alice@127.0.0.1_7667"));
        assert_eq!(file.load().expect("load"), None);
        file.save(&state(9, &[("#a", 3)])).expect("save");
        file.save(&state(9, &[("#b", 4)])).expect("save");
        assert_eq!(
            file.load().expect("load"),
            Some(state(9, &[("#a", 3), ("#b", 4)]))
        );
        let leftovers = std::fs::read_dir(dir.path().join("chat"))
            .expect("dir")
            .count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
    }
}
