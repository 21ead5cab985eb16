//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>` (end-3, end-7, end-9): manifests are
//! stored byte-exact and served with their digest, media type and an `ETag` for conditional GET.
//! A push is refused when anything it references is missing from the repository (its subject
//! excepted: a referrer may arrive before what it refers to).

use std::time::Duration;

use http::{Method, StatusCode, header};
use serde_json::json;

use super::{
    App, HandlerResult, Req, deletes_disabled, method_not_allowed, read_limited, response,
    too_large,
};
use crate::http::error::{ApiError, Code};
use crate::proxy::Freshness;
use crate::registry::manifest::{self, Manifest};
use crate::registry::reference::ReferenceError;
use crate::registry::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::storage::manifests::ReferrerEntry;
use crate::storage::{Held, StorageError};

pub async fn handle(app: &App, name: RepoName, reference: Reference, req: Req) -> HandlerResult {
    match req.method {
        Method::GET | Method::HEAD => get(app, &name, &reference, &req).await,
        Method::PUT => put(app, name, reference, req).await,
        Method::DELETE => delete(app, &name, &reference).await,
        ref m => Err(method_not_allowed(m)),
    }
}

async fn get(app: &App, name: &RepoName, reference: &Reference, req: &Req) -> HandlerResult {
    let (digest, manifest, cache) = app
        .proxy
        .repository(name, req.query.get("ns").map(String::as_str))
        .manifest(reference)
        .await?;
    // A pull: any GET, and a HEAD by tag (containerd resolves a tag with a HEAD and GETs only
    // what it lacks, so a running deployment shows as HEADs). A HEAD by digest only asks whether
    // a pusher needs to send it.
    if cache.is_none() && (req.method == Method::GET || matches!(reference, Reference::Tag(_))) {
        app.proxy.pulled(name, &digest);
    }
    let etag = format!("\"{digest}\"");
    let mut headers = vec![
        (
            header::HeaderName::from_static("docker-content-digest"),
            digest.to_string(),
        ),
        (header::CONTENT_TYPE, manifest.media_type.clone()),
        (header::ETAG, etag.clone()),
    ];
    if let Some(f) = cache {
        headers.push((
            header::HeaderName::from_static("x-registryd-cache"),
            f.as_str().to_string(),
        ));
        if f == Freshness::Stale {
            headers.push((
                header::WARNING,
                "110 registryd \"Response is Stale: the upstream could not be reached\"".into(),
            ));
        }
    }
    let not_modified = req
        .header(header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return Ok(response(
            StatusCode::NOT_MODIFIED,
            &headers,
            crate::http::empty(),
        ));
    }
    headers.push((header::CONTENT_LENGTH, manifest.bytes.len().to_string()));
    let body = if req.method == Method::HEAD {
        crate::http::empty()
    } else {
        crate::http::full(manifest.bytes.clone())
    };
    Ok(response(StatusCode::OK, &headers, body))
}

async fn put(app: &App, name: RepoName, reference: Reference, req: Req) -> HandlerResult {
    let limit = app.settings().max_manifest_bytes;
    if req.content_length().is_some_and(|l| l > limit) {
        return Err(too_large(limit));
    }
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_string);
    let bytes = read_limited(req.body, limit, req.body_timeout).await?;
    let digest = match &reference {
        Reference::Digest(d) if d.algorithm() == Algorithm::Sha512 => {
            Digest::compute(Algorithm::Sha512, &bytes)
        }
        _ => Digest::sha256_of(&bytes),
    };
    if let Reference::Digest(claimed) = &reference
        && *claimed != digest
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::DigestInvalid,
            format!("manifest has digest {digest}, not {claimed}"),
        ));
    }
    let parsed = manifest::parse(content_type.as_deref(), &bytes)?;
    // Checking the references and linking the manifest must not interleave with a GC sweep.
    let _sweep = app.storage.push_guard().await?;
    check_references(app, &name, &parsed).await?;
    // An immutable tag's check and write hold a cluster-wide lock of that tag, so two first pushes
    // of one release tag with different manifests cannot both pass the check.
    let _tag_lock = match &reference {
        Reference::Tag(t) => check_tag_may_move(app, &name, t, &digest).await?,
        Reference::Digest(_) => None,
    };
    let referrer = ReferrerEntry::of(&parsed, &digest, bytes.len());
    let tag = match &reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    app.storage
        .put_manifest(&name, &digest, bytes, tag, referrer)
        .await?;
    tracing::debug!(repository = %name, digest = %digest, reference = %reference, "manifest stored");
    let mut headers = vec![
        (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
        (
            header::HeaderName::from_static("docker-content-digest"),
            digest.to_string(),
        ),
        (header::CONTENT_LENGTH, "0".into()),
    ];
    if let Some(s) = &parsed.subject {
        headers.push((
            header::HeaderName::from_static("oci-subject"),
            s.digest.to_string(),
        ));
    }
    Ok(response(
        StatusCode::CREATED,
        &headers,
        crate::http::empty(),
    ))
}

