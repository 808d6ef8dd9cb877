//! A terminal program as a person sees it: a detached tmux session of a fixed size on a
//! socket of its own, keys sent with `send-keys`, the screen read with `capture-pane`.
//! The tmux server dies with the guard, pass or fail.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

/// Whether a `tmux` binary runs here (`tests/run.sh` installs it).
pub fn present() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One detached session running one command.
pub struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a `cols`×`rows` pane. `name` names
    /// the session and, with the process id and the clock, the private socket.
    pub fn start(name: &str, cols: u16, rows: u16, command: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let tmux = Self {
            socket: format!("vigil-e2e-{name}-{}-{nanos}", std::process::id()),
            session: name.to_owned(),
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &cols,
            "-y",
            &rows,
            command,
        ])?;
        ensure!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(tmux)
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .context("running tmux (tests/run.sh installs it)")
    }

    /// The pane's text now.
    pub fn screen(&self) -> anyhow::Result<String> {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session])?;
        ensure!(
            out.status.success(),
            "tmux capture-pane: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sends keys in tmux's names (`Enter`, `Escape`, `Tab`, `q`, ...).
    pub fn keys(&self, keys: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        let out = self.run(&args)?;
        ensure!(
            out.status.success(),
            "tmux send-keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Waits until the screen satisfies `check` and returns it (also printed, so it
    /// shows with the test's output when a later step fails); the error shows the last
    /// screen.
    pub fn wait_screen(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.screen()?;
            if check(&last) {
                eprintln!("---- {what} ----\n{last}");
                return Ok(last);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}; the screen:\n{last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
