//! The configuration file (`chatd serve --config FILE`): TOML whose keys are the flags of
//! `chatd serve` without their dashes (`max-frame = 65536`, `listen = ["127.0.0.1:7667"]`).
//!
//! The file is turned into the very flags it stands for and parsed by the same code as the
//! command line, so a key can never mean something different from its flag, and flags given
//! on the command line come later and win. It must never accept a key it does not know: a typo
//! in a limit would otherwise silently leave the default in force.

use toml::Value;

/// The keys a file may hold: every `chatd serve` flag except `--config` itself.
pub const KEYS: &[&str] = &[
    "listen",
    "tls-listen",
    "tls-cert",
    "tls-key",
    "tls-handshakes",
    "web-listen",
    "web-tls-listen",
    "web-allowed-origin",
    "web-trusted-proxy",
    "data-dir",
    "threads",
    "driver",
    "max-frame",
    "max-connections",
    "max-connections-per-ip",
    "max-rooms-per-connection",
    "max-rooms",
    "send-rate",
    "send-burst",
    "handshake-timeout",
    "idle-timeout",
    "write-stall-timeout",
    "shutdown-timeout",
    "drain-timeout",
    "ring-messages",
    "ring-bytes",
    "fsync",
    "fsync-interval",
    "segment-bytes",
    "retention-bytes",
    "retention-age",
    "user",
    "group",
    "metrics",
    "store",
    "nats",
    "nats-creds",
    "nats-token-file",
    "nats-ca",
    "jetstream-replicas",
    "nats-ack-timeout",
];

/// The keys that may hold a list, one flag per item.
pub const REPEATABLE: &[&str] = &[
    "listen",
    "tls-listen",
    "web-listen",
    "web-tls-listen",
    "web-allowed-origin",
    "web-trusted-proxy",
    "nats",
];

/// The flags a configuration file stands for (keys in sorted order; each appears once).
/// `listen`, `tls-listen` and the `web-` lists may be a string or a list of strings; `_` and `-` are the same in
/// keys.
///
/// # Errors
/// The file is not TOML, holds a key that is not a flag, or a value of the wrong kind; the
/// message names the key.
pub fn to_flags(text: &str) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        if !KEYS.contains(&name.as_str()) {
            return Err(format!(
                "unknown key '{key}' (keys are the flags of `chatd serve`)"
            ));
        }
        let values = match value {
            Value::Array(items) if REPEATABLE.contains(&name.as_str()) => items.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Integer(n) => n.to_string(),
                _ => return Err(format!("'{key}': expected a string or a whole number")),
            };
            flags.push(format!("--{name}"));
            flags.push(text);
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_flags() {
        let flags = to_flags(
            "listen = [\"127.0.0.1:1\", \"[::1]:1\"]\nmax_frame = 4096\nfsync = \"never\"\n",
        )
        .expect("valid file");
        // Keys come out sorted; each appears once, so order does not change the meaning.
        let expected = [
            "--fsync",
            "never",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "[::1]:1",
            "--max-frame",
            "4096",
        ];
        assert_eq!(flags, expected);
    }

    #[test]
    fn unknown_keys_and_wrong_kinds_are_named() {
        let e = to_flags("max_fram = 1\n").expect_err("typo");
        assert!(e.contains("max_fram"), "{e}");
        let e = to_flags("threads = true\n").expect_err("bool");
        assert!(e.contains("threads"), "{e}");
        assert!(to_flags("[section]\nx = 1\n").is_err());
        assert!(to_flags("not toml at all").is_err());
    }
}
