//! Blob uploads (end-4a/4b, end-5, end-6, end-11, end-13): monolithic `POST ?digest=`, `POST` then
//! `PUT`, chunked `PATCH` with in-order `Content-Range` (or none, streaming as Docker does), upload
//! status, cancel, and cross-repository mount (`?mount=&from=`, or automatic when `from` is absent and
//! the blob exists).

use http::{Method, StatusCode, header};
use uuid::Uuid;

use super::{App, HandlerResult, Req, method_not_allowed, response, upload_body};
use crate::auth::Action;
use crate::http::error::{ApiError, Code, upload_range};
use crate::http::range::parse_content_range;
use crate::registry::{Digest, RepoName};
use crate::storage::ChunkSpan;

fn upload_headers(name: &RepoName, id: &Uuid, offset: u64) -> Vec<(header::HeaderName, String)> {
    vec![
        (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
        (header::RANGE, upload_range(offset)),
        (
            header::HeaderName::from_static("docker-upload-uuid"),
            id.to_string(),
        ),
        (header::CONTENT_LENGTH, "0".into()),
    ]
}

fn created(name: &RepoName, digest: &Digest) -> HandlerResult {
    Ok(response(
        StatusCode::CREATED,
        &[
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        crate::http::empty(),
    ))
}

fn digest_param(req: &Req, key: &str) -> Result<Option<Digest>, ApiError> {
    match req.query.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e: crate::registry::digest::DigestError| {
                ApiError::new(StatusCode::BAD_REQUEST, Code::DigestInvalid, e.to_string())
            }),
    }
}

/// `POST /v2/<name>/blobs/uploads/`
pub async fn start(app: &App, name: RepoName, req: Req) -> HandlerResult {
    if req.method != Method::POST {
        return Err(method_not_allowed(&req.method));
    }
    if let Some(mount) = digest_param(&req, "mount")? {
        let source = match req.query.get("from") {
            Some(from) => {
                let from: RepoName =
                    from.parse()
                        .map_err(|e: crate::registry::name::NameError| {
                            ApiError::new(StatusCode::BAD_REQUEST, Code::NameInvalid, e.to_string())
                        })?;
                // Mounting needs pull rights on the source: a blob of a private repository must
                // not become readable by linking it into a public one.
                app.may(&req, from.as_str(), Action::Pull)
                    && app.storage.blob_linked(&from, &mount).await?
            }
            // Without `from` any repository could be the source, so only where every user
            // may read every repository (no per-repository rules).
            None => {
                !app.auth.policy().has_rules()
                    && app.storage.blob_size_global(&mount).await?.is_some()
            }
        };
        if source {
            // Linking must not interleave with a GC sweep, and the blob may have been collected
            // since the check above: then the client uploads it instead.
            let _sweep = app.storage.push_guard().await?;
            if app.storage.blob_size_global(&mount).await?.is_some() {
                app.storage.link_blob(&name, &mount).await?;
                tracing::debug!(repository = %name, digest = %mount, "blob mounted");
                return created(&name, &mount);
            }
        }
        // Not mountable: the client falls back to a regular upload at the Location we return.
    }
    if let Some(digest) = digest_param(&req, "digest")? {
        let max = app.settings().max_blob_bytes;
        check_size(&req, max, 0)?;
        let id = app.storage.start_upload(&name).await?;
        let done = app
            .storage
            .complete_upload(
                &name,
                &id,
                &digest,
                None,
                Some(upload_body(req, &app.settings(), max, 0)),
            )
            .await;
        if let Err(e) = done {
            // The client never saw this session: leave nothing behind (a full disk, a cut body).
            let _ = app.storage.cancel_upload(&name, &id).await;
            return Err(e.into());
        }
        return created(&name, &digest);
    }
    let id = app.storage.start_upload(&name).await?;
    Ok(response(
        StatusCode::ACCEPTED,
        &upload_headers(&name, &id, 0),
        crate::http::empty(),
    ))
}

