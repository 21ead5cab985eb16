//! One file per resource, as in Distribution's `registry/handlers/`: each turns a parsed route and
//! request into storage calls and a response. What they share (the app state, the request, body
//! readers, response builders, pagination) is re-exported here, so a handler's imports name one
//! place; the dispatch that picks a handler is `http::dispatch`.

pub(super) mod base;
pub(super) mod blobs;
pub(super) mod catalog;
pub(super) mod manifests;
mod page;
pub(super) mod referrers;
pub(super) mod tags;
pub(super) mod uploads;

pub use super::app::{App, Conn, Req, UploadSlot};
pub use super::body::{body_stream, read_limited, too_large, upload_body};
pub use super::respond::{
    HandlerResult, deletes_disabled, json_response, method_not_allowed, response,
};
pub use super::settings::{ConnLimits, MetricsListener, MetricsSettings, Settings, UiSettings};
pub use page::{next_link, page_size, paginate};
