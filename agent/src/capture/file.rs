//! Capture files: pcap (both byte orders, micro- and nanosecond) and pcapng (several sections
//! and interfaces, a link type and timestamp resolution per interface), from a path or stdin.
//!
//! pcap-parser does the block parsing from a streaming buffer, so memory stays bounded by the
//! buffer, not the file. This module adds timestamps in nanoseconds, interface bookkeeping and
//! errors that name the file and the byte offset.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pcap_parser::pcapng::{build_ts_resolution, Block, OptionCode};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};

use super::read_ahead::ReadAhead;
use super::{epb, interface_is_loopback, record, Frame};
use crate::decode::LinkType;
use crate::Nanos;

/// The reader's buffer; it grows for a larger record up to [`MAX_RECORD_BYTES`].
const BUFFER_BYTES: usize = 1 << 20;
/// The largest block we accept (pcapng blocks are bounded by their 32-bit length; 16 MiB is
/// far above any real snaplen and keeps a hostile length from taking memory).
pub const MAX_RECORD_BYTES: usize = 16 << 20;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a capture could not be read. Displayed as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: empty file, not a pcap or pcapng capture")]
    Empty { path: PathBuf },
    #[error("{path}: not a pcap or pcapng capture (unrecognized header)")]
    NotACapture { path: PathBuf },
    #[error("{path}: read error at byte {offset}: {cause}")]
    Read {
        path: PathBuf,
        offset: u64,
        cause: String,
    },
    #[error("{path}: corrupt capture at byte {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("{path}: record at byte {offset} is larger than {MAX_RECORD_BYTES} bytes")]
    RecordTooLarge { path: PathBuf, offset: u64 },
}

/// What reading a whole capture found, beside its frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub frames: u64,
    /// Bytes of the capture consumed (after decompression).
    pub bytes_read: u64,
    /// The last record was cut short (the capture was interrupted); the rest was analyzed.
    pub truncated_at: Option<u64>,
    /// pcapng packets naming an interface that was never described.
    pub unknown_interface_frames: u64,
    /// Timestamps of the first and last frame.
    pub first_ts: Option<Nanos>,
    pub last_ts: Nanos,
    /// Link types of the frames (pcapng may mix them), in order of first use.
    pub link_types: Vec<u32>,
}

impl ReadSummary {
    fn saw(&mut self, frame: &Frame<'_>) {
        self.frames += 1;
        self.first_ts.get_or_insert(frame.ts);
        self.last_ts = self.last_ts.max(frame.ts);
        if self.link_types.last() != Some(&frame.link.0) && !self.link_types.contains(&frame.link.0)
        {
            self.link_types.push(frame.link.0);
        }
    }
}

/// What one [`CaptureFile::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A frame went to the callback.
    Frame,
    /// A block without a frame (a header, an interface description), or more bytes were read.
    Other,
    /// The input ended.
    End,
}

/// Whether a capture is read ahead on a thread of its own ([`ReadAhead`]): worth it for one
/// large capture on a machine with a core to spare, not for each of many merged ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    No,
    Yes,
}

/// How a capture file was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// A reader that counts the bytes taken from the file (before decompression), for progress.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A read into no room reads nothing. zstd's decoder fails such a read ("no progress") and
/// stays failed, and pcap-parser makes one when its first read filled its buffer: without this,
/// a zstd capture of more than a buffer's worth was refused at byte 0.
struct EmptyReadsEnd<R>(R);

impl<R: Read> Read for EmptyReadsEnd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.0.read(buf)
    }
}

/// The words of the last read error, kept for the message.
#[derive(Debug, Clone, Default)]
struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    fn keep(&self, e: &std::io::Error) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(e.to_string());
        }
    }

    fn take(&self) -> String {
        let last = self.0.lock().ok().and_then(|mut last| last.take());
        last.unwrap_or_else(|| "no detail".to_owned())
    }
}

