//! `GET /v2/` (end-1): the API version check, plus `/healthz` and `/readyz` for load balancers.

use http::{StatusCode, header};

use super::{App, HandlerResult, Req, json_response, method_not_allowed, response};
use crate::auth::{Anonymous, Principal};
use crate::http::error::ApiError;
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
        return Err(app.refusal(req, None, "get a token".into()));
    }
    let token = app.auth.issue_token(&req.who);
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
