//! `GET /v2/_catalog` (end-8 family): every repository, lexically, paginated with `n`/`last`/`Link`.

use http::{Method, StatusCode, header};

use super::{App, HandlerResult, Req, json_response, method_not_allowed, next_link, page_size};

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
    let (page, more) = app.storage.list_repositories(last, n).await?;
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
