//! `GET /v2/` (end-1): the API version check, plus `/healthz` and `/readyz` for load balancers.

use http::{StatusCode, header};

use super::{App, HandlerResult, Req, method_not_allowed, response};
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
