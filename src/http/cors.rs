//! Headers every response carries: the operator's own (`server.headers`, e.g. `X-Content-Type-Options:
//! nosniff`) and CORS, so a registry web UI served from another origin can list the catalog and tags
//! and delete manifests. Preflight `OPTIONS` requests are answered here, before authentication, as
//! browsers send them without credentials.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::Body;

/// Parses `"Name: value"`.
pub fn parse_header_line(line: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = line.split_once(':')?;
    let name: HeaderName = name.trim().parse().ok()?;
    let value = HeaderValue::from_str(value.trim()).ok()?;
    Some((name, value))
}

/// What `server.headers` and `[cors]` ask for, parsed, as the daemon hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderSettings {
    /// Sent on every response (`server.headers`).
    pub extra: Vec<(HeaderName, HeaderValue)>,
    /// Origins a browser may call from (`scheme://host[:port]`, or `*`); empty: CORS off.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<Method>,
    pub allowed_headers: Vec<String>,
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

impl HeaderSettings {
    /// The shipped defaults (`etc/registryd/config.toml`; the configuration's tests check that
    /// they agree): `X-Content-Type-Options: nosniff`, CORS off.
    pub fn basic() -> HeaderSettings {
        HeaderSettings {
            extra: vec![(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            )],
            allowed_origins: Vec::new(),
            allowed_methods: vec![Method::GET, Method::HEAD, Method::DELETE],
            allowed_headers: ["Authorization", "Accept", "Content-Type"]
                .map(String::from)
                .into(),
            exposed_headers: [
                "Docker-Content-Digest",
                "Link",
                "Content-Length",
                "Location",
            ]
            .map(String::from)
            .into(),
            allow_credentials: false,
            max_age_secs: 600,
        }
    }
}

/// The response-header policy in force (rebuilt on reload).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseHeaders {
    extra: Vec<(HeaderName, HeaderValue)>,
    /// Allowed origins, lower-case without a trailing slash; empty means CORS is off.
    origins: Vec<String>,
    any_origin: bool,
    methods: Vec<Method>,
    allow_methods: String,
    allow_headers: String,
    expose_headers: String,
    credentials: bool,
    max_age: u64,
}

impl ResponseHeaders {
    pub fn from_settings(cors: &HeaderSettings) -> ResponseHeaders {
        let methods = cors.allowed_methods.clone();
        ResponseHeaders {
            extra: cors.extra.clone(),
            origins: cors
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            any_origin: cors.allowed_origins.iter().any(|o| o == "*"),
            allow_methods: methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            methods,
            allow_headers: cors.allowed_headers.join(", "),
            expose_headers: cors.exposed_headers.join(", "),
            credentials: cors.allow_credentials,
            max_age: cors.max_age_secs,
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it may call us. A wildcard is echoed
    /// as the origin when credentials are allowed, since browsers refuse `*` with credentials.
    fn allow_origin(&self, origin: &str) -> Option<HeaderValue> {
        if !self.origin_allowed(origin) {
            return None;
        }
        if self.any_origin && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        HeaderValue::from_str(origin).ok()
    }

    /// Answers an `OPTIONS` request: a CORS preflight from an allowed origin for an allowed method
    /// gets 204 with the grants; one from elsewhere gets 403 without them (the browser then refuses
    /// the call); an `OPTIONS` without `Origin` learns the methods in `Allow`.
    pub fn options(&self, headers: &HeaderMap) -> Response<Body> {
        let mut resp = Response::new(super::empty());
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let Some(origin) = origin else {
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            return resp;
        };
        let method_ok = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .and_then(|m| m.parse::<Method>().ok())
            .is_some_and(|m| self.methods.contains(&m));
        let allow = self.allow_origin(origin).filter(|_| method_ok);
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
        let Some(allow) = allow else {
            *resp.status_mut() = StatusCode::FORBIDDEN;
            return resp;
        };
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age),
        );
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        resp
    }

    /// Adds the configured headers, and the CORS grants when the request came from an allowed
    /// origin, to any response (errors too: a UI must be able to read a 401 to ask for a login).
    pub fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
        let h = resp.headers_mut();
        for (name, value) in &self.extra {
            h.insert(name.clone(), value.clone());
        }
        let Some(origin) = origin.and_then(|v| v.to_str().ok()) else {
            return;
        };
        if self.origins.is_empty() {
            return;
        }
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(allow) = self.allow_origin(origin) else {
            return;
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if let Ok(v) = HeaderValue::from_str(&self.expose_headers) {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origins: &[&str], credentials: bool) -> ResponseHeaders {
        let mut c = HeaderSettings::basic();
        c.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
        c.allow_credentials = credentials;
        ResponseHeaders::from_settings(&c)
    }

    fn preflight(h: &ResponseHeaders, origin: &str, method: &str) -> Response<Body> {
        let mut req = HeaderMap::new();
        req.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        req.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        h.options(&req)
    }

    #[test]
    fn header_lines() {
        let (n, v) = parse_header_line("X-Content-Type-Options: nosniff").unwrap();
        assert_eq!(n, "x-content-type-options");
        assert_eq!(v, "nosniff");
        assert!(parse_header_line("no colon").is_none());
        assert!(parse_header_line("bad name: x").is_none());
    }

    #[test]
    fn preflight_grants_only_allowed_origins_and_methods() {
        let h = headers(&["http://ui.test:8080/"], false);
        let ok = preflight(&h, "http://ui.test:8080", "DELETE");
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://ui.test:8080"
        );
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, HEAD, DELETE"
        );
        let other = preflight(&h, "http://evil.test", "GET");
        assert_eq!(other.status(), StatusCode::FORBIDDEN);
        assert!(
            !other
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        assert_eq!(
            preflight(&h, "http://ui.test:8080", "PUT").status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn decorate_adds_configured_and_cors_headers() {
        let h = headers(&["*"], true);
        let mut resp = Response::new(crate::http::empty());
        h.decorate(Some(&HeaderValue::from_static("http://a.test")), &mut resp);
        let r = resp.headers();
        assert_eq!(r["x-content-type-options"], "nosniff");
        // With credentials a wildcard is answered with the origin itself.
        assert_eq!(r[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://a.test");
        assert_eq!(r[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(
            r[header::ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .unwrap()
                .contains("Docker-Content-Digest")
        );
        let off = headers(&[], false);
        let mut resp = Response::new(crate::http::empty());
        off.decorate(Some(&HeaderValue::from_static("http://a.test")), &mut resp);
        assert!(
            !resp
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }
}
