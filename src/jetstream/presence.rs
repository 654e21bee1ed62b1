//! Who is here, across nodes (`--store jetstream`): each node tells the others which users
//! have a connection joined to each room it follows, and counts the users they list as here
//! too (`crate::presence`), so that WHO and WATCH on any node see every node's members.
//!
//! Nodes speak on plain NATS subjects, one per room ([`names::presence`]), in [`roster`]s:
//! each carries the sender's whole set for the room, and who arrived since its last one (so
//! that a visit or a return shorter than a tick is seen too), sent when that set changed
//! (looked for every [`TICK`]) and again every [`HEARTBEAT`] while it is not empty. A node
//! that follows a room anew asks the others for theirs. A node that stops says goodbye in every room it
//! spoke of, once its own connections are closed; what a node said is otherwise forgotten
//! [`EXPIRY`] after it last spoke of the room, so the users of a node that died leave within
//! that time; so do those of a node this one cannot hear (NATS lost), who come back when it
//! hears them again.
//! A lost roster is made good by the next one: nothing here needs NATS to deliver every
//! message.
//!
//! This task must never hold a room's presence lock for more than one user's change, and
//! never keep what a roster from another node says beyond [`roster::MAX_USERS`] users per
//! node and [`MAX_NODES`] nodes per room: rosters travel on a subject anyone allowed on the
//! NATS server can publish to.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::engine::{BACKOFF, Link};
use super::names;
use super::roster::{self, Kind};
use crate::room::{Loaded, Room, RoomId};

/// How often the rooms' local sets are looked at for a change to send. Also how late, at
/// most, a change on one node is sent to the others (plus NATS's delivery).
const TICK: Duration = Duration::from_millis(100);

/// How often a node sends its set of a room where it has someone, changed or not: what keeps
/// it here for the others.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long after a node last spoke of a room the others forget its users there: three
/// heartbeats, so that one or two lost rosters do not make users leave and come back.
const EXPIRY: Duration = Duration::from_secs(15);

/// How long a stopping node waits for its goodbyes to reach the NATS server.
const FAREWELL: Duration = Duration::from_secs(1);

/// The most other nodes whose rosters of one room are kept. A real cluster of chatd nodes has
/// a handful; more means someone other than chatd is publishing rosters.
pub const MAX_NODES: usize = 64;

/// What another node's users did in a room between two of its rosters.
#[derive(Default, Clone, Copy)]
struct Moves<'a> {
    /// Came and went.
    visited: &'a [Arc<str>],
    /// Left and came back.
    returned: &'a [Arc<str>],
    arrived: &'a [Arc<str>],
    departed: &'a [Arc<str>],
}

