use super::*;

const ISTIO: &[u8] = include_bytes!("../../assets/clienthello-istio-openssl.bin");
const GNUTLS: &[u8] = include_bytes!("../../assets/clienthello-app-gnutls.bin");
const HBONE: &[u8] = include_bytes!("../../assets/clienthello-hbone.bin");
const SPLIT: &[u8] = include_bytes!("../../assets/clienthello-split-records.bin");

fn parse(bytes: &[u8]) -> Result<Option<ClientHello>, Incomplete> {
    parse_client_hello(bytes, &mut Vec::new())
}

#[test]
fn golden_openssl_istio_hello() {
    let h = parse(ISTIO).expect("complete").expect("a ClientHello");
    assert_eq!(h.alpn, ["istio-peer-exchange", "istio"]);
    assert_eq!(
        h.sni.as_deref(),
        Some("outbound_.8000_._.httpbin.foo.svc.cluster.local")
    );
    assert!(
        h.versions.contains(&0x0304),
        "offers TLS 1.3: {:x?}",
        h.versions
    );
}

#[test]
fn golden_gnutls_and_hbone_hellos() {
    let g = parse(GNUTLS).expect("complete").expect("a ClientHello");
    assert_eq!(
        (g.alpn.as_slice(), g.sni.as_deref()),
        (&["http/1.1".to_owned()][..], None)
    );
    let h = parse(HBONE).expect("complete").expect("a ClientHello");
    assert_eq!(
        (h.alpn.as_slice(), h.sni.as_deref()),
        (&["h2".to_owned()][..], None)
    );
}

#[test]
fn hello_split_over_three_records_is_joined() {
    let h = parse(SPLIT).expect("complete").expect("a ClientHello");
    assert_eq!(h.alpn.len(), 42);
    assert_eq!(&h.alpn[..2], ["istio-peer-exchange", "istio"]);
    assert_eq!(h.alpn[41], "x-padding-protocol-039");
}

#[test]
fn every_prefix_is_incomplete_then_stable() {
    for fixture in [ISTIO, GNUTLS, HBONE, SPLIT] {
        let whole = parse(fixture);
        for n in 0..fixture.len() {
            assert_eq!(parse(&fixture[..n]), Err(Incomplete), "prefix of {n} bytes");
        }
        // bytes after the hello (the next record) change nothing
        let mut longer = fixture.to_vec();
        longer.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert_eq!(parse(&longer), whole);
    }
}

#[test]
fn garbage_is_not_a_hello() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Ok(None));
    assert_eq!(parse(&[0x17, 0x03, 0x03, 0x00, 0x10]), Ok(None));
    // a handshake record that carries a ServerHello
    assert_eq!(
        parse(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]),
        Ok(None)
    );
    // a zero-length record
    assert_eq!(parse(&[0x16, 0x03, 0x01, 0x00, 0x00]), Ok(None));
    // a ClientHello header declaring more than the preface bound
    assert_eq!(
        parse(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff]),
        Ok(None)
    );
    // a body too short for its own fields
    assert_eq!(
        parse(&[0x16, 0x03, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0x03, 0x03]),
        Ok(None)
    );
}

#[test]
fn a_malformed_extension_does_not_hide_alpn() {
    // Rebuild the openssl hello with a broken supported_groups extension (odd length list)
    // placed before ALPN.
    let h = parse(ISTIO).expect("ok").expect("hello");
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&[0u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]); // one suite, null comp
    let mut ext = vec![0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x17]; // supported_groups, odd
    let alpn: Vec<u8> = h
        .alpn
        .iter()
        .flat_map(|a| {
            let mut v = vec![a.len() as u8];
            v.extend_from_slice(a.as_bytes());
            v
        })
        .collect();
    ext.extend_from_slice(&[0x00, 0x10]);
    ext.extend_from_slice(&((alpn.len() + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(alpn.len() as u16).to_be_bytes());
    ext.extend_from_slice(&alpn);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![0x01, 0x00];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    let parsed = parse(&rec).expect("ok").expect("hello");
    assert_eq!(parsed.alpn, h.alpn);
    assert_eq!(parsed.versions, vec![0x0303]);
}

#[test]
fn record_and_sslv2_detection() {
    assert_eq!(is_record_start(&[0x16], &[0x16]), Err(Incomplete));
    assert_eq!(is_record_start(&[0x16, 0x03], &[0x16]), Err(Incomplete));
    assert_eq!(is_record_start(&[0x16, 0x03, 0x05], &[0x16]), Ok(false));
    assert_eq!(is_record_start(&[0x16, 0x02], &[0x16]), Ok(false));
    assert_eq!(is_record_start(b"GET", &[0x16]), Ok(false));
    assert_eq!(
        is_sslv2_client_hello(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
        Ok(true)
    );
    assert_eq!(
        is_sslv2_client_hello(&[0x80, 0x2e, 0x01, 0x00, 0x02]),
        Ok(true)
    );
    assert_eq!(is_sslv2_client_hello(&[0x80, 0x2e]), Err(Incomplete));
    assert_eq!(is_sslv2_client_hello(b"GET /"), Ok(false));
    assert!(is_server_hello(&[0x16, 0x03, 0x03, 0x00, 0x50, 0x02]));
    assert!(!is_server_hello(&[0x16, 0x03, 0x03, 0x00, 0x50, 0x01]));
}

#[test]
fn thousands_of_extensions_and_alpn_names_stay_bounded() {
    // 3,000 empty unknown extensions, then an ALPN list of 2,000 names: within 16 KiB
    let mut ext = Vec::new();
    for i in 0..3000u16 {
        ext.extend_from_slice(&(0x4000 + i).to_be_bytes());
        ext.extend_from_slice(&[0, 0]);
    }
    let names: Vec<u8> = (0..2000).flat_map(|_| [1u8, b'x']).collect();
    ext.extend_from_slice(&[0x00, 0x10]);
    ext.extend_from_slice(&((names.len() + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(names.len() as u16).to_be_bytes());
    ext.extend_from_slice(&names);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0u8; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&body);
    // split into records of at most 2^14 bytes
    let mut stream = Vec::new();
    for chunk in msg.chunks(16_000) {
        stream.extend_from_slice(&[0x16, 0x03, 0x01]);
        stream.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        stream.extend_from_slice(chunk);
    }
    assert!(
        stream.len() <= MAX_PREFACE_BYTES + 5,
        "{} bytes",
        stream.len()
    );
    let h = parse(&stream).expect("complete").expect("hello");
    assert_eq!(h.alpn.len(), MAX_ALPN_NAMES);
}
