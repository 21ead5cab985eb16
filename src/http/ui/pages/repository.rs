//! `GET /ui/r/<name>`: a repository's tags (digest, push time, size, platforms of an index,
//! referrers, the pull command, a delete control for those whose rules allow it), a page at a
//! time, and its untagged manifests. Manifests are read through the pull-through cache's facade by
//! digest (a tag's digest is stored, so nothing goes upstream); an index's size is the sum of its
//! children's images, read from storage only, so a page view never fetches from an upstream.

use askama::Template;
use futures::StreamExt;
use http::{Method, Response, StatusCode};

use super::super::ctx::Ctx;
use super::super::path;
use super::super::view::{self, Chrome, Size, When};
use super::inspect::{self, Kind};
use crate::auth::Action;
use crate::http::Body;
use crate::http::error::ApiError;
use crate::http::route::Route;
use crate::lifecycle::retention::{self, RetentionOptions};
use crate::registry::{Digest, Reference, RepoName, Tag};
use crate::storage::summary::{ManifestRole, TagInfo};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Untagged manifests listed (newest first); the rest are counted.
const MAX_UNTAGGED: usize = 200;
const CONCURRENT: usize = 8;

struct TagRow {
    tag: String,
    digest: String,
    short: String,
    href: String,
    pushed: Option<When>,
    size: Size,
    platforms: Vec<String>,
    referrers: String,
    pull: String,
    delete_href: Option<String>,
    error: Option<String>,
    /// The immutable rule covering the tag, in words.
    immutable: Option<String>,
}

struct UntaggedRow {
    digest: String,
    short: String,
    href: String,
    pushed: When,
    delete_href: Option<String>,
    /// What still points at it, in words, and the page of that.
    role: String,
    role_href: Option<String>,
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    chrome: Chrome,
    name: String,
    tags: Vec<TagRow>,
    untagged: Vec<UntaggedRow>,
    untagged_more: usize,
    next: Option<String>,
    first: bool,
    /// Why this visitor sees no delete controls although their rules allow deletes.
    delete_note: Option<String>,
    /// What the last action did (after a delete).
    done: Option<String>,
    /// The retention rule over the repository and what the next GC pass would untag.
    retention: Option<RetentionView>,
}

struct RetentionView {
    rule: String,
    next: Vec<String>,
    kept_from_empty: bool,
}

pub async fn get(ctx: &mut Ctx<'_>, name: &RepoName) -> Response<Body> {
    if let Some(r) = ctx.unavailable() {
        return r;
    }
    if !ctx.may(&Route::Tags(name.clone()), Method::GET) {
        return ctx.not_found(&format!("Repository {name}"));
    }
    let repo = ctx.app.proxy.repository(name, None);
    if let Err(e) = repo.tags().await {
        let e = ApiError::from(e);
        return match e.status {
            StatusCode::NOT_FOUND => ctx.not_found(&format!("Repository {name}")),
            _ => ctx.error(e),
        };
    }
    let all = match ctx.app.storage.tag_details(name).await {
        Ok(t) => t,
        Err(e) => return ctx.error(e.into()),
    };
    let n = ctx
        .query
        .get("n")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(DEFAULT_PAGE, |n| n.min(MAX_PAGE));
    let last = ctx.query.get("last").filter(|l| !l.is_empty()).cloned();
    let start = last
        .as_ref()
        .map_or(0, |l| all.partition_point(|t| t.tag.as_str() <= l.as_str()));
    let shown: Vec<&TagInfo> = all.iter().skip(start).take(n).collect();
    let next = (start + shown.len() < all.len())
        .then(|| {
            shown
                .last()
                .map(|t| next_link(name, &t.tag, ctx.query.get("n")))
        })
        .flatten();
    let deletes = delete_state(ctx, name);
    let may_delete = deletes.is_ok();
    let host = ctx.host.clone();
    // The futures are made first: a stream over a closure that borrows would not be `Send`.
    let reads: Vec<_> = shown
        .iter()
        .map(|t| tag_row(ctx, name, t, &host, may_delete))
        .collect();
    let tags = futures::stream::iter(reads)
        .buffered(CONCURRENT)
        .collect::<Vec<_>>()
        .await;
    let untagged_all = match ctx.app.storage.untagged_manifests(name).await {
        Ok(u) => u,
        Err(e) => return ctx.error(e.into()),
    };
    let untagged_more = untagged_all.len().saturating_sub(MAX_UNTAGGED);
    let untagged = untagged_all
        .iter()
        .take(MAX_UNTAGGED)
        .map(|m| {
            let d = m.digest.to_string();
            let (role, role_href, in_use) = role(name, &m.role);
            UntaggedRow {
                short: view::short_digest(&d),
                href: path::manifest(name, &d),
                pushed: When::of(m.pushed, ctx.now),
                // A platform of a tagged index is deleted with the index, not on its own (the
                // index would name a manifest that is gone).
                delete_href: (may_delete && !in_use).then(|| delete_link(name, "digest", &d)),
                role,
                role_href,
                digest: d,
            }
        })
        .collect();
    let done = deleted(ctx);
    let retention = retention_view(ctx, name).await;
    view::html(
        StatusCode::OK,
        &RepositoryPage {
            chrome: ctx.chrome("repositories"),
            name: name.to_string(),
            tags,
            untagged,
            untagged_more,
            next,
            first: last.is_none(),
            delete_note: deletes.err().flatten(),
            done,
            retention,
        },
    )
}

