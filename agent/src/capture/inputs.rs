//! What `analyze` was given: files, directories (walked recursively for captures) and `-`.

use std::path::{Path, PathBuf};

use super::file::CaptureError;

/// File names taken from a directory: captures, plain or compressed.
const CAPTURE_SUFFIXES: &[&str] = &[
    ".pcap",
    ".pcapng",
    ".cap",
    ".pcap.gz",
    ".pcapng.gz",
    ".cap.gz",
    ".pcap.zst",
    ".pcapng.zst",
    ".cap.zst",
    ".pcap.zstd",
    ".pcapng.zstd",
];

/// Whether a directory entry's name is a capture's (tcpdump's `-C` rotation appends digits:
/// `trace.pcap1`, `trace.pcap2`, … are captures too).
pub fn is_capture_name(name: &str) -> bool {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    CAPTURE_SUFFIXES
        .iter()
        .any(|s| name.ends_with(s) || trimmed.ends_with(s))
}

/// The captures `paths` name: a file as it is (whatever its name), a directory's captures in
/// name order, recursively, `-` as it is. A directory without any capture is an error.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CaptureError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" || !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let before = out.len();
        walk(path, &mut out)?;
        if out.len() == before {
            return Err(CaptureError::Open {
                path: path.clone(),
                source: std::io::Error::other(
                    "directory holds no capture (.pcap, .pcapng, .cap, or their .gz/.zst forms)",
                ),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CaptureError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CaptureError::Open {
        path: dir.to_owned(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_capture_name)
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_names() {
        for yes in [
            "a.pcap",
            "b.pcapng",
            "c.cap",
            "d.pcap.gz",
            "e.pcapng.zst",
            "trace.pcap1",
            "trace.pcap12",
        ] {
            assert!(is_capture_name(yes), "{yes}");
        }
        for no in ["a.txt", "a.json", "pcap", "a.expected.json", "a.gz"] {
            assert!(!is_capture_name(no), "{no}");
        }
    }

    #[test]
    fn directories_are_walked_in_order_and_empty_ones_refused() {
        let dir = std::env::temp_dir().join(format!("mw-inputs-{}", std::process::id()));
        let sub = dir.join("node-2");
        std::fs::create_dir_all(&sub).expect("dirs");
        for f in ["b.pcap", "a.pcapng.gz", "notes.txt"] {
            std::fs::write(dir.join(f), b"x").expect("write");
        }
        std::fs::write(sub.join("c.pcap"), b"x").expect("write");
        let got = expand(std::slice::from_ref(&dir)).expect("captures");
        let names: Vec<String> = got
            .iter()
            .filter_map(|p| p.strip_prefix(&dir).ok())
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(names, ["a.pcapng.gz", "b.pcap", "node-2/c.pcap"]);
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).expect("dir");
        let err = expand(std::slice::from_ref(&empty)).expect_err("no capture");
        assert!(err.to_string().contains("holds no capture"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
