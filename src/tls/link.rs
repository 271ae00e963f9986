//! TLS on the node-to-node link (`cluster.tls_*`, docs/cluster.md "TLS on the link"): mutual,
//! both sides checked against the cluster CA alone, TLS 1.3 only, ALPN [`LINK_ALPN`].
//!
//! * The owner (the internal listener) requires a client certificate the cluster CA signed:
//!   a connection without one never reaches the link's secret challenge.
//! * The carrier checks the owner's certificate for [`LinkTls::server_name`]: the IP address
//!   of the owner's registered `internal_listen` (an IP SAN) unless
//!   `cluster.tls_server_name` names one name for every node.
//! * One certificate per node serves both ways.
//!
//! Built once at start from the three files; no I/O but reading them.

use crate::config::ClusterConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The link's ALPN protocol: a node's internal listener is never mistaken for an HTTPS port,
/// nor the other way round.
pub const LINK_ALPN: &[u8] = b"ringrelay-link/2";

/// Why the link's TLS cannot be set up; each names the key and file at fault.
#[derive(Debug, thiserror::Error)]
pub enum LinkTlsError {
    #[error("{key} {path}: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cluster.tls_key_file {key} does not go with cluster.tls_cert_file {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{0} is not set: cluster.tls_cert_file, cluster.tls_key_file and cluster.tls_ca_file go together (all three for TLS on the node-to-node link, or none)")]
    Incomplete(&'static str),
    #[error("cluster.tls_server_name is set but the link has no TLS: set cluster.tls_cert_file, cluster.tls_key_file and cluster.tls_ca_file too")]
    NameWithoutTls,
    #[error("the reloaded config sets no cluster.tls_cert_file, cluster.tls_key_file and cluster.tls_ca_file, which would put the node-to-node link in clear; that takes a restart")]
    TurnedOff,
    #[error("cluster.tls_server_name {0:?} is not a DNS name or IP address")]
    ServerName(String),
    #[error("cluster TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What both sides of a link use: the listener's config, the carrier's, and the name a
/// carrier checks (`None`: the owner's address).
#[derive(Clone)]
pub struct LinkTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    pub fixed_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls")
            .field("fixed_name", &self.fixed_name)
            .finish_non_exhaustive()
    }
}

impl LinkTls {
    /// The name to check the certificate of the owner reached at `internal` (`host:port` as
    /// registered) for: `cluster.tls_server_name`, else the host, an IP address.
    pub fn server_name(&self, internal: &str) -> Option<ServerName<'static>> {
        if let Some(n) = &self.fixed_name {
            return Some(n.clone());
        }
        let addr: std::net::SocketAddr = internal.parse().ok()?;
        Some(ServerName::IpAddress(addr.ip().into()))
    }
}

/// The first of the three files left unset when some other one is set.
fn half_set(c: &ClusterConfig) -> Option<&'static str> {
    let files = [
        ("cluster.tls_cert_file", c.tls_cert_file.is_some()),
        ("cluster.tls_key_file", c.tls_key_file.is_some()),
        ("cluster.tls_ca_file", c.tls_ca_file.is_some()),
    ];
    let any = files.iter().any(|(_, set)| *set);
    files.iter().find(|(_, set)| any && !set).map(|(k, _)| *k)
}

fn file_error(key: &'static str, path: &Path, reason: impl ToString) -> LinkTlsError {
    LinkTlsError::File {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, LinkTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no CERTIFICATE block in it"));
    }
    Ok(certs)
}

