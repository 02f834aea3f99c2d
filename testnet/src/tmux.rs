//! Driving a full-screen program in tmux: start it in a detached session
//! of a fixed size on a private tmux server, type into it (`send-keys`),
//! read its screen (`capture-pane`). The terminal client's tests and its
//! benchmark use it.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A tmux server of our own with one session; killed when dropped.
#[derive(Debug)]
pub struct Tmux {
    socket: String,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Tmux {
    /// Run `program args` in a new `width` x `height` session (UTF-8,
    /// `TERM=xterm-256color`), with the environment given added.
    pub fn start(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        width: u16,
        height: u16,
    ) -> Result<Self> {
        let socket = format!(
            "xirtam-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut line = String::new();
        for (k, v) in env {
            line.push_str(&format!("{k}={} ", sh_quote(v)));
        }
        line.push_str(&sh_quote(&program.display().to_string()));
        for a in args {
            line.push(' ');
            line.push_str(&sh_quote(a));
        }
        // Keep the pane after the program exits, to read what it said.
        line.push_str("; echo \"[exited $?]\"; sleep 600");
        let tmux = Tmux { socket };
        let out = tmux
            .std_cmd()
            .args(["-u", "new-session", "-d", "-s", "main"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(line)
            .env("TERM", "xterm-256color")
            .env("LANG", "C.UTF-8")
            .output()
            .context("run tmux (is it installed? scripts/test.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "tmux new-session: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(tmux)
    }

    fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new("tmux");
        c.args(["-L", &self.socket]).stdin(Stdio::null());
        c
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::from(self.std_cmd())
            .args(args)
            .output()
            .await
            .context("run tmux")?;
        if !out.status.success() {
            bail!(
                "tmux {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Type `text` literally (no key names).
    pub async fn type_text(&self, text: &str) -> Result<()> {
        self.run(&["send-keys", "-t", "main", "-l", text])
            .await
            .map(drop)
    }

    /// Press keys by tmux name (`Enter`, `Tab`, `C-c`, `M-Enter`).
    pub async fn keys(&self, keys: &[&str]) -> Result<()> {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.run(&args).await.map(drop)
    }

    /// The screen, as text.
    pub async fn screen(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", "main"]).await
    }

    /// The pane's title (which a program sets with an escape sequence).
    pub async fn title(&self) -> Result<String> {
        Ok(self
            .run(&["display-message", "-p", "-t", "main", "#{pane_title}"])
            .await?
            .trim()
            .to_owned())
    }

    /// Wait until the screen shows `needle`; the screen when it does.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_until(needle, timeout, |s| s.contains(needle))
            .await
    }

    /// Wait until `done(screen)`; `what` names it in the error.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen().await?;
            if done(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("{what:?} not on the screen after {timeout:?}; the screen:\n{s}");
            }
            // The screen can only be read by asking again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.std_cmd().arg("kill-server").output();
    }
}
