//! The record layer against rustls itself: a rustls client and server handshake in memory,
//! the server's keys are extracted, and our layer then talks to the rustls client both ways,
//! for each suite and both versions.

use super::*;
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConnection, ServerConnection, SupportedCipherSuite};
use std::io::{Read, Write};
use std::sync::Arc;

fn suite(s: CipherSuite) -> SupportedCipherSuite {
    crate::tls::provider()
        .cipher_suites
        .into_iter()
        .find(|c| c.suite() == s)
        .expect("suite in the provider")
}

const SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Moves everything `from` has to send into `to`.
fn pass<A: rustls::SideData, B: rustls::SideData>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// A rustls client and our layer holding the keys its server had after the handshake.
fn pair(s: CipherSuite) -> (ClientConnection, RecordLayer) {
    let (cert, key) = crate::tls::testing::self_signed(&["localhost"]);
    let mut provider = crate::tls::provider();
    provider.cipher_suites = vec![suite(s)];
    let provider = Arc::new(provider);
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    server.enable_secret_extraction = true;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let mut sv = ServerConnection::new(Arc::new(server)).unwrap();
    for _ in 0..4 {
        pass(&mut c, &mut sv);
        pass(&mut sv, &mut c);
    }
    assert!(!c.is_handshaking() && !sv.is_handshaking());
    // Some traffic under rustls first, so the sequence numbers carried are not zero.
    c.writer().write_all(b"before").unwrap();
    pass(&mut c, &mut sv);
    let mut b = [0u8; 6];
    sv.reader().read_exact(&mut b).unwrap();
    sv.writer().write_all(b"hello").unwrap();
    pass(&mut sv, &mut c);
    let mut b = [0u8; 5];
    c.reader().read_exact(&mut b).unwrap();
    let version = sv.protocol_version().unwrap();
    let negotiated = sv.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(negotiated, s);
    let secrets = sv.dangerous_extract_secrets().unwrap();
    let layer = RecordLayer::from_extracted(version, negotiated, secrets).unwrap();
    // And through a carry, as the next upgrade does.
    let carried = layer.carry().unwrap();
    let layer = RecordLayer::from_carried(&carried.0).unwrap();
    (c, layer)
}

/// What the client sent, as ciphertext.
fn from_client(c: &mut ClientConnection, data: &[u8]) -> Vec<u8> {
    c.writer().write_all(data).unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    wire
}

fn drain(layer: &mut RecordLayer, room: usize) -> Result<Vec<u8>, RecordError> {
    let mut got = Vec::new();
    while let Some(n) = layer.read_plain(room, &mut |b| got.extend_from_slice(b))? {
        if n == 0 {
            break;
        }
    }
    Ok(got)
}

fn to_client(layer: &mut RecordLayer, c: &mut ClientConnection) -> Vec<u8> {
    let wire = layer.pending().to_vec();
    layer.sent(wire.len());
    let mut rest = &wire[..];
    let mut got = Vec::new();
    while !rest.is_empty() {
        c.read_tls(&mut rest).unwrap();
        c.process_new_packets().unwrap();
        let _ = c.reader().read_to_end(&mut got);
    }
    got
}

#[test]
fn talks_to_a_rustls_client_both_ways_for_every_suite() {
    for s in SUITES {
        let (mut c, mut layer) = pair(s);
        for round in 0..3 {
            let msg: Vec<u8> = (0..40_000 + round)
                .map(|i| (i * 31 + round) as u8)
                .collect();
            let wire = from_client(&mut c, &msg);
            layer.ingest(&wire);
            assert_eq!(drain(&mut layer, 1000).unwrap(), msg, "{s:?} in");
            let answer: Vec<u8> = msg.iter().rev().copied().collect();
            let (a, b) = answer.split_at(123);
            let taken = layer.seal(&[IoSlice::new(a), IoSlice::new(b)]).unwrap();
            assert_eq!(taken, answer.len());
            assert_eq!(to_client(&mut layer, &mut c), answer, "{s:?} out");
            assert!(layer.at_rest());
        }
        // The client's close_notify is the end.
        c.send_close_notify();
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        layer.ingest(&wire);
        assert_eq!(layer.read_plain(10, &mut |_| {}), Ok(Some(0)));
        // Ours reaches the client as a clean end.
        let (mut c, mut layer) = pair(s);
        layer.close_notify();
        to_client(&mut layer, &mut c);
        let mut b = [0u8; 1];
        assert_eq!(c.reader().read(&mut b).unwrap(), 0, "{s:?} close_notify");
    }
}

