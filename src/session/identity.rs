//! Who is on a connection: the user's name, shared with the users table, and on a version 2
//! connection that named an installation of its client program (HELLO's `client`), that id.
//!
//! It must never cost an idle connection more than the name alone did (16 bytes, the
//! `Option<Arc<str>>` it replaced), with or without a client id: the name is the users table's
//! thin handle ([`UserName`], 8 bytes) and the id sits in the other 8, with no allocation of
//! its own. Before HELLO it holds one empty name that every session shares, so that "not
//! logged in yet" needs no tag of its own.

use std::num::NonZeroU64;
use std::sync::{Arc, LazyLock};

use crate::auth::UserName;

/// The user of a connection, and its client id if it named one.
#[derive(Debug)]
pub(super) struct Identity {
    user: UserName,
    /// `None` on every version 1 connection, a version 2 one with `client = 0`, and before
    /// HELLO.
    client: Option<NonZeroU64>,
}

const _: () = assert!(std::mem::size_of::<Identity>() == 16);

/// The name of nobody, shared by every session before its HELLO.
static NOBODY: LazyLock<UserName> = LazyLock::new(|| UserName::new(Arc::from("")));

impl Identity {
    /// Nobody yet: the empty name.
    pub fn nobody() -> Identity {
        Identity {
            user: NOBODY.clone(),
            client: None,
        }
    }

    /// `user`, with client id `client` (0: none).
    pub fn new(user: UserName, client: u64) -> Identity {
        Identity {
            user,
            client: NonZeroU64::new(client),
        }
    }

    /// The user's name ("" before HELLO).
    pub fn user(&self) -> &str {
        self.user.as_str()
    }

    /// The key of this connection's SENDs, if its HELLO named a client (see
    /// [`crate::dedupe`]): the user's shared name and the client id.
    pub fn send_key(&self) -> Option<crate::dedupe::SendKey> {
        self.client.map(|client| crate::dedupe::SendKey {
            user: Arc::clone(self.user.shared()),
            client,
        })
    }

    /// The user's name as the users table shares it ("" before HELLO): rooms count the
    /// user's connections under this `Arc`, never a copy.
    pub fn name(&self) -> &Arc<str> {
        self.user.shared()
    }

    /// The client id a version 2 HELLO named, if it named one.
    pub fn client(&self) -> Option<NonZeroU64> {
        self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_beside_the_shared_name() {
        let name: Arc<str> = Arc::from("alice");
        let handle = UserName::new(Arc::clone(&name));
        let plain = Identity::new(handle.clone(), 0);
        assert_eq!((plain.user(), plain.client()), ("alice", None));
        let installed = Identity::new(handle.clone(), 42);
        assert_eq!(installed.user(), "alice");
        assert_eq!(installed.client().map(NonZeroU64::get), Some(42));
        // The users table's name is shared, never copied.
        assert!(Arc::ptr_eq(installed.name(), &name));
        assert!(Arc::ptr_eq(plain.name(), &name));
        assert_eq!(Identity::nobody().user(), "");
        assert!(Identity::nobody().send_key().is_none());
        let key = installed.send_key().expect("a keyed connection");
        assert_eq!((&*key.user, key.client.get()), ("alice", 42));
    }
}