impl<'a> Moves<'a> {
    fn departed(departed: &'a [Arc<str>]) -> Moves<'a> {
        Moves {
            departed,
            ..Moves::default()
        }
    }
}

/// What another node last said of a room.
struct Heard {
    users: BTreeSet<Arc<str>>,
    at: Instant,
}

/// The task's state.
struct Share {
    link: Link,
    /// The rooms this node follows and has loaded, by their presence subject.
    rooms: HashMap<String, Arc<Room>>,
    /// The same rooms' ids.
    by_id: HashSet<RoomId>,
    /// Per room, the local change count its last sent roster showed.
    sent: HashMap<RoomId, u64>,
    /// Rooms whose roster another node asked for, to be sent at the next tick.
    asked: HashSet<RoomId>,
    /// Per room, what each other node last said.
    heard: HashMap<RoomId, HashMap<u64, Heard>>,
    /// When rosters were last sent whether changed or not.
    beat: Instant,
    /// Rooms already warned about for listing more than a roster holds.
    warned: HashSet<RoomId>,
}

/// Shares presence for the life of the engine: subscribes to every room's presence subject,
/// and subscribes again if the subscription ends. When `stopping` hands it a sender, it says
/// goodbye in every room it spoke of, answers on that sender, and ends.
pub async fn share(
    link: Link,
    followed: Arc<Mutex<Vec<Arc<Room>>>>,
    mut stopping: UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut share = Share {
        link,
        rooms: HashMap::new(),
        by_id: HashSet::new(),
        sent: HashMap::new(),
        asked: HashSet::new(),
        heard: HashMap::new(),
        beat: Instant::now(),
        warned: HashSet::new(),
    };
    loop {
        let client = share.link.js.client();
        let subject = format!("{}>", names::PRESENCE_PREFIX);
        match client.subscribe(subject).await {
            Ok(mut rosters) => loop {
                let next_tick = Instant::now() + TICK;
                // Rosters as they come, and the tick on time even while they keep coming.
                while let Ok(got) = tokio::time::timeout_at(next_tick, rosters.next()).await {
                    let Some(message) = got else {
                        break;
                    };
                    share.hear(message.subject.as_str(), &message.payload);
                    if Instant::now() >= next_tick {
                        break;
                    }
                }
                share.tick(&followed).await;
                if let Ok(done) = stopping.try_recv() {
                    share.farewell().await;
                    let _ = done.send(());
                    return;
                }
            },
            Err(e) => log::warn!("jetstream: cannot hear other nodes' presence: {e}"),
        }
        if let Ok(done) = stopping.try_recv() {
            let _ = done.send(());
            return;
        }
        tokio::time::sleep(BACKOFF * 4).await;
    }
}

impl Share {
    /// Takes in a roster heard on `subject`.
    fn hear(&mut self, subject: &str, payload: &[u8]) {
        let Some(room) = self.rooms.get(subject) else {
            // A room this node does not follow: nobody here can watch it. When it starts to,
            // it asks.
            return;
        };
        let metrics = &self.link.setup.metrics.jetstream;
        let Some(roster) = roster::decode(payload) else {
            log::debug!("jetstream: not a roster on {subject}; ignored");
            metrics.rosters_refused.fetch_add(1, Relaxed);
            return;
        };
        if roster.node == self.link.node {
            return;
        }
        let nodes = self.heard.entry(room.id).or_default();
        match roster.kind {
            Kind::Set => {}
            Kind::Ask => {
                self.asked.insert(room.id);
            }
            Kind::Bye => {
                metrics.rosters_heard.fetch_add(1, Relaxed);
                let Some(gone) = nodes.remove(&roster.node) else {
                    return;
                };
                log::debug!(
                    "jetstream: node {:016x} stopped; its users of {} left",
                    roster.node,
                    room.name
                );
                let departed: Vec<Arc<str>> = gone.users.into_iter().collect();
                let room = Arc::clone(room);
                self.change(&room, Moves::departed(&departed));
                return;
            }
        }
        if !nodes.contains_key(&roster.node) && nodes.len() >= MAX_NODES {
            log::warn!(
                "jetstream: more than {MAX_NODES} nodes list users in {}; node {:016x} ignored",
                room.name,
                roster.node
            );
            metrics.rosters_refused.fetch_add(1, Relaxed);
            return;
        }
        metrics.rosters_heard.fetch_add(1, Relaxed);
        let was = nodes.insert(
            roster.node,
            Heard {
                users: roster.users,
                at: Instant::now(),
            },
        );
        let now = nodes.get(&roster.node).map(|h| &h.users);
        let was = was.map(|h| h.users);
        let empty = BTreeSet::new();
        let (now, was) = (now.unwrap_or(&empty), was.as_ref().unwrap_or(&empty));
        let arrived: Vec<Arc<str>> = now.difference(was).cloned().collect();
        let departed: Vec<Arc<str>> = was.difference(now).cloned().collect();
        // An arrival on that node in neither roster came and went between the two; one in
        // both left and came back. (One in only one of them is among `arrived` or `departed`.)
        let visited: Vec<Arc<str>> = roster
            .arrivals
            .iter()
            .filter(|u| !was.contains(*u) && !now.contains(*u))
            .cloned()
            .collect();
        let returned: Vec<Arc<str>> = roster
            .arrivals
            .iter()
            .filter(|u| was.contains(*u) && now.contains(*u))
            .cloned()
            .collect();
        let room = Arc::clone(room);
        self.change(
            &room,
            Moves {
                visited: &visited,
                returned: &returned,
                arrived: &arrived,
                departed: &departed,
            },
        );
    }