/// Every blob an image references and every manifest an index lists must be in the repository.
async fn check_references(app: &App, name: &RepoName, m: &Manifest) -> Result<(), ApiError> {
    for b in &m.blobs {
        if app.storage.blob_size(name, &b.digest).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::ManifestBlobUnknown,
                format!(
                    "blob {} referenced by the manifest is not in repository {name}",
                    b.digest
                ),
            )
            .detail(json!({"digest": b.digest.to_string()})));
        }
    }
    for child in &m.manifests {
        if !app.storage.manifest_linked(name, &child.digest).await? {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::ManifestUnknown,
                format!(
                    "manifest {} listed by the index is not in repository {name}",
                    child.digest
                ),
            )
            .detail(json!({"digest": child.digest.to_string()})));
        }
    }
    Ok(())
}

/// A tag an immutable rule covers may be pushed once, and again with the same manifest (a CI
/// retry), never moved to another one. For such a tag, returns the tag's lock, held until the
/// push has written it.
async fn check_tag_may_move(
    app: &App,
    name: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<Option<Held>, ApiError> {
    let rules = app.settings().rules.clone();
    let Some(rule) = rules.immutable(name.as_str(), tag.as_str()) else {
        return Ok(None);
    };
    let lock = tag_lock(app, name, tag).await?;
    match app
        .storage
        .resolve_manifest(name, &Reference::Tag(tag.clone()))
        .await
    {
        Ok((current, _)) if current != *digest => Err(immutable(format!(
            "tag {name}:{tag} is immutable ({rule}): it names {current} and cannot be moved to {digest}"
        ))),
        Ok(_) => Ok(Some(lock)),
        // No tag, or one whose link or manifest is unreadable: that one is not overwritten either.
        Err(StorageError::ManifestUnknown) => {
            if app
                .storage
                .list_tags(name)
                .await?
                .iter()
                .any(|t| t == tag.as_str())
            {
                Err(immutable(format!(
                    "tag {name}:{tag} is immutable ({rule}) and exists, but its link or manifest cannot be read (`registryd fsck` says why); it is not overwritten"
                )))
            } else {
                Ok(Some(lock))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The cluster-wide lock of one tag (an advisory lock on the shared storage, a lease in a
/// bucket), waited for as long as a storage call may take.
async fn tag_lock(app: &App, name: &RepoName, tag: &Tag) -> Result<Held, ApiError> {
    use sha2::Digest as _;
    let key = hex::encode(sha2::Sha256::digest(format!("{name}:{tag}").as_bytes()));
    let lock = format!("tag-{}", key.get(..32).unwrap_or(&key));
    app.storage
        .lock(&lock, Duration::from_secs(30))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                format!("another push of {name}:{tag} holds the tag's lock; try again"),
            )
        })
}

/// The answer to a change an immutable rule forbids: 409, `DENIED`, naming the tag and the rule.
fn immutable(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, Code::Denied, message)
}

/// Refuses deleting an immutable tag, a manifest an immutable tag names, or a platform of an index
/// an immutable tag names.
async fn check_delete_allowed(
    app: &App,
    name: &RepoName,
    reference: &Reference,
) -> Result<(), ApiError> {
    let rules = app.settings().rules.clone();
    if !rules.has_immutable(name.as_str()) {
        return Ok(());
    }
    match reference {
        Reference::Tag(t) => match rules.immutable(name.as_str(), t.as_str()) {
            // A tag that is not there is not found (404), whatever would protect it.
            Some(_)
                if !app
                    .storage
                    .list_tags(name)
                    .await?
                    .iter()
                    .any(|x| x == t.as_str()) =>
            {
                Ok(())
            }
            Some(rule) => Err(immutable(format!(
                "tag {name}:{t} is immutable ({rule}) and cannot be deleted; an operator can remove it with `registryd untag --force {name}:{t}` on a node"
            ))),
            None => Ok(()),
        },
        Reference::Digest(d) => {
            for t in app.storage.tag_details(name).await? {
                let (Some(named), Some(rule)) = (t.digest, rules.immutable(name.as_str(), &t.tag))
                else {
                    continue;
                };
                if named == *d {
                    return Err(immutable(format!(
                        "manifest {d} is named by immutable tag {name}:{} ({rule}) and cannot be deleted",
                        t.tag
                    )));
                }
                // A platform of an immutable index: deleting it would break the tag's pulls
                // just as surely as moving the tag.
                let (_, stored) = app
                    .storage
                    .resolve_manifest(name, &Reference::Digest(named.clone()))
                    .await?;
                let platform = manifest::parse(None, &stored.bytes)
                    .is_ok_and(|m| m.manifests.iter().any(|c| c.digest == *d));
                if platform {
                    return Err(immutable(format!(
                        "manifest {d} is a platform of index {named}, which immutable tag {name}:{} names ({rule}); it cannot be deleted",
                        t.tag
                    )));
                }
            }
            Ok(())
        }
    }
}

async fn delete(app: &App, name: &RepoName, reference: &Reference) -> HandlerResult {
    remove(app, name, reference).await?;
    Ok(response(
        StatusCode::ACCEPTED,
        &[(header::CONTENT_LENGTH, "0".into())],
        crate::http::empty(),
    ))
}

/// Deletes a tag, or a manifest with the tags that name it and its referrer entry: what the
/// API's `DELETE` does, and the web UI's delete (one code path, so both refuse and remove alike).
/// The caller has checked the storage's health and the read-only refusal, as the dispatch does
/// for every write.
pub async fn remove(app: &App, name: &RepoName, reference: &Reference) -> Result<(), ApiError> {
    if !app.settings().delete_enabled {
        return Err(deletes_disabled());
    }
    check_delete_allowed(app, name, reference).await?;
    match reference {
        Reference::Tag(t) => app.storage.delete_tag(name, t).await?,
        Reference::Digest(d) => {
            // Its subject, if any, names the referrer entry to remove with it.
            let (_, stored) = app.storage.resolve_manifest(name, reference).await?;
            let subject = manifest::parse(None, &stored.bytes)
                .ok()
                .and_then(|m| m.subject)
                .map(|s| s.digest);
            app.storage.delete_manifest(name, d, subject).await?;
        }
    }
    tracing::debug!(repository = %name, reference = %reference, "deleted");
    Ok(())
}

/// The answer to `/v2/<name>/manifests/<reference>` when the reference is neither a tag nor a
/// digest. No manifest can be stored under it, so a read or a delete finds nothing (404, as
/// Distribution answers: clients read a 400 on a read as a broken registry); a push under it is
/// the client's mistake, named with the spec's code for what it got wrong.
pub fn bad_reference(method: &Method, e: ReferenceError) -> ApiError {
    match (method, e) {
        (&Method::GET | &Method::HEAD | &Method::DELETE, e) => ApiError::new(
            StatusCode::NOT_FOUND,
            Code::ManifestUnknown,
            format!("manifest unknown: no manifest can be stored under this reference ({e})"),
        ),
        (&Method::PUT, ReferenceError::Tag(t)) => {
            ApiError::new(StatusCode::BAD_REQUEST, Code::TagInvalid, t.to_string())
        }
        (&Method::PUT, ReferenceError::Digest(d)) => {
            ApiError::new(StatusCode::BAD_REQUEST, Code::DigestInvalid, d.to_string())
        }
        (m, _) => method_not_allowed(m),
    }
}
