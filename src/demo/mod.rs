//! The demo page (`GET /demo`, docs/demo.md): plain HTML, CSS and JavaScript compiled into the
//! binary, no build step and no request anywhere but this relay. Served on the public
//! listener when `demo.enabled` allows it (by default only when that listener is loopback).
#![forbid(unsafe_code)]

use crate::http::Response;

/// Which file of the page a path names is routing's business (`http::route`); what each
/// file holds is this module's.
pub use crate::http::route::DemoAsset as Asset;

/// Each file's bytes and type.
trait Contents {
    fn body(self) -> &'static str;
    fn content_type(self) -> &'static str;
}

impl Contents for Asset {
    fn body(self) -> &'static str {
        match self {
            Asset::Page => include_str!("page/index.html"),
            Asset::Script => include_str!("page/app.js"),
            // clients/js's dist/index.js, committed so that `cargo build` needs no Node
            // (clients/js/test/dist.test.mjs checks that a fresh build matches it).
            Asset::Client => include_str!("page/ringrelay-client.js"),
            Asset::Style => include_str!("page/app.css"),
            Asset::Icon => include_str!("page/favicon.svg"),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Asset::Page => "text/html; charset=utf-8",
            Asset::Script | Asset::Client => "text/javascript; charset=utf-8",
            Asset::Style => "text/css; charset=utf-8",
            Asset::Icon => "image/svg+xml",
        }
    }
}

/// Only this origin: the page's own script and style, WebSockets to this relay, nothing
/// inline, no framing, no forms posted anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The answer to `method` on `asset`: the file for GET (and its head for HEAD), 405 else.
pub fn response(asset: Asset, method: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        return Response::error(405, "method_not_allowed", "the demo page is read with GET")
            .with_header("Allow", "GET, HEAD");
    }
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", asset.content_type().into()),
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY.into()),
        ],
        body: asset.body().as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn the_page_its_files_and_nothing_else() {
        assert_eq!(Asset::of("/demo"), Some(Asset::Page));
        assert_eq!(Asset::of("/demo/app.js"), Some(Asset::Script));
        assert_eq!(Asset::of("/demo/app.css"), Some(Asset::Style));
        assert_eq!(Asset::of("/demo/../etc/passwd"), None);
        assert_eq!(Asset::of("/demox"), None);
        let page = text(&response(Asset::Page, "GET"));
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(page.contains(&format!(
            "Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n"
        )));
        assert!(page.contains("X-Frame-Options: DENY\r\n"));
        assert!(page.contains("<script type=\"module\" src=\"/demo/app.js\"></script>"));
        assert_eq!(Asset::of("/demo/ringrelay-client.js"), Some(Asset::Client));
        assert_eq!(response(Asset::Page, "POST").status, 405);
    }

    #[test]
    fn the_client_is_the_package_and_imports_nothing() {
        let client = Asset::Client.body();
        assert!(client.contains("export class RelayClient"));
        assert!(!client.contains("import ") && !client.contains("eval("));
        assert!(Asset::Script
            .body()
            .contains("from \"./ringrelay-client.js\""));
    }

    #[test]
    fn the_page_asks_for_nothing_from_elsewhere() {
        for a in [Asset::Page, Asset::Script, Asset::Style] {
            let body = a.body();
            for far in [
                "http://", "https://", "//cdn", "<script>", "style=", "onclick", "eval(",
            ] {
                assert!(!body.contains(far), "{a:?} holds {far:?}");
            }
        }
    }
}
