//! `GET /v2/_catalog` (end-8 family): every repository, lexically, paginated with `n`/`last`/`Link`.

use http::{Method, StatusCode, header};

use super::{App, HandlerResult, Req, json_response, method_not_allowed, next_link, page_size};
use crate::auth::Action;
use crate::http::error::ApiError;

#[derive(serde::Serialize)]
struct Catalog<'a> {
    repositories: &'a [String],
}

pub async fn get(app: &App, req: &Req) -> HandlerResult {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(method_not_allowed(&req.method));
    }
    let n = page_size(&req.query)?;
    let last = req.query.get("last").cloned();
    let (page, more) = if app.auth.policy().has_rules() {
        visible_page(app, req, last, n).await?
    } else {
        app.storage.list_repositories(last, n).await?
    };
    let page = page.as_slice();
    let mut resp = json_response(
        StatusCode::OK,
        &Catalog { repositories: page },
        req.method == Method::HEAD,
    );
    if more
        && let (Some(n), Some(last)) = (req.query.get("n"), page.last())
        && let Ok(v) = header::HeaderValue::from_str(&next_link("/v2/_catalog", n, last))
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    Ok(resp)
}

/// A page of the repositories the client may pull (the catalog never names a repository its reader
/// could not pull), read from storage in batches until the page is full.
async fn visible_page(
    app: &App,
    req: &Req,
    mut last: Option<String>,
    n: Option<usize>,
) -> Result<(Vec<String>, bool), ApiError> {
    let batch = n.unwrap_or(1000).max(100);
    let mut out = Vec::new();
    loop {
        let (page, more) = app
            .storage
            .list_repositories(last.clone(), Some(batch))
            .await?;
        last = page.last().cloned();
        for repo in page.iter() {
            if !app.may(req, repo, Action::Pull) {
                continue;
            }
            if n.is_some_and(|n| out.len() == n) {
                return Ok((out, true));
            }
            out.push(repo.clone());
        }
        if !more {
            return Ok((out, false));
        }
    }
}
