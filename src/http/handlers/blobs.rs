//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>` (end-2, end-10): blobs stream from storage with
//! `Range` support, so memory stays flat whatever the blob size.

use futures_util::TryStreamExt;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::{App, HandlerResult, Req, deletes_disabled, method_not_allowed, response};
use crate::http::error::{ApiError, Code};
use crate::http::pacing::Pace;
use crate::http::range::{RangeRequest, parse_range};
use crate::proxy::{Blob, UpstreamBlob};
use crate::registry::{Digest, RepoName};

pub async fn handle(app: &App, name: &RepoName, digest: &Digest, req: &Req) -> HandlerResult {
    match req.method {
        Method::GET | Method::HEAD => get(app, name, digest, req).await,
        Method::DELETE => {
            if !app.settings().delete_enabled {
                return Err(deletes_disabled());
            }
            app.storage.unlink_blob(name, digest).await?;
            Ok(response(
                StatusCode::ACCEPTED,
                &[(header::CONTENT_LENGTH, "0".into())],
                crate::http::empty(),
            ))
        }
        ref m => Err(method_not_allowed(m)),
    }
}

async fn get(app: &App, name: &RepoName, digest: &Digest, req: &Req) -> HandlerResult {
    let repository = app
        .proxy
        .repository(name, req.query.get("ns").map(String::as_str));
    let size = match repository.blob(digest).await.map_err(blob_error)? {
        Blob::Stored(size) => size,
        Blob::Upstream(remote) => return from_upstream(&remote, digest, req).await,
    };
    let mut headers = vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (
            header::HeaderName::from_static("docker-content-digest"),
            digest.to_string(),
        ),
        (header::ACCEPT_RANGES, "bytes".into()),
        (header::ETAG, format!("\"{digest}\"")),
        (header::CACHE_CONTROL, "max-age=31536000".into()),
    ];
    let (status, start, len) = match parse_range(req.header(header::RANGE), size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial(r) => {
            headers.push((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end),
            ));
            (StatusCode::PARTIAL_CONTENT, r.start, r.len())
        }
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Code::RangeInvalid,
                format!("range is outside the blob's {size} bytes"),
            )
            .header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    headers.push((header::CONTENT_LENGTH, len.to_string()));
    if req.method == Method::HEAD {
        return Ok(response(status, &headers, crate::http::empty()));
    }
    if let Some(url) = app.storage.blob_redirect(digest) {
        // The client fetches the bytes from the object store itself (its Range header too).
        let headers = [
            (header::LOCATION, url),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
            (header::CONTENT_LENGTH, "0".to_string()),
        ];
        return Ok(response(
            StatusCode::TEMPORARY_REDIRECT,
            &headers,
            crate::http::empty(),
        ));
    }
    // Paced to what the client takes, and counted against its connection (see http::pacing):
    // innermost, so the chunk the digest check holds back is counted too.
    let pace = Pace::current();
    let blob = app
        .storage
        .open_blob_sized(digest, start, len, Some(pace.read_size()))
        .await?;
    let mut blob = pace.track(blob);
    if start == 0 && len == size {
        blob = app.storage.verifying(digest, blob);
    }
    let d = digest.clone();
    let stream = blob
        .inspect_err(move |e| tracing::warn!(digest = %d, error = %e, "blob stream failed"))
        .map_ok(Frame::data);
    Ok(response(status, &headers, StreamBody::new(stream).boxed()))
}

/// A blob of a cached repository that is not stored yet: HEAD asks the upstream for its size; GET
/// streams it while it is being stored (the whole blob: a range is served once it is stored).
async fn from_upstream(remote: &UpstreamBlob<'_>, digest: &Digest, req: &Req) -> HandlerResult {
    let blob_headers = |size: u64| {
        vec![
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::ETAG, format!("\"{digest}\"")),
            (
                header::HeaderName::from_static("x-registryd-cache"),
                "fetched".to_string(),
            ),
        ]
    };
    if req.method == Method::HEAD {
        let size = remote.size().await.map_err(blob_error)?;
        return Ok(response(
            StatusCode::OK,
            &blob_headers(size),
            crate::http::empty(),
        ));
    }
    let (size, blob) = remote.fetch().await.map_err(blob_error)?;
    // Counted against the connection like a stored blob (the chunks are what the fill delivers).
    let blob = Pace::current().track(blob);
    let d = digest.clone();
    let stream = blob
        .inspect_err(move |e| tracing::warn!(digest = %d, error = %e, "blob stream from the upstream failed"))
        .map_ok(Frame::data);
    Ok(response(
        StatusCode::OK,
        &blob_headers(size),
        StreamBody::new(stream).boxed(),
    ))
}

/// An upstream's "not found" for a blob is BLOB_UNKNOWN.
fn blob_error(e: crate::proxy::ProxyError) -> ApiError {
    let mut e = ApiError::from(e);
    if e.code == Code::ManifestUnknown {
        e.code = Code::BlobUnknown;
    }
    e
}