/// A reader that keeps the words of its errors in a [`LastError`] as it returns them.
struct KeepsErrors<R> {
    inner: R,
    last: LastError,
}

impl<R: Read> Read for KeepsErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| self.last.keep(e))
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_secs: i64,
    /// Named like a loopback device (`if_name` `lo`): its packets are local traffic.
    loopback: bool,
}

/// A capture being read.
pub struct CaptureFile {
    path: PathBuf,
    reader: Box<dyn PcapReaderIterator + Send>,
    /// Why the last read failed (pcap-parser keeps only that it did).
    last_error: LastError,
    layout: Layout,
    compression: Compression,
    /// Bytes read from the file itself (compressed, when it is).
    raw_read: Arc<AtomicU64>,
    summary: ReadSummary,
    buffer_len: usize,
    done: bool,
}

/// What earlier blocks said about the ones that follow.
#[derive(Debug, Default)]
struct Layout {
    /// Legacy pcap: the one link type and whether timestamps are nanoseconds.
    legacy: Option<(LinkType, bool)>,
    /// Legacy pcap in the plain record format: whether big endian (records read by hand).
    legacy_records: Option<bool>,
    /// pcapng: the current section's interfaces, by id.
    interfaces: Vec<Interface>,
    /// pcapng: the current section's byte order (big endian?), once its header was read.
    section_big_endian: Option<bool>,
    last_ts: Nanos,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile")
            .field("path", &self.path)
            .finish()
    }
}

