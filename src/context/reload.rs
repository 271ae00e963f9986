//! Live reload (SIGHUP) on a worker: the message the main thread sends each worker with what
//! a reload changes, built and checked whole before any worker sees it, and the worker's side,
//! which swaps its own copies in one step between two of its tasks. Connections already open
//! keep what they read when they started (their message and byte limits, their decoder's
//! bounds); everything that starts afterwards reads the new config.

use super::Core;
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::tls::{AdminTlsError, LinkTls, LinkTlsError, ServerTls, TlsError};
use std::rc::Rc;
use std::sync::Arc;

/// Everything a reload hands the workers. Built on the main thread, so that a secret file
/// that cannot be read or a certificate that does not load refuses the reload before any
/// worker changed. Add to it anything else a reload replaces, and swap it in
/// [`Core::apply`].
pub struct Reload {
    /// The new config, with every key a reload cannot change at its running value.
    pub config: Config,
    /// The token checker the new config describes; `None`: auth off.
    pub auth: Option<Arc<Authenticator>>,
    /// The TLS server config (certificates, versions) new handshakes use; `None` when the
    /// relay has no TLS listener.
    pub tls: Option<ServerTls>,
    /// The admin listener's TLS (`admin_tls.*`); `None`: plain.
    pub admin_tls: Option<ServerTls>,
    /// The node-to-node link's TLS (`cluster.tls_*`) new links use; `None`: in clear.
    pub cluster_tls: Option<LinkTls>,
}

