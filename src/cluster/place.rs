//! Where a new peer of a session goes, decided on the session's core before it is upgraded:
//! here (a session already here needs no Redis at all), to the owner node, or nowhere yet.

use super::ask::find_owner;
use super::carry::OwnerNode;
use crate::context::Core;
use crate::fleet::claim::Owner;
use crate::http::RequestHead;
use crate::limits::Refusal;

pub enum Placement {
    Here,
    Carry(OwnerNode),
    /// Written (and counted) by `Refusal::write`.
    Refuse(Refusal),
}

/// A client's region hint: `?region=` or the `x-region` header (the query wins), 1 to 64
/// of `[A-Za-z0-9._-]`; anything else is ignored rather than refused, since it is only a hint.
pub fn region_hint(head: &RequestHead) -> Option<String> {
    let from_query = head
        .query
        .split('&')
        .find_map(|kv| kv.strip_prefix("region="));
    let hint = from_query.or_else(|| head.header("x-region"))?.trim();
    let ok = !hint.is_empty()
        && hint.len() <= 64
        && hint
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then(|| hint.to_string())
}

/// `carried_in`: this peer was already carried here by another node, which found this node
/// to be the owner; if the owner changed meanwhile it is refused, never carried again.
pub async fn place(
    core: &Core,
    session: &str,
    hint: Option<String>,
    carried_in: bool,
) -> Placement {
    if core.shared.cluster_requests.is_none() {
        return Placement::Here;
    }
    let local = core.registry.get(session);
    if local.as_ref().is_some_and(|s| !s.moved.get()) {
        return Placement::Here;
    }
    match find_owner(core, session, hint).await {
        Owner::Here => {
            // Claimed back: a session given up earlier is this node's again.
            if let Some(s) = local {
                s.moved.set(false);
            }
            Placement::Here
        }
        Owner::Elsewhere { .. } if carried_in => Placement::Refuse(Refusal::OwnerMoved),
        Owner::Elsewhere {
            node_id,
            internal: Some(internal),
            ..
        } => Placement::Carry(OwnerNode { node_id, internal }),
        Owner::Elsewhere { internal: None, .. } => Placement::Refuse(Refusal::OwnerUnreachable(
            "the session's node has no internal listener",
        )),
        Owner::Unknown(why) => {
            tracing::debug!(reason = why.reason(), "owner lookup failed");
            Placement::Refuse(Refusal::ClusterUnavailable(why.reason()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        let h = |q: &str, hdr: Option<&str>| {
            let headers: Vec<(&str, &str)> = hdr.iter().map(|v| ("x-region", *v)).collect();
            let mut head = RequestHead::with_headers("GET", "/v1/relay/s", &headers);
            head.query = q.to_string();
            region_hint(&head)
        };
        assert_eq!(h("role=a&region=eu-west", None), Some("eu-west".into()));
        assert_eq!(h("", Some("us")), Some("us".into()));
        assert_eq!(h("region=eu", Some("us")), Some("eu".into()));
        assert_eq!(h("region=", None), None);
        assert_eq!(h("region=a%20b", None), None);
        assert_eq!(h("", None), None);
    }
}
