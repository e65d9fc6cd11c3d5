//! Malformed capture files: each gets a clear error naming the file (and the byte offset where
//! it applies) with exit status 2, or is analyzed with its bad records counted — never a panic.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshwatch-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// (exit code, stdout JSON if any, stderr)
fn analyze(path: &PathBuf) -> (Option<i32>, Option<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshwatch"))
        .args(["analyze", "--format", "json"])
        .arg(path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "{}: panic: {stderr}",
        path.display()
    );
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).ok(),
        stderr,
    )
}

fn pcap_header(snaplen: u32, link: u32) -> Vec<u8> {
    let mut h = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, snaplen, link] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

fn record(caplen: u32, origlen: u32, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    for v in [1u32, 0, caplen, origlen] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r.extend_from_slice(data);
    r
}

/// A minimal real frame: Ethernet/IPv4/TCP SYN.
fn syn_frame() -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f.extend_from_slice(&[
        0x9c, 0x40, 0x1f, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let pad = (4 - body.len() % 4) % 4;
    let len = (12 + body.len() + pad) as u32;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.extend(std::iter::repeat_n(0u8, pad));
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn pcapng(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut shb_body = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb_body.extend_from_slice(&[1, 0, 0, 0]);
    shb_body.extend_from_slice(&(-1i64).to_le_bytes());
    let mut out = block(0x0a0d_0d0a, &shb_body);
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    out.extend(block(1, &idb));
    for b in blocks {
        out.extend_from_slice(b);
    }
    out
}

fn epb(data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for v in [0u32, 0, 1_000_000, data.len() as u32, data.len() as u32] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(data);
    block(6, &body)
}

#[test]
fn errors_name_the_file_and_exit_2() {
    let f = syn_frame();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.pcap", vec![], "empty file"),
        (
            "wrong-magic.pcap",
            b"\x0b\xad\xf0\x0d this is not a capture file of any kind".to_vec(),
            "not a pcap or pcapng",
        ),
        (
            "short-header.pcap",
            pcap_header(65535, 1)[..12].to_vec(),
            "not a pcap or pcapng",
        ),
        (
            "caplen-4g.pcap",
            [pcap_header(65535, 1), record(u32::MAX, 60, &f)].concat(),
            "record at byte 24 is larger than",
        ),
        (
            "random.pcap",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            "not a pcap or pcapng",
        ),
    ];
    for (name, bytes, message) in cases {
        let p = tmp(name, &bytes);
        let (code, json, err) = analyze(&p);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(json.is_none(), "{name}: no report on stdout");
        assert!(err.contains(name) && err.contains(message), "{name}: {err}");
    }
}

#[test]
fn bad_records_are_counted_and_the_rest_analyzed() {
    let f = syn_frame();
    let good = record(f.len() as u32, f.len() as u32, &f);
    // caplen larger than the header's snaplen: read as written
    let over = [
        pcap_header(32, 1),
        record(f.len() as u32, f.len() as u32, &f),
    ]
    .concat();
    let (code, json, err) = analyze(&tmp("caplen-over-snaplen.pcap", &over));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        json.as_ref().map(|j| j["summary"]["tcp_packets"].clone()),
        Some(1.into())
    );

    // zero-length packets between good ones: decode errors, counted by reason
    let zero = [
        pcap_header(65535, 1),
        record(0, 0, &[]),
        good.clone(),
        record(0, 60, &[]),
    ]
    .concat();
    let (code, json, _) = analyze(&tmp("zero-length.pcap", &zero));
    assert_eq!(code, Some(0));
    let s = &json.expect("report")["summary"];
    assert_eq!(
        (s["packets"].as_u64(), s["tcp_packets"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(s["decode_errors_by_reason"]["truncated_link"], 2);

    // a record header cut short, and a record body cut short: warnings, earlier records kept
    for (name, cut) in [
        ("cut-record-header.pcap", 24 + good.len() + 9),
        ("cut-record-body.pcap", 24 + good.len() + 20),
    ] {
        let bytes = [pcap_header(65535, 1), good.clone(), good.clone()].concat();
        let (code, json, err) = analyze(&tmp(name, &bytes[..cut]));
        assert_eq!(code, Some(0), "{name}: {err}");
        assert!(
            err.contains("warning") && err.contains(name) && err.contains("truncated"),
            "{name}: {err}"
        );
        assert_eq!(json.expect("report")["summary"]["packets"], 1, "{name}");
    }

    // an unknown link type: every frame a counted decode error
    let odd = [pcap_header(65535, 147), good.clone()].concat();
    let (code, json, _) = analyze(&tmp("unknown-linktype.pcap", &odd));
    assert_eq!(code, Some(0));
    assert_eq!(
        json.expect("report")["summary"]["decode_errors_by_reason"]["unsupported_link_type"],
        1
    );
}

#[test]
fn pcapng_unknown_blocks_are_skipped_corrupt_ones_are_errors() {
    let f = syn_frame();
    let unknown = block(0x0bad_beef, b"vendor data!");
    let ok = pcapng(&[epb(&f), unknown, epb(&f)]);
    let (code, json, err) = analyze(&tmp("unknown-block.pcapng", &ok));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json.expect("report")["summary"]["tcp_packets"], 2);

    // a block whose trailing length disagrees with its leading one
    let mut bad = epb(&f);
    let n = bad.len();
    bad[n - 4] ^= 0x40;
    let corrupt = pcapng(&[epb(&f), bad, epb(&f)]);
    let (code, _, err) = analyze(&tmp("corrupt-block.pcapng", &corrupt));
    // the SHB (28) + IDB (20) + first EPB: the corrupt block starts at byte 48 + its length
    let at = 48 + epb(&f).len();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("corrupt-block.pcapng")
            && err.contains(&format!("corrupt capture at byte {at}")),
        "{err}"
    );
    // a packet naming an interface that was never described
    let mut orphan_body = Vec::new();
    for v in [7u32, 0, 0, f.len() as u32, f.len() as u32] {
        orphan_body.extend_from_slice(&v.to_le_bytes());
    }
    orphan_body.extend_from_slice(&f);
    let orphan = pcapng(&[block(6, &orphan_body), epb(&f)]);
    let (code, json, err) = analyze(&tmp("undescribed-interface.pcapng", &orphan));
    assert_eq!(code, Some(0));
    assert!(err.contains("undescribed interface"), "{err}");
    assert_eq!(json.expect("report")["summary"]["tcp_packets"], 1);
}
