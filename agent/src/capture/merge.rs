//! Several captures as one stream, in timestamp order: a k-way merge that holds one frame per
//! open capture. Captures are opened when the merge reaches their first packet and dropped at
//! their end, so captures that follow each other (rotated with `tcpdump -C/-G`) are never open
//! together: memory grows with the captures that overlap in time, not with their number.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use super::file::{CaptureError, CaptureFile, Compression, ReadSummary, Step};
use super::Frame;
use crate::decode::LinkType;
use crate::Nanos;

/// One capture's part in the merge.
#[derive(Debug)]
struct Source {
    file: CaptureFile,
    /// The frame waiting its turn (copied: the reader's buffer moves on).
    held: Option<Held>,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    ts: Nanos,
    link: LinkType,
    wire_len: u32,
    loopback: bool,
}

impl Source {
    /// Read up to the next frame (or the end), holding it.
    fn fill(&mut self) -> Result<(), CaptureError> {
        let mut held = None;
        let data = &mut self.data;
        let mut take = |f: Frame<'_>| {
            data.clear();
            data.extend_from_slice(f.data);
            held = Some(Held {
                ts: f.ts,
                link: f.link,
                wire_len: f.wire_len,
                loopback: f.loopback,
            });
        };
        while self.file.step(&mut take)? == Step::Other {}
        self.held = held;
        Ok(())
    }
}

/// What the merge read from one capture.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub compression: Compression,
    pub summary: ReadSummary,
}

/// Read `paths` as one stream in timestamp order (ties: in the order given), handing each frame
/// to `on_frame`; `on_progress` gets the file bytes consumed so far across all of them.
pub fn for_each_frame(
    paths: &[PathBuf],
    mut on_frame: impl FnMut(Frame<'_>),
    mut on_progress: impl FnMut(u64),
) -> Result<Vec<FileReport>, CaptureError> {
    // each capture's first timestamp, to open it only when the merge gets there
    let mut starts: Vec<(Nanos, usize)> = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        if path.as_os_str() == "-" {
            starts.push((0, i)); // cannot be read twice: open it at once
            continue;
        }
        let mut source = open(path)?;
        source.fill()?;
        starts.push((source.held.map_or(Nanos::MAX, |h| h.ts), i));
    }
    starts.sort();
    let mut pending = starts.into_iter().peekable();
    let mut open_sources: Vec<Option<Source>> = (0..paths.len()).map(|_| None).collect();
    let mut reports: Vec<Option<FileReport>> = (0..paths.len()).map(|_| None).collect();
    let mut heap: BinaryHeap<Reverse<(Nanos, usize)>> = BinaryHeap::new();
    let mut done_bytes = 0u64;
    let mut frames = 0u64;
    loop {
        // open every capture whose first packet is not later than the next one to emit
        let next_ts = heap.peek().map(|Reverse((ts, _))| *ts);
        while let Some(&(start, i)) = pending.peek() {
            if next_ts.is_some_and(|t| start > t) {
                break;
            }
            pending.next();
            let Some(path) = paths.get(i) else { continue };
            let mut source = open(path)?;
            source.fill()?;
            match source.held {
                Some(h) => heap.push(Reverse((h.ts, i))),
                None => {
                    done_bytes += source.file.raw_bytes_read();
                    if let Some(r) = reports.get_mut(i) {
                        *r = Some(report(&source.file));
                    }
                    continue;
                }
            }
            if let Some(slot) = open_sources.get_mut(i) {
                *slot = Some(source);
            }
        }
        let Some(Reverse((_, i))) = heap.pop() else {
            break;
        };
        let Some(source) = open_sources.get_mut(i).and_then(Option::as_mut) else {
            continue;
        };
        if let Some(h) = source.held {
            on_frame(Frame {
                ts: h.ts,
                link: h.link,
                data: &source.data,
                wire_len: h.wire_len,
                loopback: h.loopback,
            });
            frames += 1;
        }
        source.fill()?;
        match source.held {
            Some(h) => heap.push(Reverse((h.ts, i))),
            None => {
                done_bytes += source.file.raw_bytes_read();
                if let Some(r) = reports.get_mut(i) {
                    *r = Some(report(&source.file));
                }
                if let Some(slot) = open_sources.get_mut(i) {
                    *slot = None; // its buffers go now
                }
            }
        }
        if frames % 4096 == 0 {
            let open: u64 = open_sources
                .iter()
                .flatten()
                .map(|s| s.file.raw_bytes_read())
                .sum();
            on_progress(done_bytes + open);
        }
    }
    on_progress(done_bytes);
    Ok(reports.into_iter().flatten().collect())
}

fn open(path: &Path) -> Result<Source, CaptureError> {
    Ok(Source {
        file: CaptureFile::open(path)?,
        held: None,
        data: Vec::new(),
    })
}

fn report(file: &CaptureFile) -> FileReport {
    FileReport {
        path: file.path().to_owned(),
        compression: file.compression(),
        summary: file.summary().clone(),
    }
}
