//! Preface reassembly from arbitrary segments (offsets and lengths from the input), then
//! classification of whatever became contiguous.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshwatch::classify::classify_preface;
use meshwatch::reassembly::{Preface, MAX_PREFACE_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut p = Preface::new(u32::from_le_bytes([1, 2, 3, 4]));
    let mut rest = data;
    // each segment: 2 bytes of offset (signed around the base), 1 byte of length, the bytes
    while let [a, b, len, tail @ ..] = rest {
        let offset = i16::from_le_bytes([*a, *b]) as i32 * 7;
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        p.insert(p.base().wrapping_add(offset as u32), payload);
        rest = next;
    }
    assert!(p.contiguous().len() <= MAX_PREFACE_BYTES);
    let mut scratch = Vec::new();
    let _ = classify_preface(p.contiguous(), 15008, false, &mut scratch);
    let _ = classify_preface(p.contiguous(), 8000, true, &mut scratch);
});
