//! An agent's answer, collected whole by its connection's reader, finds the request waiting
//! for it. A broken answer still fails its request at once when its id can be read, so the
//! client gets 502 rather than waiting for the timeout.

use super::message::{parse_response, AgentReplyError};
use super::pending::Answer;
use crate::config::Config;
use crate::relay::inbound::ANSWER_PREFIX;
use crate::runtime::Core;
use crate::stats::bump;
use serde::Deserialize;

/// Room for an answer's JSON besides its base64 body: status, headers, punctuation.
const ANSWER_OVERHEAD: usize = 64 << 10;

/// How much of one answer an agent's connection keeps: the base64 form of the largest body
/// allowed plus the overhead. Past it the answer is too large whatever the rest holds.
pub fn capture_limit(cfg: &Config) -> usize {
    let body = cfg.bridge.max_response_bytes;
    (body / 3 + 1)
        .saturating_mul(4)
        .saturating_add(ANSWER_OVERHEAD)
}

/// Just enough of a broken answer to know which request it meant.
#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// The id of a cut-off answer, readable when it comes right after the type, as the schema
/// orders the fields: `{"type":"http_response","id":"..."`. Relay ids are hex: no escapes.
fn id_after_prefix(json: &[u8]) -> Option<String> {
    let rest = json
        .strip_prefix(ANSWER_PREFIX.as_slice())?
        .strip_prefix(br#","id":""#.as_slice())?;
    let end = rest.iter().position(|&b| b == b'"')?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

/// Hands one collected answer on. `truncated`: it passed [`capture_limit`] and only its start
/// was kept.
pub fn deliver(core: &Core, agent: u64, json: &[u8], truncated: bool) {
    let st = &core.stats;
    let max = core.config().bridge.max_response_bytes;
    let parsed = if truncated {
        Err(AgentReplyError::TooLarge)
    } else {
        parse_response(json, max)
    };
    let (id, answer) = match parsed {
        Ok(r) => (Some(r.id.clone()), Answer::Reply(r)),
        Err(e) => {
            tracing::debug!(conn = agent, error = %e, "bridge answer refused");
            let id = || serde_json::from_slice::<IdOnly>(json).ok().map(|w| w.id);
            if e == AgentReplyError::TooLarge {
                bump(&st.bridge_answers_too_large, 1);
                (id_after_prefix(json).or_else(id), Answer::TooLarge)
            } else {
                bump(&st.bridge_bad_answers, 1);
                (id(), Answer::Malformed)
            }
        }
    };
    // A broken answer with no readable id is counted above; its request times out.
    let Some(id) = id else { return };
    if !core.bridge.resolve(agent, &id, answer) {
        bump(&st.bridge_answers_unmatched, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_of_a_cut_answer_is_read_from_its_start() {
        let json = br#"{"type":"http_response","id":"1f","status":200,"body_b64":"AAAA"#;
        assert_eq!(id_after_prefix(json).as_deref(), Some("1f"));
        for other in [
            &br#"{"type":"http_response","status":200,"id":"1f""#[..],
            br#"{"type":"http_response","id":"1f"#,
            br#"{"id":"1f","type":"http_response""#,
        ] {
            assert_eq!(id_after_prefix(other), None);
        }
    }

    #[test]
    fn the_capture_limit_holds_the_largest_allowed_body() {
        let mut cfg = Config::default();
        for body in [0, 1, 2, 3, 4, 1000, 1 << 20] {
            cfg.bridge.max_response_bytes = body;
            let encoded =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![0u8; body]);
            assert!(
                encoded.len() + ANSWER_OVERHEAD <= capture_limit(&cfg),
                "{body}"
            );
        }
    }
}