impl CaptureFile {
    /// Open a capture file; `-` reads standard input. gzip and zstd captures are read through
    /// their decoder, told by their magic bytes.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        Self::open_with(path, Ahead::No)
    }

    /// [`open`](Self::open), reading (and decompressing) ahead on a thread of its own when
    /// asked to.
    pub fn open_with(path: &Path, ahead: Ahead) -> Result<Self, CaptureError> {
        if path == Path::new("-") {
            return Self::from_reader_with(PathBuf::from("<stdin>"), std::io::stdin(), ahead);
        }
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: path.to_owned(),
            source,
        })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(CaptureError::Open {
                path: path.to_owned(),
                source: std::io::Error::other("is a directory"),
            });
        }
        Self::from_reader_with(path.to_owned(), file, ahead)
    }

    /// Read a capture from any byte stream (compressed or not); `name` is used in errors.
    pub fn from_reader<R: Read + Send + 'static>(
        name: PathBuf,
        reader: R,
    ) -> Result<Self, CaptureError> {
        Self::from_reader_with(name, reader, Ahead::No)
    }

    /// [`from_reader`](Self::from_reader), reading ahead when asked to.
    pub fn from_reader_with<R: Read + Send + 'static>(
        name: PathBuf,
        reader: R,
        ahead: Ahead,
    ) -> Result<Self, CaptureError> {
        let raw_read = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            inner: reader,
            count: raw_read.clone(),
        };
        let mut buffered = BufReader::with_capacity(64 << 10, counted);
        let head = buffered.fill_buf().map_err(|e| CaptureError::Read {
            path: name.clone(),
            offset: 0,
            cause: e.to_string(),
        })?;
        let (compression, stream): (Compression, Box<dyn Read + Send>) =
            if head.starts_with(GZIP_MAGIC) {
                let gz = flate2::bufread::MultiGzDecoder::new(buffered);
                (Compression::Gzip, Box::new(gz))
            } else if head.starts_with(ZSTD_MAGIC) {
                let zst = zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| {
                    CaptureError::Read {
                        path: name.clone(),
                        offset: 0,
                        cause: e.to_string(),
                    }
                })?;
                (Compression::Zstd, Box::new(zst))
            } else {
                (Compression::None, Box::new(buffered))
            };
        // pcap-parser reads once more into a buffer the first read may have filled
        let stream: Box<dyn Read + Send> = Box::new(EmptyReadsEnd(stream));
        let stream = match ahead {
            Ahead::No => stream,
            // no thread to be had: read it here, as without
            Ahead::Yes => ReadAhead::spawn(stream).map_or_else(|s| s, |r| Box::new(r) as _),
        };
        let last_error = LastError::default();
        let stream = KeepsErrors {
            inner: stream,
            last: last_error.clone(),
        };
        let reader = match create_reader(BUFFER_BYTES, stream) {
            Ok(r) => r,
            Err(PcapError::Eof) => return Err(CaptureError::Empty { path: name }),
            Err(PcapError::ReadError) => {
                return Err(CaptureError::Read {
                    path: name,
                    offset: 0,
                    cause: last_error.take(),
                })
            }
            Err(_) => return Err(CaptureError::NotACapture { path: name }),
        };
        Ok(CaptureFile {
            path: name,
            reader,
            last_error,
            layout: Layout::default(),
            compression,
            raw_read,
            summary: ReadSummary::default(),
            buffer_len: BUFFER_BYTES,
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Bytes taken from the file so far (compressed bytes for a compressed file).
    pub fn raw_bytes_read(&self) -> u64 {
        self.raw_read.load(Ordering::Relaxed)
    }

    /// What was read so far.
    pub fn summary(&self) -> &ReadSummary {
        &self.summary
    }

    /// Read every frame, in file order, handing each to `on_frame`; `on_progress` gets the
    /// file bytes consumed so far every few thousand frames.
    pub fn for_each_frame(
        &mut self,
        mut on_frame: impl FnMut(Frame<'_>),
        mut on_progress: impl FnMut(u64),
    ) -> Result<ReadSummary, CaptureError> {
        while self.step(&mut on_frame)? != Step::End {
            if self.summary.frames % 4096 == 0 {
                on_progress(self.raw_bytes_read());
            }
        }
        on_progress(self.raw_bytes_read());
        Ok(self.summary.clone())
    }

    /// Handle the next block: a frame goes to `on_frame`. [`Step::End`] at the end of the
    /// input (a record cut short at the end is noted in the summary, not an error).
    pub fn step(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) -> Result<Step, CaptureError> {
        if self.done {
            return Ok(Step::End);
        }
        let mut step = Step::Other;
        // the legacy record, without pcap-parser's general reader
        if let Some(big) = self.layout.legacy_records {
            if let Some(r) = record::parse(self.reader.data(), big) {
                let size = r.len;
                let frame = self.layout.legacy(r.ts_sec, r.ts_frac, r.data, r.origlen);
                self.summary.saw(&frame);
                on_frame(frame);
                self.reader.consume_noshift(size);
                self.summary.bytes_read += size as u64;
                return Ok(Step::Frame);
            }
        }
        // the common pcapng block, without pcap-parser's per-block options Vec
        if let Some(big) = self.layout.section_big_endian {
            if let Some(epb) = epb::parse(self.reader.data(), big) {
                let size = epb.block_len;
                let (frame, unknown_interface) =
                    self.layout
                        .enhanced(epb.if_id, epb.ts_high, epb.ts_low, epb.data, epb.origlen);
                if let Some(frame) = frame {
                    self.summary.saw(&frame);
                    on_frame(frame);
                    step = Step::Frame;
                }
                self.summary.unknown_interface_frames += u64::from(unknown_interface);
                // no shift here: `refill` moves the partial block left at the end, and only it
                // (`consume` would move half the buffer every half buffer: every byte once more)
                self.reader.consume_noshift(size);
                self.summary.bytes_read += size as u64;
                return Ok(step);
            }
        }
        let offset = self.summary.bytes_read;
        // next() never reads, so this holds for its result too
        let exhausted = self.reader.reader_exhausted();
        match self.reader.next() {
            Ok((size, block)) => {
                let (frame, unknown_interface) = self.layout.frame_of(block);
                if let Some(frame) = frame {
                    self.summary.saw(&frame);
                    on_frame(frame);
                    step = Step::Frame;
                }
                self.summary.unknown_interface_frames += u64::from(unknown_interface);
                self.reader.consume_noshift(size);
                self.summary.bytes_read += size as u64;
            }
            Err(PcapError::Eof) => self.done = true,
            // pcap-parser's word for a record cut short at the end of the input
            Err(PcapError::UnexpectedEof) if exhausted => {
                self.summary.truncated_at = Some(offset);
                self.done = true;
            }
            Err(PcapError::Incomplete(_)) => self.refill(offset)?,
            Err(PcapError::BufferTooSmall) => {
                return Err(CaptureError::RecordTooLarge {
                    path: self.path.clone(),
                    offset,
                })
            }
            Err(e) => {
                return Err(CaptureError::Corrupt {
                    path: self.path.clone(),
                    offset,
                    detail: describe(&e),
                })
            }
        }
        Ok(if self.done { Step::End } else { step })
    }

    /// More bytes for a block that is not complete in the buffer; the end of the input ends
    /// the capture (a partial record is noted as truncated).
    fn refill(&mut self, offset: u64) -> Result<(), CaptureError> {
        if self.reader.reader_exhausted() {
            if !self.reader.data().is_empty() {
                self.summary.truncated_at = Some(offset);
            }
            self.done = true;
            return Ok(());
        }
        let before = self.reader.data().len();
        self.reader.refill().map_err(|_| CaptureError::Read {
            path: self.path.clone(),
            offset,
            cause: self.last_error.take(),
        })?;
        let stuck = self.reader.data().len() == before && !self.reader.reader_exhausted();
        if stuck {
            // The buffer is full and still holds less than one block: grow it.
            self.buffer_len *= 2;
            if self.buffer_len > MAX_RECORD_BYTES || !self.reader.grow(self.buffer_len) {
                return Err(CaptureError::RecordTooLarge {
                    path: self.path.clone(),
                    offset,
                });
            }
        }
        Ok(())
    }
}

impl Layout {
    /// The frame a block carries, if any, and whether it named an undescribed interface.
    fn frame_of<'b>(&mut self, block: PcapBlockOwned<'b>) -> (Option<Frame<'b>>, bool) {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                self.section_big_endian = None;
                let link = LinkType(header.network.0 as u32);
                self.legacy = Some((link, header.is_nanosecond_precision()));
                self.legacy_records =
                    (!header.is_modified_format()).then_some(header.is_bigendian());
                (None, false)
            }
            PcapBlockOwned::Legacy(r) => (
                Some(self.legacy(r.ts_sec, r.ts_usec, r.data, r.origlen)),
                false,
            ),
            PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                self.legacy_records = None;
                self.interfaces.clear();
                self.section_big_endian = Some(shb.big_endian());
                (None, false)
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let loopback = idb
                    .options
                    .iter()
                    .filter(|o| o.code == OptionCode::IfName)
                    .any(|o| o.as_str().is_ok_and(interface_is_loopback));
                self.interfaces.push(Interface {
                    link: LinkType(idb.linktype.0 as u32),
                    units_per_sec: build_ts_resolution(idb.if_tsresol).unwrap_or(1_000_000),
                    offset_secs: idb.if_tsoffset,
                    loopback,
                });
                (None, false)
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                self.enhanced(epb.if_id, epb.ts_high, epb.ts_low, epb.data, epb.origlen)
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let Some(iface) = self.interfaces.first().copied() else {
                    return (None, true);
                };
                let ts = self.last_ts;
                self.emit(iface.link, iface.loopback, ts, spb.data, spb.origlen)
            }
            PcapBlockOwned::NG(_) => (None, false),
        }
    }

    /// The frame of a legacy pcap record (read by pcap-parser or by [`record::parse`]).
    fn legacy<'b>(&mut self, ts_sec: u32, ts_frac: u32, data: &'b [u8], origlen: u32) -> Frame<'b> {
        let (link, nanos) = self.legacy.unwrap_or((LinkType::ETHERNET, false));
        let frac = if nanos {
            u64::from(ts_frac)
        } else {
            u64::from(ts_frac) * 1000
        };
        let ts = u64::from(ts_sec) * 1_000_000_000 + frac;
        self.last_ts = ts;
        let wire_len = origlen.max(data.len() as u32);
        Frame {
            ts,
            link,
            data,
            wire_len,
            loopback: false,
        }
    }

    /// The frame of an Enhanced Packet Block (read by pcap-parser or by [`epb::parse`]).
    fn enhanced<'b>(
        &mut self,
        if_id: u32,
        ts_high: u32,
        ts_low: u32,
        data: &'b [u8],
        origlen: u32,
    ) -> (Option<Frame<'b>>, bool) {
        let Some(iface) = self.interfaces.get(if_id as usize).copied() else {
            return (None, true);
        };
        let units = u128::from(ts_high) << 32 | u128::from(ts_low);
        let nanos = units * NANOS_PER_SEC / u128::from(iface.units_per_sec.max(1));
        let offset = i128::from(iface.offset_secs) * NANOS_PER_SEC as i128;
        let ts = (nanos as i128 + offset).clamp(0, i128::from(u64::MAX)) as u64;
        self.emit(iface.link, iface.loopback, ts, data, origlen)
    }

    fn emit<'b>(
        &mut self,
        link: LinkType,
        loopback: bool,
        ts: Nanos,
        data: &'b [u8],
        origlen: u32,
    ) -> (Option<Frame<'b>>, bool) {
        self.last_ts = ts;
        let wire_len = origlen.max(data.len() as u32);
        (
            Some(Frame {
                ts,
                link,
                data,
                wire_len,
                loopback,
            }),
            false,
        )
    }
}

