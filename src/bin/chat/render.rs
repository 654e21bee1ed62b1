//! How messages look: `HH:MM [room] user: text` in local time for people, JSON lines for
//! programs. Text from the server is never written to a terminal raw: control characters
//! (which could move the cursor or recolour the screen) are replaced first.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// `HH:MM`, `YYYY-MM-DD` and the whole local date-time of a `ts_ms`.
pub struct When {
    pub hhmm: String,
    pub day: String,
}

pub fn when(ts_ms: u64) -> When {
    let ts = i64::try_from(ts_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let local = ts.to_zoned(TimeZone::system());
    When {
        hhmm: local.strftime("%H:%M").to_string(),
        day: local.strftime("%Y-%m-%d").to_string(),
    }
}

/// Today's `YYYY-MM-DD`, local time.
pub fn today() -> String {
    Timestamp::now()
        .to_zoned(TimeZone::system())
        .strftime("%Y-%m-%d")
        .to_string()
}

/// The interactive line of a message; a text of several lines is indented under it.
pub fn chat_line(hhmm: &str, room: &str, user: &str, text: &str) -> String {
    let head = format!("{hhmm} [{room}] {user}: ");
    let body = clean(text, "\n      ");
    format!("{head}{body}")
}

/// One line per message for `chat tail`: `SEQ YYYY-MM-DD HH:MM [room] user: text`.
pub fn tail_line(room: &str, seq: u64, ts_ms: u64, user: &str, text: &str) -> String {
    let w = when(ts_ms);
    format!(
        "{seq} {} {} [{room}] {user}: {}",
        w.day,
        w.hhmm,
        clean(text, "↵")
    )
}

/// The JSON line of a message: `{"room","seq","ts_ms","user","text"}`.
pub fn json_line(room: &str, seq: u64, ts_ms: u64, user: &str, text: &str) -> String {
    format!(
        "{{\"room\":{},\"seq\":{seq},\"ts_ms\":{ts_ms},\"user\":{},\"text\":{}}}",
        json_string(room),
        json_string(user),
        json_string(text)
    )
}

/// `text` with each newline replaced by `newline` and every other control character
/// (tab excepted) by U+FFFD.
pub fn clean(text: &str, newline: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str(newline),
            '\r' => {}
            '\t' => out.push('\t'),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A JSON string literal (RFC 8259): quotes, backslashes and control characters escaped.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// WHO's answer: `-- [room] 3 here: alice, bob, carol` (`… and N more` when the server's
/// frame could not hold them all).
pub fn members_line(room: &str, total: u32, users: &[String]) -> String {
    let names: Vec<String> = users.iter().map(|u| clean(u, " ")).collect();
    let mut line = format!("-- [{room}] {total} here: {}", names.join(", "));
    let listed = u32::try_from(users.len()).unwrap_or(u32::MAX);
    if total > listed {
        line.push_str(&format!(" and {} more", total - listed));
    }
    line
}

/// A PRESENCE: `-- bob joined [#general]` or `-- bob left [#general]`.
pub fn presence_line(room: &str, user: &str, here: bool) -> String {
    let what = if here { "joined" } else { "left" };
    format!("-- {} {what} [{room}]", clean(user, " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_json_requires() {
        let line = json_line("#a", 3, 17, "bob", "say \"hi\"\\\n\u{1}é");
        assert_eq!(
            line,
            r##"{"room":"#a","seq":3,"ts_ms":17,"user":"bob","text":"say \"hi\"\\\n\u0001é"}"##
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb\r\nc\td", "↵"), "a\u{FFFD}[2Jb↵c\td");
        let line = chat_line("12:00", "#a", "bob", "one\ntwo");
        assert_eq!(line, "12:00 [#a] bob: one\n      two");
    }

    #[test]
    fn times_are_hours_and_minutes() {
        let w = when(1_700_000_000_000);
        assert_eq!(w.hhmm.len(), 5, "{}", w.hhmm);
        assert_eq!(w.day.len(), 10, "{}", w.day);
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn members_and_presence_read_as_sentences() {
        let users = vec!["alice".to_string(), "bob".to_string()];
        assert_eq!(
            members_line("#general", 2, &users),
            "-- [#general] 2 here: alice, bob"
        );
        assert_eq!(
            members_line("#big", 5, &users),
            "-- [#big] 5 here: alice, bob and 3 more"
        );
        assert_eq!(
            presence_line("#general", "bob", true),
            "-- bob joined [#general]"
        );
        assert_eq!(
            presence_line("@alice+bob", "bob", false),
            "-- bob left [@alice+bob]"
        );
    }
}
