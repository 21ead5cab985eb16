//! Building responses: the headers and bodies handlers answer with, the refusals every endpoint
//! shares, and the last step of every failed request (an OCI error body, and for a server-side
//! failure a request id that the log line carries too).

use std::net::SocketAddr;

use http::{Method, Response, StatusCode, header};

use super::error::ApiError;
use super::{Body, empty, full};

/// What a handler answers: a response, or the error that becomes one.
pub type HandlerResult = Result<Response<Body>, ApiError>;

pub fn json_response(
    status: StatusCode,
    value: &impl serde::Serialize,
    head_only: bool,
) -> Response<Body> {
    // Serializing plain data (strings, slices of strings) cannot fail; `null` is the impossible case.
    let body = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let len = body.len();
    let mut r = Response::new(if head_only { empty() } else { full(body) });
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    r
}

/// Builds a response with headers whose values the handler produced (always valid ASCII).
pub fn response(
    status: StatusCode,
    headers: &[(header::HeaderName, String)],
    body: Body,
) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = header::HeaderValue::from_str(value) {
            r.headers_mut().insert(name.clone(), v);
        }
    }
    r
}

pub fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::unsupported(format!("method {method} is not allowed on this endpoint"))
}

pub fn deletes_disabled() -> ApiError {
    ApiError::unsupported("deletes are disabled on this registry (storage.delete_enabled = false)")
}

/// The response for a request that failed. A client error is the client's business; a server-side
/// failure is the operator's, and the journal is where they look for it: the client gets the
/// request id to quote, the log gets what went wrong inside (`route` is the request's metrics label).
pub fn failure(
    mut e: ApiError,
    method: &Method,
    route: &'static str,
    client: SocketAddr,
    head_only: bool,
) -> Response<Body> {
    if e.status.is_server_error() {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = &id[..16];
        tracing::warn!(
            method = %method, route, client = %client,
            status = e.status.as_u16(), message = %e.message,
            detail = e.private.as_deref().unwrap_or(""), request_id = id,
            "request failed"
        );
        e.message = format!(
            "{} (request id {id}: the registry's log has the details)",
            e.message
        );
        e = e.header(header::HeaderName::from_static("x-request-id"), id);
    }
    e.into_response(head_only)
}
