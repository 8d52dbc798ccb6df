//! Pages of a process's log file.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{Value, json};

use crate::TrackerError;

/// What a page holds when the client does not say: the end of the log is what one looks at first.
pub const DEFAULT_LENGTH: u64 = 64 * 1024;
/// Longest page served, so one request cannot make the tracker read a whole large log into memory.
pub const MAX_LENGTH: u64 = 1024 * 1024;

/// The byte range `[start, start + len)` to serve from a file of `total` bytes. Without an offset the page ends at
/// the end of the file; a length above [`MAX_LENGTH`] is capped; an offset at or past the end gives an empty page.
pub fn page_bounds(total: u64, offset: Option<u64>, length: Option<u64>) -> (u64, u64) {
    let want = length.unwrap_or(DEFAULT_LENGTH).min(MAX_LENGTH);
    let start = offset.unwrap_or_else(|| total.saturating_sub(want));
    let len = want.min(total.saturating_sub(start));
    (start, len)
}

/// Reads one page of `path`, which must lie inside `dir` (after resolving links and `..`).
pub fn read_page(
    process: &str,
    path: &Path,
    dir: &Path,
    offset: Option<u64>,
    length: Option<u64>,
) -> Result<Value, TrackerError> {
    let err = |source| TrackerError::Log {
        process: process.to_string(),
        path: path.display().to_string(),
        source,
    };
    // The path comes from the state manager, which executors write; check it rather than trust it, so the tracker
    // never serves a file outside the topology's logs.
    let real = path.canonicalize().map_err(err)?;
    let real_dir = dir.canonicalize().map_err(err)?;
    if !real.starts_with(&real_dir) {
        return Err(TrackerError::LogOutsideDir {
            process: process.to_string(),
            path: path.display().to_string(),
            dir: dir.display().to_string(),
        });
    }
    let mut file = std::fs::File::open(&real).map_err(err)?;
    let total = file.metadata().map_err(err)?.len();
    let (start, len) = page_bounds(total, offset, length);
    let mut data = Vec::with_capacity(len as usize);
    if len > 0 {
        file.seek(SeekFrom::Start(start)).map_err(err)?;
        // The file may shrink or grow meanwhile; `take` keeps the page within what was promised.
        file.take(len).read_to_end(&mut data).map_err(err)?;
    }
    Ok(json!({
        "process": process,
        "offset": start,
        "length": data.len(),
        "total": total,
        "data": String::from_utf8_lossy(&data),
    }))
}

/// The log file of `process` in a topology's explain data, and the directory every log of the topology must lie in.
pub fn locate(
    egret_home: &Path,
    cluster: &str,
    name: &str,
    process: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), TrackerError> {
    let data = crate::explain::explain(egret_home, cluster, name)?;
    let log = data["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(process))
        .and_then(|p| p["log"].as_str())
        .filter(|l| !l.is_empty())
        .map(std::path::PathBuf::from)
        .ok_or_else(|| TrackerError::UnknownProcess {
            topology: name.to_string(),
            process: process.to_string(),
        })?;
    Ok((log, egret_scheduler::log_dir(egret_home, cluster, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_page_is_the_tail() {
        assert_eq!(page_bounds(10, None, None), (0, 10));
        assert_eq!(
            page_bounds(100_000, None, None),
            (100_000 - DEFAULT_LENGTH, DEFAULT_LENGTH)
        );
        assert_eq!(page_bounds(0, None, None), (0, 0));
        assert_eq!(page_bounds(100, None, Some(10)), (90, 10));
    }

    #[test]
    fn explicit_pages_stay_inside_the_file() {
        assert_eq!(page_bounds(100, Some(0), Some(10)), (0, 10));
        assert_eq!(page_bounds(100, Some(95), Some(10)), (95, 5));
        assert_eq!(page_bounds(100, Some(100), Some(10)), (100, 0));
        assert_eq!(page_bounds(100, Some(1000), None), (1000, 0));
        assert_eq!(page_bounds(100, Some(u64::MAX), Some(u64::MAX)), (u64::MAX, 0));
        assert_eq!(page_bounds(100, Some(40), None), (40, 60));
        assert_eq!(page_bounds(100, Some(40), Some(0)), (40, 0));
    }

    #[test]
    fn length_is_capped() {
        let big = 10 * MAX_LENGTH;
        assert_eq!(page_bounds(big, Some(0), Some(big)), (0, MAX_LENGTH));
        assert_eq!(page_bounds(big, None, Some(big)), (big - MAX_LENGTH, MAX_LENGTH));
    }

    #[test]
    fn reads_a_page_and_refuses_files_outside_the_directory() {
        let dir = std::env::temp_dir().join(format!("egret-tracker-logs-{}", std::process::id()));
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("a.log"), b"hello world").unwrap();
        std::fs::write(dir.join("secret"), b"no").unwrap();
        let page = read_page("a", &logs.join("a.log"), &logs, Some(6), None).unwrap();
        assert_eq!(page["data"], "world");
        assert_eq!(page["total"], 11);
        let page = read_page("a", &logs.join("a.log"), &logs, Some(50), Some(5)).unwrap();
        assert_eq!((page["data"].as_str(), page["length"].as_u64()), (Some(""), Some(0)));
        let outside = read_page("a", &logs.join("../secret"), &logs, None, None);
        assert!(
            matches!(outside, Err(TrackerError::LogOutsideDir { .. })),
            "{outside:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
