//! Frame kinds, error codes, protocol versions, and the typed frames of both directions.
//!
//! Frames borrow their strings from the buffer they were decoded from, so that the hot path
//! (a SEND arriving, a MSG being read by a client) does not allocate per field. The types
//! describe every frame of every version this crate knows; which of them a connection may
//! use is decided by the version in force there (see [`kind::is_client_in`]), never here.

use std::fmt;

use super::codec::Reader;

/// Kind bytes, as on the wire.
pub mod kind {
    use super::Version;

    pub const HELLO: u8 = 0x01;
    pub const JOIN: u8 = 0x02;
    pub const LEAVE: u8 = 0x03;
    pub const SEND: u8 = 0x04;
    pub const PING: u8 = 0x05;
    pub const BYE: u8 = 0x06;
    /// Version 2.
    pub const WHO: u8 = 0x07;
    /// Version 2.
    pub const WATCH: u8 = 0x08;

    pub const WELCOME: u8 = 0x81;
    pub const JOINED: u8 = 0x82;
    pub const LEFT: u8 = 0x83;
    pub const MSG: u8 = 0x84;
    pub const ACK: u8 = 0x85;
    pub const PONG: u8 = 0x86;
    pub const ERROR: u8 = 0x87;
    /// Version 2.
    pub const MEMBERS: u8 = 0x88;
    /// Version 2.
    pub const PRESENCE: u8 = 0x89;

    /// The version that introduced this kind (of either direction), or `None` for a kind no
    /// version has.
    pub fn introduced_in(kind: u8) -> Option<Version> {
        match kind {
            HELLO..=BYE | WELCOME..=ERROR => Some(Version::V1),
            WHO | WATCH | MEMBERS | PRESENCE => Some(Version::V2),
            _ => None,
        }
    }

    /// Whether a client may send this kind to a server, in some version.
    pub fn is_client(kind: u8) -> bool {
        (HELLO..=WATCH).contains(&kind)
    }

    /// Whether a server may send this kind to a client, in some version.
    pub fn is_server(kind: u8) -> bool {
        (WELCOME..=PRESENCE).contains(&kind)
    }

    /// Whether a client may send this kind on a connection speaking `version`. A connection
    /// speaks version 1 until a HELLO of another version is accepted, so that a version 1
    /// client sending 0x07 gets UNKNOWN_KIND exactly as before version 2 existed.
    pub fn is_client_in(version: Version, kind: u8) -> bool {
        is_client(kind) && introduced_in(kind).is_some_and(|v| v <= version)
    }

    /// Whether a server may send this kind on a connection speaking `version`.
    pub fn is_server_in(version: Version, kind: u8) -> bool {
        is_server(kind) && introduced_in(kind).is_some_and(|v| v <= version)
    }
}

/// A protocol version this crate speaks. Ordered: a later version holds everything an
/// earlier one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Version {
    V1 = 1,
    /// Version 1 plus the client id in HELLO, WHO/WATCH/MEMBERS/PRESENCE, direct and private
    /// rooms, FORBIDDEN and STALE_ID (`protocol-v2.md`).
    V2 = 2,
}

impl Version {
    /// The version a HELLO's version byte names, if this crate speaks it.
    pub fn from_wire(version: u8) -> Option<Version> {
        match version {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }

    /// The version byte, as HELLO and WELCOME carry it.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// HELLO of version 1 or 2; its body is read by its version. `client` is on the wire in
    /// version 2 only: it is 0 in a version 1 HELLO, and the encoder writes it for version 2
    /// alone (a HELLO of any other version is written in version 1's layout).
    Hello {
        version: u8,
        user: &'a str,
        token: &'a str,
        client: u64,
    },
    /// HELLO of a version this crate does not speak. Its body after the version byte is not
    /// read, since only its version could say how: whatever it holds, the answer is
    /// UNSUPPORTED_VERSION (a later client can always learn that the server is older).
    HelloUnsupported {
        version: u8,
        rest: &'a [u8],
    },
    Join {
        room: &'a str,
        after: u64,
        limit: u32,
    },
    Leave {
        room: &'a str,
    },
    Send {
        room: &'a str,
        id: u64,
        text: &'a str,
    },
    Ping {
        nonce: u64,
    },
    Bye,
    /// Version 2: who is in a joined room.
    Who {
        room: &'a str,
    },
    /// Version 2: `on` 1 asks for MEMBERS now and PRESENCE on every change, 0 stops. Any
    /// other value is carried as it came, for the session to refuse as INVALID.
    Watch {
        room: &'a str,
        on: u8,
    },
}

/// A frame sent by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    Welcome {
        version: u8,
        epoch: u64,
        session: u64,
        max_frame: u32,
        idle_timeout_ms: u32,
        server: &'a str,
    },
    Joined {
        room: &'a str,
        first: u64,
        head: u64,
    },
    Left {
        room: &'a str,
    },
    Msg {
        room: &'a str,
        seq: u64,
        ts_ms: u64,
        user: &'a str,
        text: &'a str,
    },
    Ack {
        id: u64,
        seq: u64,
    },
    Pong {
        nonce: u64,
    },
    Error {
        code: u16,
        reference: u64,
        message: &'a str,
    },
    /// Version 2: the distinct users in a room, sorted; `users` holds as many as fitted in
    /// the server's `max_frame`, `total` says how many there are.
    Members {
        room: &'a str,
        total: u32,
        users: UserList<'a>,
    },
    /// Version 2: `user`'s first connection joined the room (`here`), or its last one left.
    /// On the wire `here` is 1 or 0; any other byte is MALFORMED.
    Presence {
        room: &'a str,
        user: &'a str,
        here: bool,
    },
}

