//! Where `chat` gets its settings: the config file, then the environment, then flags, each
//! overriding the one before. It reads the token from the environment or a file, never from
//! the command line, and never prints it.

use std::path::{Path, PathBuf};

use chatd::protocol::name::is_valid_user;

use crate::args::Options;
use crate::failure::Failure;

pub const DEFAULT_SERVER: &str = "127.0.0.1:7667";
pub const DEFAULT_PORT: u16 = 7667;
pub const DEFAULT_HISTORY: u32 = 20;

/// Everything a command needs to connect, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: String,
    pub user: String,
    pub token: String,
    /// Rooms to join when none are named on the command line.
    pub rooms: Vec<String>,
    pub history: u32,
    /// Where the state files, client id and outbox live: --state-dir, else the XDG rule;
    /// `None` when neither XDG_STATE_HOME nor HOME is set.
    pub state_dir: Option<PathBuf>,
    /// `None`: plain TCP.
    pub tls: Option<TlsSettings>,
}

/// How to talk TLS to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The CA (or self-signed server certificate) to trust; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The name to verify; `None`: the host of `server`.
    pub server_name: Option<String>,
}

/// What a config file says; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub server: Option<String>,
    pub user: Option<String>,
    pub token_file: Option<PathBuf>,
    pub rooms: Vec<String>,
    pub history: Option<u32>,
    pub tls: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// Reads the environment; a function so that tests can pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Resolves the settings from flags, environment and config file.
///
/// # Errors
/// A config file that cannot be read or parsed, an invalid user name, no token.
pub fn resolve(opts: &Options, env: Env<'_>) -> Result<Settings, Failure> {
    let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let (path, explicit) = match &opts.config {
        Some(p) => (Some(p.clone()), true),
        None => (config_path(env, home.as_deref()), false),
    };
    let file = match &path {
        Some(p) => read_config(p, explicit, home.as_deref())?,
        None => FileConfig::default(),
    };
    let tls = tls_settings(opts, &file);
    let server = opts
        .server
        .clone()
        .or_else(|| env("CHAT_SERVER").filter(|s| !s.is_empty()))
        .or(file.server)
        .unwrap_or_else(|| DEFAULT_SERVER.into());
    let user = opts
        .user
        .clone()
        .or_else(|| env("CHAT_USER").filter(|s| !s.is_empty()))
        .or(file.user)
        .or_else(|| env("USER").filter(|s| !s.is_empty()))
        .ok_or_else(|| {
            Failure::usage("no user name: set `user` in the config file, CHAT_USER or --user")
        })?;
    if !is_valid_user(&user) {
        return Err(Failure::usage(format!(
            "invalid user name {user:?}: a user is 1-32 characters from A-Z a-z 0-9 . _ -"
        )));
    }
    let token = if let Some(f) = &opts.token_file {
        read_token(f)?
    } else if let Some(t) = env("CHAT_TOKEN").filter(|t| !t.trim().is_empty()) {
        t.trim().to_string()
    } else if let Some(f) = env("CHAT_TOKEN_FILE").filter(|f| !f.is_empty()) {
        read_token(Path::new(&f))?
    } else if let Some(f) = &file.token_file {
        read_token(f)?
    } else {
        let where_ = path.map_or_else(|| "the config file".into(), |p| p.display().to_string());
        return Err(Failure::usage(format!(
            "no token for {user}: set CHAT_TOKEN, or point CHAT_TOKEN_FILE, --token-file or \
             `token_file` in {where_} at a file holding it (`chatd user add {user}` prints one)"
        )));
    };
    Ok(Settings {
        server: with_port(&server),
        user,
        token,
        rooms: file.rooms,
        history: opts.history.or(file.history).unwrap_or(DEFAULT_HISTORY),
        state_dir: opts
            .state_dir
            .clone()
            .or_else(|| state_dir(env, home.as_deref())),
        tls,
    })
}

/// TLS is on with `--tls`, or with `--ca-file` or `--server-name` (which mean nothing
/// without it); else as the config file says, where a `ca_file` or `server_name` turns it on
/// unless `tls = no`. `--no-tls` turns it off whatever the file says.
fn tls_settings(opts: &Options, file: &FileConfig) -> Option<TlsSettings> {
    let flagged = opts.ca_file.is_some() || opts.server_name.is_some();
    let on = match opts.tls {
        Some(on) => on,
        None if flagged => true,
        None => file
            .tls
            .unwrap_or(file.ca_file.is_some() || file.server_name.is_some()),
    };
    on.then(|| TlsSettings {
        ca_file: opts.ca_file.clone().or_else(|| file.ca_file.clone()),
        server_name: opts
            .server_name
            .clone()
            .or_else(|| file.server_name.clone()),
    })
}

/// `$XDG_CONFIG_HOME/chat/config`, else `~/.config/chat/config`.
pub fn config_path(env: Env<'_>, home: Option<&Path>) -> Option<PathBuf> {
    xdg(env, "XDG_CONFIG_HOME", home, ".config").map(|d| d.join("chat").join("config"))
}

