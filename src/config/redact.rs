//! Passwords inside URLs, kept out of everything the relay prints: `--print-config`, `Debug`,
//! config errors, logs and `ringrelay cluster status`.

/// `url` with its password replaced by `<redacted>`: the userinfo's (`redis://user:pass@host`,
/// `redis://:pass@host`) and a `pass=` or `password=` query parameter (`unix:///s?pass=x`,
/// as the redis crate reads them). Everything else is left as written, so the operator still
/// sees which server and which user.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    // The authority ends at the first '/', '?' or '#'; its userinfo at the last '@' in it.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{HIDDEN}@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
                    {
                        format!("{k}={HIDDEN}")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", params.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// Whether [`redact_url`] hides anything in `url`.
pub fn has_password(url: &str) -> bool {
    redact_url(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        let cases = [
            (
                "redis://:hunter2@10.0.0.2:6379/0",
                "redis://:<redacted>@10.0.0.2:6379/0",
            ),
            (
                "redis://ops:hunter2@r.example:6379",
                "redis://ops:<redacted>@r.example:6379",
            ),
            (
                "rediss://ops:p%40ss:w@r.example/1",
                "rediss://ops:<redacted>@r.example/1",
            ),
            // The password may hold '@' unescaped; the host is after the last one.
            ("redis://:a@b@host:1", "redis://:<redacted>@host:1"),
            (
                "unix:///run/redis.sock?db=2&pass=hunter2",
                "unix:///run/redis.sock?db=2&pass=<redacted>",
            ),
            (
                "redis+unix:///s?password=x&user=u#frag",
                "redis+unix:///s?password=<redacted>&user=u#frag",
            ),
            // Nothing to hide.
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://ops@127.0.0.1:6379", "redis://ops@127.0.0.1:6379"),
            ("", ""),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("hunter2"));
            assert_eq!(has_password(url), url != shown, "{url}");
        }
    }
}
