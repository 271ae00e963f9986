//! `tls.client_grants`: a list of `{ subject, sid, role }` tables, what a verified client
//! certificate admits to without a token. In the environment it is `subject=sid` or
//! `subject=sid/role` items separated by commas
//! (`RINGRELAY_TLS_CLIENT_GRANTS="device-42=s42/agent, ops.example=*"`): a subject given
//! there holds neither `=` nor `,` (the file takes any).

use super::Kind;
use crate::config::apply::{Input, Raw};
use crate::config::render;
use crate::config::types::{ClientGrant, MAX_CLIENT_GRANTS};
use crate::config::ConfigError;
use crate::http::route::{valid_role, valid_session_id};

pub(in crate::config) struct Grants;

const SHAPE: &str =
    "expected a list like [{ subject = \"device-42\", sid = \"s42\", role = \"agent\" }]";

fn from_table(i: &Input<'_>, v: &toml::Value) -> Result<ClientGrant, ConfigError> {
    let t = v.as_table().ok_or_else(|| i.fail(SHAPE))?;
    if let Some(other) = t
        .keys()
        .find(|k| !matches!(k.as_str(), "subject" | "sid" | "role"))
    {
        return Err(i.fail(format!(
            "unknown field {other:?} in a grant: only subject, sid and role"
        )));
    }
    let text = |name: &str| match t.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| i.fail(format!("{name} is a string"))),
    };
    let need = |name: &str| {
        text(name)?.ok_or_else(|| i.fail(format!("each grant needs {name} (a string)")))
    };
    Ok(ClientGrant {
        subject: need("subject")?.to_string(),
        sid: need("sid")?.to_string(),
        role: text("role")?.map(str::to_string),
    })
}

fn from_text(i: &Input<'_>, item: &str) -> Result<ClientGrant, ConfigError> {
    let (subject, rest) = item
        .split_once('=')
        .ok_or_else(|| i.fail("expected subject=sid or subject=sid/role, comma-separated"))?;
    let (sid, role) = match rest.split_once('/') {
        Some((sid, role)) => (sid, Some(role.trim().to_string())),
        None => (rest, None),
    };
    Ok(ClientGrant {
        subject: subject.trim().to_string(),
        sid: sid.trim().to_string(),
        role,
    })
}

/// Each subject, sid and role valid; at most [`MAX_CLIENT_GRANTS`].
fn check(i: &Input<'_>, grants: &[ClientGrant]) -> Result<(), ConfigError> {
    if grants.len() > MAX_CLIENT_GRANTS {
        return Err(i.fail(format!("at most {MAX_CLIENT_GRANTS} grants")));
    }
    for g in grants {
        if !ClientGrant::valid_subject(&g.subject) {
            return Err(i.fail(
                "a subject is 1 to 255 bytes of text, without control characters or \
                 surrounding spaces",
            ));
        }
        if g.sid != "*" && !valid_session_id(&g.sid) {
            return Err(i.fail(format!(
                "grant for {:?}: sid is a session id (1 to 128 of [A-Za-z0-9._~-]) or \"*\"",
                g.subject
            )));
        }
        if g.role.as_deref().is_some_and(|r| !valid_role(r)) {
            return Err(i.fail(format!(
                "grant for {:?}: role is 1 to 32 of [a-z0-9_-]",
                g.subject
            )));
        }
    }
    Ok(())
}

impl Kind<Vec<ClientGrant>> for Grants {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<ClientGrant>, ConfigError> {
        let grants = match i.raw {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| from_table(i, v))
                .collect::<Result<Vec<_>, _>>()?,
            Raw::Toml(_) => return Err(i.fail(SHAPE)),
            Raw::Text(s) if s.trim().is_empty() => Vec::new(),
            Raw::Text(s) => s
                .split(',')
                .map(|item| from_text(i, item))
                .collect::<Result<Vec<_>, _>>()?,
        };
        check(i, &grants)?;
        Ok(grants)
    }

    fn toml(&self, v: &Vec<ClientGrant>) -> Option<String> {
        let items: Vec<String> = v
            .iter()
            .map(|g| {
                let role = g
                    .role
                    .as_deref()
                    .map(|r| format!(", role = {}", render::string(r)))
                    .unwrap_or_default();
                format!(
                    "{{ subject = {}, sid = {}{role} }}",
                    render::string(&g.subject),
                    render::string(&g.sid)
                )
            })
            .collect();
        Some(format!("[{}]", items.join(", ")))
    }
}
