//! The routes both benchmark peers serve, `/v1/relay/{session}[?role=]` and `/v1/echo`, read
//! the way ringrelay reads them, so each peer refuses what ringrelay refuses and a benchmark
//! compares like with like. Each peer includes this file (`#[path]`) and turns a refusal into
//! its own HTTP library's response.

pub enum Route {
    Echo,
    Relay {
        session: String,
        role: Option<String>,
    },
}

/// A refusal: the HTTP status, the JSON body's `code` and its sentence.
pub type Refused = (u16, &'static str, &'static str);

pub fn parse(path: &str, query: Option<&str>) -> Result<Route, Refused> {
    if path == "/v1/echo" {
        return Ok(Route::Echo);
    }
    let Some(session) = path.strip_prefix("/v1/relay/") else {
        return Err((404, "not_found", "no such route"));
    };
    let session_ok = (1..=128).contains(&session.len())
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
    if !session_ok {
        return Err((
            400,
            "bad_session",
            "session ids are 1 to 128 of [A-Za-z0-9._~-]",
        ));
    }
    let role = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("role="));
    if let Some(r) = role {
        let ok = (1..=32).contains(&r.len())
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err((400, "bad_role", "roles are 1 to 32 of [a-z0-9_-]"));
        }
    }
    Ok(Route::Relay {
        session: session.to_string(),
        role: role.map(str::to_string),
    })
}
