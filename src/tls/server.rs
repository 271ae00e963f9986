//! The rustls server configuration the TLS listener serves with, built once from `[tls]` on
//! the main thread (and again by a reload, which swaps it into each worker: new handshakes
//! use the new one, open connections keep theirs).

use crate::config::{CertPair, TlsConfig, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the TLS configuration cannot be built; each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.listen is set but no certificate is: set tls.cert_file and tls.key_file, or tls.certificates")]
    NoCertificate,
    #[error("tls: cannot read the certificate chain {path}: {reason}")]
    Chain { path: PathBuf, reason: String },
    #[error("tls: cannot read the private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("tls: the key {key} does not go with the certificate {cert}: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One certificate the listener presents, for /stats and /metrics.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The chain's file, as the config names it.
    pub file: String,
    /// The leaf's notAfter, in seconds since the Unix epoch (`None`: not found in it).
    pub not_after: Option<i64>,
}

/// What a worker serves TLS with: the rustls config and the certificates in it.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub certificates: Arc<[CertInfo]>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

/// The certificates in `cfg`, `cert_file`/`key_file` first.
fn pairs(cfg: &TlsConfig) -> Vec<CertPair> {
    let first = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Some(CertPair {
            cert_file: c.clone(),
            key_file: k.clone(),
        }),
        _ => None,
    };
    first
        .into_iter()
        .chain(cfg.certificates.iter().cloned())
        .collect()
}

fn load(pair: &CertPair, provider: &CryptoProvider) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let chain_err = |reason: String| TlsError::Chain {
        path: pair.cert_file.clone(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert_file)
        .map_err(|e| chain_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| chain_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(chain_err("no CERTIFICATE block in it".to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(&pair.key_file).map_err(|e| TlsError::Key {
        path: pair.key_file.clone(),
        reason: e.to_string(),
    })?;
    let info = CertInfo {
        file: pair.cert_file.to_string_lossy().into_owned(),
        not_after: super::not_after(&chain[0]),
    };
    let key =
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Mismatch {
            cert: pair.cert_file.clone(),
            key: pair.key_file.clone(),
            source,
        })?;
    Ok((key, info))
}

/// Builds the server configuration `cfg` describes: its certificates (the first one for
/// clients that name no server or an unknown one), versions from `min_version` up, ALPN
/// `http/1.1`, stateless session tickets from ring's rotating ticketer (a new key every six
/// hours, the one before still accepted) and the ring provider named explicitly, never the
/// process default.
pub fn server_config(cfg: &TlsConfig) -> Result<ServerTls, TlsError> {
    // ring, as the issue asks (aws-lc-rs needs cmake and a C toolchain to build); rustls
    // marks it deprecated only because ring has no post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pairs = pairs(cfg);
    if pairs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let mut keys = Vec::with_capacity(pairs.len());
    let mut infos = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        let (key, info) = load(pair, &provider)?;
        keys.push(Arc::new(key));
        infos.push(info);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { keys }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(ServerTls {
        config: Arc::new(config),
        certificates: infos.into(),
    })
}

/// Picks the certificate for the server name a client asks for (webpki's own matching,
/// wildcards included), else the first.
#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
}

impl BySni {
    fn for_name(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = ServerName::try_from(name).ok()?;
        self.keys.iter().find(|k| {
            k.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = match (self.keys.len(), hello.server_name()) {
            (2.., Some(name)) => self.for_name(name),
            _ => None,
        };
        named.or_else(|| self.keys.first()).cloned()
    }
}
