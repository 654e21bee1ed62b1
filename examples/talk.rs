//! A minimal chat session over the library's blocking client: joins one room, prints what
//! arrives, sends each line typed. The README's tour uses it until the `chat` client lands.
//!
//! `CHAT_TOKEN=... cargo run --example talk -- USER ROOM [ADDR]`

use std::io::BufRead;

use chatd::client::{Client, Reply};
use chatd::protocol::ClientFrame;

fn main() {
    if let Err(e) = run() {
        eprintln!("talk: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(user), Some(room)) = (args.first(), args.get(1)) else {
        return Err("usage: CHAT_TOKEN=... talk USER ROOM [ADDR]".into());
    };
    let addr = args.get(2).map_or("127.0.0.1:7667", String::as_str);
    let token = std::env::var("CHAT_TOKEN").map_err(|_| "set CHAT_TOKEN to your token")?;
    let mut client = Client::connect(addr).map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let hello = ClientFrame::Hello {
        version: 1,
        user,
        token: &token,
    };
    client.send(&hello).map_err(|e| e.to_string())?;
    client
        .send(&ClientFrame::Join {
            room,
            after: 0,
            limit: 20,
        })
        .map_err(|e| e.to_string())?;
    let mut writer = client
        .stream()
        .try_clone()
        .map(Client::from_stream)
        .map_err(|e| e.to_string())?;

    std::thread::spawn(move || {
        while let Ok(Some(reply)) = client.recv() {
            match reply {
                Reply::Msg {
                    room,
                    seq,
                    user,
                    text,
                    ..
                } => println!("[{room} #{seq}] {user}: {text}"),
                Reply::Error { code, message, .. } => eprintln!("error {code}: {message}"),
                Reply::Joined { room, head, .. } => eprintln!("joined {room} (latest #{head})"),
                _ => {}
            }
        }
        eprintln!("connection closed");
        std::process::exit(0);
    });

    for (id, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        if line.is_empty() {
            continue;
        }
        let send = ClientFrame::Send {
            room,
            id: id as u64,
            text: &line,
        };
        writer.send(&send).map_err(|e| e.to_string())?;
    }
    writer.send(&ClientFrame::Bye).map_err(|e| e.to_string())
}
