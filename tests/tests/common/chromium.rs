//! Headless Chromium for the UI tests: Debian's `chromium`, one run per page load, killed at a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One Chromium run: load, 15 s of virtual time for the page's refreshes, dump. More is a hung browser.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's `chromium`, or `$EGRET_CHROMIUM`; a missing browser fails the test, since a skipped UI test would
/// pass while checking nothing.
pub fn chromium() -> PathBuf {
    let bin = std::env::var_os("EGRET_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        bin.exists(),
        "{} not found: the UI test drives a headless Chromium; install it with scripts/install-test-deps \
         (or point EGRET_CHROMIUM at one)",
        bin.display()
    );
    bin
}

/// Runs one headless Chromium on `url` with `args` and a fresh profile; its stdout. Killed at the timeout.
pub fn run_chromium(scratch: &Path, run: u32, args: &[&str], url: &str) -> String {
    let profile = scratch.join(format!("chromium-profile-{run}"));
    let out_path = scratch.join(format!("chromium-{run}.out"));
    let err_path = scratch.join(format!("chromium-{run}.err"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::fs::File::create(&out_path).expect("creating chromium's stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("creating chromium's stderr file"))
        .spawn()
        .expect("starting chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    loop {
        match child.try_wait().expect("waiting for chromium") {
            Some(status) => {
                let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                assert!(status.success(), "chromium {args:?} failed ({status}):\n{err}");
                break;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} did not finish within {CHROMIUM_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::read_to_string(&out_path).expect("reading chromium's output")
}

/// The text of the element with `id` in a dumped DOM (no nested elements expected).
pub fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')?;
    Some(rest[open..open + close].trim())
}

/// The text of the cell with class `class` in the table row that starts with `row_start` (e.g.
/// `<tr data-component="observe">`) of a dumped DOM.
pub fn cell_of<'a>(dom: &'a str, row_start: &str, class: &str) -> Option<&'a str> {
    let row = &dom[dom.find(row_start)?..];
    let row = &row[..row.find("</tr>")?];
    let cell = &row[row.find(&format!("class=\"{class}\""))?..];
    let open = cell.find('>')? + 1;
    let close = cell[open..].find('<')?;
    Some(cell[open..open + close].trim())
}
