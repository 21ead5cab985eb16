//! `GET /ui/`: the repositories, a page at a time in the catalog's order, filtered by a substring
//! (`q`), from `last` on, `n` to a page. Only the rows shown get their summaries read, so the
//! first page costs what the catalog's first page costs plus a hundred summaries, however many
//! repositories there are. Names the visitor may not pull are never listed, nor matched.

use std::time::SystemTime;

use askama::Template;
use http::{Response, StatusCode};

use super::super::ctx::Ctx;
use super::super::path;
use super::super::view::{self, Chrome, Size, When};
use crate::auth::Action;
use crate::http::Body;
use crate::http::error::ApiError;
use crate::registry::RepoName;

/// Rows per page unless `n` says otherwise, and the most `n` may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Names read from storage per listing call while filtering by name (a rare substring may take
/// the whole catalog; large calls make that fewer round trips).
const FILTER_BATCH: usize = 1000;

struct Row {
    name: String,
    href: String,
    tags: String,
    last_push: Option<When>,
    size: Size,
    unique_size: Size,
    badges: Vec<String>,
    /// Why the summary could not be read.
    error: Option<String>,
    /// When the census that measured the unshared size began.
    measured: Option<SystemTime>,
}

#[derive(Template)]
#[template(path = "repositories.html")]
struct RepositoriesPage {
    chrome: Chrome,
    q: String,
    rows: Vec<Row>,
    next: Option<String>,
    first: bool,
    /// When the unshared sizes shown were measured (the oldest figure's census).
    measured: Option<When>,
}

/// `n` from the query: absent is the default, more than the maximum is the maximum.
fn page_size(ctx: &Ctx<'_>) -> Result<usize, String> {
    match ctx.query.get("n") {
        None => Ok(DEFAULT_PAGE),
        Some(v) => match v.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("n={v:?} is not a page size from 1 to {MAX_PAGE}")),
            Ok(n) => Ok(n.min(MAX_PAGE)),
        },
    }
}

pub async fn get(ctx: &mut Ctx<'_>) -> Response<Body> {
    if let Some(r) = ctx.unavailable() {
        return r;
    }
    if !ctx.may_look() {
        return ctx.login_required();
    }
    let n = match page_size(ctx) {
        Ok(n) => n,
        Err(m) => return ctx.error_page(StatusCode::BAD_REQUEST, "Bad request".into(), m),
    };
    let q = ctx
        .query
        .get("q")
        .map(|q| q.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let last = ctx.query.get("last").filter(|l| !l.is_empty()).cloned();
    let (names, more) = match visible(ctx, &q, last.clone(), n).await {
        Ok(page) => page,
        Err(e) => return ctx.error(e),
    };
    let rows = match rows(ctx, &names).await {
        Ok(rows) => rows,
        Err(e) => return ctx.error(e),
    };
    let next = match (more, names.last()) {
        (true, Some(last)) => Some(next_link(last, ctx.query.get("n"), &q)),
        _ => None,
    };
    view::html(
        StatusCode::OK,
        &RepositoriesPage {
            chrome: ctx.chrome("repositories"),
            q,
            measured: When::maybe(rows.iter().filter_map(|r| r.measured).min(), ctx.now),
            rows,
            next,
            first: last.is_none(),
        },
    )
}

/// One page of the names the visitor may pull that contain `q`, after `last`, and whether more
/// follow. Without access rules or a filter, every name is shown: one listing call, the catalog's.
async fn visible(
    ctx: &Ctx<'_>,
    q: &str,
    mut last: Option<String>,
    n: usize,
) -> Result<(Vec<String>, bool), ApiError> {
    let storage = &ctx.app.storage;
    if q.is_empty() && !ctx.app.auth.policy().has_rules() {
        return Ok(storage.list_repositories(last, Some(n)).await?);
    }
    let mut out = Vec::new();
    loop {
        // Only access rules to apply: listed a page at a time, as the catalog does.
        let size = if q.is_empty() {
            n.max(100)
        } else {
            FILTER_BATCH
        };
        let (batch, more) = storage.list_repositories(last.clone(), Some(size)).await?;
        last = batch.last().cloned();
        for name in batch {
            if !name.contains(q) || !ctx.may_on(&name, Action::Pull) {
                continue;
            }
            if out.len() == n {
                return Ok((out, true));
            }
            out.push(name);
        }
        if !more {
            return Ok((out, false));
        }
    }
}

/// The rows of `names`, their summaries read in one storage call (an error of one repository is
/// that row's; the storage failing is the page's).
async fn rows(ctx: &Ctx<'_>, names: &[String]) -> Result<Vec<Row>, ApiError> {
    let parsed: Vec<RepoName> = names.iter().filter_map(|n| n.parse().ok()).collect();
    let mut summaries = ctx
        .app
        .storage
        .repository_summaries(&parsed)
        .await?
        .into_iter();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut r = Row {
            name: name.clone(),
            href: String::new(),
            tags: "—".into(),
            last_push: None,
            size: Size::unknown("—"),
            unique_size: Size::unknown("—"),
            badges: Vec::new(),
            error: None,
            measured: None,
        };
        let Ok(repo) = name.parse::<RepoName>() else {
            r.error = Some("not a valid repository name".into());
            out.push(r);
            continue;
        };
        r.href = path::repository(&repo);
        if ctx.app.proxy.is_cached_repo(&repo)
            && let Some(t) = ctx.app.proxy.target(&repo, None)
        {
            r.badges.push(format!("cached from {}", t.upstream.name));
        } else {
            let rules = ctx.app.settings().rules.clone();
            if let Some(rule) = rules.retention_for(repo.as_str()) {
                r.badges.push(format!("retention rule {}", rule.number));
            }
            if rules.has_immutable(repo.as_str()) {
                r.badges.push("immutable tags".into());
            }
        }
        match summaries.next() {
            Some(Ok(s)) => {
                r.tags = s.tags.to_string();
                r.last_push = When::maybe(s.last_push, ctx.now);
                r.size = Size::of(s.size);
                r.unique_size = s
                    .unique_size
                    .map_or_else(|| Size::unknown("not measured yet"), Size::of);
                r.measured = s.unique_as_of;
            }
            Some(Err(e)) => {
                tracing::warn!(repository = %repo, error = %e, "UI: repository summary unreadable");
                r.error = Some(ApiError::from(e).message);
            }
            None => r.error = Some("no summary was read".into()),
        }
        out.push(r);
    }
    Ok(out)
}

/// The next page's URL: after `last`, keeping the page size and filter the visitor chose.
fn next_link(last: &str, n: Option<&String>, q: &str) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.append_pair("last", last);
    if let Some(n) = n {
        s.append_pair("n", n);
    }
    if !q.is_empty() {
        s.append_pair("q", q);
    }
    format!("/ui/?{}", s.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_keep_the_choices() {
        assert_eq!(next_link("a/b", None, ""), "/ui/?last=a%2Fb");
        assert_eq!(
            next_link("a", Some(&"5".to_string()), "web"),
            "/ui/?last=a&n=5&q=web"
        );
    }
}