/// Records cut at every byte boundary, and many records in one read, come out whole.
#[test]
fn reads_cut_anywhere_come_out_whole() {
    for s in [SUITES[0], SUITES[2], SUITES[3], SUITES[5]] {
        let (mut c, mut layer) = pair(s);
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for i in 0..5u8 {
            let m = vec![i; 10 + usize::from(i) * 7];
            wire.extend(from_client(&mut c, &m));
            sent.extend(m);
        }
        for cut in 0..wire.len() {
            let (mut c2, mut l2) = pair(s);
            let mut w2 = Vec::new();
            for i in 0..5u8 {
                w2.extend(from_client(&mut c2, &vec![i; 10 + usize::from(i) * 7]));
            }
            let mut got = Vec::new();
            l2.ingest(&w2[..cut]);
            got.extend(drain(&mut l2, 7).unwrap());
            l2.ingest(&w2[cut..]);
            got.extend(drain(&mut l2, 7).unwrap());
            assert_eq!(got, sent, "{s:?} cut at {cut}");
            if cut > 40 {
                break;
            }
        }
        // Byte by byte, all of it.
        let mut got = Vec::new();
        for b in &wire {
            layer.ingest(std::slice::from_ref(b));
            got.extend(drain(&mut layer, 64).unwrap());
        }
        assert_eq!(got, sent, "{s:?} byte by byte");
    }
}

#[test]
fn a_tampered_record_is_refused_with_an_alert() {
    for s in [SUITES[0], SUITES[3]] {
        let (mut c, mut layer) = pair(s);
        let mut wire = from_client(&mut c, b"a message");
        let last = wire.len() - 3;
        wire[last] ^= 1;
        layer.ingest(&wire);
        assert_eq!(drain(&mut layer, 100), Err(RecordError::BadRecordMac));
        // Sticky, and the alert is queued for the client.
        assert_eq!(drain(&mut layer, 100), Err(RecordError::BadRecordMac));
        assert!(!layer.pending().is_empty());
        let wire = layer.pending().to_vec();
        let r = c.read_tls(&mut &wire[..]).and_then(|_| {
            c.process_new_packets()
                .map(|_| ())
                .map_err(std::io::Error::other)
        });
        assert!(r.is_err(), "{s:?}: the client hears a fatal alert");
    }
}

#[test]
fn an_oversized_record_is_refused_on_its_header() {
    for s in [SUITES[0], SUITES[3]] {
        let (_c, mut layer) = pair(s);
        // A header announcing more than the limit, with none of the body: refused at once,
        // nothing waited for or allocated.
        layer.ingest(&[23, 3, 3, 0xff, 0xff]);
        assert_eq!(drain(&mut layer, 100), Err(RecordError::Oversized));
        let (_c, mut layer) = pair(s);
        let max = if s == SUITES[0] {
            MAX_CIPHERTEXT_13
        } else {
            MAX_CIPHERTEXT_12
        };
        let len = (max + 1) as u16;
        layer.ingest(&[23, 3, 3, (len >> 8) as u8, len as u8]);
        assert_eq!(drain(&mut layer, 100), Err(RecordError::Oversized));
        // At the limit it waits for the body instead.
        let (_c, mut layer) = pair(s);
        let len = max as u16;
        layer.ingest(&[23, 3, 3, (len >> 8) as u8, len as u8]);
        assert_eq!(layer.read_plain(100, &mut |_| {}), Ok(None));
    }
}

#[test]
fn a_key_update_ends_with_a_restart_and_tls13_padding_is_stripped() {
    let (mut c, mut layer) = pair(SUITES[0]);
    c.refresh_traffic_keys().unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    layer.ingest(&wire);
    let e = drain(&mut layer, 100).unwrap_err();
    assert_eq!(e, RecordError::KeyUpdate);
    assert!(e.wants_restart());
    // No alert for it: the relay says 1012 under the current key.
    assert!(layer.pending().is_empty());
    assert!(layer.seal(&[IoSlice::new(b"bye")]).is_ok());
    assert_eq!(to_client(&mut layer, &mut c), b"bye");
}

#[test]
fn sequence_numbers_never_wrap() {
    let (_c, mut layer) = pair(SUITES[2]);
    layer.tx.seq = u64::MAX;
    assert_eq!(
        layer.seal(&[IoSlice::new(b"x")]),
        Err(RecordError::Exhausted)
    );
    let (mut c, mut layer) = pair(SUITES[0]);
    layer.rx.seq = AES_GCM_RECORDS;
    layer.ingest(&from_client(&mut c, b"x"));
    assert_eq!(drain(&mut layer, 10), Err(RecordError::Exhausted));
}

#[test]
fn carried_keys_are_checked_and_never_printed() {
    let (_c, layer) = pair(SUITES[1]);
    let carried = layer.carry().unwrap();
    let shown = format!("{carried:?}");
    assert!(!shown.contains(&format!("{:?}", &carried.0[6..10])));
    for cut in 0..carried.0.len() {
        assert!(RecordLayer::from_carried(&carried.0[..cut]).is_err());
    }
    let mut other = carried.0.to_vec();
    other[4] = 9;
    assert_eq!(
        RecordLayer::from_carried(&other).err(),
        Some(CarryError::Suite)
    );
    // Not at rest: nothing to carry.
    let (mut c, mut layer) = pair(SUITES[0]);
    let wire = from_client(&mut c, b"pending");
    layer.ingest(&wire[..wire.len() - 1]);
    assert!(layer.carry().is_none());
}
