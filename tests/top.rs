//! `tapio top` as a person uses it: the real binary in a real terminal (tmux on a private
//! socket, 160×40), against a real `tapio run` serving its API on loopback. The screen is read
//! back with `capture-pane`, keys are typed with `send-keys`.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

/// How long a screen may take to show what a test waits for.
const SCREEN_WAIT: Duration = Duration::from_secs(30);

/// Printed by the pane's shell once `tapio top` ended, with its exit code.
const EXITED: &str = "tapio top exited with";

/// A tmux server of the test's own (its socket named after the process and the test, in the
/// test's temporary directory), running one `command` in a 160×40 window; killed with
/// everything in it when dropped.
struct Tmux {
    socket: String,
    /// Holds the socket (tmux's `TMUX_TMPDIR`); removed after the server is killed.
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Runs `command` in a shell in a new detached session; when it ends the shell prints
    /// [`EXITED`] and the exit code, then the terminal's settings (`stty -a`), and waits so the
    /// screen can be read.
    fn start(test: &str, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("tapio-top-{}-{test}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
        };
        let script = format!("{command}; echo \"{EXITED} $?\"; stty -a; sleep 600");
        let status = tmux
            .command()
            .args(["new-session", "-d", "-x", "160", "-y", "40", &script])
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed: {status}");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env("TMUX_TMPDIR", self.dir.path())
            .env_remove("TMUX")
            .args(["-L", &self.socket]);
        command
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p"])
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `key` (a tmux key name: `q`, `Escape`, `C-c`).
    fn send(&self, key: &str) {
        let status = self
            .command()
            .args(["send-keys", key])
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux send-keys {key} failed");
    }

    /// Waits until the screen satisfies `check`, failing with the screen otherwise.
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&str) -> Option<T>) -> T {
        eventually(SCREEN_WAIT, || check(&self.screen())).unwrap_or_else(|| {
            panic!(
                "the screen did not show {what} within {SCREEN_WAIT:?}:\n{}",
                self.screen()
            )
        })
    }

    /// Quits with `key`, then checks that `tapio top` exited 0 and left the terminal as it
    /// found it: off the alternate screen (no dashboard left in sight) and out of raw mode
    /// (`stty` reports canonical input and echo on again).
    fn quit_and_check_restored(&self, key: &str) {
        self.send(key);
        // `stty -a` names canonical mode either way (`icanon` or `-icanon`).
        let screen = self.wait_for("the shell after tapio top", |screen| {
            (screen.contains(EXITED) && screen.contains("icanon")).then(|| screen.to_owned())
        });
        assert!(screen.contains(&format!("{EXITED} 0")), "{screen}");
        assert!(
            !screen.contains("tapio top ·"),
            "dashboard still shown:\n{screen}"
        );
        let settings: Vec<&str> = screen
            .split(|c: char| c.is_whitespace() || c == ';')
            .collect();
        for mode in ["icanon", "echo", "isig"] {
            assert!(settings.contains(&mode), "`{mode}` is still off:\n{screen}");
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// A `tapio run`, killed when dropped whatever the test's outcome.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tapio top` reading every 300 ms, as the pane's shell runs it.
fn top_command() -> String {
    format!("'{}' top --interval 300ms", env!("CARGO_BIN_EXE_tapio"))
}

/// The whitespace-separated cells of the screen line whose first cell is `id`.
fn row<'a>(screen: &'a str, id: &str) -> Option<Vec<&'a str>> {
    screen
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&id))
}

/// A demo source at 500 events/s into a blackhole, the API on `port`.
fn demo_pipeline(dir: &Path, port: u16) -> std::path::PathBuf {
    write_config(
        dir,
        "top.toml",
        &format!(
            r#"
[api]
address = "127.0.0.1:{port}"

[sources.gen]
type = "demo"
rate = 500

[sinks.void]
type = "blackhole"
inputs = ["gen"]
"#
        ),
    )
}

#[test]
fn the_dashboard_shows_live_rates_and_q_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tapio = Running(start_with_api(&demo_pipeline(dir.path(), port), port));
    let tmux = Tmux::start(
        "live",
        &format!("{} --address 127.0.0.1:{port}", top_command()),
    );
    let source_rate = tmux.wait_for("a non-zero events/s out of the source", |screen| {
        let sink = row(screen, "void")?;
        assert_eq!(&sink[1..3], ["sink", "blackhole"], "{screen}");
        let source = row(screen, "gen")?;
        assert_eq!(&source[1..3], ["source", "demo"], "{screen}");
        // OUT/S, a number once two samples were taken ("-" before).
        source[4].parse::<f64>().ok().filter(|rate| *rate > 0.0)
    });
    assert!(
        (100.0..2000.0).contains(&source_rate),
        "demo at 500 events/s shown as {source_rate}"
    );
    let screen = tmux.screen();
    assert!(screen.contains("health: running"), "{screen}");
    assert!(screen.contains("2 components"), "{screen}");
    tmux.quit_and_check_restored("q");
    drop(tapio);
}

#[test]
fn an_unreachable_api_is_shown_and_retried_without_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The address from the environment this time.
    let tmux = Tmux::start(
        "unreachable",
        &format!("TAPIO_API_ADDRESS=127.0.0.1:{port} {}", top_command()),
    );
    let error = format!("error: cannot reach the Tapio API at 127.0.0.1:{port}");
    tmux.wait_for("the connection error", |screen| {
        screen.contains(&error).then_some(())
    });
    // Several intervals later it still runs and still says so.
    std::thread::sleep(Duration::from_millis(1500));
    let screen = tmux.screen();
    assert!(
        !screen.contains(EXITED),
        "tapio top exited:
{screen}"
    );
    assert!(screen.contains(&error), "{screen}");
    // Once a Tapio listens there, the next retry reads it.
    let tapio = Running(spawn_run(&demo_pipeline(dir.path(), port)));
    tmux.wait_for("the components once the API is up", |screen| {
        (row(screen, "gen").is_some() && !screen.contains(&error)).then_some(())
    });
    tmux.quit_and_check_restored("Escape");
    drop(tapio);
}
