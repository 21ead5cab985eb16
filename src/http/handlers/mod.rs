//! Request dispatch and the helpers every handler shares. One file per resource, as in Distribution's
//! `registry/handlers/`: each turns a parsed route and request into storage calls and a response.

mod base;
mod blobs;
mod catalog;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyStream;
use hyper::body::Incoming;

use super::Body;
use super::error::{ApiError, Code};
use super::route::{self, Route};
use crate::health::Health;
use crate::proxy::{Proxy, Target};
use crate::registry::RepoName;
use crate::storage::Storage;
use arc_swap::ArcSwap;

/// Settings a reload may change while requests are in flight.
#[derive(Debug, Clone)]
pub struct Settings {
    pub delete_enabled: bool,
    pub max_manifest_bytes: u64,
}

/// What every handler may use: storage, its health, and the request-path settings.
pub struct App {
    pub storage: Storage,
    pub health: Health,
    pub settings: ArcSwap<Settings>,
    /// The pull-through cache's upstreams (none: every name is local).
    pub proxy: Proxy,
}

impl App {
    pub fn new(storage: Storage, delete_enabled: bool, max_manifest_bytes: u64) -> Arc<App> {
        App::with_health(
            storage,
            Health::always(),
            Settings {
                delete_enabled,
                max_manifest_bytes,
            },
        )
    }

    pub fn with_health(storage: Storage, health: Health, settings: Settings) -> Arc<App> {
        App::build(storage, health, settings, Proxy::none())
    }

    pub fn build(storage: Storage, health: Health, settings: Settings, proxy: Proxy) -> Arc<App> {
        Arc::new(App {
            storage,
            health,
            settings: ArcSwap::from_pointee(settings),
            proxy,
        })
    }

    /// Where a repository name leads in the pull-through cache (`ns` is containerd's mirror form).
    pub fn target(&self, name: &RepoName, req: &Req) -> Option<Target> {
        self.proxy
            .target(name, req.query.get("ns").map(String::as_str))
    }

    /// Refuses a push into an upstream's namespace (nobody may shadow a public image for the whole
    /// cluster) unless that upstream's `push = true`.
    fn refuse_push(&self, name: &RepoName) -> Result<(), ApiError> {
        match self.proxy.refuses_push(name) {
            None => Ok(()),
            Some(upstream) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                Code::Denied,
                format!(
                    "{name} is in the namespace of upstream {upstream}, which is read-only here; push \
                     under another name, or set push = true in that [[upstream]]"
                ),
            )),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    fn unavailable(&self) -> Option<ApiError> {
        self.health
            .admit()
            .err()
            .map(|reason| ApiError::storage_unavailable(&reason))
    }
}

pub type HandlerResult = Result<Response<Body>, ApiError>;

/// The request as handlers see it: method, headers, query, and the body still streaming.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Incoming,
}

impl Req {
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
    }
}

/// Turns a request body into a stream of byte chunks, the form storage takes.
pub fn body_stream(body: Incoming) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    Box::pin(BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    }))
}

/// Reads a body into memory, refusing more than `limit` bytes.
pub async fn read_limited(body: Incoming, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut s = body_stream(body);
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::BlobUploadInvalid,
                format!("request body: {e}"),
            )
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::SizeInvalid,
        format!(
            "manifest is larger than the {limit} bytes this registry accepts (limits.max_manifest_bytes)"
        ),
    )
}

/// `n` and `last` pagination over a sorted list: the page, and whether more follows.
/// The page size `n` of a listing request, if given.
pub fn page_size(query: &HashMap<String, String>) -> Result<Option<usize>, ApiError> {
    query
        .get("n")
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::PaginationNumberInvalid,
                    format!("n={v:?} is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

pub fn paginate<'a>(
    items: &'a [String],
    query: &HashMap<String, String>,
) -> Result<(&'a [String], bool), ApiError> {
    let n = page_size(query)?;
    // Listings are sorted, so the entries after `last` start where `last` would be inserted.
    let items = match query.get("last") {
        Some(last) => &items[items.partition_point(|i| i.as_str() <= last.as_str())..],
        None => items,
    };
    Ok(match n {
        Some(n) if items.len() > n => (&items[..n], n > 0),
        _ => (items, false),
    })
}

/// A `Link` header for the next page: `</v2/...?n=N&last=X>; rel="next"`.
pub fn next_link(path: &str, n: &str, last: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", n)
        .append_pair("last", last)
        .finish();
    format!("<{path}?{q}>; rel=\"next\"")
}

pub fn json_response(
    status: StatusCode,
    value: &impl serde::Serialize,
    head_only: bool,
) -> Response<Body> {
    // Serializing plain data (strings, slices of strings) cannot fail; `null` is the impossible case.
    let body = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let len = body.len();
    let mut r = Response::new(if head_only {
        super::empty()
    } else {
        super::full(body)
    });
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

/// Handles one request; never fails (every error is an OCI error response).
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let head_only = parts.method == Method::HEAD;
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let route = route::parse(parts.uri.path());
    let req = Req {
        method: parts.method,
        headers: parts.headers,
        query,
        body,
    };
    let result = match route {
        Err(e) => Err(ApiError::from(e)),
        Ok(route) => dispatch(&app, route, req).await,
    };
    result.unwrap_or_else(|e| e.into_response(head_only))
}

async fn dispatch(app: &App, route: Route, req: Req) -> HandlerResult {
    match route {
        Route::Healthz => base::healthz(),
        Route::Readyz => base::readyz(app),
        Route::Base => base::version(&req),
        route => {
            if let Some(e) = app.unavailable() {
                return Err(e);
            }
            match route {
                Route::Catalog => catalog::get(app, &req).await,
                Route::Tags(name) => tags::get(app, &name, &req).await,
                Route::Manifest(name, reference) => {
                    if req.method == Method::PUT {
                        app.refuse_push(&name)?;
                    }
                    manifests::handle(app, name, reference, req).await
                }
                Route::Blob(name, digest) => blobs::handle(app, &name, &digest, &req).await,
                Route::UploadStart(name) => {
                    app.refuse_push(&name)?;
                    uploads::start(app, name, req).await
                }
                Route::Upload(name, id) => {
                    app.refuse_push(&name)?;
                    uploads::handle(app, name, id, req).await
                }
                Route::Referrers(name, digest) => referrers::get(app, &name, &digest, &req).await,
                Route::Healthz | Route::Readyz | Route::Base => base::healthz(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn pagination() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let pg = |items: &[String], q: &HashMap<String, String>| {
            paginate(items, q).map(|(page, more)| (page.to_vec(), more))
        };
        assert_eq!(pg(&items, &q(&[])).unwrap(), (items.clone(), false));
        assert_eq!(
            pg(&items, &q(&[("n", "2")])).unwrap(),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            pg(&items, &q(&[("n", "2"), ("last", "b")])).unwrap(),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(pg(&items, &q(&[("last", "d")])).unwrap(), (vec![], false));
        assert_eq!(pg(&items, &q(&[("n", "0")])).unwrap(), (vec![], false));
        assert!(pg(&items, &q(&[("n", "-1")])).is_err());
        assert_eq!(
            next_link("/v2/_catalog", "2", "b/c"),
            "</v2/_catalog?n=2&last=b%2Fc>; rel=\"next\""
        );
    }
}
