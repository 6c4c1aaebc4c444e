//! The VM tests' view of the node they run on: commands, systemd units
//! and `check:` lines.

use std::process::Command;
use std::time::{Duration, Instant};

use super::ok;

/// Print one passed check, as the VM suite's log shows them.
pub fn check(what: &str) {
    println!("check: {what}: ok");
}

/// Run a command; its stdout, or a panic with its output.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = ok(Command::new(cmd).args(args).output());
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A property of a systemd unit (`systemctl show -p`).
pub fn prop(unit: &str, p: &str) -> String {
    sh("systemctl", &["show", "-p", p, "--value", unit])
}

/// `systemctl is-active`/`is-enabled` print their answer and exit non-zero
/// for the negative ones.
pub fn is(what: &str, unit: &str) -> String {
    let out = ok(Command::new("systemctl").args([what, unit]).output());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unit's journal, messages only.
pub fn journal(unit: &str) -> String {
    sh("journalctl", &["-u", unit, "--no-pager", "-o", "cat"])
}

/// Poll `f` every 200 ms until it holds; a panic naming `what` after 60 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
