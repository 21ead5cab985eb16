//! `GET /v2/` (end-1): the API version check, plus `/healthz` and `/readyz` for load balancers.

use http::{StatusCode, header};

use std::net::SocketAddr;

use super::{App, Conn, HandlerResult, Req, json_response, method_not_allowed, response};
use crate::auth::{Anonymous, AuthError, Principal};
use crate::http::auth::{auth_refusal, challenge, refusal, throttled};
use crate::http::error::ApiError;
use crate::http::settings::{MetricsListener, MetricsSettings};
use crate::http::{empty, full};

pub fn version(req: &Req) -> HandlerResult {
    match req.method {
        http::Method::GET | http::Method::HEAD => {}
        ref m => return Err(method_not_allowed(m)),
    }
    let body = if req.method == http::Method::HEAD {
        empty()
    } else {
        full("{}")
    };
    Ok(response(
        StatusCode::OK,
        &[
            (header::CONTENT_TYPE, "application/json".into()),
            (header::CONTENT_LENGTH, "2".into()),
            (
                header::HeaderName::from_static("docker-distribution-api-version"),
                "registry/2.0".into(),
            ),
        ],
        body,
    ))
}

pub fn healthz() -> HandlerResult {
    Ok(response(
        StatusCode::OK,
        &[(header::CONTENT_TYPE, "text/plain".into())],
        full("ok\n"),
    ))
}

pub fn readyz(app: &App) -> HandlerResult {
    if app.health.is_ready() {
        return Ok(response(
            StatusCode::OK,
            &[(header::CONTENT_TYPE, "text/plain".into())],
            full("ready\n"),
        ));
    }
    Err(ApiError::storage_unavailable(&app.health.reason()))
}

/// `GET /auth/token`: a Bearer token for the Basic credentials sent (already verified by the
/// time this runs), or an anonymous one where anonymous clients may do anything. `docker login`
/// fetches one to check the password, so wrong credentials never reach here (401 earlier).
pub fn token(app: &App, req: &Req) -> HandlerResult {
    if req.method != http::Method::GET {
        return Err(method_not_allowed(&req.method));
    }
    if req.who == Principal::Anonymous && req.anon == Anonymous::None {
        return Err(refusal(app, req, None, "get a token".into()));
    }
    let token = match app
        .auth
        .issue_token(req.header(header::AUTHORIZATION), &req.who)
    {
        Ok(t) => t,
        Err(e) => return Err(auth_refusal(app, req.token_realm.as_deref(), e)),
    };
    let issued_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": crate::auth::token::LIFETIME_SECS,
            "issued_at": issued_at,
        }),
        false,
    ))
}

/// Whether `/metrics` answers on `listener` (`metrics.listeners`).
pub fn serves_metrics(m: &MetricsSettings, listener: SocketAddr) -> bool {
    m.listeners.iter().any(|l| match l {
        MetricsListener::All => true,
        MetricsListener::Local => crate::auth::policy::is_node_local(listener.ip()),
        MetricsListener::Address(a) => *a == listener,
    })
}

/// `GET /metrics`: every metric in the OpenMetrics text format. With `metrics.users`, only those
/// users (Basic auth, as Prometheus' `basic_auth` sends it) may read them; otherwise anyone who
/// reaches the listener.
pub async fn metrics(
    app: &App,
    parts: &http::request::Parts,
    conn: Conn,
    m: &MetricsSettings,
) -> HandlerResult {
    match parts.method {
        http::Method::GET | http::Method::HEAD => {}
        ref other => return Err(method_not_allowed(other)),
    }
    if !m.users.is_empty() {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let allowed = match app.auth.identify(authorization, conn.client.ip()).await {
            Ok(Principal::User(u)) => m.users.iter().any(|x| x == "*" || *x == u),
            Ok(Principal::Anonymous) => false,
            Err(AuthError::Throttled(wait)) => return Err(throttled(wait)),
            Err(_) => false,
        };
        if !allowed {
            return Err(challenge(
                app,
                None,
                None,
                "metrics need a login as one of metrics.users".into(),
            ));
        }
    }
    let text = crate::metrics::get().encode();
    let len = text.len();
    let body = if parts.method == http::Method::HEAD {
        empty()
    } else {
        full(text)
    };
    Ok(response(
        StatusCode::OK,
        &[
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE.into()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    ))
}
