//! A real systemd user manager (`systemd --user`) in a namespace of its own, for the `systemd`
//! source's tests. It is never PID 1 and never runs `sysinit.target` or `systemd-tmpfiles`:
//!
//! - `unshare --pid --mount --fork --mount-proc` runs a shell as the namespace's PID 1, which
//!   makes every mount private (`mount --make-rprivate /`), puts tmpfs on `/run`, `/tmp` and
//!   `/var/tmp` (binding the test's own directory back in) and starts the manager as its child;
//! - the shell first moves into a cgroup of the test's own, so the manager's units live (and
//!   are removed) under it, not beside the machine's;
//! - the manager starts `tapio-test.target` instead of `default.target`; it and every unit the
//!   test writes have `DefaultDependencies=no`, so nothing pulls `basic.target`,
//!   `sysinit.target` or the tmpfiles units;
//! - its bus is a `dbus-daemon --session` started by the manager from `dbus.socket` on
//!   `$XDG_RUNTIME_DIR/bus`, as on a desktop, so the test can stop the bus and bring it back.
//!
//! A `systemd-journald` of the namespace's own (on its `/run`, volatile, its files bound to
//! the test's `journal` directory) takes the units' output. `XDG_RUNTIME_DIR`, `HOME` and
//! `XDG_CONFIG_HOME` are under the test's directory; commands
//! (`systemctl --user`, `systemd-run --user --scope`) run inside the namespace with `nsenter`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::eventually;

/// Why a user manager cannot run here (not root, a tool missing), or `None` when it can.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: unshare, mounts and cgroups need it".into());
    }
    let tools = [
        SYSTEMD,
        JOURNALD,
        "/usr/bin/journalctl",
        "/usr/bin/dbus-daemon",
        "/usr/bin/dbus-monitor",
        "/usr/bin/unshare",
        "/usr/bin/nsenter",
        "/usr/bin/systemctl",
        "/usr/bin/systemd-run",
        "/usr/bin/busctl",
    ];
    tools
        .iter()
        .find(|tool| !Path::new(tool).exists())
        .map(|tool| format!("{tool} is missing (scripts/test.sh installs systemd and dbus)"))
}

const SYSTEMD: &str = "/usr/lib/systemd/systemd";
const JOURNALD: &str = "/usr/lib/systemd/systemd-journald";
const WAIT: Duration = Duration::from_secs(20);

/// What PID 1 of the namespace does before it starts the manager: its own cgroup, private
/// mounts, tmpfs with the work directory bound back, then the manager as a child it waits for.
const SETUP: &str = r#"
set -eu
work=$1 cgroup=$2
for root in /sys/fs/cgroup /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
    if [ -e "$root/cgroup.procs" ]; then
        mkdir -p "$root/$cgroup"
        echo 0 > "$root/$cgroup/cgroup.procs"
    fi
done
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir /run/tapio-work
mount --bind "$work" /run/tapio-work
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mkdir -p "$work"
mount --bind /run/tapio-work "$work"
umount /run/tapio-work
# systemd --user starts only where the system "was booted with systemd": this /run is ours.
mkdir -p /run/systemd/system
# A journal of its own: journald on this /run, its files in the work directory, volatile,
# reading no kernel log and forwarding nothing to syslog, the console or the kernel log.
mkdir -p /run/systemd/journald.conf.d /run/log/journal
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToKMsg=no\nForwardToConsole=no\nForwardToWall=no\n' \
    > /run/systemd/journald.conf.d/tapio-test.conf
mount --bind "$work/journal" /run/log/journal
"$4" > "$work/journald.log" 2>&1 &
for _ in $(seq 100); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.05; done
export XDG_RUNTIME_DIR="$work/run" HOME="$work/home" XDG_CONFIG_HOME="$work/config"
"$3" --user --unit=tapio-test.target --log-target=console --log-level=info \
    > "$work/systemd.log" 2>&1 &
wait
"#;

/// The user manager's units that give it a bus: `dbus.socket` starts `dbus.service` on the
/// first connection, as Debian's dbus-user-session does, with no default dependencies.
const UNITS: [(&str, &str); 3] = [
    (
        "tapio-test.target",
        "[Unit]\nDefaultDependencies=no\nWants=dbus.socket\n",
    ),
    (
        "dbus.socket",
        "[Unit]\nDefaultDependencies=no\n[Socket]\nListenStream=%t/bus\n",
    ),
    (
        "dbus.service",
        "[Unit]\nDefaultDependencies=no\nRequires=dbus.socket\n[Service]\n\
         ExecStart=/usr/bin/dbus-daemon --session --address=systemd: --nofork --nopidfile \
         --systemd-activation --nosyslog\n",
    ),
];

/// A running user manager; dropping it kills the namespace and removes its cgroups.
pub struct UserManager {
    pub dir: PathBuf,
    unshare: Child,
    /// PID 1 of the namespace, as this process sees it.
    init: u32,
    cgroups: Vec<PathBuf>,
}

