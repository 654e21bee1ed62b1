//! Frame kinds, error codes, and the typed frames of both directions.
//!
//! Frames borrow their strings from the buffer they were decoded from, so that the hot path
//! (a SEND arriving, a MSG being read by a client) does not allocate per field.

use std::fmt;

/// Kind bytes, as on the wire.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const JOIN: u8 = 0x02;
    pub const LEAVE: u8 = 0x03;
    pub const SEND: u8 = 0x04;
    pub const PING: u8 = 0x05;
    pub const BYE: u8 = 0x06;

    pub const WELCOME: u8 = 0x81;
    pub const JOINED: u8 = 0x82;
    pub const LEFT: u8 = 0x83;
    pub const MSG: u8 = 0x84;
    pub const ACK: u8 = 0x85;
    pub const PONG: u8 = 0x86;
    pub const ERROR: u8 = 0x87;

    /// Whether a client may send this kind to a server.
    pub fn is_client(kind: u8) -> bool {
        (HELLO..=BYE).contains(&kind)
    }

    /// Whether a server may send this kind to a client.
    pub fn is_server(kind: u8) -> bool {
        (WELCOME..=ERROR).contains(&kind)
    }
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    Hello {
        version: u8,
        user: &'a str,
        token: &'a str,
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
}

impl ClientFrame<'_> {
    pub fn kind(&self) -> u8 {
        match self {
            ClientFrame::Hello { .. } => kind::HELLO,
            ClientFrame::Join { .. } => kind::JOIN,
            ClientFrame::Leave { .. } => kind::LEAVE,
            ClientFrame::Send { .. } => kind::SEND,
            ClientFrame::Ping { .. } => kind::PING,
            ClientFrame::Bye => kind::BYE,
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
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
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
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
