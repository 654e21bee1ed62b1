//! Lines in and lines out for interactive mode. On a terminal, rustyline edits the line and
//! its external printer puts incoming messages above the prompt, so they never garble what
//! is being typed; otherwise stdin is read plainly, line by line, so pipes and tests can
//! drive `chat`. Nothing else in `chat` writes to the terminal while the editor owns it.

use std::io::{self, BufRead, Write};
use std::sync::mpsc::{self, Sender};

use nix::sys::termios::{SetArg, Termios, tcgetattr, tcsetattr};
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};

use crate::events::Event;

/// Where interactive output goes.
pub enum Screen {
    Plain,
    Tty(Box<dyn ExternalPrinter + Send>),
}

impl Screen {
    pub fn line(&mut self, text: &str) {
        match self {
            Screen::Plain => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
            Screen::Tty(printer) => {
                let _ = printer.print(format!("{text}\n"));
            }
        }
    }
}

/// Reads stdin line by line in a thread: [`Event::Line`] per line (invalid UTF-8 replaced),
/// then [`Event::InputDone`].
pub fn spawn_plain(tx: Sender<Event>) {
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Event::InputDone);
    });
}

/// The line editor, in its own thread. Before each line it waits for the prompt to show
/// (so the prompt always names the current room); `None` ends it.
///
/// # Errors
/// The terminal cannot be set up for editing.
pub fn spawn_tty(tx: Sender<Event>) -> Result<(Screen, Sender<Option<String>>), String> {
    let mut editor = DefaultEditor::new().map_err(|e| e.to_string())?;
    let printer = editor
        .create_external_printer()
        .map_err(|e| e.to_string())?;
    let (prompts, next_prompt) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        while let Ok(Some(prompt)) = next_prompt.recv() {
            match editor.readline(&prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if tx.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) | Err(_) => break,
            }
        }
        let _ = tx.send(Event::InputDone);
    });
    Ok((Screen::Tty(Box::new(printer)), prompts))
}

/// The terminal's settings from before the editor touched them, put back on exit even if
/// the editor is in the middle of a line (raw mode) when `chat` has to stop.
pub struct Terminal(Option<Termios>);

impl Terminal {
    pub fn save() -> Terminal {
        Terminal(tcgetattr(io::stdin()).ok())
    }

    pub fn restore(&self) {
        if let Some(t) = &self.0 {
            let _ = tcsetattr(io::stdin(), SetArg::TCSANOW, t);
        }
    }
}
