//! Dropping root: `--user` and `--group` switch the daemon to an unprivileged account once it
//! holds its listening sockets and its open files, so that a bug in the protocol code can
//! never act as root. It runs as `Server::start_with`'s `before_serving` hook: while the
//! process is still one thread, before any reactor exists, so it must never be called once
//! the server serves.

use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};

use std::path::Path;

use crate::config::RunAs;

/// Switches to `run_as` (group first: once the user changes, the group can no longer be).
/// Warns when running as root with nowhere to drop to.
///
/// # Errors
/// An unknown account, or a switch the system refused; the daemon must not go on as root
/// then.
pub fn drop_privileges(run_as: &RunAs, data_dir: &Path) -> Result<(), String> {
    let RunAs { user, group } = run_as;
    if user.is_none() && group.is_none() {
        if Uid::effective().is_root() {
            log::warn!(
                "running as root: use --user (and --group) to drop to an unprivileged account \
                 after binding"
            );
        }
        return Ok(());
    }
    let account = match user {
        Some(name) => Some(
            User::from_name(name)
                .map_err(|e| format!("looking up user '{name}': {e}"))?
                .ok_or_else(|| format!("no user '{name}' on this system"))?,
        ),
        None => None,
    };
    let gid: Option<Gid> = match (group, &account) {
        (Some(name), _) => Some(
            Group::from_name(name)
                .map_err(|e| format!("looking up group '{name}': {e}"))?
                .ok_or_else(|| format!("no group '{name}' on this system"))?
                .gid,
        ),
        (None, Some(u)) => Some(u.gid),
        (None, None) => None,
    };
    // Whatever start-up created as root (the log folder, a new segment, the lock file) must
    // stay writable once we are not root: segments roll and the log grows.
    let uid = account.as_ref().map(|u| u.uid);
    hand_over(data_dir, uid, gid)?;
    if let Some(gid) = gid {
        setgroups(&[gid]).map_err(|e| format!("cannot drop supplementary groups: {e}"))?;
        setgid(gid).map_err(|e| format!("cannot switch to group {gid}: {e}"))?;
    }
    if let Some(u) = &account {
        setuid(u.uid).map_err(|e| format!("cannot switch to user '{}': {e}", u.name))?;
    }
    log::info!(
        "running as uid {} gid {}",
        Uid::effective(),
        nix::unistd::Gid::effective()
    );
    Ok(())
}

/// Gives the data directory, its files and its log folder's files to `uid`/`gid`.
fn hand_over(data_dir: &Path, uid: Option<Uid>, gid: Option<Gid>) -> Result<(), String> {
    let (uid, gid) = (uid.map(Uid::as_raw), gid.map(Gid::as_raw));
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, uid, gid)
            .map_err(|e| format!("cannot give {} to the account: {e}", p.display()))
    };
    chown(data_dir)?;
    for dir in [data_dir.to_path_buf(), crate::store::log_dir(data_dir)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            chown(&entry.path())?;
        }
    }
    Ok(())
}