    /// Counts what `moves` says another node's users did, one user per hold of the lock, and
    /// wakes the reactors whose watchers must hear of it.
    fn change(&self, room: &Room, moves: Moves<'_>) {
        let mut wake = vec![false; self.link.setup.mailboxes.len()];
        let mut note = |reactors: Vec<usize>| {
            for r in reactors {
                if let Some(w) = wake.get_mut(r) {
                    *w = true;
                }
            }
        };
        let Moves {
            visited,
            returned,
            arrived,
            departed,
        } = moves;
        for user in visited {
            note(room.presence(|p| p.node_arrive(user)));
            note(room.presence(|p| p.node_depart(user)));
        }
        for user in returned {
            note(room.presence(|p| p.node_depart(user)));
            note(room.presence(|p| p.node_arrive(user)));
        }
        for user in arrived {
            note(room.presence(|p| p.node_arrive(user)));
        }
        for user in departed {
            note(room.presence(|p| p.node_depart(user)));
        }
        for (mailbox, _) in self
            .link
            .setup
            .mailboxes
            .iter()
            .zip(&wake)
            .filter(|(_, w)| **w)
        {
            mailbox.post_presence(room.id);
        }
    }

    /// Sends the rosters that are due, and forgets the nodes that fell silent.
    async fn tick(&mut self, followed: &Mutex<Vec<Arc<Room>>>) {
        let mut new = Vec::new();
        {
            let list = followed.lock().unwrap_or_else(PoisonError::into_inner);
            for room in list.iter().filter(|r| r.loaded() == Loaded::Yes) {
                if self.by_id.insert(room.id) {
                    room.presence(|p| p.share());
                    new.push(room.id);
                    self.rooms
                        .insert(names::presence(&room.name), Arc::clone(room));
                }
            }
        }
        let now = Instant::now();
        let beat = now >= self.beat + HEARTBEAT;
        if beat {
            self.beat = now;
        }
        let client = self.link.js.client();
        for (subject, room) in &self.rooms {
            let ask = new.contains(&room.id);
            let asked = self.asked.remove(&room.id);
            let changes = room.presence(|p| p.local_changes());
            let changed = self.sent.get(&room.id) != Some(&changes);
            if !(ask || asked || changed || beat) {
                continue;
            }
            let local = room.presence(|p| p.take_local());
            if !(ask || asked || changed) && local.users.is_empty() {
                // Nobody here: the others forget this node's empty set by themselves.
                continue;
            }
            let kind = if ask { Kind::Ask } else { Kind::Set };
            let (payload, cut) =
                roster::encode(self.link.node, kind, &local.users, &local.arrivals);
            if cut && self.warned.insert(room.id) {
                log::warn!(
                    "jetstream: {} has {} users on this node; the other nodes are told of the \
                     first {}",
                    room.name,
                    local.users.len() + local.arrivals.len(),
                    roster::MAX_USERS
                );
            }
            match client.publish(subject.clone(), payload.into()).await {
                Ok(()) => {
                    self.sent.insert(room.id, local.changes);
                    self.link
                        .setup
                        .metrics
                        .jetstream
                        .rosters_sent
                        .fetch_add(1, Relaxed);
                }
                Err(e) => log::debug!("jetstream: cannot send the roster of {}: {e}", room.name),
            }
        }
        self.forget_silent(now);
    }

    /// Tells the other nodes that this one is stopping, in every room it spoke of, so that its
    /// users leave at once rather than after [`EXPIRY`]; waits at most [`FAREWELL`] for NATS
    /// to take the goodbyes.
    async fn farewell(&mut self) {
        let client = self.link.js.client();
        let (payload, _) = roster::encode(self.link.node, Kind::Bye, &[], &[]);
        for (subject, room) in &self.rooms {
            if self.sent.contains_key(&room.id) {
                let _ = client
                    .publish(subject.clone(), payload.clone().into())
                    .await;
            }
        }
        if tokio::time::timeout(FAREWELL, client.flush())
            .await
            .is_err()
        {
            log::info!("jetstream: could not tell the other nodes this one stopped");
        }
    }

    /// Forgets the users of every node that has not spoken of a room for [`EXPIRY`].
    fn forget_silent(&mut self, now: Instant) {
        let mut gone: Vec<(RoomId, Vec<Arc<str>>)> = Vec::new();
        for (&room, nodes) in &mut self.heard {
            nodes.retain(|_, heard| {
                if now.duration_since(heard.at) < EXPIRY {
                    return true;
                }
                gone.push((room, std::mem::take(&mut heard.users).into_iter().collect()));
                false
            });
        }
        self.heard.retain(|_, nodes| !nodes.is_empty());
        for (id, users) in gone {
            if let Some(room) = self.rooms.values().find(|r| r.id == id).cloned() {
                self.change(&room, Moves::departed(&users));
            }
        }
    }
}