impl UserManager {
    /// Starts a manager whose files live in `dir` (which must exist), and waits until systemd
    /// is on its bus.
    pub fn start(dir: &Path) -> UserManager {
        let units = dir.join("config/systemd/user");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        std::fs::create_dir_all(dir.join("journal")).unwrap();
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        for (name, text) in UNITS {
            std::fs::write(units.join(name), text).unwrap();
        }
        let cgroup = format!(
            "tapio-test-{}-{}",
            std::process::id(),
            dir.file_name().unwrap().to_string_lossy()
        );
        let cgroups = ["", "systemd", "unified"]
            .iter()
            .map(|h| Path::new("/sys/fs/cgroup").join(h))
            .filter(|root| root.join("cgroup.procs").exists())
            .map(|root| root.join(&cgroup))
            .collect();
        let unshare = Command::new("unshare")
            .args(["--pid", "--mount", "--fork", "--mount-proc", "--kill-child"])
            .args(["sh", "-c", SETUP, "setup"])
            .arg(dir)
            .arg(&cgroup)
            .arg(SYSTEMD)
            .arg(JOURNALD)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let init = eventually(WAIT, || {
            std::fs::read_to_string(&children)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("unshare started no child");
        let manager = UserManager {
            dir: dir.to_owned(),
            unshare,
            init,
            cgroups,
        };
        let private = dir.join("run/systemd/private");
        eventually(WAIT, || private.exists().then_some(()))
            .unwrap_or_else(|| panic!("the manager never started: {}", manager.log()));
        manager.start_bus();
        manager
    }

    /// The address of the manager's bus.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.dir.join("run/bus").display())
    }

    /// The directory of the namespace's journal (`journalctl --directory`).
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// What the manager logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("systemd.log")).unwrap_or_default()
    }

    /// Writes a unit file the manager can load (after [`UserManager::reload`]).
    pub fn write_unit(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join("config/systemd/user").join(name), text).unwrap();
    }

    /// `command args` inside the namespace, with the manager's environment.
    pub fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut nsenter = Command::new("nsenter");
        nsenter
            .args(["--target", &self.init.to_string(), "--mount", "--pid", "--"])
            .arg("env")
            .arg(format!(
                "XDG_RUNTIME_DIR={}",
                self.dir.join("run").display()
            ))
            .arg(format!("HOME={}", self.dir.join("home").display()))
            .arg(format!(
                "XDG_CONFIG_HOME={}",
                self.dir.join("config").display()
            ))
            .arg(format!("DBUS_SESSION_BUS_ADDRESS={}", self.bus_address()))
            .arg(command)
            .args(args)
            .stdin(Stdio::null());
        nsenter
    }

    /// Runs `command args` in the namespace to completion.
    pub fn run(&self, command: &str, args: &[&str]) -> Output {
        self.command(command, args).output().unwrap()
    }

    /// `systemctl --user args`, which must succeed.
    pub fn systemctl(&self, args: &[&str]) {
        let output = self.run("systemctl", &[&["--user"], args].concat());
        assert!(
            output.status.success(),
            "systemctl --user {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Makes the manager read unit files again.
    pub fn reload(&self) {
        self.systemctl(&["daemon-reload"]);
    }

    /// Starts the bus and waits until systemd has taken its name on it.
    pub fn start_bus(&self) {
        self.systemctl(&["start", "dbus.socket", "dbus.service"]);
        let on_bus = || {
            let output = self.run(
                "busctl",
                &[
                    "--user",
                    "call",
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameHasOwner",
                    "s",
                    "org.freedesktop.systemd1",
                ],
            );
            (String::from_utf8_lossy(&output.stdout).trim() == "b true").then_some(())
        };
        eventually(WAIT, on_bus)
            .unwrap_or_else(|| panic!("systemd never joined its bus: {}", self.log()));
    }

    /// Waits until an agent writing to `out` reports this manager's transitions: starts
    /// `tapio-marker-<n>.service` (its source must follow `tapio-*.service`) until one of them
    /// shows up in `out` within `per_try`.
    pub fn wait_until_reported(&self, out: &Path, per_try: Duration) {
        for n in 0..100 {
            let unit = format!("\"tapio-marker-{n}.service\"");
            self.run(
                "systemd-run",
                &[
                    "--user",
                    "--quiet",
                    &format!("--unit=tapio-marker-{n}.service"),
                    "true",
                ],
            );
            let seen = eventually(per_try, || {
                std::fs::read_to_string(out)
                    .is_ok_and(|text| text.contains(&unit))
                    .then_some(())
            });
            if seen.is_some() {
                return;
            }
        }
        panic!("the agent never reported a transition: {}", self.log());
    }

    /// Stops the bus (the daemon and its socket): every client loses its connection.
    pub fn stop_bus(&self) {
        self.systemctl(&["stop", "dbus.socket", "dbus.service"]);
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // Killing PID 1 of the namespace ends every process in it.
        // SAFETY: kill has no memory preconditions; the pid is the namespace's init.
        unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        for cgroup in &self.cgroups {
            let _ = eventually(Duration::from_secs(5), || {
                remove_cgroup(cgroup);
                (!cgroup.exists()).then_some(())
            });
        }
    }
}

/// Removes a cgroup and the ones below it, innermost first (a cgroup is removed with rmdir once
/// it holds no process and no child).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
