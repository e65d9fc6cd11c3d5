//! ClientHello parsing (records joined, extensions one by one) and classification, including
//! the mid-stream rules.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshwatch::classify::{classify_midstream, classify_preface};
use meshwatch::tls::{parse_client_hello, MAX_ALPN_NAMES};

fuzz_target!(|data: &[u8]| {
    let mut scratch = Vec::new();
    if let Ok(Some(hello)) = parse_client_hello(data, &mut scratch) {
        assert!(hello.alpn.len() <= MAX_ALPN_NAMES);
    }
    let _ = classify_preface(data, 15008, true, &mut scratch);
    let _ = classify_midstream(data, 443, &mut scratch);
});
