//! `GET /ui/r/<name>/-/manifest/<tag or digest>`: one manifest, by a URL to share. An index
//! lists its children by platform; an image shows its config summary (read from the config blob
//! through the same facade and digest check as a pull), layers, annotations and referrers; an
//! artifact lists its files with download links (`/ui/r/<name>/-/blob/<digest>`, served by the
//! API's blob handler with the file's name from its title annotation). The raw JSON is shown as
//! stored: its digest is the page's.

use askama::Template;
use futures::TryStreamExt;
use http::{Method, Response, StatusCode, header};

use super::super::ctx::Ctx;
use super::super::path;
use super::super::view::{self, Chrome, Size};
use super::inspect::{self, Config, Desc, Kind};
use crate::auth::Action;
use crate::http::Body;
use crate::http::error::{ApiError, Code};
use crate::http::route::Route;
use crate::proxy::Blob;
use crate::registry::{Digest, Reference, RepoName};

/// Largest config blob read for the summary (a config with a long history is tens of KiB).
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A descriptor as a table row shows it.
struct Item {
    digest: String,
    short: String,
    media_type: String,
    size: Size,
    /// The page of the manifest it is (children, referrers) or the download (files).
    href: Option<String>,
    platform: String,
    artifact_type: String,
    title: String,
}

#[derive(Template)]
#[template(path = "manifest.html")]
struct ManifestPage {
    chrome: Chrome,
    name: String,
    repo_href: String,
    reference: String,
    digest: String,
    media_type: String,
    kind: &'static str,
    size: Size,
    total: Option<Size>,
    artifact_type: Option<String>,
    pull: String,
    children: Vec<Item>,
    config: Option<Item>,
    summary: Option<Config>,
    summary_error: Option<String>,
    layers: Vec<Item>,
    files: Vec<Item>,
    subject: Option<Item>,
    annotations: Vec<(String, String)>,
    referrers: Vec<Item>,
    raw: String,
    delete_href: Option<String>,
    cache: Option<&'static str>,
}

fn item(d: &Desc, href: impl Fn(&Digest) -> String) -> Item {
    Item {
        short: view::short_digest(&d.digest_text),
        digest: d.digest_text.clone(),
        media_type: d.media_type.clone(),
        size: Size::of(d.size),
        href: d.digest.as_ref().map(href),
        platform: d.platform.clone().unwrap_or_default(),
        artifact_type: d.artifact_type.clone().unwrap_or_default(),
        title: d.title().unwrap_or_default().to_string(),
    }
}

pub async fn get(ctx: &mut Ctx<'_>, name: &RepoName, reference: &Reference) -> Response<Body> {
    if let Some(r) = ctx.unavailable() {
        return r;
    }
    if !ctx.may(
        &Route::Manifest(name.clone(), reference.clone()),
        Method::GET,
    ) {
        return ctx.not_found(&format!("Repository {name}"));
    }
    let repo = ctx.app.proxy.repository(name, None);
    let (digest, stored, cache) = match repo.manifest(reference).await {
        Ok(m) => m,
        Err(e) => {
            let e = ApiError::from(e);
            return match e.status {
                StatusCode::NOT_FOUND => ctx.not_found(&format!("Manifest {reference} of {name}")),
                _ => ctx.error(e),
            };
        }
    };
    let m = match inspect::manifest(&stored.media_type, &stored.bytes) {
        Ok(m) => m,
        Err(e) => {
            return ctx.error(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::ManifestInvalid,
                format!("manifest {digest} is stored but cannot be read: {e}"),
            ));
        }
    };
    let d = digest.to_string();
    let manifest_href = |x: &Digest| path::manifest(name, &x.to_string());
    let file_href = |x: &Digest| format!("{}?manifest={d}", path::blob(name, &x.to_string()));
    let (summary, summary_error) = match (&m.kind, &m.config) {
        (Kind::Image, Some(c)) if inspect::is_image_config(&c.media_type) => {
            match read_config(ctx, name, c).await {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            }
        }
        _ => (None, None),
    };
    let referrers = match repo.referrers(&digest).await {
        Ok(r) => r,
        Err(e) => return ctx.error(e.into()),
    };
    let referrers = referrers
        .iter()
        .filter_map(desc_of)
        .map(|r| item(&r, manifest_href))
        .collect();
    let may_delete = ctx.may_on(name.as_str(), Action::Push) && ctx.app.settings().delete_enabled;
    let delete_href = may_delete.then(|| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("digest", &d)
            .finish();
        format!("{}?{q}", path::delete(name))
    });
    let is_artifact = m.kind == Kind::Artifact;
    let items = |v: &[Desc], f: &dyn Fn(&Digest) -> String| -> Vec<Item> {
        v.iter().map(|x| item(x, f)).collect()
    };
    let page = ManifestPage {
        chrome: ctx.chrome("repositories"),
        name: name.to_string(),
        repo_href: path::repository(name),
        reference: reference.to_string(),
        media_type: m.media_type.clone(),
        kind: match m.kind {
            Kind::Index => "Image index",
            Kind::Image => "Image",
            Kind::Artifact => "Artifact",
        },
        size: Size::of(stored.bytes.len() as u64),
        total: (m.kind != Kind::Index).then(|| Size::of(m.image_size())),
        artifact_type: m.artifact_type.clone(),
        pull: format!("docker pull {}/{name}@{d}", ctx.host),
        children: items(&m.children, &manifest_href),
        config: m.config.as_ref().map(|c| item(c, |x| x.to_string())),
        summary,
        summary_error,
        layers: if is_artifact {
            Vec::new()
        } else {
            items(&m.layers, &|x| x.to_string())
        },
        files: if is_artifact {
            items(&m.layers, &file_href)
        } else {
            Vec::new()
        },
        subject: m.subject.as_ref().map(|s| item(s, manifest_href)),
        annotations: m.annotations.into_iter().collect(),
        referrers,
        raw: String::from_utf8_lossy(&stored.bytes).into_owned(),
        delete_href,
        cache: cache.map(|c| c.as_str()),
        digest: d,
    };
    view::html(StatusCode::OK, &page)
}

