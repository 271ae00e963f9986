//! Admission by client certificate (`tls.client_grants`): each grant names a certificate
//! subject and the claims it stands for, as a token's `sid` and `role` would, so that
//! [`Claims::grant`] decides for a certificate exactly as it does for a token. Only a
//! certificate the TLS handshake verified against `tls.client_ca_file` is ever looked up
//! here; the grants say what each verified name may open.

use super::{Claims, SessionGrant};
use crate::config::ClientGrant;
use crate::tls::ClientNames;

/// The grants in force, built once per config (start and each reload).
#[derive(Debug, Clone, Default)]
pub struct CertGrants {
    grants: Vec<(String, Claims)>,
}

impl CertGrants {
    /// The grants `config` lists (already validated: a sid is a session id or `*`, a role a
    /// role).
    pub fn new(config: &[ClientGrant]) -> CertGrants {
        let grants = config
            .iter()
            .map(|g| {
                let sid = match g.sid.as_str() {
                    "*" => SessionGrant::Any,
                    sid => SessionGrant::One(sid.to_string()),
                };
                // A certificate's own validity was checked by the handshake; a grant does not
                // expire on its own (it goes with the config).
                let claims = Claims {
                    sid,
                    role: g.role.clone(),
                    exp: u64::MAX,
                };
                (g.subject.clone(), claims)
            })
            .collect();
        CertGrants { grants }
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// The claims of every grant whose subject is one of `names`, in the config's order.
    pub fn matching<'a>(&'a self, names: &'a ClientNames) -> impl Iterator<Item = &'a Claims> {
        self.grants
            .iter()
            .filter(|(subject, _)| names.matches(subject))
            .map(|(_, claims)| claims)
    }
}
