use super::*;

const ISTIO: &[u8] = include_bytes!("../../assets/clienthello-istio-openssl.bin");
const GNUTLS: &[u8] = include_bytes!("../../assets/clienthello-app-gnutls.bin");
const HBONE: &[u8] = include_bytes!("../../assets/clienthello-hbone.bin");

/// A minimal TLS 1.2-style ClientHello record with the given ALPN names and SNI.
fn hello(alpn: &[&str], sni: Option<&str>) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        ext.extend_from_slice(&[0x00, 0x00]);
        ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
        ext.extend_from_slice(n);
    }
    if !alpn.is_empty() {
        let list: Vec<u8> = alpn
            .iter()
            .flat_map(|a| std::iter::once(a.len() as u8).chain(a.bytes()))
            .collect();
        ext.extend_from_slice(&[0x00, 0x10]);
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.extend_from_slice(&[0x00, 0x00, 0x02, 0xc0, 0x2f, 0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    rec.extend_from_slice(&[0x01, 0x00]);
    rec.extend_from_slice(&(body.len() as u16).to_be_bytes());
    rec.extend_from_slice(&body);
    rec
}

fn class(bytes: &[u8], port: u16) -> Classification {
    classify_preface(bytes, port, false, &mut Vec::new()).expect("decided")
}

#[test]
fn every_istio_alpn_is_sidecar_mtls() {
    for alpn in ISTIO_ALPNS {
        let c = class(&hello(&["h2", alpn], None), 8000);
        assert_eq!(
            (c.security, c.mesh),
            (Security::IstioMtls, Mesh::Sidecar),
            "{alpn}"
        );
    }
}

#[test]
fn istio_alpn_is_a_prefix_rule() {
    let c = class(&hello(&["istio-future-protocol"], None), 80);
    assert_eq!(c.security, Security::IstioMtls);
    let c = class(&hello(&["h2", "isti"], None), 80);
    assert_eq!(c.security, Security::Tls);
}

#[test]
fn istio_outbound_sni_without_alpn_is_sidecar_mtls() {
    let c = class(
        &hello(&[], Some("outbound_.8000_._.httpbin.foo.svc.cluster.local")),
        8000,
    );
    assert_eq!((c.security, c.mesh), (Security::IstioMtls, Mesh::Sidecar));
}

#[test]
fn hbone_needs_port_15008_alpn_exactly_h2_and_no_sni() {
    let c = class(&hello(&["h2"], None), HBONE_PORT);
    assert_eq!((c.security, c.mesh), (Security::IstioMtls, Mesh::Ambient));
    assert_eq!(class(&hello(&["h2"], None), 443).security, Security::Tls);
    assert_eq!(
        class(&hello(&["h2"], Some("x.example")), HBONE_PORT).security,
        Security::Tls
    );
    assert_eq!(
        class(&hello(&["h2", "http/1.1"], None), HBONE_PORT).security,
        Security::Tls
    );
}

#[test]
fn real_hellos_from_the_captures() {
    let c = class(ISTIO, 8000);
    assert_eq!(
        (c.security, c.mesh, c.app),
        (Security::IstioMtls, Mesh::Sidecar, App::Tls)
    );
    let c = class(GNUTLS, 8000);
    assert_eq!((c.security, c.mesh), (Security::Tls, Mesh::None));
    let c = class(HBONE, HBONE_PORT);
    assert_eq!((c.security, c.mesh), (Security::IstioMtls, Mesh::Ambient));
}

#[test]
fn linkerd_alpn_is_application_tls_named_in_the_hint() {
    let c = class(&hello(&[LINKERD_ALPN], None), 4143);
    assert_eq!((c.security, c.app), (Security::Tls, App::Linkerd));
}

#[test]
fn plaintext_app_hints() {
    assert_eq!(
        class(b"GET /ip HTTP/1.1\r\nHost: x\r\n\r\n", 80).app,
        App::Http1
    );
    assert_eq!(class(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 80).app, App::H2c);
    let c = class(b"\x00\x00\x00\x01\x02hello-raw-tcp-protocol!!", 9000);
    assert_eq!((c.security, c.app), (Security::Plaintext, App::Other));
    assert_eq!(class(b"get / HTTP/1.1", 80).app, App::Other);
}

#[test]
fn waits_while_the_bytes_could_still_be_a_method_or_tls() {
    let mut s = Vec::new();
    for partial in [
        &b"G"[..],
        b"GE",
        b"GET",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"PRI * HTTP/2",
        b"\x16",
        b"\x16\x03",
        b"\x80\x2e",
    ] {
        assert_eq!(
            classify_preface(partial, 80, false, &mut s),
            Err(Incomplete),
            "{partial:?}"
        );
        assert!(
            classify_preface(partial, 80, true, &mut s).is_ok(),
            "{partial:?} when complete"
        );
    }
}

#[test]
fn truncated_hello_at_the_end_is_tls_of_unknown_kind() {
    let c = classify_preface(&ISTIO[..100], 8000, true, &mut Vec::new()).expect("complete");
    assert_eq!((c.security, c.app), (Security::Unknown, App::Tls));
}

#[test]
fn sslv2_hello_is_tls() {
    let c = class(&[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15], 443);
    assert!(c.sslv2);
    assert_eq!(c.security, Security::Tls);
}

#[test]
fn midstream_proves_plaintext_only_for_http() {
    let mut s = Vec::new();
    assert_eq!(
        classify_midstream(b"POST /x HTTP/1.1\r\n", 80, &mut s).security,
        Security::Plaintext
    );
    assert_eq!(
        classify_midstream(b"HTTP/1.1 200 OK\r\n", 80, &mut s).security,
        Security::Plaintext
    );
    let c = classify_midstream(&[0x17, 0x03, 0x03, 0x01, 0x00, 0xaa], 443, &mut s);
    assert_eq!((c.security, c.app), (Security::Unknown, App::Tls));
    assert_eq!(
        classify_midstream(b"\x01\x02binary", 9000, &mut s).security,
        Security::Unknown
    );
    assert_eq!(
        classify_midstream(ISTIO, 8000, &mut s).security,
        Security::IstioMtls
    );
}

#[test]
fn only_plaintext_and_tls_block_strict() {
    let blocking: Vec<Security> = Security::ALL
        .into_iter()
        .filter(|s| s.blocks_strict())
        .collect();
    assert_eq!(blocking, [Security::Tls, Security::Plaintext]);
}

/// Istio's metadata-exchange headers on a plaintext request say a sidecar chose plaintext; the
/// request is decided once its header block is complete, whatever the segmentation.
#[test]
fn plaintext_from_a_sidecar_is_told_by_its_metadata_headers() {
    let sidecar = b"GET /ip HTTP/1.1\r\nHost: httpbin\r\nX-Envoy-Peer-Metadata-Id: sidecar~10.244.1.12~sleep.foo~foo.svc.cluster.local\r\nx-envoy-peer-metadata: Ch4KDkFQUF9DT05UQUlORVJTEgwaCnNsZWVw\r\n\r\n";
    let plain = b"GET /ip HTTP/1.1\r\nHost: httpbin\r\nUser-Agent: curl/8.5\r\n\r\n";
    let mut s = Vec::new();
    for (bytes, mesh) in [(&sidecar[..], Mesh::Sidecar), (&plain[..], Mesh::None)] {
        for cut in 1..bytes.len() {
            let prefix = bytes.get(..cut).expect("prefix");
            assert_eq!(
                classify_preface(prefix, 80, false, &mut s),
                Err(Incomplete),
                "{cut}"
            );
        }
        let c = class(bytes, 80);
        assert_eq!(
            (c.security, c.app, c.mesh),
            (Security::Plaintext, App::Http1, mesh)
        );
        let m = classify_midstream(bytes, 80, &mut s);
        assert_eq!((m.security, m.mesh), (Security::Plaintext, mesh));
    }
    // the name in a value, a body or the request line proves nothing
    let decoy =
        b"GET /x-envoy-peer-metadata-id: HTTP/1.1\r\nReferer: x-envoy-peer-metadata-id: 1\r\n\r\n";
    assert_eq!(class(decoy, 80).mesh, Mesh::None);
}

/// The header scan as it was first written (one line at a time with `split`): the oracle the
/// word-at-a-time scan must agree with.
fn scan_head_oracle(bytes: &[u8]) -> (Http1Head, bool) {
    let mut head = Http1Head::default();
    let mut lines = bytes.split(|b| *b == b'\n').peekable();
    let _request_line = lines.next();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return (head, true);
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii();
        let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
        let is = |h: &str| name.len() == h.len() && name.eq_ignore_ascii_case(h.as_bytes());
        if ISTIO_METADATA_HEADERS.iter().any(|h| is(h)) {
            head.istio_metadata = true;
        } else if is("user-agent") {
            head.kube_probe = value.starts_with(b"kube-probe/");
        }
    }
    (head, false)
}

#[test]
fn find_byte_finds_the_first_at_every_offset() {
    for len in 0..40 {
        for at in 0..=len {
            let mut hay = vec![b'a'; len];
            if let Some(b) = hay.get_mut(at) {
                *b = b'\n';
            }
            // a second needle later and bytes that differ from the needle by one bit
            hay.extend_from_slice(b"\x0b\x8a\n");
            let want = hay.iter().position(|b| *b == b'\n');
            assert_eq!(find_byte(&hay, b'\n'), want, "{len} {at}");
        }
    }
    assert_eq!(find_byte(b"", b':'), None);
    assert_eq!(find_byte(&[0xff; 17], 0x7f), None);
    assert_eq!(find_byte(&[0x00; 17], 0x00), Some(0));
}

proptest::proptest! {
    /// Header blocks of lines built from the names looked for and others (any case, spaces
    /// around, with or without a colon, CRLF or LF), then junk, cut anywhere: the same answer as
    /// the oracle.
    #[test]
    fn scan_head_agrees_with_the_oracle(
        lines in proptest::collection::vec(
            (0usize..8, 0usize..4, proptest::bool::ANY, proptest::bool::ANY, 0usize..3, proptest::num::u64::ANY),
            0..8,
        ),
        end in proptest::bool::ANY,
        cut in 0usize..600,
        junk in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
    ) {
        const NAMES: [&str; 8] = [
            "User-Agent", "x-envoy-peer-metadata-id", "X-Envoy-Peer-Metadata", "Host",
            "x-envoy-peer-metadata-i", "user-agen", "", "Accept",
        ];
        const VALUES: [&str; 4] = ["kube-probe/1.30", " kube-probe/", "curl/8", ""];
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        for (name, value, spaces, colon, eol, case) in lines {
            if spaces {
                bytes.extend_from_slice(b" \t");
            }
            let name = NAMES.get(name).copied().unwrap_or_default();
            // each letter's case from a bit of `case`
            bytes.extend(name.bytes().enumerate().map(|(i, b)| {
                if case >> (i % 64) & 1 == 1 { b.to_ascii_uppercase() } else { b }
            }));
            if colon {
                bytes.extend_from_slice(b" :");
            }
            bytes.extend_from_slice(VALUES.get(value).copied().unwrap_or_default().as_bytes());
            bytes.extend_from_slice([&b"\r\n"[..], b"\n", b"\r"].get(eol).copied().unwrap_or_default());
        }
        if end {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(&junk);
        let bytes = bytes.get(..cut.min(bytes.len())).unwrap_or_default();
        proptest::prop_assert_eq!(scan_head(bytes), scan_head_oracle(bytes));
    }
}

#[test]
fn same_ignoring_case_is_eq_ignore_ascii_case_against_lowercase() {
    for lower in [&b"user-agent"[..], b"x-envoy-peer-metadata", b"a-z0@[`{"] {
        for i in 0..lower.len() {
            for b in 0..=255u8 {
                let mut bytes = lower.to_vec();
                bytes[i] = b;
                assert_eq!(
                    same_ignoring_case(&bytes, lower),
                    bytes.eq_ignore_ascii_case(lower),
                    "{bytes:?}"
                );
            }
        }
    }
    assert!(!same_ignoring_case(b"user-agen", b"user-agent"));
}
