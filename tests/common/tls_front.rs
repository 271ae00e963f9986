//! TLS in front of a plain relay for the clients' tests: a CA and a server certificate made
//! with rcgen, and Debian's haproxy terminating TLS with them (what operators run today, and
//! the stand-in for the relay's native TLS until it is there).

use super::cluster::free_port;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A CA, a server certificate it signed (for `localhost` and `127.0.0.1`), and a second CA
/// that signed nothing here, as PEM files in a directory of their own.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// Another CA: trusting only it must refuse the server.
    pub other_ca: PathBuf,
    /// The server's certificate then its key, as haproxy's `crt` takes them.
    pub server_pem: PathBuf,
    /// The server's certificate and key apart, as the relay's `tls.cert_file` and
    /// `tls.key_file` take them.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "ringrelay-pki-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, ca_key) = make_ca("ringrelay test CA");
        let (other, _) = make_ca("another CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            server_pem: write(
                "server.pem",
                &format!("{}{}", cert.pem(), key.serialize_pem()),
            ),
            cert: write("cert.pem", &cert.pem()),
            key: write("key.pem", &key.serialize_pem()),
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// haproxy terminating TLS on a loopback port and passing the plain bytes to `backend`.
pub struct TlsFront {
    child: std::process::Child,
    pub port: u16,
    config: PathBuf,
}

impl TlsFront {
    /// On a free port; `None` when haproxy is not installed (a failure when
    /// RINGRELAY_REQUIRE_HAPROXY=1, as CI sets).
    pub fn start(pki: &Pki, backend: SocketAddr) -> Option<TlsFront> {
        Self::start_on(free_port(), pki, backend)
    }

    /// On `port` (to come back where it was after a stop).
    pub fn start_on(port: u16, pki: &Pki, backend: SocketAddr) -> Option<TlsFront> {
        let cfg = format!(
            "global\n    nbthread 1\n\
             defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    \
             timeout server 30s\n    timeout tunnel 1h\n\
             frontend tls\n    bind 127.0.0.1:{port} ssl crt {} alpn http/1.1\n    \
             default_backend relay\n\
             backend relay\n    server relay {backend}\n",
            pki.server_pem.display()
        );
        let config = pki.dir.join(format!("haproxy-{port}.cfg"));
        std::fs::write(&config, cfg).unwrap();
        let child = super::haproxy::spawn_haproxy(&config, port)?;
        Some(TlsFront {
            child,
            port,
            config,
        })
    }

    /// `wss://127.0.0.1:PORT` (checked against the certificate's IP address; no SNI).
    pub fn wss(&self) -> String {
        format!("wss://127.0.0.1:{}", self.port)
    }

    /// `wss://localhost:PORT` (checked against the certificate's DNS name, sent as SNI).
    pub fn wss_by_name(&self) -> String {
        format!("wss://localhost:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
