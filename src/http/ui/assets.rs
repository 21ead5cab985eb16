//! The UI's one stylesheet and one script, compiled into the binary and served under
//! `/ui/static/<hash>/`: the hash of the file's content is in its URL, so a browser may keep it
//! for a year and still never runs an old script against a new page.

use std::sync::LazyLock;

use http::{Response, StatusCode, header};
use sha2::{Digest as _, Sha256};

use super::path::AssetFile;
use crate::http::{Body, full};

const CSS: &str = include_str!("static/ui.css");
const JS: &str = include_str!("static/ui.js");

struct Versions {
    css: String,
    js: String,
}

fn hash(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    hex::encode(d.get(..8).unwrap_or_default())
}

static VERSIONS: LazyLock<Versions> = LazyLock::new(|| Versions {
    css: hash(CSS),
    js: hash(JS),
});

/// Where pages link the stylesheet.
pub fn css_url() -> String {
    format!("/ui/static/{}/ui.css", VERSIONS.css)
}

/// Where pages link the script.
pub fn js_url() -> String {
    format!("/ui/static/{}/ui.js", VERSIONS.js)
}

/// Serves `file` if `version` is its current hash; a stale or made-up version is not found (a
/// year of caching must never hold the wrong bytes under a URL).
pub fn serve(version: &str, file: AssetFile) -> Option<Response<Body>> {
    let (body, current, content_type) = match file {
        AssetFile::Css => (CSS, &VERSIONS.css, "text/css; charset=utf-8"),
        AssetFile::Js => (JS, &VERSIONS.js, "text/javascript; charset=utf-8"),
    };
    if version != current {
        return None;
    }
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(body.len()),
    );
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ui::path::{Page, parse};

    #[test]
    fn urls_route_to_the_files_they_name() {
        for (url, file) in [(css_url(), AssetFile::Css), (js_url(), AssetFile::Js)] {
            let Page::Static(v, f) = parse(&url) else {
                panic!("{url} is not a static path");
            };
            assert_eq!(f, file);
            let r = serve(&v, f).unwrap();
            assert!(
                r.headers()[header::CACHE_CONTROL]
                    .to_str()
                    .unwrap()
                    .contains("max-age=31536000")
            );
        }
        assert!(serve("0000000000000000", AssetFile::Css).is_none());
        assert_ne!(css_url(), js_url());
    }
}