fn describe(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::HeaderNotRecognized => "unrecognized block".to_owned(),
        PcapError::NomError(_, kind) => format!("malformed block ({kind:?})"),
        PcapError::OwnedNomError(_, kind) => format!("malformed block ({kind:?})"),
        PcapError::UnexpectedEof => "unexpected end of file".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasher;

    /// A frame as compared: its time, link, length and a hash of its bytes.
    type Seen = (Nanos, u32, u32, u64);

    /// Everything a reader yields: its frames and summary, or the error's words.
    fn read(bytes: &[u8], ahead: Ahead) -> Result<(Vec<Seen>, ReadSummary), String> {
        let hasher = foldhash::fast::FixedState::with_seed(7);
        let mut frames = Vec::new();
        let mut capture =
            CaptureFile::from_reader_with("t".into(), std::io::Cursor::new(bytes.to_vec()), ahead)
                .map_err(|e| e.to_string())?;
        let summary = capture
            .for_each_frame(
                |f| frames.push((f.ts, f.link.0, f.wire_len, hasher.hash_one(f.data))),
                |_| {},
            )
            .map_err(|e| e.to_string())?;
        Ok((frames, summary))
    }

    /// A capture of a few MiB: a real one's records over and over (so reads cross the read-ahead's
    /// chunks many times), in pcap or pcapng.
    fn large(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pcaps")
            .join(name);
        let real = std::fs::read(&path).expect("a capture in pcaps/");
        // pcap: a 24-byte header, then records; pcapng: the header blocks, then packets (the
        // section's blocks repeated are a valid capture too: a new section each time)
        let (head, body) = if name.ends_with(".pcapng") {
            (&real[..0], &real[..])
        } else {
            real.split_at(24)
        };
        let mut out = head.to_vec();
        while out.len()
            < 3 * super::super::read_ahead::CHUNK_BYTES * super::super::read_ahead::CHUNKS
        {
            out.extend_from_slice(body);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Reading ahead changes nothing read: the same frames, summary, truncation or error,
        /// whether the capture is whole, cut anywhere, or has a byte changed anywhere.
        #[test]
        fn reading_ahead_changes_nothing_read(
            ng: bool,
            cut in proptest::option::of(0.0f64..1.0),
            flip in proptest::option::of((0.0f64..1.0, 1u8..=255)),
        ) {
            let mut bytes = large(if ng { "mixed-interfaces.pcapng" } else { "any-cooked-v2.pcap" });
            if let Some((at, xor)) = flip {
                let i = ((bytes.len() - 1) as f64 * at) as usize;
                bytes[i] ^= xor;
            }
            if let Some(at) = cut {
                bytes.truncate((bytes.len() as f64 * at) as usize);
            }
            let direct = read(&bytes, Ahead::No);
            let ahead = read(&bytes, Ahead::Yes);
            if let Ok((frames, _)) = &direct {
                prop_assert!(cut.is_some() || flip.is_some() || frames.len() > 1000, "{} frames", frames.len());
            }
            prop_assert_eq!(direct, ahead);
        }
    }

    /// A zstd capture of more than the reader's buffer is read whole, read ahead or not.
    #[test]
    fn a_zstd_capture_larger_than_the_buffer_is_read_whole() {
        let raw = large("any-cooked-v2.pcap");
        assert!(raw.len() > BUFFER_BYTES);
        let packed = zstd::encode_all(&raw[..], 3).expect("zstd");
        let plain = read(&raw, Ahead::No).expect("the plain capture");
        for ahead in [Ahead::No, Ahead::Yes] {
            assert_eq!(read(&packed, ahead).as_ref(), Ok(&plain), "{ahead:?}");
        }
    }

    /// A gzip capture cut short is a read error that says why, the same read ahead or not.
    #[test]
    fn a_broken_gzip_capture_says_why() {
        use std::io::Write;
        let raw = large("any-cooked-v2.pcap");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).expect("gzip");
        let mut packed = gz.finish().expect("gzip");
        packed.truncate(packed.len() / 2);
        let direct = read(&packed, Ahead::No);
        let Err(err) = &direct else {
            panic!("a gzip stream cut short read as a whole capture")
        };
        assert!(err.starts_with("t: read error at byte "), "{err}");
        assert!(!err.ends_with("no detail"), "the cause lost: {err}");
        assert_eq!(read(&packed, Ahead::Yes), direct);
    }

    /// A read error in the middle of a capture is the same error, at the same byte, whether the
    /// capture is read ahead or not.
    #[test]
    fn a_read_error_is_reported_where_it_happened_read_ahead_or_not() {
        struct FailsAfter(std::io::Cursor<Vec<u8>>, u64);
        impl Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.position() >= self.1 {
                    return Err(std::io::Error::other("disk gone"));
                }
                let room = (self.1 - self.0.position()) as usize;
                let n = buf.len().min(room);
                self.0.read(&mut buf[..n])
            }
        }
        let bytes = large("any-cooked-v2.pcap");
        let fail_at = bytes.len() as u64 / 2;
        let outcome = |ahead| {
            let source = FailsAfter(std::io::Cursor::new(bytes.clone()), fail_at);
            let mut capture =
                CaptureFile::from_reader_with("t".into(), source, ahead).expect("opens");
            let mut frames = 0u64;
            let err = capture
                .for_each_frame(|_| frames += 1, |_| {})
                .expect_err("fails");
            (frames, err.to_string())
        };
        let (frames, err) = outcome(Ahead::No);
        assert!(err.starts_with("t: read error at byte "), "{err}");
        assert!(err.ends_with(": disk gone"), "the cause kept: {err}");
        let offset: u64 = err
            .trim_end_matches(": disk gone")
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("an offset");
        assert!(
            offset <= fail_at && offset + 70_000 > fail_at,
            "{offset} vs {fail_at}"
        );
        assert!(frames > 100, "{frames} frames before the error");
        assert_eq!(outcome(Ahead::Yes), (frames, err));
    }
}
