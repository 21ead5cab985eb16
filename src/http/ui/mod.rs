//! The web UI under `/ui/`: server-rendered pages over the same storage, pull-through cache and
//! access rules as the API, with a little plain JavaScript and nothing fetched from another host.
//! A browser asking for `/` is sent to `/ui/`.

use askama::Template;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::app::{App, Conn};
use super::handlers::base::serves_metrics as serves_listener;
use super::settings::Settings;
use super::{Body, empty, full};

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    node: String,
}

/// Whether the UI answers on the listener `conn` came through.
pub fn serves(settings: &Settings, conn: Conn) -> bool {
    let ui = &settings.ui;
    ui.enabled
        && serves_listener(
            &super::settings::MetricsSettings {
                path: String::new(),
                listeners: ui.listeners.clone(),
                users: Vec::new(),
            },
            conn.listener,
        )
}

/// Answers one request under `/ui/` (or `/`).
pub async fn handle(app: &App, req: Request<Incoming>, _conn: Conn) -> Response<Body> {
    let path = req.uri().path();
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match path {
        "/" | "/ui" => redirect("/ui/"),
        "/ui/" => html(Home {
            node: app.status.node().name,
        }),
        _ => plain(StatusCode::NOT_FOUND, "no such page"),
    }
}

fn html(page: impl Template) -> Response<Body> {
    match page.render() {
        Ok(body) => {
            let mut r = Response::new(full(body));
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
                "this page did not render",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, header::HeaderValue::from_static(to));
    r
}
