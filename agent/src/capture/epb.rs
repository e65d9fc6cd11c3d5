//! pcapng's Enhanced Packet Block, read by hand on the hot path: pcap-parser builds an options
//! `Vec` for every block, an allocation per packet, while a packet needs six fixed fields. Other
//! blocks (and anything malformed or cut short) still go through pcap-parser, which reports the
//! error with its offset.
//!
//! PURE: bytes in, a borrowed view out; never panics.

/// `block type` of an Enhanced Packet Block.
const EPB: u32 = 6;
/// Fixed part: type, length, interface, timestamp high and low, captured and original length.
const FIXED: usize = 28;
/// The trailing copy of the block length.
const TRAILER: usize = 4;

/// The fields of one Enhanced Packet Block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epb<'a> {
    pub if_id: u32,
    pub ts_high: u32,
    pub ts_low: u32,
    pub origlen: u32,
    pub data: &'a [u8],
    /// Bytes of the whole block (what to consume).
    pub block_len: usize,
}

/// The Enhanced Packet Block at the start of `bytes` (in a section of the given byte order), or
/// `None` when it is another block, is not all there yet, or is malformed — pcap-parser then
/// reads it (and says what is wrong).
pub fn parse(bytes: &[u8], big_endian: bool) -> Option<Epb<'_>> {
    let word = |at: usize| super::record::u32_at(bytes, at, big_endian);
    if word(0)? != EPB {
        return None;
    }
    let block_len = usize::try_from(word(4)?).ok()?;
    if block_len < FIXED + TRAILER || block_len % 4 != 0 || block_len > bytes.len() {
        return None;
    }
    let caplen = usize::try_from(word(20)?).ok()?;
    if FIXED.checked_add(caplen)? > block_len - TRAILER
        || word(block_len - TRAILER)? as usize != block_len
    {
        return None;
    }
    Some(Epb {
        if_id: word(8)?,
        ts_high: word(12)?,
        ts_low: word(16)?,
        origlen: word(24)?,
        data: bytes.get(FIXED..FIXED + caplen)?,
        block_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(big: bool, caplen: u32, data: &[u8], options: &[u8]) -> Vec<u8> {
        let put = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let padded = data.len().div_ceil(4) * 4;
        let len = (FIXED + padded + options.len() + TRAILER) as u32;
        let mut b = Vec::new();
        for v in [EPB, len, 1, 0x0005_f000, 0x1234_5678, caplen, 1500] {
            b.extend_from_slice(&put(v));
        }
        b.extend_from_slice(data);
        b.resize(FIXED + padded, 0);
        b.extend_from_slice(options);
        b.extend_from_slice(&put(len));
        b
    }

    #[test]
    fn reads_both_byte_orders_with_and_without_options() {
        for big in [false, true] {
            for options in [
                &[][..],
                &[1, 0, 4, 0, b'a', b'b', b'c', b'd', 0, 0, 0, 0][..],
            ] {
                let b = block(big, 5, b"hello", options);
                let e = parse(&b, big).expect("an EPB");
                assert_eq!(
                    (e.if_id, e.ts_high, e.ts_low, e.origlen),
                    (1, 0x0005_f000, 0x1234_5678, 1500)
                );
                assert_eq!((e.data, e.block_len), (&b"hello"[..], b.len()));
            }
        }
    }

    /// Every prefix is "not yet", garbage and lies are "not mine": pcap-parser decides those.
    #[test]
    fn prefixes_garbage_and_lies_fall_back() {
        let b = block(false, 5, b"hello", &[]);
        for cut in 0..b.len() {
            assert_eq!(parse(&b[..cut], false), None, "{cut}");
        }
        let mut lying = b.clone();
        lying[20] = 200; // caplen beyond the block
        assert_eq!(parse(&lying, false), None);
        let mut trailer = b.clone();
        let n = trailer.len();
        trailer[n - 4] = 7; // the two lengths differ
        assert_eq!(parse(&trailer, false), None);
        assert_eq!(parse(&[0xff; 64], false), None);
        assert_eq!(parse(&b, true), None, "the wrong byte order is not an EPB");
    }
}
