//! A legacy pcap record read by hand on the hot path: a 16-byte header (seconds, fraction,
//! captured and original length) and the captured bytes. pcap-parser's general reader costs
//! more per record than the packet's own decoding in a capture of small packets; the file
//! header, the "modified" format, and anything not all there yet still go through it (it tells
//! a record cut short at the end from one to read more for).
//!
//! PURE: bytes in, a borrowed view out; never panics.

/// Bytes of a record header.
const HEADER: usize = 16;

/// The fields of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub ts_sec: u32,
    /// Microseconds, or nanoseconds in a nanosecond capture.
    pub ts_frac: u32,
    pub origlen: u32,
    pub data: &'a [u8],
    /// Bytes of header and data (what to consume).
    pub len: usize,
}

/// The 32-bit word at `at` in the capture's byte order, or `None` past the end (shared with
/// [`super::epb`]).
pub(super) fn u32_at(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// The record at the start of `bytes` (of a capture in the given byte order), or `None` when
/// it is not all there: pcap-parser then reads more, or reports the end.
pub fn parse(bytes: &[u8], big_endian: bool) -> Option<Record<'_>> {
    let word = |at: usize| u32_at(bytes, at, big_endian);
    let caplen = usize::try_from(word(8)?).ok()?;
    let len = HEADER.checked_add(caplen)?;
    Some(Record {
        ts_sec: word(0)?,
        ts_frac: word(4)?,
        origlen: word(12)?,
        data: bytes.get(HEADER..len)?,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(big: bool, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [1_700_000_000u32, 123_456, data.len() as u32, 1500] {
            b.extend_from_slice(&if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            });
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn reads_both_byte_orders() {
        for big in [false, true] {
            let mut b = record(big, b"hello");
            b.extend_from_slice(b"next record");
            let r = parse(&b, big).expect("a record");
            assert_eq!(
                (r.ts_sec, r.ts_frac, r.origlen, r.data, r.len),
                (1_700_000_000, 123_456, 1500, &b"hello"[..], 21)
            );
        }
    }

    /// Every proper prefix is "not yet" (pcap-parser decides between more bytes and a cut).
    #[test]
    fn prefixes_fall_back() {
        let b = record(false, b"hello");
        for cut in 0..b.len() {
            assert_eq!(parse(&b[..cut], false), None, "{cut}");
        }
        assert_eq!(parse(&[0xff; 64], false), None, "a length beyond the bytes");
    }
}
