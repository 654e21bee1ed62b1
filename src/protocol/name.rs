//! Validation of user and room names, as the contract defines them.

/// Longest user name, in bytes.
pub const MAX_USER: usize = 32;
/// Longest room name, in bytes.
pub const MAX_ROOM: usize = 64;

/// A user is 1–32 bytes of `[A-Za-z0-9._-]`.
pub fn is_valid_user(name: &str) -> bool {
    (1..=MAX_USER).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A room is 1–64 bytes of `[A-Za-z0-9._#-]`.
pub fn is_valid_room(name: &str) -> bool {
    (1..=MAX_ROOM).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(is_valid_user("alice"));
        assert!(is_valid_user("a.b_c-9"));
        assert!(is_valid_user(&"x".repeat(32)));
        assert!(!is_valid_user(""));
        assert!(!is_valid_user(&"x".repeat(33)));
        assert!(!is_valid_user("al ice"));
        assert!(!is_valid_user("#general"));
        assert!(!is_valid_user("é"));
    }

    #[test]
    fn room_names() {
        assert!(is_valid_room("#general"));
        assert!(is_valid_room(&"r".repeat(64)));
        assert!(!is_valid_room(""));
        assert!(!is_valid_room(&"r".repeat(65)));
        assert!(!is_valid_room("a/b"));
        assert!(!is_valid_room("a b"));
    }
}
