//! chatd's side of the `Wire`: HELLO/WELCOME, JOIN/JOINED, SEND/ACK, MSG, in the binary frames
//! of protocol v1 (encoded and parsed by the daemon's own codec).

use chatd::client::CLIENT_MAX_FRAME;
use chatd::protocol::codec::parse_server;
use chatd::protocol::{ClientFrame, Decoded, Deframer, ErrorCode, ServerFrame, encode_client};

use super::{Creds, In, Wire};

pub struct Chatd {
    creds: Creds,
    next_id: u64,
}

impl Chatd {
    pub fn new(creds: Creds) -> Chatd {
        Chatd { creds, next_id: 1 }
    }
}

impl Wire for Chatd {
    fn hello(&mut self, out: &mut Vec<u8>) {
        let hello = ClientFrame::Hello {
            version: chatd::protocol::VERSION,
            user: &self.creds.user,
            token: &self.creds.token,
        };
        encode_client(&hello, out);
    }

    fn subscribe(&mut self, room: &str, out: &mut Vec<u8>) {
        let join = ClientFrame::Join {
            room,
            after: 0,
            limit: 0,
        };
        encode_client(&join, out);
    }

    fn publish(&mut self, room: &str, text: &str, out: &mut Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        encode_client(&ClientFrame::Send { room, id, text }, out);
    }

    fn publisher_subscribes(&self) -> bool {
        true
    }

    fn parse(
        &mut self,
        buf: &[u8],
        _out: &mut Vec<u8>,
        on: &mut dyn FnMut(In<'_>),
    ) -> Result<usize, String> {
        let deframer = Deframer::for_client(CLIENT_MAX_FRAME);
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let raw = match deframer.next(rest) {
                Ok(Decoded::Frame(raw)) => raw,
                Ok(Decoded::NeedMore) => return Ok(used),
                Err(e) => return Err(format!("bad frame from chatd: {}", e.reason)),
            };
            used += raw.wire_len;
            let frame = parse_server(&raw).map_err(|e| format!("bad frame: {}", e.reason))?;
            on(match frame {
                ServerFrame::Welcome { .. } => In::Ready,
                ServerFrame::Joined { .. } => In::Subscribed,
                ServerFrame::Msg { text, .. } => In::Message(text.as_bytes()),
                ServerFrame::Ack { .. } => In::Ack,
                ServerFrame::Error { code, message, .. } => {
                    let name = ErrorCode::from_u16(code).map_or("?", |c| c.name());
                    In::Error(format!("{name}: {message}"))
                }
                _ => In::Other,
            });
        }
    }
}
