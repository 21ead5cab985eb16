//! One request, from its parsed route to the handler of its resource, through the checks every
//! request passes in this order: the CORS preflight, clients too old to speak v2, `/metrics`, the
//! probes (open to all), authentication, the token endpoint, authorization, the storage's health,
//! the read-only refusal, the upstreams' namespaces and the upload slots.

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::Body;
use super::app::{App, Conn, Req};
use super::auth::{self, Caller};
use super::error::{ApiError, Code};
use super::handlers::{base, blobs, catalog, manifests, referrers, tags, uploads};
use super::respond::{self, HandlerResult};
use super::route::{Kind, Route, Routed};
use super::settings::Settings;

/// Handles one request; never fails (every error is an OCI error response). `routed` is its path,
/// parsed once by the caller, which logs the same route; `settings` are those in force when it
/// arrived.
pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    conn: Conn,
    settings: &Settings,
    routed: &Routed,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = if routed.kind == Kind::Ui && super::ui::serves(settings, conn) {
        super::ui::handle(app, req, conn).await
    } else if req.method() == Method::OPTIONS {
        settings.headers.options(req.headers())
    } else {
        let head_only = req.method() == Method::HEAD;
        handle_api(app, req, conn, settings, routed)
            .await
            .unwrap_or_else(|e| {
                respond::failure(e, &method, routed.kind.label(), conn.client, head_only)
            })
    };
    settings.headers.decorate(origin.as_ref(), &mut resp);
    crate::metrics::get().request(
        &method,
        routed.kind.label(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// Docker before 1.6 speaks only the v1 protocol and misreads v2 answers; it gets a clear 404, as
/// Distribution's documentation has its nginx front do.
fn too_old_client(headers: &HeaderMap) -> bool {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ua.starts_with("Go 1.1 package http")
        || ["docker/1.3.", "docker/1.4.", "docker/1.5."]
            .iter()
            .any(|p| ua.starts_with(p))
}

async fn handle_api(
    app: &App,
    req: Request<Incoming>,
    conn: Conn,
    settings: &Settings,
    routed: &Routed,
) -> HandlerResult {
    let (parts, body) = req.into_parts();
    if too_old_client(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::Unsupported,
            "this client speaks only the v1 registry protocol; use Docker 1.6 or later",
        ));
    }
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let metrics = &settings.metrics;
    if routed.kind == Kind::Metrics
        && !metrics.path.is_empty()
        && base::serves_metrics(metrics, conn.listener)
    {
        return base::metrics(app, &parts, conn, metrics).await;
    }
    let route = routed
        .route
        .as_ref()
        .map_err(|e| ApiError::from(e.clone()))?;
    if matches!(route, Route::Healthz | Route::Readyz) {
        // Probes answer without credentials on every listener.
        return match route {
            Route::Readyz => base::readyz(app),
            _ => base::healthz(),
        };
    }
    let Caller {
        who,
        anon,
        token_realm,
    } = auth::identify(app, &parts, conn, route).await?;
    let req = Req {
        method: parts.method,
        headers: parts.headers,
        query,
        body,
        who,
        anon,
        body_timeout: settings.body_timeout,
        token_realm,
    };
    if *route == Route::Token {
        return base::token(app, &req);
    }
    auth::authorize(app, route, &req)?;
    dispatch(app, route, req).await
}

async fn dispatch(app: &App, route: &Route, req: Req) -> HandlerResult {
    match route {
        Route::Healthz => base::healthz(),
        Route::Readyz => base::readyz(app),
        Route::Base => base::version(&req),
        Route::BadReference(_, e) => Err(manifests::bad_reference(&req.method, e.clone())),
        route => {
            if let Some(e) = app.unavailable() {
                return Err(e);
            }
            if route.is_write(&req.method) {
                app.refuse_write()?;
            }
            match route {
                Route::Catalog => catalog::get(app, &req).await,
                Route::Tags(name) => tags::get(app, name, &req).await,
                Route::Manifest(name, reference) => {
                    if req.method == Method::PUT {
                        app.refuse_push(name)?;
                    }
                    manifests::handle(app, name.clone(), reference.clone(), req).await
                }
                Route::Blob(name, digest) => blobs::handle(app, name, digest, &req).await,
                Route::UploadStart(name) => {
                    app.refuse_push(name)?;
                    let _slot = app.upload_slot()?;
                    uploads::start(app, name.clone(), req).await
                }
                Route::Upload(name, id) => {
                    app.refuse_push(name)?;
                    let _slot = match req.method {
                        Method::PATCH | Method::PUT => Some(app.upload_slot()?),
                        _ => None,
                    };
                    uploads::handle(app, name.clone(), *id, req).await
                }
                Route::Referrers(name, digest) => referrers::get(app, name, digest, &req).await,
                Route::Healthz
                | Route::Readyz
                | Route::Base
                | Route::Token
                | Route::BadReference(..) => base::healthz(),
            }
        }
    }
}
