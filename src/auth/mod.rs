//! Users and their tokens.
//!
//! Two ideas live here, apart. The daemon's login check ([`Table`], published as [`Users`]):
//! a table in memory that a HELLO is verified against, which a watcher thread ([`Watch`])
//! replaces when the users file changes, so that no reactor ever touches the disk to log
//! someone in. And the admin commands ([`add_user`], [`remove_user`], [`rotate_user`],
//! [`list_users`]) that rewrite the file from a process of their own.
//!
//! The users file holds one `NAME SHA256HEX` line per user, the SHA-256 of the user's token in
//! 64 lowercase hex digits. Nothing here may store or log a token, or let the time a check
//! takes reveal whether a user exists.

mod admin;
mod error;
mod file;
mod name;
mod table;
mod watch;

pub use admin::{add_user, list_users, remove_user, rotate_user};
pub use error::UserError;
pub use name::UserName;
pub use table::{Revoked, Table};
pub use watch::{POLL_EVERY, Watch};

/// The users table every reactor logs in against, replaced whole by the watcher.
pub type Users = crate::published::Published<Table>;
