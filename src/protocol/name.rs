//! Validation of user and room names, as the contract defines them: version 1's grammar,
//! and version 2's direct rooms (`@alice+bob`), which only their own users may use.
//!
//! Pure functions of a name; they must never look anything up. Whether a version 2 name is
//! *allowed* on a connection (the server may still keep direct rooms out) is the session's
//! decision, not this module's.

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

/// Fewest and most users a direct room names.
pub const DIRECT_USERS: std::ops::RangeInclusive<usize> = 2..=8;

/// What starts a direct room's name; version 1's grammar has no `@`.
pub const DIRECT_PREFIX: char = '@';

/// What joins the users of a direct room's name; version 1's grammar has no `+`.
pub const DIRECT_SEPARATOR: char = '+';

/// Whether `name` is a room on a version 2 connection: a room of version 1's grammar, or a
/// direct room in its canonical form. The two never overlap: version 1 has no `@` or `+`.
pub fn is_valid_room_v2(name: &str) -> bool {
    is_valid_room(name) || is_direct_room(name)
}

/// Whether `name` is a direct room in its one canonical form: `@`, then 2 to 8 valid user
/// names joined by `+`, each greater byte by byte than the one before it (so all distinct),
/// at most 64 bytes in all. `@bob+alice`, `@alice+alice` and `@alice` are not.
pub fn is_direct_room(name: &str) -> bool {
    direct_members(name).is_some()
}

/// The users a direct room's name names, in its (ascending) order, or `None` if `name` is
/// not a direct room in canonical form. For access checks: only these users may use it.
///
/// ```
/// use chatd::protocol::name::direct_members;
/// let users: Vec<&str> = direct_members("@alice+bob").into_iter().flatten().collect();
/// assert_eq!(users, ["alice", "bob"]);
/// assert!(direct_members("@bob+alice").is_none());
/// ```
pub fn direct_members(name: &str) -> Option<impl Iterator<Item = &str> + Clone> {
    if name.len() > MAX_ROOM {
        return None;
    }
    let users = name.strip_prefix(DIRECT_PREFIX)?.split(DIRECT_SEPARATOR);
    let mut count = 0;
    let mut previous: Option<&str> = None;
    for user in users.clone() {
        if !is_valid_user(user) || previous.is_some_and(|p| p.as_bytes() >= user.as_bytes()) {
            return None;
        }
        previous = Some(user);
        count += 1;
    }
    DIRECT_USERS.contains(&count).then_some(users)
}

/// The canonical name of the direct room of `users` (sorted, each named once), or `None` if
/// they make none: fewer than 2 or more than 8 distinct users, an invalid user name, or a
/// name longer than 64 bytes.
pub fn direct_room<'u>(users: impl IntoIterator<Item = &'u str>) -> Option<String> {
    let users: std::collections::BTreeSet<&str> = users.into_iter().collect();
    let mut name = String::from(DIRECT_PREFIX);
    for (i, user) in users.iter().enumerate() {
        if i > 0 {
            name.push(DIRECT_SEPARATOR);
        }
        name.push_str(user);
    }
    is_direct_room(&name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn direct_room_names() {
        assert!(is_direct_room("@alice+bob"));
        assert!(is_direct_room("@a+b+c+d+e+f+g+h"));
        assert!(is_valid_room_v2("@alice+bob") && is_valid_room_v2("#general"));
        // Version 1's grammar keeps them out.
        assert!(!is_valid_room("@alice+bob"));
        for bad in [
            "@alice",
            "@",
            "@+",
            "alice+bob",
            "@bob+alice",
            "@alice+alice",
            "@alice++bob",
            "@alice+bob+",
            "@+alice+bob",
            "@alice+b b",
            "@a+b+c+d+e+f+g+h+i",
            "@#a+b",
            "@Bob+alice+Bob",
        ] {
            assert!(!is_direct_room(bad), "{bad}");
            assert!(!is_valid_room_v2(bad), "{bad}");
        }
        // Byte order, not alphabetical order: upper case sorts first.
        assert!(is_direct_room("@Zed+alice") && !is_direct_room("@alice+Zed"));
        // 64 bytes at most, as every room.
        let long = format!("@{}+{}", "a".repeat(31), "b".repeat(31));
        assert_eq!(long.len(), 64);
        assert!(is_direct_room(&long));
        assert!(!is_direct_room(&format!(
            "@{}+{}",
            "a".repeat(31),
            "b".repeat(32)
        )));
    }

    #[test]
    fn direct_room_builds_the_canonical_name() {
        assert_eq!(direct_room(["bob", "alice"]).as_deref(), Some("@alice+bob"));
        assert_eq!(
            direct_room(["bob", "alice", "bob"]).as_deref(),
            Some("@alice+bob")
        );
        assert_eq!(direct_room(["alice", "alice"]), None);
        assert_eq!(direct_room(["alice", "b b"]), None);
        let members: Vec<&str> = direct_members("@a+b+c").into_iter().flatten().collect();
        assert_eq!(members, ["a", "b", "c"]);
    }

    /// 2 to 8 distinct valid user names, sorted as the canonical form wants them.
    fn canonical_users() -> impl Strategy<Value = Vec<String>> {
        prop::collection::btree_set("[A-Za-z0-9._-]{1,10}", DIRECT_USERS)
            .prop_map(|set| set.into_iter().collect())
    }

    fn joined(users: &[String]) -> String {
        format!("{DIRECT_PREFIX}{}", users.join("+"))
    }

    proptest! {
        #[test]
        fn canonical_direct_names_round_trip(users in canonical_users()) {
            let name = joined(&users);
            let fits = name.len() <= MAX_ROOM;
            prop_assert_eq!(is_direct_room(&name), fits);
            prop_assert_eq!(is_valid_room_v2(&name), fits);
            prop_assert!(!is_valid_room(&name));
            if fits {
                let back: Vec<&str> = direct_members(&name).into_iter().flatten().collect();
                prop_assert_eq!(&back, &users);
                prop_assert_eq!(direct_room(back.iter().rev().copied()), Some(name));
            }
        }

        #[test]
        fn any_other_order_is_invalid(users in canonical_users(), seed in any::<u64>()) {
            // A rotation or swap that moves at least one name: never the sorted order.
            let mut shuffled = users.clone();
            let n = shuffled.len();
            let (i, j) = ((seed % n as u64) as usize, ((seed >> 8) % n as u64) as usize);
            if i == j {
                shuffled.rotate_left(1 + i % (n - 1));
            } else {
                shuffled.swap(i, j);
            }
            prop_assert_ne!(&shuffled, &users);
            prop_assert!(!is_direct_room(&joined(&shuffled)));
        }

        #[test]
        fn a_name_twice_is_invalid(users in canonical_users(), at in any::<prop::sample::Index>()) {
            // Repeated right after itself, in otherwise canonical order.
            let i = at.index(users.len());
            let mut twice = users.clone();
            twice.insert(i, users[i].clone());
            prop_assert!(!is_direct_room(&joined(&twice)));
        }

        #[test]
        fn direct_members_only_for_canonical_names(name in "@[a-c+]{0,12}") {
            // Every name direct_members accepts joins back to itself from sorted names.
            if let Some(users) = direct_members(&name) {
                let users: Vec<String> = users.map(str::to_owned).collect();
                let mut sorted = users.clone();
                sorted.sort();
                sorted.dedup();
                prop_assert_eq!(&sorted, &users);
                prop_assert_eq!(joined(&users), name.clone());
            }
        }
    }
}
