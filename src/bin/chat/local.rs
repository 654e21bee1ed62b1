//! What one `chat` keeps on this machine for its user and server beside the state file: the
//! client id and message ids ([`Ids`]) and the outbox ([`Outbox`]). Either may be missing (no
//! state directory, a folder that cannot be written, the outbox taken by another `chat`):
//! `chat` then still works, says so once, and numbers its messages in memory with client id
//! 0, which asks the server for no exactly-once check, so that ids of different runs never
//! meet under one client id.

use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::ids::Ids;
use crate::outbox::{Entry, Outbox};
use crate::state::StateFile;

pub struct Local {
    ids: Option<Ids>,
    outbox: Option<Outbox>,
    /// The next id when there is no id file.
    memory_next: u64,
    /// The first failure to write the outbox, not yet told.
    pub warnings: Vec<String>,
}

impl Local {
    pub fn open(s: &Settings) -> Local {
        let mut warnings = Vec::new();
        let base = s
            .state_dir
            .as_ref()
            .map(|dir| StateFile::new(dir, &s.server, &s.user).path().to_path_buf());
        let Some(base) = base else {
            warnings.push(
                "no state directory (set HOME, XDG_STATE_HOME or --state-dir): messages \
                 are not kept in an outbox and a resend may be stored twice"
                    .to_string(),
            );
            return Local::without(warnings);
        };
        let ids = match Ids::open(&with_suffix(&base, ".client")) {
            Ok(ids) => Some(ids),
            Err(e) => {
                warnings.push(format!(
                    "cannot keep the client id in {}: {e}; a resend may be stored twice",
                    base.display()
                ));
                None
            }
        };
        let path = with_suffix(&base, ".outbox");
        let outbox = match ids.as_ref().map(|_| Outbox::open(&path)) {
            Some(Ok(outbox)) => Some(outbox),
            Some(Err(e)) => {
                warnings.push(format!(
                    "not using the outbox {}: {e}; unconfirmed messages are kept only \
                     while this chat runs",
                    path.display()
                ));
                None
            }
            None => None,
        };
        Local {
            ids,
            outbox,
            memory_next: 1,
            warnings,
        }
    }

    fn without(warnings: Vec<String>) -> Local {
        Local {
            ids: None,
            outbox: None,
            memory_next: 1,
            warnings,
        }
    }

    /// The client id for HELLO; 0 (no exactly-once) without an id file.
    pub fn client(&self) -> u64 {
        self.ids.as_ref().map_or(0, Ids::client)
    }

    /// What earlier runs left unconfirmed, in id order.
    pub fn pending(&self) -> Vec<(u64, Entry)> {
        self.outbox
            .as_ref()
            .map(|o| o.pending().map(|(id, e)| (id, e.clone())).collect())
            .unwrap_or_default()
    }

    /// A new id for `text` to `room`, kept in the outbox before it is returned.
    ///
    /// # Errors
    /// The id could not be reserved or the outbox not written: the message must not go.
    pub fn queue(&mut self, room: &str, text: &str) -> Result<u64, String> {
        let id = match &mut self.ids {
            Some(ids) => ids
                .next()
                .map_err(|e| format!("cannot reserve a message id: {e}"))?,
            None => {
                self.memory_next += 1;
                self.memory_next - 1
            }
        };
        if let Some(outbox) = &mut self.outbox {
            outbox
                .add(id, room, text)
                .map_err(|e| format!("cannot write the outbox {}: {e}", outbox.path().display()))?;
        }
        Ok(id)
    }

    /// `id` was confirmed or refused for good.
    pub fn done(&mut self, id: u64) {
        if let Some(outbox) = &mut self.outbox
            && let Err(e) = outbox.done(id)
        {
            self.warnings.push(format!(
                "cannot update the outbox {}: {e}; a confirmed message may be sent again \
                 (the server stores it once)",
                outbox.path().display()
            ));
        }
    }

    /// Whether unconfirmed messages outlive this run.
    pub fn keeps(&self) -> bool {
        self.outbox
            .as_ref()
            .is_some_and(|o| o.pending().next().is_some())
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