/// The link's TLS as `cluster.tls_*` describe it; `Ok(None)` when they are not set (the link
/// stays in clear, as before).
pub fn link_tls(c: &ClusterConfig) -> Result<Option<LinkTls>, LinkTlsError> {
    let (Some(cert), Some(key), Some(ca)) = (&c.tls_cert_file, &c.tls_key_file, &c.tls_ca_file)
    else {
        return match half_set(c) {
            // Half of it would leave the link in clear while the operator believes otherwise.
            Some(missing) => Err(LinkTlsError::Incomplete(missing)),
            None if !c.tls_server_name.is_empty() => Err(LinkTlsError::NameWithoutTls),
            None => Ok(None),
        };
    };
    let chain = certificates("cluster.tls_cert_file", cert)?;
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error("cluster.tls_key_file", key, e))?;
    let mut roots = RootCertStore::empty();
    for c in certificates("cluster.tls_ca_file", ca)? {
        roots
            .add(c)
            .map_err(|e| file_error("cluster.tls_ca_file", ca, e))?;
    }
    let mismatch = |e: rustls::Error| LinkTlsError::Mismatch {
        cert: cert.clone(),
        key: key.clone(),
        reason: e.to_string(),
    };
    let provider = Arc::new(super::provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone().into(),
        provider.clone(),
    )
    .build()
    .map_err(|e| file_error("cluster.tls_ca_file", ca, e))?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private.clone_key())
        .map_err(mismatch)?;
    server.alpn_protocols = vec![LINK_ALPN.to_vec()];
    // Links are few and long: no tickets to keep or rotate.
    server.send_tls13_tickets = 0;
    let client =
        super::client::mutual_config(roots, chain, private, LINK_ALPN).map_err(mismatch)?;
    let fixed_name = match c.tls_server_name.as_str() {
        "" => None,
        n => Some(
            ServerName::try_from(n.to_string())
                .map_err(|_| LinkTlsError::ServerName(n.to_string()))?,
        ),
    };
    Ok(Some(LinkTls {
        server: Arc::new(server),
        client,
        fixed_name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, ServerConnection};

    struct Ca {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let (cert, key) = crate::tls::testing::ca(name);
        Ca { cert, key }
    }

    /// A node's files in `dir`: its certificate for `names` signed by `signer`, its key, and
    /// `trust` as its cluster CA.
    fn node(dir: &Path, tag: &str, names: &[&str], signer: &Ca, trust: &Ca) -> ClusterConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &signer.cert, &signer.key)
            .unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(format!("{tag}-{name}"));
            std::fs::write(&p, text).unwrap();
            Some(p)
        };
        ClusterConfig {
            tls_cert_file: write("cert.pem", &cert.pem()),
            tls_key_file: write("key.pem", &key.serialize_pem()),
            tls_ca_file: write("ca.pem", &trust.cert.pem()),
            ..ClusterConfig::default()
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringrelay-link-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Runs a handshake in memory: `Ok` when both sides finished, else the first error.
    fn handshake(
        carrier: &LinkTls,
        owner: &LinkTls,
        name: ServerName<'static>,
    ) -> Result<(), rustls::Error> {
        let mut c = ClientConnection::new(carrier.client.clone(), name)?;
        let mut s = ServerConnection::new(owner.server.clone())?;
        for _ in 0..6 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(s.alpn_protocol(), Some(LINK_ALPN));
        assert!(
            s.peer_certificates().is_some(),
            "the carrier's certificate was checked"
        );
        Ok(())
    }

    #[test]
    fn off_unless_set_and_half_of_it_is_an_error() {
        assert!(link_tls(&ClusterConfig::default()).unwrap().is_none());
        let half = ClusterConfig {
            tls_cert_file: Some("/x/node.pem".into()),
            tls_ca_file: Some("/x/ca.pem".into()),
            ..ClusterConfig::default()
        };
        let e = link_tls(&half).unwrap_err().to_string();
        assert!(e.starts_with("cluster.tls_key_file is not set"), "{e}");
        let name_only = ClusterConfig {
            tls_server_name: "nodes.cluster".into(),
            ..ClusterConfig::default()
        };
        let e = link_tls(&name_only).unwrap_err().to_string();
        assert!(e.contains("the link has no TLS"), "{e}");
    }

    #[test]
    fn two_nodes_of_one_ca_shake_hands_by_ip_and_by_fixed_name() {
        let d = tmpdir("ok");
        let cluster = ca("cluster CA");
        let a = link_tls(&node(
            &d,
            "a",
            &["127.0.0.1", "nodes.cluster"],
            &cluster,
            &cluster,
        ))
        .unwrap()
        .unwrap();
        let b = link_tls(&node(
            &d,
            "b",
            &["127.0.0.1", "nodes.cluster"],
            &cluster,
            &cluster,
        ))
        .unwrap()
        .unwrap();
        let by_ip = a.server_name("127.0.0.1:7000").unwrap();
        assert!(matches!(by_ip, ServerName::IpAddress(_)));
        handshake(&a, &b, by_ip).unwrap();
        let mut named = node(&d, "c", &["nodes.cluster"], &cluster, &cluster);
        named.tls_server_name = "nodes.cluster".into();
        let c = link_tls(&named).unwrap().unwrap();
        let name = c.server_name("10.9.9.9:7000").unwrap();
        assert_eq!(name, ServerName::try_from("nodes.cluster").unwrap());
        handshake(&c, &a, name).unwrap();
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_name_checked_is_the_registered_ip_unless_one_is_fixed() {
        let d = tmpdir("names");
        let cluster = ca("cluster CA");
        let mut c = node(&d, "n", &["127.0.0.1"], &cluster, &cluster);
        let by_ip = link_tls(&c).unwrap().unwrap();
        let ip = |s: &str| {
            Some(ServerName::IpAddress(
                s.parse::<std::net::IpAddr>().unwrap().into(),
            ))
        };
        assert_eq!(by_ip.server_name("10.0.1.5:7000"), ip("10.0.1.5"));
        assert_eq!(by_ip.server_name("[::1]:7000"), ip("::1"));
        // Not an address: nothing to check it against (the carrier refuses to carry).
        assert_eq!(by_ip.server_name("relay-1:7000"), None);
        c.tls_server_name = "nodes.cluster".into();
        let fixed = link_tls(&c).unwrap().unwrap();
        let name = Some(ServerName::try_from("nodes.cluster").unwrap());
        assert_eq!(fixed.server_name("relay-1:7000"), name);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_certificate_of_another_ca_or_for_another_address_is_refused() {
        let d = tmpdir("refused");
        let cluster = ca("cluster CA");
        let other = ca("someone else's CA");
        let owner = link_tls(&node(&d, "o", &["127.0.0.1"], &cluster, &cluster))
            .unwrap()
            .unwrap();
        // A carrier whose certificate another CA signed: the owner refuses it.
        let stranger = link_tls(&node(&d, "s", &["127.0.0.1"], &other, &cluster))
            .unwrap()
            .unwrap();
        let ip = owner.server_name("127.0.0.1:1").unwrap();
        assert!(matches!(
            handshake(&stranger, &owner, ip.clone()),
            Err(rustls::Error::InvalidCertificate(_))
        ));
        // An owner posing with another CA's certificate: the carrier refuses it.
        let fake_owner = link_tls(&node(&d, "f", &["127.0.0.1"], &other, &cluster))
            .unwrap()
            .unwrap();
        let carrier = link_tls(&node(&d, "c", &["127.0.0.1"], &cluster, &cluster))
            .unwrap()
            .unwrap();
        assert!(matches!(
            handshake(&carrier, &fake_owner, ip),
            Err(rustls::Error::InvalidCertificate(_))
        ));
        // The cluster's own certificate, but for another node's address.
        let elsewhere = carrier.server_name("127.0.0.2:1").unwrap();
        assert!(matches!(
            handshake(&carrier, &owner, elsewhere),
            Err(rustls::Error::InvalidCertificate(_))
        ));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn errors_name_the_key_and_file() {
        let d = tmpdir("errors");
        let cluster = ca("cluster CA");
        let good = node(&d, "g", &["127.0.0.1"], &cluster, &cluster);
        let mut missing = good.clone();
        missing.tls_ca_file = Some(d.join("nope.pem"));
        let e = link_tls(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cluster.tls_ca_file") && e.contains("nope.pem"),
            "{e}"
        );
        let mut crossed = good.clone();
        crossed.tls_key_file = node(&d, "x", &["127.0.0.1"], &cluster, &cluster).tls_key_file;
        let e = link_tls(&crossed).unwrap_err().to_string();
        assert!(e.contains("does not go with"), "{e}");
        let mut not_a_cert = good.clone();
        not_a_cert.tls_cert_file = good.tls_key_file.clone();
        let e = link_tls(&not_a_cert).unwrap_err().to_string();
        assert!(e.contains("cluster.tls_cert_file"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }
}
