//! The web UI under `/ui/`: server-rendered pages over the same storage, pull-through cache and
//! access rules as the API, with one stylesheet, a little plain JavaScript (copy buttons) and
//! nothing fetched from another host. A browser asking for `/` is sent to `/ui/`.
//!
//! The parts: `path` turns a path into a page (pure); `ctx` is a request as pages see it (who
//! is looking, through `session`; forms and their protection, through `csrf`); `pages` holds
//! one file per page; `view` the frame every page shares and how sizes and times are written;
//! `assets` the stylesheet and script. Every answer carries the security headers set here.

mod assets;
mod csrf;
mod ctx;
mod pages;
pub mod path;
pub mod session;
mod view;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::Body;
use super::app::{App, Conn};
use super::handlers::base::serves_metrics as serves_listener;
use super::settings::Settings;
use ctx::Ctx;
use pages::{delete, login, manifest, repositories, repository, status, uploads};
use path::Page;
use session::Limits;

/// Scripts and styles from this origin only, never inline; no framing; forms post here only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

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
pub async fn handle(app: &App, req: Request<Incoming>, conn: Conn) -> Response<Body> {
    let page = path::parse(req.uri().path());
    let method = req.method().clone();
    let read = matches!(method, Method::GET | Method::HEAD);
    let mut resp =
        if (read && page.accepts_get()) || (method == Method::POST && page.accepts_post()) {
            serve(app, req, conn, page, read).await
        } else {
            let allow = match (page.accepts_get(), page.accepts_post()) {
                (true, true) => "GET, HEAD, POST",
                (false, _) => "POST",
                (true, false) => "GET, HEAD",
            };
            let mut r = view::plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        };
    secure(&mut resp);
    resp
}

async fn serve(
    app: &App,
    req: Request<Incoming>,
    conn: Conn,
    page: Page,
    read: bool,
) -> Response<Body> {
    match &page {
        Page::Home => return view::redirect("/ui/"),
        Page::Static(version, file) => {
            return assets::serve(version, *file)
                .unwrap_or_else(|| view::plain(StatusCode::NOT_FOUND, "no such file"));
        }
        _ => {}
    }
    let limits = Limits::from_settings(&app.settings().ui);
    let (parts, body) = req.into_parts();
    let mut ctx = Ctx::new(app, conn, parts, body, limits);
    let mut resp = match (&page, read) {
        (Page::Repositories, _) => repositories::get(&mut ctx).await,
        (Page::Repository(name), _) => repository::get(&mut ctx, name).await,
        (Page::Manifest(name, reference), _) => manifest::get(&mut ctx, name, reference).await,
        (Page::Blob(name, digest), _) => manifest::blob(&mut ctx, name, digest).await,
        (Page::Delete(name), true) => delete::confirm(&mut ctx, name).await,
        (Page::Delete(name), false) => delete::submit(&mut ctx, name).await,
        (Page::Upstreams, _) => status::upstreams(&ctx),
        (Page::Node, _) => status::node(&ctx),
        (Page::Uploads, _) => uploads::get(&ctx).await,
        (Page::Login, true) => login::form(&mut ctx),
        (Page::Login, false) => login::submit(&mut ctx, limits).await,
        (Page::Logout, _) => login::logout(&mut ctx).await,
        (Page::Home | Page::Static(..) | Page::NotFound, _) => ctx.not_found("This page"),
    };
    if matches!(page, Page::Blob(..)) {
        // A file of an artifact is the pusher's bytes: never a page of this origin.
        resp.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; sandbox"),
        );
    } else {
        resp.headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    for c in &ctx.cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The headers every UI answer carries: the content security policy (unless a stricter one is
/// set), no framing, no referrer to other sites, no content sniffing.
fn secure(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
