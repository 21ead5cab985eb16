//! What every page shares: the frame around its content (navigation, who is logged in, the
//! logout form), rendering a template into a response, the error page, and how sizes and times
//! are written (binary units; UTC ISO-8601 with a relative hint, "3 h ago").

use std::time::SystemTime;

use askama::Template;
use bytesize::ByteSize;
use http::{Response, StatusCode, header};

use super::assets;
use crate::http::{Body, full};

/// The frame of every page: the navigation, the login or logout control, the assets.
pub struct Chrome {
    /// The logged-in user (`None`: anonymous).
    pub user: Option<String>,
    /// The token the logout form carries (the session's).
    pub csrf: String,
    /// Which entry of the navigation is this page ("repositories", "upstreams", "node",
    /// "uploads", "login"; empty for none).
    pub active: &'static str,
    /// Whether the registry has accounts (otherwise there is nobody to log in as).
    pub accounts: bool,
    pub css: String,
    pub js: String,
}

impl Chrome {
    pub fn new(user: Option<String>, csrf: String, active: &'static str, accounts: bool) -> Chrome {
        Chrome {
            user,
            csrf,
            active,
            accounts,
            css: assets::css_url(),
            js: assets::js_url(),
        }
    }

    /// `aria-current="page"` for the navigation entry of this page.
    pub fn current(&self, entry: &str) -> &'static str {
        if self.active == entry {
            "page"
        } else {
            "false"
        }
    }
}

/// The error page: what went wrong, in words for the person looking.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
}

/// Renders `page` as an HTML response with `status`.
pub fn html(status: StatusCode, page: &impl Template) -> Response<Body> {
    match page.render() {
        Ok(body) => {
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "a UI page did not render");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page did not render; the registry's log says why",
            )
        }
    }
}

/// A short plain-text answer (for what no page frame suits: a wrong method, a failed render).
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `303 See Other` to `to` (a path of this UI): where a form's POST sends the browser next.
pub fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(crate::http::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = header::HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A size in binary units ("1.5 MiB").
pub fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// A byte count as tables show it: binary units, with the exact count for a tooltip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub shown: String,
    /// "2700 bytes"; empty when the count is not known.
    pub exact: String,
}

impl Size {
    pub fn of(bytes: u64) -> Size {
        Size {
            shown: size(bytes),
            exact: format!("{bytes} bytes"),
        }
    }

    /// A size not known, and why in a word or two ("—", "not computed yet").
    pub fn unknown(why: &str) -> Size {
        Size {
            shown: why.to_string(),
            exact: String::new(),
        }
    }

    /// At least this much: part of it could not be counted.
    pub fn at_least(mut self) -> Size {
        self.shown.push('+');
        self.exact = format!("at least {}", self.exact);
        self
    }
}

/// A moment as pages write it: UTC ISO-8601 and how long ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    pub iso: String,
    pub ago: String,
}

impl When {
    pub fn of(t: SystemTime, now: SystemTime) -> When {
        When {
            iso: iso8601(t),
            ago: ago(t, now),
        }
    }

    /// `of`, or `None` for a moment not known.
    pub fn maybe(t: Option<SystemTime>, now: SystemTime) -> Option<When> {
        t.map(|t| When::of(t, now))
    }
}

/// `2026-12-06T07:41:00Z`.
pub fn iso8601(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// "3 h ago", "in 20 d" (a certificate's expiry), "just now".
pub fn ago(t: SystemTime, now: SystemTime) -> String {
    let (secs, past) = match now.duration_since(t) {
        Ok(d) => (d.as_secs(), true),
        Err(e) => (e.duration().as_secs(), false),
    };
    let span = match secs {
        0..5 => return "just now".into(),
        5..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    };
    if past {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A digest as tables show it: the algorithm and the first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.get(..19).unwrap_or(digest).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
    }

    #[test]
    fn times_are_utc_with_a_hint() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_543_260);
        assert_eq!(iso8601(t), "2026-12-06T07:47:40Z");
        let after = |s| t + Duration::from_secs(s);
        assert_eq!(ago(t, after(2)), "just now");
        assert_eq!(ago(t, after(42)), "42 s ago");
        assert_eq!(ago(t, after(600)), "10 min ago");
        assert_eq!(ago(t, after(3 * 3600 + 5)), "3 h ago");
        assert_eq!(ago(t, after(86_400 * 9)), "9 d ago");
        assert_eq!(ago(after(86_400 * 20), t), "in 20 d");
    }

    #[test]
    fn short_digests() {
        assert_eq!(
            short_digest("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "sha256:e3b0c44298fc"
        );
        assert_eq!(short_digest("x"), "x");
    }
}