/// The retention rule over `name`'s pushed content and the tags the next GC pass would untag (the
/// same decision the pass makes, read now); `None` without a rule or when it cannot be read.
async fn retention_view(ctx: &Ctx<'_>, name: &RepoName) -> Option<RetentionView> {
    if ctx.app.proxy.is_cached_repo(name) {
        return None;
    }
    let settings = ctx.app.settings();
    let rule = settings.rules.retention_for(name.as_str())?.clone();
    let opts = RetentionOptions {
        rules: settings.rules.clone(),
        cache_prefixes: Vec::new(),
    };
    let plan = retention::plan_repository(
        &ctx.app.storage,
        &opts,
        &rule,
        name,
        settings.gc_grace,
        std::time::SystemTime::now(),
    )
    .await
    .ok()?;
    Some(RetentionView {
        rule: rule.to_string(),
        next: plan.untagged().map(|d| d.facts.tag.clone()).collect(),
        kept_from_empty: plan.kept_from_empty,
    })
}

/// Whether this visitor gets delete controls: `Ok` when they may delete now; `Err(None)` when
/// their rules do not allow it (nothing is said); `Err(Some(why))` when they would be allowed
/// but the registry refuses deletes now.
fn delete_state(ctx: &Ctx<'_>, name: &RepoName) -> Result<(), Option<String>> {
    if !ctx.may_on(name.as_str(), Action::Push) {
        return Err(None);
    }
    if !ctx.app.settings().delete_enabled {
        return Err(Some(
            "Deletes are disabled on this registry (storage.delete_enabled = false).".into(),
        ));
    }
    if let Err(e) = ctx.app.refuse_write() {
        return Err(Some(e.message));
    }
    Ok(())
}

/// What points at an untagged manifest, the page of that, and whether a tagged index needs it.
fn role(name: &RepoName, r: &ManifestRole) -> (String, Option<String>, bool) {
    match r {
        ManifestRole::Unreferenced => (
            "nothing (pushed by digest, or its tag moved on)".into(),
            None,
            false,
        ),
        ManifestRole::Child { index, tagged } => {
            let d = index.to_string();
            let what = if *tagged {
                "a platform of index"
            } else {
                "a platform of untagged index"
            };
            (
                format!("{what} {}", view::short_digest(&d)),
                Some(path::manifest(name, &d)),
                *tagged,
            )
        }
        ManifestRole::Referrer {
            subject,
            artifact_type,
        } => {
            let d = subject.to_string();
            let kind = artifact_type.as_deref().unwrap_or("an artifact");
            (
                format!("{kind}, refers to {}", view::short_digest(&d)),
                Some(path::manifest(name, &d)),
                false,
            )
        }
    }
}

