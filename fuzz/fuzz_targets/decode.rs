//! Link/IP/tunnel/TCP decoding of any bytes, under every link type we read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshwatch::decode::{decode, LinkType};

const LINKS: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let link = LinkType(LINKS[usize::from(selector) % LINKS.len()]);
    let _ = decode(link, frame);
});
