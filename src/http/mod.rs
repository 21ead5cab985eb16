//! The HTTP edge: a pure path router, OCI error responses, and one handler file per resource.
//! Handlers translate HTTP to storage calls and back; they hold no storage logic.

pub mod body;
pub mod cors;
pub mod error;
pub mod handlers;
pub mod pacing;
pub mod range;
pub mod route;
pub mod server;

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
