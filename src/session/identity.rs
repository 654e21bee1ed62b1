//! Who is on a connection: the user's name, shared with the users table, and on a version 2
//! connection that named an installation of its client program (HELLO's `client`), that id.
//!
//! It must never cost an idle connection more than the name alone did (16 bytes, the
//! `Option<Arc<str>>` it replaced): a connection with no client id keeps the name inline,
//! and only one that has an id moves name and id behind one pointer, an allocation that only
//! such connections pay for. Before HELLO it holds one empty name that every session shares,
//! so that "not logged in yet" needs no tag of its own.

use std::num::NonZeroU64;
use std::sync::{Arc, LazyLock};

/// The user of a connection, and its client id if it named one.
#[derive(Debug)]
pub(super) enum Identity {
    /// A user with no client id: every version 1 connection, a version 2 one with
    /// `client = 0`, and (with the empty name) a connection before HELLO.
    Named(Arc<str>),
    /// A user on a version 2 connection whose HELLO named a client.
    Installed(Box<Installation>),
}

/// A user and the client id its HELLO named.
#[derive(Debug)]
pub(super) struct Installation {
    user: Arc<str>,
    client: NonZeroU64,
}

// The enum's tag hides in the inline name's pointer, so an identity is as large as the name;
// the allocation of a connection with a client id is the name's pointer and the id.
const _: () = assert!(std::mem::size_of::<Identity>() == 16);
const _: () = assert!(std::mem::size_of::<Installation>() == 24);

/// The name of nobody, shared by every session before its HELLO.
static NOBODY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

impl Identity {
    /// Nobody yet: the empty name.
    pub fn nobody() -> Identity {
        Identity::Named(Arc::clone(&NOBODY))
    }

    /// `user`, with client id `client` (0: none).
    pub fn new(user: Arc<str>, client: u64) -> Identity {
        match NonZeroU64::new(client) {
            None => Identity::Named(user),
            Some(client) => Identity::Installed(Box::new(Installation { user, client })),
        }
    }

    /// The user's name ("" before HELLO).
    pub fn user(&self) -> &str {
        match self {
            Identity::Named(user) => user,
            Identity::Installed(i) => &i.user,
        }
    }

    /// The key of this connection's SENDs, if its HELLO named a client (see
    /// [`crate::dedupe`]): the user's shared name and the client id.
    pub fn send_key(&self) -> Option<crate::dedupe::SendKey> {
        match self {
            Identity::Named(_) => None,
            Identity::Installed(i) => Some(crate::dedupe::SendKey {
                user: Arc::clone(&i.user),
                client: i.client,
            }),
        }
    }

    /// The user's name as the users table shares it ("" before HELLO): rooms count the
    /// user's connections under this `Arc`, never a copy.
    pub fn name(&self) -> &Arc<str> {
        match self {
            Identity::Named(user) => user,
            Identity::Installed(i) => &i.user,
        }
    }

    /// The client id a version 2 HELLO named, if it named one.
    pub fn client(&self) -> Option<NonZeroU64> {
        match self {
            Identity::Named(_) => None,
            Identity::Installed(i) => Some(i.client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_beside_the_shared_name() {
        let name: Arc<str> = Arc::from("alice");
        let plain = Identity::new(Arc::clone(&name), 0);
        assert_eq!((plain.user(), plain.client()), ("alice", None));
        let installed = Identity::new(Arc::clone(&name), 42);
        assert_eq!(installed.user(), "alice");
        assert_eq!(installed.client().map(NonZeroU64::get), Some(42));
        // The users table's name is shared, never copied.
        assert_eq!(Arc::strong_count(&name), 3);
        assert_eq!(Identity::nobody().user(), "");
    }
}
