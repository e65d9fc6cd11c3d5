//! Reassembly of the client's preface: the first bytes of one direction of a TCP stream.
//!
//! PURE. Segments arrive in any order, duplicated, retransmitted, overlapping; the reassembler
//! keeps the first copy of each byte (like the oracle and most IDS "first" policies) at its
//! offset from the stream's start. Bounded: at most [`MAX_PREFACE_BYTES`] bytes are kept and at
//! most [`MAX_RANGES`] disjoint ranges (so at most `MAX_RANGES - 1` holes); a segment that would
//! open more holes is dropped and reported, never stored.

/// Client bytes kept per flow until it is classified. Large enough for post-quantum hellos.
pub const MAX_PREFACE_BYTES: usize = 16 * 1024;
/// Disjoint byte ranges tracked at once: a full preface at a 536-byte MSS is 31 segments, so
/// any arrival order of those fits.
pub const MAX_RANGES: usize = 32;

/// What inserting a segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// New bytes were stored; the contiguous prefix may have grown.
    Stored,
    /// Nothing new (duplicate, retransmission, before the start, or beyond the bound).
    Nothing,
    /// The segment would exceed the range bound and was dropped.
    TooManyHoles,
}

/// The first bytes of a stream direction, reassembled.
#[derive(Debug, Clone, Default)]
pub struct Preface {
    /// Sequence number of the stream's first byte.
    base: u32,
    /// Bytes by offset; bytes outside `ranges` are zero and meaningless.
    data: Vec<u8>,
    /// Sorted, disjoint, non-adjacent `[start, end)` ranges of stored bytes.
    ranges: Vec<(usize, usize)>,
}