/// A referrer's descriptor (as the referrers listing gives it).
fn desc_of(v: &serde_json::Value) -> Option<Desc> {
    let wrapped = serde_json::json!({ "manifests": [v] });
    inspect::manifest("", wrapped.to_string().as_bytes())
        .ok()?
        .children
        .into_iter()
        .next()
}

/// The image's config blob, read as a pull reads it (stored, or through the upstream for a
/// cached image) and checked against its digest.
async fn read_config(ctx: &Ctx<'_>, name: &RepoName, c: &Desc) -> Result<Config, String> {
    let digest = c
        .digest
        .as_ref()
        .ok_or("the config's digest is not valid")?;
    if c.size > MAX_CONFIG_BYTES {
        return Err(format!(
            "the config is {} (not summarised above {})",
            view::size(c.size),
            view::size(MAX_CONFIG_BYTES)
        ));
    }
    let storage = &ctx.app.storage;
    let repo = ctx.app.proxy.repository(name, None);
    let unreadable = |e: String| format!("the config blob could not be read: {e}");
    let stream = match repo
        .blob(digest)
        .await
        .map_err(|e| unreadable(ApiError::from(e).message))?
    {
        Blob::Stored(size) if size > MAX_CONFIG_BYTES => {
            return Err(format!(
                "the config is {} (not summarised)",
                view::size(size)
            ));
        }
        Blob::Stored(size) => {
            let s = storage
                .open_blob(digest, 0, size)
                .await
                .map_err(|e| unreadable(ApiError::from(e).message))?;
            storage.verifying(digest, s)
        }
        Blob::Upstream(remote) => {
            remote
                .fetch()
                .await
                .map_err(|e| unreadable(ApiError::from(e).message))?
                .1
        }
    };
    let mut bytes = Vec::new();
    let mut stream = stream;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| unreadable(e.to_string()))?
    {
        if bytes.len() as u64 + chunk.len() as u64 > MAX_CONFIG_BYTES {
            return Err("the config is larger than its descriptor says".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    if Digest::compute(digest.algorithm(), &bytes) != *digest {
        return Err("the config's bytes do not match its digest".into());
    }
    inspect::config(&bytes).map_err(|e| format!("the config is not readable: {e}"))
}

/// `GET /ui/r/<name>/-/blob/<digest>[?manifest=<digest>]`: a file of an artifact, served by the
/// API's blob handler (ranges, the pull-through cache, the digest check) as a download named by
/// the layer's title in that manifest.
pub async fn blob(ctx: &mut Ctx<'_>, name: &RepoName, digest: &Digest) -> Response<Body> {
    if let Some(r) = ctx.unavailable() {
        return r;
    }
    if !ctx.may(&Route::Blob(name.clone(), digest.clone()), Method::GET) {
        return ctx.not_found(&format!("Blob {digest} of {name}"));
    }
    let title = title_in(ctx, name, digest).await;
    let mut resp = match crate::http::handlers::blobs::handle(ctx.app, name, digest, &ctx.req).await
    {
        Ok(r) => r,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return ctx.not_found(&format!("Blob {digest} of {name}"));
        }
        Err(e) => return ctx.error(e),
    };
    let file = title.unwrap_or_else(|| format!("{}.bin", digest.hex()));
    if let Ok(v) = header::HeaderValue::from_str(&disposition(&file)) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// The title annotation of `digest` among the layers of the manifest named in the query.
async fn title_in(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Option<String> {
    let m: Digest = ctx.query.get("manifest")?.parse().ok()?;
    let repo = ctx.app.proxy.repository(name, None);
    let (_, stored, _) = repo.manifest(&Reference::Digest(m)).await.ok()?;
    let m = inspect::manifest(&stored.media_type, &stored.bytes).ok()?;
    m.layers
        .iter()
        .find(|l| l.digest.as_ref() == Some(digest))
        .and_then(|l| l.title().map(str::to_string))
}

/// `Content-Disposition` for a download named `file`: the name's last path component, ASCII in
/// `filename` (anything else replaced), the whole name in `filename*` (RFC 6266, RFC 8187).
pub fn disposition(file: &str) -> String {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let base = if base.is_empty() || base == "." || base == ".." {
        "download"
    } else {
        base
    };
    let ascii: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(base, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_are_named_safely() {
        assert_eq!(
            disposition("notes.txt"),
            "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes%2Etxt"
        );
        assert_eq!(
            disposition("../../etc/pass\"wd"),
            "attachment; filename=\"pass_wd\"; filename*=UTF-8''pass%22wd"
        );
        assert!(disposition("résumé.pdf").starts_with("attachment; filename=\"r_sum_.pdf\""));
        assert!(disposition("dir/").contains("filename=\"download\""));
    }
}