fn delete_link(name: &RepoName, field: &str, value: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(field, value)
        .finish();
    format!("{}?{q}", path::delete(name))
}

async fn tag_row(
    ctx: &Ctx<'_>,
    name: &RepoName,
    t: &TagInfo,
    host: &str,
    may_delete: bool,
) -> TagRow {
    let mut row = TagRow {
        tag: t.tag.clone(),
        digest: String::new(),
        short: "—".into(),
        href: path::manifest(name, &t.tag),
        pushed: When::maybe(t.pushed, ctx.now),
        size: Size::unknown("—"),
        platforms: Vec::new(),
        referrers: "—".into(),
        pull: format!("docker pull {host}/{name}:{}", t.tag),
        delete_href: None,
        error: None,
        immutable: None,
    };
    let rules = ctx.app.settings().rules.clone();
    match rules.immutable(name.as_str(), &t.tag) {
        // Its delete would be refused: no control for it.
        Some(rule) => row.immutable = Some(rule.to_string()),
        None => row.delete_href = may_delete.then(|| delete_link(name, "tag", &t.tag)),
    }
    let Some(digest) = &t.digest else {
        row.error = Some("the tag's link is missing or unreadable".into());
        return row;
    };
    row.digest = digest.to_string();
    row.short = view::short_digest(&row.digest);
    let repo = ctx.app.proxy.repository(name, None);
    match repo.manifest(&Reference::Digest(digest.clone())).await {
        Ok((_, stored, _)) => match inspect::manifest(&stored.media_type, &stored.bytes) {
            Ok(m) if m.kind == Kind::Index => {
                row.platforms = m.platforms();
                row.size = index_size(ctx, name, &m).await;
            }
            Ok(m) => row.size = Size::of(m.image_size()),
            Err(e) => row.error = Some(format!("manifest unreadable: {e}")),
        },
        Err(e) => row.error = Some(ApiError::from(e).message),
    }
    match repo.referrers(digest).await {
        Ok(r) => row.referrers = r.len().to_string(),
        Err(e) => {
            tracing::warn!(repository = %name, digest = %digest, error = %e, "UI: referrers unreadable")
        }
    }
    row
}

/// The sum of the images an index lists that are stored here ("+" when some are not).
async fn index_size(ctx: &Ctx<'_>, name: &RepoName, index: &inspect::Manifest) -> Size {
    let mut total = 0u64;
    let mut missing = false;
    for child in &index.children {
        let Some(d) = &child.digest else { continue };
        let read = ctx
            .app
            .storage
            .resolve_manifest(name, &Reference::Digest(d.clone()))
            .await;
        match read.map(|(_, m)| inspect::manifest(&m.media_type, &m.bytes)) {
            Ok(Ok(m)) => total = total.saturating_add(m.image_size()),
            _ => missing = true,
        }
    }
    if missing {
        Size::of(total).at_least()
    } else {
        Size::of(total)
    }
}

fn next_link(name: &RepoName, last: &str, n: Option<&String>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.append_pair("last", last);
    if let Some(n) = n {
        s.append_pair("n", n);
    }
    format!("{}?{}", path::repository(name), s.finish())
}

/// What a delete that sent the browser here removed, from the query it added; only a valid tag
/// or digest is repeated, so a crafted link cannot put words on the page.
fn deleted(ctx: &Ctx<'_>) -> Option<String> {
    if let Some(t) = ctx
        .query
        .get("deleted_tag")
        .filter(|t| t.parse::<Tag>().is_ok())
    {
        return Some(format!("Deleted tag {t}."));
    }
    let d = ctx.query.get("deleted_digest")?.parse::<Digest>().ok()?;
    Some(format!("Deleted manifest {d} and the tags that named it."))
}
