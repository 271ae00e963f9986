//! TLS on the admin listener (`admin_tls.*`): the same rustls server configuration as the
//! public TLS listener's (`server_config`: ring provider, ALPN `http/1.1`, rotating tickets,
//! client certificates against a CA), built from the admin keys. One certificate, no SNI:
//! scrapers reach the admin listener by one name. Versions follow `tls.min_version`.

use super::{server_config, ServerTls, TlsError};
use crate::config::{AdminTlsConfig, ClientAuth, TlsConfig, TlsVersion};

/// Why the admin TLS configuration cannot be built; each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum AdminTlsError {
    #[error("admin_tls.{0} is set but admin_tls.cert_file is not: the admin listener would stay plain; set both admin_tls.cert_file and admin_tls.key_file, or neither")]
    WithoutCert(&'static str),
    #[error("admin_tls.cert_file is set without admin_tls.key_file")]
    NoKey,
    #[error("admin_tls.client_auth = \"{0}\" needs admin_tls.client_ca_file, the CA scrapers' certificates chain to")]
    NoClientCa(&'static str),
    #[error("admin_tls: {0}")]
    Load(#[from] TlsError),
}

/// The admin listener's TLS configuration; `None` when `admin_tls.cert_file` is unset (the
/// admin listener is plain). Reads and checks every file now, as the public one does.
pub fn admin_config(
    admin: &AdminTlsConfig,
    min_version: TlsVersion,
) -> Result<Option<ServerTls>, AdminTlsError> {
    let Some(cert_file) = &admin.cert_file else {
        let set = [
            ("key_file", admin.key_file.is_some()),
            ("client_ca_file", admin.client_ca_file.is_some()),
            ("client_auth", admin.client_auth != ClientAuth::Off),
        ];
        return match set.iter().find(|(_, on)| *on) {
            Some((key, _)) => Err(AdminTlsError::WithoutCert(key)),
            None => Ok(None),
        };
    };
    let Some(key_file) = &admin.key_file else {
        return Err(AdminTlsError::NoKey);
    };
    if admin.client_auth != ClientAuth::Off && admin.client_ca_file.is_none() {
        return Err(AdminTlsError::NoClientCa(admin.client_auth.as_str()));
    }
    let tls = TlsConfig {
        listen: None,
        cert_file: Some(cert_file.clone()),
        key_file: Some(key_file.clone()),
        certificates: Vec::new(),
        min_version,
        client_ca_file: admin.client_ca_file.clone(),
        client_auth: admin.client_auth,
        client_grants: Vec::new(),
    };
    Ok(Some(server_config(&tls)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files(tag: &str) -> (PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("ringrelay-admintls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = crate::tls::testing::self_signed(&["admin.test"]);
        let (c, k) = (dir.join("admin.pem"), dir.join("admin.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn off_unless_cert_file_is_set_and_stray_keys_are_named() {
        let off = AdminTlsConfig::default();
        assert!(admin_config(&off, TlsVersion::V1_2).unwrap().is_none());
        let stray = AdminTlsConfig {
            client_auth: ClientAuth::Required,
            ..AdminTlsConfig::default()
        };
        let e = admin_config(&stray, TlsVersion::V1_2).unwrap_err();
        assert!(e.to_string().contains("admin_tls.client_auth"), "{e}");
    }

    #[test]
    fn builds_and_names_the_admin_keys_in_errors() {
        let (cert, key) = files("build");
        let mut cfg = AdminTlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            ..AdminTlsConfig::default()
        };
        let tls = admin_config(&cfg, TlsVersion::V1_3).unwrap().unwrap();
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        cfg.client_auth = ClientAuth::Required;
        let e = admin_config(&cfg, TlsVersion::V1_2).unwrap_err();
        assert!(e.to_string().contains("admin_tls.client_ca_file"), "{e}");
        cfg.client_ca_file = Some(cert.clone());
        assert!(admin_config(&cfg, TlsVersion::V1_2).is_ok());
        cfg.key_file = None;
        let e = admin_config(&cfg, TlsVersion::V1_2).unwrap_err();
        assert!(e.to_string().contains("admin_tls.key_file"), "{e}");
        cfg.key_file = Some(cert.with_extension("missing"));
        let e = admin_config(&cfg, TlsVersion::V1_2).unwrap_err();
        assert!(e.to_string().starts_with("admin_tls: "), "{e}");
        assert!(e.to_string().contains("admin.missing"), "{e}");
    }
}
