//! The HTTP edge: the listeners (`server`), a watch on HTTP/2 frame floods (`h2guard`), a pure
//! path router (`route`, parsed once per request), authentication and authorization (`auth`), the
//! dispatch of a request to its handler (`dispatch`), OCI error responses (`error`, `respond`),
//! request bodies (`body`), and one handler file per resource (`handlers`); the web UI (`ui`).
//! Handlers translate HTTP to storage calls and back; they hold no storage logic. `app` is the
//! state every request is served with, `settings` what it reads of the configuration.

pub mod app;
pub mod auth;
pub mod body;
pub mod cors;
pub mod dispatch;
pub mod error;
pub mod h2guard;
pub mod handlers;
pub mod pacing;
pub mod range;
pub mod respond;
pub mod route;
pub mod server;
pub mod settings;
pub mod ui;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Every response body: a full buffer, nothing, or a streamed blob.
pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