/// `PATCH`, `PUT`, `GET`, `DELETE /v2/<name>/blobs/uploads/<id>`
pub async fn handle(app: &App, name: RepoName, id: Uuid, req: Req) -> HandlerResult {
    match req.method {
        Method::GET | Method::HEAD => {
            let status = app.storage.upload_status(&name, &id).await?;
            Ok(response(
                StatusCode::NO_CONTENT,
                &upload_headers(&name, &id, status.offset),
                crate::http::empty(),
            ))
        }
        Method::PATCH => {
            let span = chunk_span(&req)?;
            let (max, already) = size_budget(app, &name, &id, span).await?;
            check_size(&req, max, already)?;
            let offset = app
                .storage
                .append_upload(
                    &name,
                    &id,
                    span,
                    upload_body(req, &app.settings(), max, already),
                )
                .await?;
            Ok(response(
                StatusCode::ACCEPTED,
                &upload_headers(&name, &id, offset),
                crate::http::empty(),
            ))
        }
        Method::PUT => {
            let digest = digest_param(&req, "digest")?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::DigestInvalid,
                    "PUT to complete an upload needs ?digest=",
                )
            })?;
            let span = chunk_span(&req)?;
            let (max, already) = size_budget(app, &name, &id, span).await?;
            check_size(&req, max, already)?;
            app.storage
                .complete_upload(
                    &name,
                    &id,
                    &digest,
                    span,
                    Some(upload_body(req, &app.settings(), max, already)),
                )
                .await?;
            tracing::debug!(repository = %name, digest = %digest, "blob upload completed");
            created(&name, &digest)
        }
        Method::DELETE => {
            app.storage.cancel_upload(&name, &id).await?;
            Ok(response(
                StatusCode::NO_CONTENT,
                &[(header::CONTENT_LENGTH, "0".into())],
                crate::http::empty(),
            ))
        }
        ref m => Err(method_not_allowed(m)),
    }
}

/// The blob size limit, and how much of it the upload has used (looked up only when there is a limit).
async fn size_budget(
    app: &App,
    name: &RepoName,
    id: &Uuid,
    span: Option<ChunkSpan>,
) -> Result<(u64, u64), ApiError> {
    let max = app.settings().max_blob_bytes;
    if max == 0 {
        return Ok((0, 0));
    }
    let already = match span {
        Some(s) => s.start,
        None => app.storage.upload_status(name, id).await?.offset,
    };
    Ok((max, already))
}

/// Refuses at once a body whose declared length would take the blob past the limit (a sum past
/// `u64::MAX` is past any limit, not a small number).
fn check_size(req: &Req, max: u64, already: u64) -> Result<(), ApiError> {
    let Some(len) = req.content_length() else {
        return Ok(());
    };
    let total = already.checked_add(len);
    if max == 0 || total.is_some_and(|t| t <= max) {
        return Ok(());
    }
    let total = total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string());
    Err(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::SizeInvalid,
        format!(
            "blob would be {total} bytes, more than the {max} this registry accepts (limits.max_blob_bytes)"
        ),
    ))
}

/// Where a chunk claims to go in `Content-Range`, checked against its `Content-Length`; storage
/// then holds the body to it. `None` when the header is absent (the chunk continues wherever the
/// upload stands, as long as it runs).
fn chunk_span(req: &Req) -> Result<Option<ChunkSpan>, ApiError> {
    let Some(raw) = req.header(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let range = parse_content_range(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            Code::RangeInvalid,
            format!("Content-Range {raw:?} is not <start>-<end>"),
        )
    })?;
    if let Some(len) = req.content_length()
        && len != range.len()
    {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            Code::RangeInvalid,
            format!(
                "Content-Range {raw:?} covers {} bytes but Content-Length is {len}",
                range.len()
            ),
        ));
    }
    Ok(Some(ChunkSpan {
        start: range.start,
        len: range.len(),
    }))
}
