//! `GET /v2/<name>/tags/list` (end-8a/8b): the repository's tags, lexically, with `n`/`last`/`Link`.

use http::{Method, StatusCode, header};

use super::{App, HandlerResult, Req, json_response, method_not_allowed, next_link, paginate};
use crate::registry::RepoName;

pub async fn get(app: &App, name: &RepoName, req: &Req) -> HandlerResult {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(method_not_allowed(&req.method));
    }
    let tags = app
        .proxy
        .repository(name, req.query.get("ns").map(String::as_str))
        .tags()
        .await?;
    let (page, more) = paginate(&tags, &req.query)?;
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let body = TagList {
        name: name.as_str(),
        tags: page,
    };
    let mut resp = json_response(StatusCode::OK, &body, req.method == Method::HEAD);
    if more
        && let (Some(n), Some(last)) = (req.query.get("n"), page.last())
        && let Ok(v) =
            header::HeaderValue::from_str(&next_link(&format!("/v2/{name}/tags/list"), n, last))
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    Ok(resp)
}
