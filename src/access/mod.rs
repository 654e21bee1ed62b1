//! Who may use which room: private rooms, which the operator lists with the users allowed in
//! them, and direct rooms (`@alice+bob`), whose name says who may use them.
//!
//! Two ideas live here, apart, as they do for users. The daemon's check ([`Access`], published
//! as [`Grants`]): a table in memory that JOIN, SEND, WHO and WATCH are checked against, which a
//! watcher thread ([`Watch`]) replaces when the private-rooms file changes, so that no reactor
//! ever touches the disk; reactors then take away the rooms their sessions lost. And the admin
//! commands ([`allow`], [`deny`], [`make_public`], [`list`]) that rewrite the file from a process
//! of their own.
//!
//! The file holds one `ROOM USER…` line per private room. A room not listed is public. Nothing
//! here may tell a forbidden room from a missing one: the answer to both is the same.

mod admin;
mod error;
mod file;
mod table;
mod watch;

pub use admin::{allow, deny, list, make_public};
pub use error::AccessError;
pub use table::Access;
pub use watch::Watch;

/// The access table every reactor checks against, replaced whole by the watcher.
pub type Grants = crate::published::Published<Access>;
