//! `tapio top`: a live terminal dashboard of a running Tapio, read from its API's
//! `/v1/components` every interval. [`model`] turns answers into rows and rates, [`draw`]
//! lays them out; this module owns the terminal, the keys and the loop.

mod draw;
mod model;

use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;
use tapio_api::client::{self, ApiClient, ClientError};
use tapio_api::components::ComponentsAnswer;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::TopArgs;
use model::Dashboard;

/// sysexits' EX_IOERR: the terminal could not be driven.
const EXIT_IOERR: i32 = 74;

/// The shortest wait for an answer: an interval shorter than a busy API's answer would
/// otherwise report every call as timed out.
const MIN_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the dashboard until the user quits; the exit code.
pub fn top(args: &TopArgs) -> i32 {
    let client = match args.api.client() {
        Ok(client) => client,
        Err(error) => {
            eprintln!("tapio top: {error}");
            return crate::run::EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tapio top: cannot start the async runtime: {error}");
            return crate::run::EXIT_SOFTWARE;
        }
    };
    let outcome = match Screen::open() {
        Ok(mut screen) => runtime.block_on(watch(&mut screen.terminal, &client, args)),
        Err(error) => Err(error),
    };
    // The screen is restored by now (dropped above), so the message stays readable.
    match outcome {
        Ok(()) => crate::run::EXIT_OK,
        Err(error) => {
            eprintln!("tapio top: cannot drive the terminal: {error}");
            EXIT_IOERR
        }
    }
}

/// The terminal in raw mode on the alternate screen, given back as it was when dropped: on
/// quitting, on an error, and (through ratatui's panic hook, which `try_init` installs) on a
/// panic.
struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    fn open() -> io::Result<Screen> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(error) => {
                // Raw mode may be on already when entering the alternate screen failed.
                let _ = ratatui::try_restore();
                Err(error)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What a key press or a terminal event asks for.
enum Input {
    Quit,
    /// The terminal was resized (or something else changed what is shown): draw again.
    Redraw,
    /// The terminal's input cannot be read any more.
    Failed(io::Error),
}

/// What `event` asks for; `None` when it asks for nothing.
fn input(event: Event) -> Option<Input> {
    match event {
        Event::Key(KeyEvent {
            code,
            modifiers,
            kind: KeyEventKind::Press,
            ..
        }) => match code {
            KeyCode::Char('q') | KeyCode::Esc => Some(Input::Quit),
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Some(Input::Quit),
            _ => None,
        },
        Event::Resize(..) => Some(Input::Redraw),
        _ => None,
    }
}

/// Reads the terminal's events on a thread of their own (crossterm's read blocks) and hands
/// on what they ask for. The thread ends with the first error or once nobody listens.
fn inputs() -> mpsc::UnboundedReceiver<Input> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            let wanted = match crossterm::event::read() {
                Ok(event) => input(event),
                Err(error) => Some(Input::Failed(error)),
            };
            let failed = matches!(wanted, Some(Input::Failed(_)));
            if let Some(wanted) = wanted
                && (sender.send(wanted).is_err() || failed)
            {
                return;
            }
        }
    });
    receiver
}

/// One read of `/v1/components`, worded for the header when it fails.
async fn fetch(client: &ApiClient, timeout: Duration) -> Result<ComponentsAnswer, String> {
    let call = async {
        let body = client::collect(client.get("/v1/components").await?).await?;
        serde_json::from_slice(&body).map_err(|error| {
            ClientError::Unreachable(format!(
                "the answer of /v1/components is not what this tapio reads: {error}"
            ))
        })
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome.map_err(|error| error.to_string()),
        Err(_) => Err(format!("the API did not answer within {timeout:?}")),
    }
}

/// A read of the API that waits for its turn first.
type PendingRead = Pin<Box<dyn Future<Output = (Instant, Result<ComponentsAnswer, String>)>>>;

/// The read due at `due`.
fn read_at(client: &ApiClient, due: tokio::time::Instant, timeout: Duration) -> PendingRead {
    let client = client.clone();
    Box::pin(async move {
        tokio::time::sleep_until(due).await;
        let outcome = fetch(&client, timeout).await;
        (Instant::now(), outcome)
    })
}

/// Reads the API every interval and draws each outcome until a key, SIGINT or SIGTERM says to
/// quit. A read in progress does not hold up the keys: it is a branch of the same `select!`.
async fn watch(
    terminal: &mut DefaultTerminal,
    client: &ApiClient,
    args: &TopArgs,
) -> io::Result<()> {
    let source = draw::Source {
        address: &args.api.address,
        interval: args.interval,
    };
    let timeout = args.interval.max(MIN_ANSWER_TIMEOUT);
    let mut inputs = inputs();
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    let mut dashboard = Dashboard::default();
    let mut due = tokio::time::Instant::now();
    let mut pending = read_at(client, due, timeout);
    loop {
        terminal.draw(|frame| draw::draw(frame, &dashboard, &source))?;
        tokio::select! {
            (taken, outcome) = &mut pending => {
                dashboard.record(taken, outcome);
                // The next read is one interval after this one was due, or at once when the
                // read itself took longer.
                due = (due + args.interval).max(tokio::time::Instant::now());
                pending = read_at(client, due, timeout);
            }
            wanted = inputs.recv() => match wanted {
                Some(Input::Redraw) => {}
                Some(Input::Failed(error)) => return Err(error),
                Some(Input::Quit) | None => return Ok(()),
            },
            _ = interrupted.recv() => return Ok(()),
            _ = terminated.recv() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Event {
        Event::Key(KeyEvent::new(code, modifiers))
    }

    #[test]
    fn q_escape_and_control_c_quit_other_keys_do_nothing() {
        for quit in [
            key(KeyCode::Char('q'), KeyModifiers::NONE),
            key(KeyCode::Esc, KeyModifiers::NONE),
            key(KeyCode::Char('c'), KeyModifiers::CONTROL),
        ] {
            assert!(matches!(input(quit), Some(Input::Quit)));
        }
        assert!(input(key(KeyCode::Char('c'), KeyModifiers::NONE)).is_none());
        assert!(input(key(KeyCode::Char('x'), KeyModifiers::NONE)).is_none());
        assert!(matches!(input(Event::Resize(80, 24)), Some(Input::Redraw)));
    }
}