/// `$XDG_STATE_HOME/chat`, else `~/.local/state/chat`.
pub fn state_dir(env: Env<'_>, home: Option<&Path>) -> Option<PathBuf> {
    xdg(env, "XDG_STATE_HOME", home, ".local/state").map(|d| d.join("chat"))
}

/// The XDG rule: the variable if it holds an absolute path, else the fallback under HOME.
fn xdg(env: Env<'_>, var: &str, home: Option<&Path>, fallback: &str) -> Option<PathBuf> {
    env(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(fallback)))
}

/// Adds the default port to a server given without one (`host`, `[::1]`).
pub fn with_port(server: &str) -> String {
    if server.starts_with('[') {
        if server.ends_with(']') {
            format!("{server}:{DEFAULT_PORT}")
        } else {
            server.to_string()
        }
    } else if server.matches(':').count() > 1 {
        format!("[{server}]:{DEFAULT_PORT}")
    } else if server.contains(':') {
        server.to_string()
    } else {
        format!("{server}:{DEFAULT_PORT}")
    }
}

fn read_config(path: &Path, explicit: bool, home: Option<&Path>) -> Result<FileConfig, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let base = path.parent().unwrap_or(Path::new("."));
            parse(&text, base, home).map_err(|e| Failure::usage(format!("{}:{e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(Failure::usage(format!(
            "cannot read config file {}: {}",
            path.display(),
            crate::failure::describe(&e)
        ))),
    }
}

/// Parses `key = value` lines. Paths are taken relative to `base`; `~/` means `home`.
///
/// # Errors
/// `LINE: what is wrong`, for an unknown key, a line without `=`, a bad number.
pub fn parse(text: &str, base: &Path, home: Option<&Path>) -> Result<FileConfig, String> {
    let mut c = FileConfig::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("{n}: expected `key = value`, got {line:?}"));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "server" => c.server = Some(value.to_string()),
            "user" => c.user = Some(value.to_string()),
            "token_file" => c.token_file = Some(expand(value, base, home)),
            "rooms" => {
                c.rooms = value
                    .split([',', ' ', '\t'])
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "history" => {
                c.history =
                    Some(value.parse().map_err(|_| {
                        format!("{n}: history wants a whole number, not {value:?}")
                    })?);
            }
            "tls" => {
                c.tls = Some(
                    yes_no(value)
                        .ok_or_else(|| format!("{n}: tls wants yes or no, not {value:?}"))?,
                )
            }
            "ca_file" => c.ca_file = Some(expand(value, base, home)),
            "server_name" => c.server_name = Some(value.to_string()),
            "token" => {
                return Err(format!(
                    "{n}: a token does not go in the config file; put it in a file of its \
                     own (chmod 600) and name that file with `token_file`"
                ));
            }
            _ => {
                return Err(format!(
                    "{n}: unknown key {key:?} (known: server, user, token_file, rooms, history, tls, \
                     ca_file, server_name)"
                ));
            }
        }
    }
    Ok(c)
}

fn yes_no(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn expand(value: &str, base: &Path, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => base.join(value),
    }
}

/// The token: the first non-empty line of `path`, trimmed. Warns if others may read the file.
///
/// # Errors
/// The file cannot be read or holds no token.
pub fn read_token(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "cannot read token file {}: {}",
            path.display(),
            crate::failure::describe(&e)
        ))
    })?;
    warn_if_readable(path);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Failure::usage(format!("token file {} is empty", path.display())))
}

fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "chat: warning: other users may read your token in {}; `chmod 600` it",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_lines_parse_with_comments_and_room_names_that_start_with_hash() {
        let text = "# mine\nserver = h:1\nuser=alice\n\ntoken_file = ~/t\nrooms = #general, #dev ops\nhistory = 5\n";
        let c = parse(text, Path::new("/cfg"), Some(Path::new("/home/a"))).expect("parses");
        assert_eq!(c.server.as_deref(), Some("h:1"));
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.token_file, Some(PathBuf::from("/home/a/t")));
        assert_eq!(c.rooms, vec!["#general", "#dev", "ops"]);
        assert_eq!(c.history, Some(5));
        let c = parse("token_file = tok", Path::new("/cfg"), None).expect("parses");
        assert_eq!(c.token_file, Some(PathBuf::from("/cfg/tok")));
    }

    #[test]
    fn config_mistakes_name_their_line() {
        let e = parse("server = x\nsevrer = y", Path::new("/"), None).expect_err("typo");
        assert!(e.starts_with("2:") && e.contains("sevrer"), "{e}");
        let e = parse("token = abc", Path::new("/"), None).expect_err("no tokens");
        assert!(e.contains("token_file"), "{e}");
        assert!(parse("history = lots", Path::new("/"), None).is_err());
        assert!(parse("just words", Path::new("/"), None).is_err());
    }

    #[test]
    fn flags_beat_environment_beats_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("chat");
        std::fs::create_dir_all(&cfg).expect("mkdir");
        std::fs::write(
            cfg.join("config"),
            "server = file:1\nuser = filer\nhistory = 3\n",
        )
        .expect("write");
        let xdg = dir.path().display().to_string();
        let env = env_of(&[
            ("XDG_CONFIG_HOME", &xdg),
            ("CHAT_USER", "enver"),
            ("CHAT_TOKEN", " tok \n"),
        ]);
        let s = resolve(&Options::default(), &env).expect("resolves");
        assert_eq!((s.server.as_str(), s.user.as_str()), ("file:1", "enver"));
        assert_eq!((s.token.as_str(), s.history), ("tok", 3));
        let flags = Options {
            server: Some("flag".into()),
            user: Some("flagger".into()),
            history: Some(9),
            ..Options::default()
        };
        let s = resolve(&flags, &env).expect("resolves");
        assert_eq!(
            (s.server.as_str(), s.user.as_str()),
            ("flag:7667", "flagger")
        );
        assert_eq!(s.history, 9);
    }

    #[test]
    fn tls_comes_from_flags_or_the_file_and_no_tls_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("chat");
        std::fs::create_dir_all(&cfg).expect("mkdir");
        let xdg = dir.path().display().to_string();
        let env = env_of(&[
            ("XDG_CONFIG_HOME", &xdg),
            ("CHAT_TOKEN", "tok"),
            ("USER", "a"),
        ]);
        let write = |text: &str| std::fs::write(cfg.join("config"), text).expect("write");

        write("");
        assert_eq!(resolve(&Options::default(), &env).expect("ok").tls, None);
        let flags = Options {
            ca_file: Some("flag.pem".into()),
            ..Options::default()
        };
        let tls = resolve(&flags, &env)
            .expect("ok")
            .tls
            .expect("--ca-file implies TLS");
        assert_eq!(tls.ca_file, Some(PathBuf::from("flag.pem")));
        assert_eq!(tls.server_name, None);

        write("tls = yes\nserver_name = chat.example.org\n");
        let tls = resolve(&Options::default(), &env)
            .expect("ok")
            .tls
            .expect("on");
        assert_eq!(tls.server_name.as_deref(), Some("chat.example.org"));
        assert_eq!(tls.ca_file, None);
        let off = Options {
            tls: Some(false),
            ..Options::default()
        };
        assert_eq!(resolve(&off, &env).expect("ok").tls, None, "--no-tls wins");

        write("ca_file = ca.pem\n");
        let tls = resolve(&Options::default(), &env)
            .expect("ok")
            .tls
            .expect("on");
        assert_eq!(
            tls.ca_file,
            Some(cfg.join("ca.pem")),
            "relative to the file"
        );
        write("ca_file = ca.pem\ntls = no\n");
        assert_eq!(resolve(&Options::default(), &env).expect("ok").tls, None);
        let on = Options {
            tls: Some(true),
            ..Options::default()
        };
        let tls = resolve(&on, &env).expect("ok").tls.expect("--tls wins");
        assert_eq!(tls.ca_file, Some(cfg.join("ca.pem")));

        let e = parse("tls = maybe", Path::new("/"), None).expect_err("not yes/no");
        assert!(e.starts_with("1:") && e.contains("yes or no"), "{e}");
    }

    #[test]
    fn a_missing_token_is_a_usage_error_that_says_where_to_put_one() {
        let env = env_of(&[("HOME", "/nonexistent"), ("USER", "alice")]);
        let e = resolve(&Options::default(), &env).expect_err("no token");
        assert_eq!(e.exit, crate::failure::Exit::Usage);
        assert!(
            e.message.contains("CHAT_TOKEN") && e.message.contains("alice"),
            "{}",
            e.message
        );
    }

    #[test]
    fn xdg_dirs_fall_back_to_home() {
        let env = env_of(&[("XDG_STATE_HOME", "relative/ignored")]);
        assert_eq!(
            state_dir(&env, Some(Path::new("/h"))),
            Some(PathBuf::from("/h/.local/state/chat"))
        );
        let env = env_of(&[("XDG_CONFIG_HOME", "/x")]);
        assert_eq!(
            config_path(&env, None),
            Some(PathBuf::from("/x/chat/config"))
        );
        assert_eq!(state_dir(&env, None), None);
    }

    #[test]
    fn servers_without_a_port_get_the_default() {
        assert_eq!(with_port("example.org"), "example.org:7667");
        assert_eq!(with_port("example.org:1"), "example.org:1");
        assert_eq!(with_port("[::1]"), "[::1]:7667");
        assert_eq!(with_port("[::1]:5"), "[::1]:5");
        assert_eq!(with_port("::1"), "[::1]:7667");
        assert_eq!(with_port("127.0.0.1:9"), "127.0.0.1:9");
    }
}
