//! Protection against cross-site requests: every state-changing form (delete, logout, login)
//! carries a token a page of another site cannot read, and every `POST` must come from a page of
//! this origin as the browser tells it (`Origin`, `Sec-Fetch-Site`).
//!
//! Two kinds of token, one check: a logged-in visitor's forms carry their session's token (kept
//! server-side, see `session`); a visitor without a session (the login form, and deletes on a
//! registry whose anonymous clients may push) gets a random token in a cookie of its own and the
//! same value in the form (the double-submit pattern): a page elsewhere can neither read nor set
//! that cookie. Non-browser clients send neither header and carry no ambient credentials; they
//! still need the token.

use http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};

/// The cookie that holds a visitor's form token when there is no session.
pub const FORM_COOKIE: &str = "registryd_form";
/// The cookie that holds the session id.
pub const SESSION_COOKIE: &str = "registryd_session";

/// Why a `POST` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The browser says it came from another site.
    CrossSite(String),
    /// The form's token is missing or is not this visitor's.
    Token,
}

impl Refused {
    pub fn message(&self) -> String {
        match self {
            Refused::CrossSite(why) => format!(
                "this request came from another site ({why}); forms of this registry are only \
                 accepted from its own pages"
            ),
            Refused::Token => "this form has expired or did not come from this registry's pages; \
                 reload the page and try again"
                .into(),
        }
    }
}

/// The origin a page of this registry has in the browser: the scheme of the connection and the
/// host the browser asked for.
pub fn own_origin(host: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// Refuses a request the browser says came from another site: an `Origin` that is not
/// `own_origin` (an opaque `null` included), or `Sec-Fetch-Site` other than `same-origin` or
/// `none` (typed in, a bookmark).
pub fn same_origin(headers: &HeaderMap, own_origin: &str) -> Result<(), Refused> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin.eq_ignore_ascii_case(own_origin) {
            return Err(Refused::CrossSite(format!(
                "Origin {origin:?}, not {own_origin:?}"
            )));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Err(Refused::CrossSite(format!("Sec-Fetch-Site {site:?}")));
        }
    }
    Ok(())
}

/// Whether the token a form sent is `expected`. Compared as SHA-256 digests, so the time the
/// comparison takes says nothing about how much of the token was right.
pub fn token_matches(sent: Option<&str>, expected: &str) -> bool {
    let Some(sent) = sent.filter(|s| !s.is_empty()) else {
        return false;
    };
    !expected.is_empty() && Sha256::digest(sent.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// Both checks of a form's `POST`: its origin, then its token.
pub fn check(
    headers: &HeaderMap,
    own_origin: &str,
    sent: Option<&str>,
    expected: &str,
) -> Result<(), Refused> {
    same_origin(headers, own_origin)?;
    if token_matches(sent, expected) {
        Ok(())
    } else {
        Err(Refused::Token)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A `Set-Cookie` value for the UI: `HttpOnly` (no script reads it), `SameSite=Strict` (no
/// other site's page sends it), under `/ui/` only, `Secure` when the connection is TLS.
/// `max_age` of zero deletes the cookie; `None` makes it last as long as the browser session.
pub fn set_cookie(name: &str, value: &str, tls: bool, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/ui/; HttpOnly; SameSite=Strict");
    if tls {
        c.push_str("; Secure");
    }
    if let Some(secs) = max_age {
        c.push_str(&format!("; Max-Age={secs}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const OWN: &str = "https://registry.home:8443";

    #[test]
    fn same_origin_posts_pass() {
        for h in [
            headers(&[("origin", "https://registry.home:8443")]),
            headers(&[("origin", "HTTPS://Registry.Home:8443")]),
            headers(&[
                ("origin", "https://registry.home:8443"),
                ("sec-fetch-site", "same-origin"),
            ]),
            headers(&[("sec-fetch-site", "none")]),
            // A client that is not a browser says nothing; it still needs the token.
            headers(&[]),
        ] {
            assert_eq!(same_origin(&h, OWN), Ok(()), "{h:?}");
        }
    }

    #[test]
    fn cross_site_posts_are_refused() {
        for h in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "http://registry.home:8443")]),
            headers(&[("origin", "https://registry.home")]),
            headers(&[("origin", "null")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[
                ("origin", "https://registry.home:8443"),
                ("sec-fetch-site", "cross-site"),
            ]),
        ] {
            assert!(
                matches!(same_origin(&h, OWN), Err(Refused::CrossSite(_))),
                "{h:?}"
            );
        }
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert!(token_matches(Some("abc"), "abc"));
        assert!(!token_matches(Some("abd"), "abc"));
        assert!(!token_matches(Some("ab"), "abc"));
        assert!(!token_matches(None, "abc"));
        assert!(!token_matches(Some(""), ""), "an empty token is never one");
        let same = headers(&[("origin", "https://registry.home:8443")]);
        assert_eq!(check(&same, OWN, Some("t"), "t"), Ok(()));
        assert_eq!(check(&same, OWN, Some("u"), "t"), Err(Refused::Token));
        let forged = headers(&[("origin", "https://evil.example")]);
        assert!(matches!(
            check(&forged, OWN, Some("t"), "t"),
            Err(Refused::CrossSite(_))
        ));
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let h = headers(&[
            ("cookie", "a=1; registryd_session=abc"),
            ("cookie", "registryd_form=\"xyz\""),
        ]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, FORM_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(
            set_cookie(SESSION_COOKIE, "v", true, None),
            "registryd_session=v; Path=/ui/; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(
            set_cookie(FORM_COOKIE, "", false, Some(0)),
            "registryd_form=; Path=/ui/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }
}