/// Why a reload was refused before any worker heard of it.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The config did not load or validate, or a secret file could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate or key of `tls.*` did not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A certificate or key of `admin_tls.*` did not load.
    #[error(transparent)]
    AdminTls(#[from] AdminTlsError),
    /// The link's certificate, key or CA (`cluster.tls_*`) did not load, or the reload would
    /// put the link back in clear.
    #[error(transparent)]
    LinkTls(#[from] LinkTlsError),
}

/// One reload for one worker: `done` gets the worker's index once it has swapped.
pub struct ReloadOrder {
    pub reload: Arc<Reload>,
    pub done: flume::Sender<usize>,
}

/// A reload ready to send, and what it leaves as it was.
pub struct Prepared {
    pub reload: Reload,
    /// Keys the new config changed that a reload cannot apply (`config::FIXED_KEYS`), left
    /// at their running value.
    pub kept: Vec<&'static str>,
}

/// Checks `new` (already loaded and validated as a whole) against the `running` config and
/// reads what it names (the token secrets), so that nothing fails after the workers are told.
///
/// A config that would turn auth off on a relay that has it on is refused: removing the last
/// key while rotating would otherwise let everyone in without a word. Turning auth off takes a
/// restart; turning it on (every new connection then needs a token) is live. The same holds
/// for TLS on the admin listener: turning it on is live, putting it back in clear is not.
pub fn prepare(running: &Config, mut new: Config) -> Result<Prepared, PrepareError> {
    let kept = new.keep_fixed(running);
    let auth = Authenticator::from_config(&new)?.map(Arc::new);
    // `tls.listen` is kept, so the new config has a TLS listener exactly when the running
    // one does; the certificates are read and checked now, as at start.
    let tls = match new.tls.listen {
        Some(_) => Some(crate::tls::server_config(&new.tls)?),
        None => None,
    };
    let admin_tls = crate::tls::admin_config(&new.admin_tls, new.tls.min_version)?;
    if admin_tls.is_none() && running.admin_tls.cert_file.is_some() {
        return Err(PrepareError::Config(ConfigError::Invalid {
            key: "admin_tls.cert_file".to_string(),
            value: "\"\"".to_string(),
            reason: "the reloaded config unsets admin_tls.cert_file, which would put the \
                     admin listener back in clear; that takes a restart"
                .to_string(),
            origin: "the reloaded config".to_string(),
        }));
    }
    let cluster_tls = link_tls(running, &new)?;
    if auth.is_none() && auth_on(running) {
        return Err(PrepareError::Config(ConfigError::Invalid {
            key: "auth.keys".to_string(),
            value: "[]".to_string(),
            reason: "the reloaded config sets no token secret (auth.jwt_secret, \
                     auth.jwt_secret_file or auth.keys), no auth.api_keys_file and no \
                     tls.client_grants, which \
                     would turn auth off; that takes a restart"
                .to_string(),
            origin: "the reloaded config".to_string(),
        }));
    }
    Ok(Prepared {
        reload: Reload {
            config: new,
            auth,
            tls,
            admin_tls,
            cluster_tls,
        },
        kept,
    })
}

/// The link's TLS `new` describes, read now (cluster mode only). Turning it off is refused,
/// as turning auth off is: a config that lost its `cluster.tls_*` lines would otherwise put
/// every new link, tokens included, in clear without a word. Turning it on is live.
fn link_tls(running: &Config, new: &Config) -> Result<Option<LinkTls>, LinkTlsError> {
    if new.cluster.redis_url.is_none() {
        return Ok(None);
    }
    let tls = crate::tls::link_tls(&new.cluster)?;
    if tls.is_none() && running.cluster.tls_cert_file.is_some() {
        return Err(LinkTlsError::TurnedOff);
    }
    Ok(tls)
}

/// Whether `cfg` turns auth on: any token secret (without reading the files) or certificate
/// grant.
fn auth_on(cfg: &Config) -> bool {
    let a = &cfg.auth;
    a.jwt_secret.is_some()
        || a.jwt_secret_file.is_some()
        || !a.keys.is_empty()
        || a.api_keys_file.is_some()
        || !cfg.tls.client_grants.is_empty()
}

impl Core {
    /// Puts `r` in force on this worker, all of it at once: no task runs between the swaps.
    pub fn apply(&self, r: &Reload) {
        *self.live.borrow_mut() = Rc::new(r.config.clone());
        *self.auth.borrow_mut() = r.auth.as_deref().cloned().map(Rc::new);
        self.ip_limits.reconfigure(&r.config.limits);
        if let Some(tls) = &r.tls {
            self.set_tls(tls.clone());
        }
        self.set_admin_tls(r.admin_tls.clone());
        self.cluster_local.set_tls(r.cluster_tls.clone());
    }
}

/// Runs on every worker: applies each reload as it comes and says so.
pub async fn receive_reloads(core: Rc<Core>, rx: flume::Receiver<ReloadOrder>) {
    while let Ok(order) = rx.recv_async().await {
        core.apply(&order.reload);
        let _ = order.done.send(core.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secret() -> Config {
        Config {
            auth: crate::config::AuthConfig {
                jwt_secret: Some("0123456789abcdef0123456789abcdef-reload".into()),
                ..Default::default()
            },
            ..Config::default()
        }
    }

    #[test]
    fn turning_auth_off_is_refused_and_on_is_not() {
        let Err(PrepareError::Config(err)) = prepare(&with_secret(), Config::default()) else {
            panic!("turning auth off was not refused");
        };
        assert_eq!(err.key(), Some("auth.keys"));
        assert!(err.to_string().contains("restart"), "{err}");
        let on = prepare(&Config::default(), with_secret()).ok().unwrap();
        assert!(on.reload.auth.is_some());
    }

    #[test]
    fn grants_alone_keep_auth_on_and_their_removal_is_refused() {
        let grant = crate::config::ClientGrant {
            subject: "device-1".into(),
            sid: "s1".into(),
            role: None,
        };
        let mut granted = Config::default();
        granted.tls.client_grants = vec![grant];
        let on = prepare(&Config::default(), granted.clone()).ok().unwrap();
        assert_eq!(on.reload.auth.map(|a| a.grants().len()), Some(1));
        let Err(PrepareError::Config(err)) = prepare(&granted, Config::default()) else {
            panic!("removing the last grant was not refused");
        };
        assert!(err.to_string().contains("tls.client_grants"), "{err}");
    }

    #[test]
    fn admin_tls_is_never_turned_off_live() {
        let mut running = Config::default();
        running.admin_tls.cert_file = Some("/nonexistent/admin.pem".into());
        let Err(PrepareError::Config(err)) = prepare(&running, Config::default()) else {
            panic!("turning admin TLS off was not refused");
        };
        assert_eq!(err.key(), Some("admin_tls.cert_file"));
        // Turning it on reads the files (here missing: refused, naming them).
        let Err(PrepareError::AdminTls(err)) = prepare(&Config::default(), running) else {
            panic!("a missing admin certificate was not refused");
        };
        assert!(err.to_string().contains("admin_tls"), "{err}");
    }

    #[test]
    fn fixed_keys_are_kept_and_named() {
        let mut new = Config {
            workers: Config::default().workers + 1,
            ..Config::default()
        };
        new.security.require_origin = true;
        let p = prepare(&Config::default(), new).ok().unwrap();
        assert_eq!(p.kept, ["workers"]);
        assert_eq!(p.reload.config.workers, Config::default().workers);
        assert!(p.reload.config.security.require_origin);
    }
}
