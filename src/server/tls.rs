//! Counting what TLS handshakes on the TLS listener came to: each failure by its reason, each
//! success by the version and cipher suite it agreed on.

use crate::stats::{bump, CoreStats};
use crate::tls::{Failure, Negotiated};
use rustls::{CipherSuite as S, ProtocolVersion};

/// A finished handshake.
pub fn negotiated(stats: &CoreStats, n: Negotiated) {
    bump(&stats.tls_handshakes, 1);
    match n.version {
        Some(ProtocolVersion::TLSv1_3) => bump(&stats.tls_version_1_3, 1),
        Some(ProtocolVersion::TLSv1_2) => bump(&stats.tls_version_1_2, 1),
        _ => {}
    }
    let suite = match n.suite {
        Some(S::TLS13_AES_128_GCM_SHA256) => &stats.tls_cipher_tls13_aes_128_gcm_sha256,
        Some(S::TLS13_AES_256_GCM_SHA384) => &stats.tls_cipher_tls13_aes_256_gcm_sha384,
        Some(S::TLS13_CHACHA20_POLY1305_SHA256) => &stats.tls_cipher_tls13_chacha20_poly1305_sha256,
        Some(S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) => {
            &stats.tls_cipher_ecdhe_ecdsa_aes_128_gcm_sha256
        }
        Some(S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) => {
            &stats.tls_cipher_ecdhe_ecdsa_aes_256_gcm_sha384
        }
        Some(S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256) => {
            &stats.tls_cipher_ecdhe_ecdsa_chacha20_poly1305_sha256
        }
        Some(S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) => {
            &stats.tls_cipher_ecdhe_rsa_aes_128_gcm_sha256
        }
        Some(S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) => {
            &stats.tls_cipher_ecdhe_rsa_aes_256_gcm_sha384
        }
        Some(S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256) => {
            &stats.tls_cipher_ecdhe_rsa_chacha20_poly1305_sha256
        }
        // The ring provider offers no other suite.
        _ => return,
    };
    bump(suite, 1);
}

/// A failed handshake, by its reason. (A plain request to the TLS port is counted by its refusal, `Refusal::NotTls`.)
pub fn failed(stats: &CoreStats, f: Failure) {
    let c = match f {
        Failure::NoSharedCipher => &stats.tls_handshake_failed_no_shared_cipher,
        Failure::Version => &stats.tls_handshake_failed_version,
        Failure::BadClientCert => &stats.tls_handshake_failed_bad_client_cert,
        Failure::Timeout => &stats.tls_handshake_failed_timeout,
        Failure::Other => &stats.tls_handshake_failed_other,
    };
    bump(c, 1);
}
