//! The client id and message ids of one user on one server (protocol version 2). The client
//! id is a random non-zero u64 created once and kept; message ids only ever increase for it,
//! across runs, crashes and several `chat`s at once, because the server takes
//! `(user, client, id)` to name one message and a reused id would make a new message look
//! like a retry of an old one.
//!
//! Ids are reserved write-ahead in blocks: the file says the highest id handed out so far, and
//! it is raised (atomically: temporary file, sync, rename, sync of the folder) *before* any id
//! of the new block is used, so a crash can waste ids but never hand one out twice. A lock
//! file serialises reservations, so two `chat`s of the same user get disjoint blocks. This
//! module never touches the network.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Ids reserved per write: one sync per this many messages, and at most this many ids skipped
/// when `chat` ends (the server only asks that they increase).
pub const BLOCK: u64 = 32;

#[derive(Debug)]
pub struct Ids {
    path: PathBuf,
    client: u64,
    /// The next id to hand out, and the last one reserved on disk.
    next: u64,
    reserved: u64,
}

impl Ids {
    /// Reads (creating on first use) the client id kept at `path`. A file that does not read
    /// as ours gets a fresh client id: ids of a new client cannot collide with old ones.
    ///
    /// # Errors
    /// The folder or the file cannot be written.
    pub fn open(path: &Path) -> io::Result<Ids> {
        let _lock = lock(path)?;
        let (client, reserved) = match read(path)? {
            Some(saved) => saved,
            None => {
                let client = fresh_client()?;
                write(path, client, 0)?;
                (client, 0)
            }
        };
        Ok(Ids {
            path: path.to_path_buf(),
            client,
            next: reserved + 1,
            reserved,
        })
    }

    pub fn client(&self) -> u64 {
        self.client
    }

    /// The next message id, reserved on disk before it is returned.
    ///
    /// # Errors
    /// The reservation could not be written: the id must not be used.
    pub fn next(&mut self) -> io::Result<u64> {
        if self.next > self.reserved {
            let _lock = lock(&self.path)?;
            // Another chat may have reserved meanwhile: start above whatever it took.
            let on_disk = match read(&self.path)? {
                Some((client, reserved)) if client == self.client => reserved,
                _ => 0,
            };
            let from = self.next.max(on_disk + 1);
            let reserved = from.saturating_add(BLOCK - 1);
            write(&self.path, self.client, reserved)?;
            self.next = from;
            self.reserved = reserved;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

fn fresh_client() -> io::Result<u64> {
    loop {
        let client = getrandom::u64().map_err(|e| io::Error::other(e.to_string()))?;
        if client != 0 {
            return Ok(client);
        }
    }
}

/// Holds `PATH.lock` locked until dropped.
fn lock(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(with_suffix(path, ".lock"))?;
    file.lock()?;
    Ok(file)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `(client, reserved)`; `None` if there is no file or it is not ours.
fn read(path: &Path) -> io::Result<Option<(u64, u64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (mut client, mut reserved) = (None, None);
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("client", hex)) => client = u64::from_str_radix(hex, 16).ok(),
            Some(("reserved", n)) => reserved = n.parse().ok(),
            _ => {}
        }
    }
    Ok(client.filter(|&c| c != 0).zip(reserved))
}

fn write(path: &Path, client: u64, reserved: u64) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = with_suffix(path, &format!(".{}.tmp", std::process::id()));
    let text = format!(
        "# chat: this installation's client id and the last message id reserved. Deleting \
         it makes a new client id.\nclient {client:016x}\nreserved {reserved}\n"
    );
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("chat").join("alice@h_1.client");
        let first = Ids::open(&path).expect("open").client();
        assert_ne!(first, 0);
        assert_eq!(Ids::open(&path).expect("reopen").client(), first);
    }

    #[test]
    fn ids_never_go_back_across_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ids");
        let mut last = 0;
        for used in [1, BLOCK, BLOCK + 1, 0, 3] {
            let mut ids = Ids::open(&path).expect("open");
            for _ in 0..used {
                let id = ids.next().expect("next");
                assert!(id > last, "{id} after {last}");
                last = id;
            }
        }
    }

    #[test]
    fn two_chats_at_once_get_disjoint_ids() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ids");
        let (mut a, mut b) = (Ids::open(&path).expect("a"), Ids::open(&path).expect("b"));
        assert_eq!(a.client(), b.client());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..BLOCK + 3 {
            assert!(seen.insert(a.next().expect("a")));
            assert!(seen.insert(b.next().expect("b")));
        }
    }

    #[test]
    fn a_file_that_is_not_ours_gets_a_fresh_client() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ids");
        std::fs::write(&path, "nonsense\n").expect("write");
        let ids = Ids::open(&path).expect("open");
        assert_ne!(ids.client(), 0);
        assert_eq!(Ids::open(&path).expect("reopen").client(), ids.client());
    }
}