impl Preface {
    /// A preface whose first byte has sequence number `base`.
    pub fn new(base: u32) -> Self {
        Self {
            base,
            data: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// The sequence number of the first byte.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Heap bytes held for the preface.
    pub fn held_bytes(&self) -> usize {
        self.data.capacity() + self.ranges.capacity() * std::mem::size_of::<(usize, usize)>()
    }

    /// Store the segment starting at sequence number `seq`.
    pub fn insert(&mut self, seq: u32, bytes: &[u8]) -> Insert {
        // Offsets are taken modulo 2^32 and read as signed, so wrap-around works and a segment
        // starting before `base` (an old retransmission) is clipped at its head.
        let offset = seq.wrapping_sub(self.base) as i32;
        let (start, bytes) = if offset < 0 {
            let skip = offset.unsigned_abs() as usize;
            (0, bytes.get(skip..).unwrap_or_default())
        } else {
            (offset as usize, bytes)
        };
        let end = start.saturating_add(bytes.len()).min(MAX_PREFACE_BYTES);
        if start >= end {
            return Insert::Nothing;
        }
        let gaps = self.uncovered(start, end);
        if gaps.is_empty() {
            return Insert::Nothing;
        }
        if self.ranges_after_insert(start, end) > MAX_RANGES {
            return Insert::TooManyHoles;
        }
        if self.data.len() < end {
            // grow by doubling, but never past the bound (a plain resize could reserve ~2x it)
            if end > self.data.capacity() {
                let target = (self.data.capacity() * 2).clamp(end, MAX_PREFACE_BYTES.max(end));
                self.data.reserve_exact(target - self.data.len());
            }
            self.data.resize(end, 0);
        }
        for (gap_start, gap_end) in gaps {
            let src = bytes
                .get(gap_start - start..gap_end - start)
                .unwrap_or_default();
            if let Some(dst) = self.data.get_mut(gap_start..gap_end) {
                dst.copy_from_slice(src);
            }
        }
        self.merge(start, end);
        Insert::Stored
    }

    /// The bytes from the stream's start up to the first hole.
    pub fn contiguous(&self) -> &[u8] {
        match self.ranges.first() {
            Some(&(0, end)) => self.data.get(..end).unwrap_or_default(),
            _ => &[],
        }
    }

    /// The earliest stored bytes, wherever they start (for a stream whose start was not captured).
    pub fn earliest(&self) -> &[u8] {
        self.ranges
            .first()
            .and_then(|&(s, e)| self.data.get(s..e))
            .unwrap_or_default()
    }

    /// Whether the kept bytes reached the bound.
    pub fn is_full(&self) -> bool {
        self.contiguous().len() >= MAX_PREFACE_BYTES
    }

    /// Parts of `[start, end)` not yet stored, at most `MAX_RANGES + 1` of them.
    fn uncovered(&self, start: usize, end: usize) -> Vec<(usize, usize)> {
        let mut gaps = Vec::new();
        let mut cursor = start;
        for &(s, e) in &self.ranges {
            if e <= cursor {
                continue;
            }
            if s >= end {
                break;
            }
            if s > cursor {
                gaps.push((cursor, s));
            }
            cursor = cursor.max(e);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            gaps.push((cursor, end));
        }
        gaps
    }

    /// How many ranges there would be after merging `[start, end)` in.
    fn ranges_after_insert(&self, start: usize, end: usize) -> usize {
        let touching = self
            .ranges
            .iter()
            .filter(|&&(s, e)| s <= end && e >= start)
            .count();
        self.ranges.len() + 1 - touching
    }

    fn merge(&mut self, start: usize, end: usize) {
        let (mut start, mut end) = (start, end);
        self.ranges.retain(|&(s, e)| {
            let touches = s <= end && e >= start;
            if touches {
                start = start.min(s);
                end = end.max(e);
            }
            !touches
        });
        let at = self.ranges.partition_point(|&(s, _)| s < start);
        self.ranges.insert(at, (start, end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let mut p = Preface::new(1000);
        assert_eq!(p.insert(1005, b"fghij"), Insert::Stored);
        assert_eq!(p.contiguous(), b"");
        assert_eq!(p.earliest(), b"fghij");
        assert_eq!(p.insert(1000, b"abcde"), Insert::Stored);
        assert_eq!(p.contiguous(), b"abcdefghij");
        assert_eq!(p.insert(1000, b"XXXXX"), Insert::Nothing);
        assert_eq!(p.insert(1003, b"XXXXXXXklm"), Insert::Stored);
        assert_eq!(p.contiguous(), b"abcdefghijklm");
    }

    #[test]
    fn sequence_wraps_and_old_segments_are_clipped() {
        let mut p = Preface::new(u32::MAX - 1);
        assert_eq!(p.insert(u32::MAX - 3, b"zzab"), Insert::Stored);
        assert_eq!(p.insert(0, b"cd"), Insert::Stored);
        assert_eq!(p.contiguous(), b"abcd");
        assert_eq!(p.insert(u32::MAX - 10, b"old"), Insert::Nothing);
    }

    #[test]
    fn bounded_in_size_and_holes() {
        let mut p = Preface::new(0);
        let big = vec![7u8; MAX_PREFACE_BYTES * 2];
        assert_eq!(p.insert(0, &big), Insert::Stored);
        assert!(p.is_full());
        assert_eq!(p.contiguous().len(), MAX_PREFACE_BYTES);
        assert_eq!(
            p.insert(MAX_PREFACE_BYTES as u32 + 5, b"x"),
            Insert::Nothing
        );

        let mut p = Preface::new(0);
        for i in 0..MAX_RANGES as u32 {
            assert_eq!(p.insert(10 + i * 10, b"x"), Insert::Stored);
        }
        assert_eq!(p.insert(1000, b"x"), Insert::TooManyHoles);
        // filling a hole is always allowed: it never adds a range
        assert_eq!(p.insert(0, &[1u8; 10]), Insert::Stored);
    }

    /// Oracle: the first copy of each byte wins, bytes kept up to the bound.
    fn oracle(stream_len: usize, segments: &[(usize, usize)], stream: &[u8]) -> Vec<u8> {
        let mut have = vec![false; stream_len];
        for &(s, e) in segments {
            for b in have.iter_mut().take(e).skip(s) {
                *b = true;
            }
        }
        let n = have.iter().position(|h| !h).unwrap_or(stream_len);
        stream[..n.min(MAX_PREFACE_BYTES)].to_vec()
    }

    proptest! {
        /// Any segmentation, reordering and duplication of a stream reassembles to its prefix.
        #[test]
        fn any_segmentation_reassembles(
            stream in proptest::collection::vec(any::<u8>(), 1..3000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            order in any::<prop::sample::Index>(),
            base in any::<u32>(),
        ) {
            let len = stream.len();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(len)).collect();
            points.extend([0, len]);
            points.sort_unstable();
            points.dedup();
            let mut segs: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
            for d in &dups {
                let seg = segs[d.index(segs.len())];
                segs.push(seg);
            }
            // a deterministic shuffle driven by `order`
            let k = order.index(segs.len());
            segs.rotate_left(k);
            let last = segs.len() - 1;
            if last > 1 { segs.swap(0, last); }
            let mut p = Preface::new(base);
            let mut stored = Vec::new();
            for &(s, e) in &segs {
                if p.insert(base.wrapping_add(s as u32), &stream[s..e]) != Insert::TooManyHoles {
                    stored.push((s, e));
                }
            }
            let expected = oracle(len, &stored, &stream);
            prop_assert_eq!(p.contiguous(), expected.as_slice());
            if stored.len() == segs.len() {
                prop_assert_eq!(p.contiguous(), &stream[..len.min(MAX_PREFACE_BYTES)]);
            }
        }
    }
}
