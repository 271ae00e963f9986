//! An agent's answer, collected whole by its connection's reader, finds the request waiting
//! for it. A broken answer still fails its request at once when its id can be read, so the
//! client gets 502 rather than waiting for the timeout.

use super::message::{parse_response, AgentReplyError};
use crate::config::Config;
use crate::context::Core;
use crate::session::bridged::Answer;
use crate::stats::bump;

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

/// Hands one collected answer on: its JSON as the agent's connection collected it, whether it
/// was cut at [`capture_limit`] (then it is too large), and its top-level `id` as read while
/// it streamed, wherever it stood (a broken answer's id comes from there too). Plain values,
/// so the bridge needs nothing of the relay's reader.
pub fn deliver(core: &Core, agent: u64, json: &[u8], truncated: bool, streamed_id: Option<&str>) {
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
            if e == AgentReplyError::TooLarge {
                bump(&st.bridge_answers_too_large, 1);
                (streamed_id.map(str::to_owned), Answer::TooLarge)
            } else {
                bump(&st.bridge_bad_answers, 1);
                (streamed_id.map(str::to_owned), Answer::Malformed)
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
