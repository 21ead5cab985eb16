//! One UI request as the pages see it: who is looking (a session's user or anonymous, with what
//! the listener lets anonymous clients do), the API's request value that the access checks of
//! `http::auth` judge, the query, the form of a `POST`, the cookies the answer sets, and the
//! answers every page may give (the frame, the error page, "log in to see this").

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::csrf::{self, FORM_COOKIE, SESSION_COOKIE};
use super::session::{self, Limits, NoRandomness, Session};
use super::view::{self, Chrome, ErrorPage};
use crate::auth::{Action, Principal};
use crate::http::Body;
use crate::http::app::{App, Conn, Req};
use crate::http::auth::authorize;
use crate::http::error::ApiError;
use crate::http::route::Route;

/// Largest form body accepted (a delete or a login: a few hundred bytes).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// One request to a UI page.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub conn: Conn,
    /// The request as the API's access checks take it (its query is left empty: UI query
    /// parameters such as `ns` must not change whose rules apply).
    pub req: Req,
    pub query: HashMap<String, String>,
    /// The live session and its cookie value, if the visitor is logged in.
    pub session: Option<(String, Session)>,
    /// The host the browser asked for (pull commands, the origin check).
    pub host: String,
    pub now: SystemTime,
    /// `Set-Cookie` values the answer carries.
    pub cookies: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// Reads who is looking from the session cookie. A cookie of a session that is over (idle,
    /// too old, logged out, or its account changed) is cleared and the visitor is anonymous.
    pub fn new(
        app: &'a App,
        conn: Conn,
        parts: http::request::Parts,
        body: Incoming,
        limits: Limits,
    ) -> Ctx<'a> {
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let host = request_host(&parts, conn);
        let mut cookies = Vec::new();
        let session = csrf::cookie(&parts.headers, SESSION_COOKIE).and_then(|id| {
            let store = session::store();
            let found = store
                .find(id, limits, Instant::now())
                .filter(|s| app.auth.account_tag(&s.user) == Some(s.account));
            if found.is_none() {
                store.close(id);
                cookies.push(csrf::set_cookie(SESSION_COOKIE, "", conn.tls, Some(0)));
            }
            found.map(|s| (id.to_string(), s))
        });
        let who = match &session {
            Some((_, s)) => Principal::User(s.user.clone()),
            None => Principal::Anonymous,
        };
        let settings = app.settings();
        let req = Req {
            method: parts.method,
            headers: parts.headers,
            query: HashMap::new(),
            body,
            who,
            anon: app.auth.policy().anonymous_on(conn.listener),
            body_timeout: settings.body_timeout,
            token_realm: None,
        };
        Ctx {
            app,
            conn,
            req,
            query,
            session,
            host,
            now: SystemTime::now(),
            cookies,
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.session.as_ref().map(|(_, s)| s.user.as_str())
    }

    /// The frame of a page, with `active` marked in the navigation.
    pub fn chrome(&self, active: &'static str) -> Chrome {
        let csrf = self
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default();
        Chrome::new(
            self.user().map(str::to_string),
            csrf,
            active,
            self.app.auth.policy().has_accounts(),
        )
    }

    /// The token this visitor's forms carry: the session's, or without a session the form
    /// cookie's (made now and set on the answer if the visitor has none yet).
    pub fn form_token(&mut self) -> Result<String, NoRandomness> {
        if let Some((_, s)) = &self.session {
            return Ok(s.csrf.clone());
        }
        if let Some(t) = csrf::cookie(&self.req.headers, FORM_COOKIE).filter(|t| t.len() == 43) {
            return Ok(t.to_string());
        }
        let t = session::random_token()?;
        self.cookies
            .push(csrf::set_cookie(FORM_COOKIE, &t, self.conn.tls, None));
        Ok(t)
    }

    /// Checks a form's `POST`: from this origin, with this visitor's token.
    pub fn check_form(&self, form: &HashMap<String, String>) -> Result<(), csrf::Refused> {
        let expected = match &self.session {
            Some((_, s)) => s.csrf.as_str(),
            None => csrf::cookie(&self.req.headers, FORM_COOKIE).unwrap_or(""),
        };
        let own = csrf::own_origin(&self.host, self.conn.tls);
        csrf::check(
            &self.req.headers,
            &own,
            form.get("csrf").map(String::as_str),
            expected,
        )
    }

    /// The fields of a `POST`ed form (`application/x-www-form-urlencoded`), read under a small
    /// limit and the body timeout.
    pub async fn form(&mut self) -> Result<HashMap<String, String>, ApiError> {
        let bad = |m: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                crate::http::error::Code::Unsupported,
                m,
            )
        };
        let form_type = self
            .req
            .header(header::CONTENT_TYPE)
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(bad("a form is sent as application/x-www-form-urlencoded"));
        }
        let body = Limited::new(&mut self.req.body, MAX_FORM_BYTES);
        let collected = tokio::time::timeout(self.req.body_timeout, body.collect())
            .await
            .map_err(|_| bad("the form did not arrive in time"))?
            .map_err(|_| bad("the form is too large or did not arrive whole"))?;
        let bytes = collected.to_bytes();
        Ok(form_urlencoded::parse(&bytes).into_owned().collect())
    }

    /// Whether the visitor may make the API request `route` (with `method`): the API's own
    /// check, so the UI shows and does exactly what the API would allow this visitor.
    pub fn may(&mut self, route: &Route, method: Method) -> bool {
        let saved = std::mem::replace(&mut self.req.method, method);
        let ok = authorize(self.app, route, &self.req).is_ok();
        self.req.method = saved;
        ok
    }

    /// Whether the visitor may do `action` on the repository `name` (listings: as the catalog
    /// decides).
    pub fn may_on(&self, name: &str, action: Action) -> bool {
        self.app.may(&self.req, name, action)
    }

    /// Whether the visitor may see anything of this registry (as `/v2/` and the catalog decide).
    pub fn may_look(&self) -> bool {
        self.app
            .auth
            .policy()
            .may_pull_somewhere(&self.req.who, self.req.anon)
    }

    /// The error page for `e`: its status and message. A server-side failure is logged with a
    /// request id the page quotes, as the API's failures are.
    pub fn error(&self, e: ApiError) -> Response<Body> {
        let mut message = e.message.clone();
        if e.status.is_server_error() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let id = id.get(..16).unwrap_or(&id).to_string();
            tracing::warn!(
                route = "ui", client = %self.conn.client, status = e.status.as_u16(),
                message = %e.message, detail = e.private.as_deref().unwrap_or(""),
                request_id = %id, "UI request failed"
            );
            message = format!("{message} (request id {id}: the registry's log has the details)");
        }
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found".to_string(),
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable".to_string(),
            StatusCode::FORBIDDEN => "Not allowed".to_string(),
            StatusCode::UNAUTHORIZED => "Log in".to_string(),
            s => s.canonical_reason().unwrap_or("Error").to_string(),
        };
        self.error_page(e.status, title, message)
    }

    pub fn error_page(&self, status: StatusCode, title: String, message: String) -> Response<Body> {
        view::html(
            status,
            &ErrorPage {
                chrome: self.chrome(""),
                title,
                message,
            },
        )
    }

    /// 404 for what does not exist or is hidden from this visitor (the two look the same, so a
    /// hidden repository's name is not confirmed).
    pub fn not_found(&self, what: &str) -> Response<Body> {
        self.error_page(
            StatusCode::NOT_FOUND,
            "Not found".into(),
            format!("{what} does not exist here, or you may not see it."),
        )
    }

    /// 401 for a page anonymous visitors may not see: log in first.
    pub fn login_required(&self) -> Response<Body> {
        self.error_page(
            StatusCode::UNAUTHORIZED,
            "Log in".into(),
            "Log in to see this page.".into(),
        )
    }

    /// The storage's 503, if it must not be used now.
    pub fn unavailable(&self) -> Option<Response<Body>> {
        self.app
            .health
            .admit()
            .err()
            .map(|reason| self.error(ApiError::storage_unavailable(&reason)))
    }

    /// A failure to make a token (no randomness): 500, logged.
    pub fn no_randomness(&self, e: NoRandomness) -> Response<Body> {
        self.error(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::http::error::Code::Unknown,
                "the registry could not make a random token",
            )
            .private(e.to_string()),
        )
    }
}

/// The host a browser asked for: `Host` (HTTP/1.1) or the URI's authority (HTTP/2), when it is a
/// plain `host[:port]`; else the listener's address.
fn request_host(parts: &http::request::Parts, conn: Conn) -> String {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .map(str::to_string)
        .unwrap_or_else(|| conn.listener.to_string())
}
