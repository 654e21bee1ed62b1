//! A user's name as the users table hands it to a logged-in session: one thin pointer to the
//! table's own shared name, so that a session can keep it beside a version 2 client id in the
//! 16 bytes the name alone took before (`crate::session`'s `Identity`).
//!
//! The table pays for this once per user (a small allocation holding the shared name), never
//! per connection. This type must never copy the name: rooms count a user's connections under
//! the table's one `Arc<str>`.

use std::sync::Arc;

/// A user's name, shared with the users table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(Arc<Arc<str>>);

// The point of the type: a thin pointer.
const _: () = assert!(std::mem::size_of::<UserName>() == 8);

impl UserName {
    /// `name`, shared from now on through the returned handle.
    pub fn new(name: Arc<str>) -> UserName {
        UserName(Arc::new(name))
    }

    /// The shared name itself, as rooms and the dedupe table keep it.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_shares_the_name_it_was_made_from() {
        let name: Arc<str> = Arc::from("alice");
        let handle = UserName::new(Arc::clone(&name));
        let again = handle.clone();
        assert_eq!(again.as_str(), "alice");
        assert!(Arc::ptr_eq(again.shared(), &name), "never a copy");
        assert_eq!(
            Arc::strong_count(&name),
            2,
            "the handles share one reference"
        );
    }
}