/// The users of a MEMBERS frame as they lie on the wire: `count` `str` fields back to back,
/// each known to be whole and UTF-8. Borrowed, so that reading a MEMBERS allocates nothing.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct UserList<'a> {
    pub(super) count: u16,
    pub(super) wire: &'a [u8],
}

impl<'a> UserList<'a> {
    /// The list of `count` `str` fields that `wire` holds, exactly.
    ///
    /// # Errors
    /// MALFORMED if `wire` holds fewer, more, or a field that is not UTF-8.
    pub fn from_wire(count: u16, wire: &'a [u8]) -> Result<UserList<'a>, super::codec::FrameError> {
        let mut r = Reader::new(wire);
        for _ in 0..count {
            r.str()?;
        }
        r.finish()?;
        Ok(UserList { count, wire })
    }

    /// Writes `users` as a list into `out`, for [`from_wire`](UserList::from_wire); returns
    /// how many (at most `u16::MAX`, the rest left out).
    pub fn write<'u>(users: impl IntoIterator<Item = &'u str>, out: &mut Vec<u8>) -> u16 {
        let mut count = 0u16;
        for user in users {
            if count == u16::MAX {
                break;
            }
            let user = super::codec::clamp_str(user, usize::from(u16::MAX));
            out.extend_from_slice(&u16::try_from(user.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(user.as_bytes());
            count += 1;
        }
        count
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes of the list, as on the wire.
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    /// The users, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let mut r = Reader::new(self.wire);
        // `from_wire` checked every field, so no read here fails; a failure would only end
        // the list early.
        (0..self.count).map_while(move |_| r.str().ok())
    }
}

impl fmt::Debug for UserList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl ClientFrame<'_> {
    pub fn kind(&self) -> u8 {
        match self {
            ClientFrame::Hello { .. } | ClientFrame::HelloUnsupported { .. } => kind::HELLO,
            ClientFrame::Join { .. } => kind::JOIN,
            ClientFrame::Leave { .. } => kind::LEAVE,
            ClientFrame::Send { .. } => kind::SEND,
            ClientFrame::Ping { .. } => kind::PING,
            ClientFrame::Bye => kind::BYE,
            ClientFrame::Who { .. } => kind::WHO,
            ClientFrame::Watch { .. } => kind::WATCH,
        }
    }
}

impl ServerFrame<'_> {
    pub fn kind(&self) -> u8 {
        match self {
            ServerFrame::Welcome { .. } => kind::WELCOME,
            ServerFrame::Joined { .. } => kind::JOINED,
            ServerFrame::Left { .. } => kind::LEFT,
            ServerFrame::Msg { .. } => kind::MSG,
            ServerFrame::Ack { .. } => kind::ACK,
            ServerFrame::Pong { .. } => kind::PONG,
            ServerFrame::Error { .. } => kind::ERROR,
            ServerFrame::Members { .. } => kind::MEMBERS,
            ServerFrame::Presence { .. } => kind::PRESENCE,
        }
    }
}

/// The error codes of the contract. The numeric values are fixed forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Malformed = 1,
    TooLarge = 2,
    UnknownKind = 3,
    UnsupportedVersion = 4,
    AuthFailed = 5,
    NotAuthenticated = 6,
    Invalid = 7,
    NotJoined = 8,
    RateLimited = 9,
    TooMany = 10,
    SlowConsumer = 11,
    Timeout = 12,
    ShuttingDown = 13,
    Storage = 14,
    Internal = 15,
    /// Not fatal: a room the user may not use (both versions; version 1 allows for new codes).
    Forbidden = 16,
    /// Not fatal, version 2: a SEND id older than the server still remembers for the client.
    StaleId = 17,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnknownKind,
        ErrorCode::UnsupportedVersion,
        ErrorCode::AuthFailed,
        ErrorCode::NotAuthenticated,
        ErrorCode::Invalid,
        ErrorCode::NotJoined,
        ErrorCode::RateLimited,
        ErrorCode::TooMany,
        ErrorCode::SlowConsumer,
        ErrorCode::Timeout,
        ErrorCode::ShuttingDown,
        ErrorCode::Storage,
        ErrorCode::Internal,
        ErrorCode::Forbidden,
        ErrorCode::StaleId,
    ];

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u16() == code)
    }

    /// The contract's upper-case name, e.g. `NOT_JOINED`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::UnknownKind => "UNKNOWN_KIND",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::NotAuthenticated => "NOT_AUTHENTICATED",
            ErrorCode::Invalid => "INVALID",
            ErrorCode::NotJoined => "NOT_JOINED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::TooMany => "TOO_MANY",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Storage => "STORAGE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::StaleId => "STALE_ID",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
