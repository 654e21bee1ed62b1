//! The epoch, kept in JetStream so that every node over one NATS cluster announces the same,
//! and the room markers that tell when a room's history started over.
//!
//! The `chatd` key-value bucket holds `epoch` (16 hex digits, never zero) and, for every room
//! that has had a stream, `room.<name>` = the creation time of that stream. A stream found
//! with another creation time than its marker was deleted and made anew: its seqs start over,
//! so the epoch must change, and any node that sees it changes it. A new NATS cluster has no
//! bucket, so it gets a new epoch too. This module must never let two live values of the
//! epoch stand for the same history, nor keep one across a history that started over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;

use super::Failure;
use super::names::{BUCKET, EPOCH_KEY, marker};

/// Opens the bucket, making it if this is the cluster's first chatd.
pub async fn bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, Failure> {
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    // The bucket's stream made by hand, as the client library would make it: its own way
    // first asks the server for account details that nats-server 2.9 does not give.
    let config = stream::Config {
        name: format!("KV_{BUCKET}"),
        description: Some("chatd: the epoch and which rooms have had a stream".into()),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    };
    let made = js.create_stream(config).await;
    // Made now, or by another node meanwhile: either way it opens.
    js.get_key_value(BUCKET).await.map_err(|e| {
        let made = made.err().map(|m| format!("{m}; ")).unwrap_or_default();
        Failure(format!(
            "cannot open or make the {BUCKET} bucket: {made}{e}"
        ))
    })
}

/// The cluster's epoch, minted if there is none yet.
pub async fn read_or_mint(store: &kv::Store) -> Result<u64, Failure> {
    for _ in 0..3 {
        if let Some(epoch) = read(store).await? {
            return Ok(epoch);
        }
        let fresh = mint()?;
        if store.create(EPOCH_KEY, hex(fresh).into()).await.is_ok() {
            log::info!("jetstream: no history yet; its epoch is {fresh:016x}");
            return Ok(fresh);
        }
        // Another node minted one first: read theirs.
    }
    Err(Failure(
        "the epoch in the chatd bucket is neither readable nor writable".into(),
    ))
}

async fn read(store: &kv::Store) -> Result<Option<u64>, Failure> {
    let value = store
        .get(EPOCH_KEY)
        .await
        .map_err(|e| Failure(format!("cannot read the epoch: {e}")))?;
    match value {
        None => Ok(None),
        Some(bytes) => parse(&bytes).map(Some).ok_or_else(|| {
            Failure(format!(
                "the epoch in the {BUCKET} bucket is not 16 hex digits"
            ))
        }),
    }
}

/// Checks the room's marker against its stream's creation time (as Unix nanoseconds):
/// records it if the room is new, and mints a new epoch if the stream is not the one the
/// marker recorded.
pub async fn check_room(store: &kv::Store, room: &str, created_ns: i128) -> Result<(), Failure> {
    let key = marker(room);
    let stamp = created_ns.to_string();
    let known = store
        .get(&key)
        .await
        .map_err(|e| Failure(format!("cannot read the marker of {room}: {e}")))?;
    match known {
        Some(v) if v.as_ref() == stamp.as_bytes() => Ok(()),
        None if store.create(&key, stamp.clone().into()).await.is_ok() => Ok(()),
        // Another node recorded it meanwhile: look again.
        None => Box::pin(check_room(store, room, created_ns)).await,
        Some(_) => {
            let fresh = mint()?;
            log::warn!(
                "jetstream: the stream of {room} was made anew, so its history starts over; \
                 the epoch becomes {fresh:016x}"
            );
            store
                .put(EPOCH_KEY, hex(fresh).into())
                .await
                .map_err(|e| Failure(format!("cannot change the epoch: {e}")))?;
            store
                .put(&key, stamp.into())
                .await
                .map_err(|e| Failure(format!("cannot record the marker of {room}: {e}")))?;
            Ok(())
        }
    }
}

/// Keeps `cell` at the bucket's epoch for as long as the watch lasts.
pub async fn follow(store: kv::Store, cell: Arc<AtomicU64>) -> Result<(), Failure> {
    let mut watch = store
        .watch(EPOCH_KEY)
        .await
        .map_err(|e| Failure(format!("cannot watch the epoch: {e}")))?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| Failure(format!("the epoch watch failed: {e}")))?;
        if let Some(epoch) = parse(&entry.value) {
            let old = cell.swap(epoch, Ordering::Relaxed);
            if old != epoch {
                log::warn!("jetstream: the epoch changed from {old:016x} to {epoch:016x}");
            }
        }
    }
    Ok(())
}

fn mint() -> Result<u64, Failure> {
    crate::store::epoch::mint().map_err(|e| Failure(format!("cannot draw a random epoch: {e}")))
}

fn hex(epoch: u64) -> String {
    format!("{epoch:016x}")
}

fn parse(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().filter(|&e| e != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_sixteen_hex_digits_and_never_zero() {
        assert_eq!(parse(hex(0xabc).as_bytes()), Some(0xabc));
        assert_eq!(parse(b"0000000000000000"), None);
        assert_eq!(parse(b"abc"), None);
        assert_eq!(parse(b"zzzzzzzzzzzzzzzz"), None);
    }
}
