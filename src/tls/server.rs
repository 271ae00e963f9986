//! The rustls server configuration the TLS listener serves with, built once from `[tls]` on
//! the main thread (and again by a reload, which swaps it into each worker: new handshakes
//! use the new one, open connections keep theirs).

use crate::config::{CertPair, ClientAuth, TlsConfig, TlsVersion};
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
    #[error("tls.cert_file and tls.key_file go together: {0} is set without the other")]
    HalfPair(&'static str),
    #[error(
        "tls.client_auth = \"{0}\" needs tls.client_ca_file, the CA client certificates chain to"
    )]
    NoClientCa(&'static str),
    #[error("tls: cannot use the client CA file {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
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
fn pairs(cfg: &TlsConfig) -> Result<Vec<CertPair>, TlsError> {
    let first = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Some(CertPair {
            cert_file: c.clone(),
            key_file: k.clone(),
        }),
        (Some(_), None) => return Err(TlsError::HalfPair("tls.cert_file")),
        (None, Some(_)) => return Err(TlsError::HalfPair("tls.key_file")),
        (None, None) => None,
    };
    let all: Vec<CertPair> = first
        .into_iter()
        .chain(cfg.certificates.iter().cloned())
        .collect();
    if all.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(all)
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
    let provider = Arc::new(super::provider());
    let pairs = pairs(cfg)?;
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
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let mut config = match client_verifier(cfg, provider)? {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(Arc::new(BySni { keys }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    // A binary upgrade carries a connection's traffic keys to the new process
    // (`runtime::tls::TlsSession::carry`, docs/upgrade.md); nothing else extracts them.
    config.enable_secret_extraction = true;
    Ok(ServerTls {
        config: Arc::new(config),
        certificates: infos.into(),
    })
}

/// The verifier of client certificates `tls.client_auth` asks for, against the CAs in
/// `tls.client_ca_file` (`None`: not asked for).
fn client_verifier(
    cfg: &TlsConfig,
    provider: Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    if cfg.client_auth == ClientAuth::Off {
        return Ok(None);
    }
    let Some(path) = &cfg.client_ca_file else {
        return Err(TlsError::NoClientCa(cfg.client_auth.as_str()));
    };
    let fail = |reason: String| TlsError::ClientCa {
        path: path.clone(),
        reason,
    };
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no CERTIFICATE block in it".to_string()));
    }
    let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
    if cfg.client_auth == ClientAuth::Optional {
        b = b.allow_unauthenticated();
    }
    b.build().map(Some).map_err(|e| fail(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A self-signed certificate for `names`, written as PEM files in a fresh directory.
    fn cert_files(dir: &std::path::Path, tag: &str, names: &[&str]) -> CertPair {
        let (cert, key) = crate::tls::testing::self_signed(names);
        let pair = CertPair {
            cert_file: dir.join(format!("{tag}.pem")),
            key_file: dir.join(format!("{tag}.key")),
        };
        std::fs::File::create(&pair.cert_file)
            .unwrap()
            .write_all(cert.pem().as_bytes())
            .unwrap();
        std::fs::File::create(&pair.key_file)
            .unwrap()
            .write_all(key.serialize_pem().as_bytes())
            .unwrap();
        pair
    }

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ringrelay-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn config(pairs: &[CertPair]) -> TlsConfig {
        TlsConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            cert_file: None,
            key_file: None,
            certificates: pairs.to_vec(),
            min_version: TlsVersion::V1_2,
            client_ca_file: None,
            client_auth: ClientAuth::Off,
            client_grants: Vec::new(),
        }
    }

    #[test]
    fn builds_with_alpn_tickets_and_every_certificate() {
        let d = tmpdir("build");
        let a = cert_files(&d, "a", &["a.test"]);
        let b = cert_files(&d, "b", &["b.test", "*.wild.test"]);
        let tls = server_config(&config(&[a.clone(), b])).unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(tls.config.ticketer.enabled());
        assert_eq!(tls.certificates.len(), 2);
        assert_eq!(tls.certificates[0].file, a.cert_file.to_string_lossy());
        assert!(tls.certificates[0].not_after.is_some());
    }

    #[test]
    fn sni_picks_by_name_wildcards_included_and_falls_back_to_the_first() {
        let d = tmpdir("sni");
        let provider = super::super::provider();
        let load_key = |p: &CertPair| Arc::new(load(p, &provider).unwrap().0);
        let a = load_key(&cert_files(&d, "a", &["a.test"]));
        let b = load_key(&cert_files(&d, "b", &["b.test", "*.wild.test"]));
        let sni = BySni {
            keys: vec![a.clone(), b.clone()],
        };
        let same = |x: Option<&Arc<CertifiedKey>>, y: &Arc<CertifiedKey>| {
            x.is_some_and(|x| Arc::ptr_eq(x, y))
        };
        assert!(same(sni.for_name("a.test"), &a));
        assert!(same(sni.for_name("b.test"), &b));
        assert!(same(sni.for_name("x.wild.test"), &b));
        assert!(sni.for_name("unknown.test").is_none());
        assert!(
            sni.for_name("x.y.wild.test").is_none(),
            "a wildcard covers one label"
        );
    }

    #[test]
    fn errors_name_the_file_or_key_at_fault() {
        let d = tmpdir("errors");
        let a = cert_files(&d, "a", &["a.test"]);
        let b = cert_files(&d, "b", &["b.test"]);
        let crossed = CertPair {
            cert_file: a.cert_file.clone(),
            key_file: b.key_file.clone(),
        };
        let e = server_config(&config(&[crossed])).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("a.pem"), "{e}");
        let missing = CertPair {
            cert_file: d.join("nope.pem"),
            key_file: a.key_file.clone(),
        };
        let e = server_config(&config(&[missing])).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let e = server_config(&config(&[])).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate), "{e}");
        let mut no_ca = config(std::slice::from_ref(&a));
        no_ca.client_auth = ClientAuth::Required;
        let e = server_config(&no_ca).unwrap_err();
        assert!(e.to_string().contains("tls.client_ca_file"), "{e}");
        no_ca.client_ca_file = Some(a.key_file.clone());
        let e = server_config(&no_ca).unwrap_err();
        assert!(matches!(e, TlsError::ClientCa { .. }), "{e}");
        no_ca.client_ca_file = Some(a.cert_file.clone());
        assert!(
            server_config(&no_ca).is_ok(),
            "a certificate as its own client CA"
        );
        let mut half = config(&[a]);
        half.cert_file = Some(d.join("x.pem"));
        let e = server_config(&half).unwrap_err();
        assert!(e.to_string().contains("tls.cert_file"), "{e}");
    }
}
