//! Hop-by-hop headers belong to one connection, not to the request: they are dropped in both
//! directions, as RFC 9110 section 7.6.1 asks of an intermediary. That includes any header the
//! `Connection` header itself names.

/// Headers that never cross the bridge, lower-case.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "upgrade",
    "transfer-encoding",
    "keep-alive",
    "te",
    "trailer",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

pub fn is_hop_by_hop(name: &str) -> bool {
    // Compared in place: this runs for every header of every proxied request and response.
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// The headers that may cross, in order, names lower-cased.
pub fn forwardable(headers: &[(String, String)]) -> Vec<(String, String)> {
    let named_by_connection: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    headers
        .iter()
        .filter(|(n, _)| !is_hop_by_hop(n))
        .filter(|(n, _)| {
            !named_by_connection
                .iter()
                .any(|t| t.eq_ignore_ascii_case(n))
        })
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let got = forwardable(&h(&[
            ("Accept", "*/*"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Foo", "1"),
            ("X-Secret-Hop", "1"),
            ("Content-Type", "application/json"),
            ("accept", "text/html"),
        ]));
        assert_eq!(
            got,
            h(&[
                ("accept", "*/*"),
                ("content-type", "application/json"),
                ("accept", "text/html"),
            ])
        );
    }

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for name in [
            "connection",
            "CONNECTION",
            "Te",
            "proxy-x",
            "PROXY-Authenticate",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "",
            "proxy",
            "proxies",
            "content-length",
            "x-te",
            "tes",
            "connectio",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }
}
