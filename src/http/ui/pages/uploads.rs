//! `GET /ui/uploads`: the blob uploads in progress across the registry, with their age and size,
//! of the repositories the visitor may push to (an upload session is its pusher's: the API asks
//! push rights even to read one's status).

use askama::Template;
use http::{Response, StatusCode};

use super::super::ctx::Ctx;
use super::super::path;
use super::super::view::{self, Chrome, Size, When};
use crate::auth::Action;
use crate::http::Body;

struct Row {
    repository: String,
    href: String,
    id: String,
    started: Option<When>,
    last_write: When,
    bytes: Size,
}

#[derive(Template)]
#[template(path = "uploads.html")]
struct UploadsPage {
    chrome: Chrome,
    rows: Vec<Row>,
}

pub async fn get(ctx: &Ctx<'_>) -> Response<Body> {
    if let Some(r) = ctx.unavailable() {
        return r;
    }
    if !ctx.may_look() {
        return ctx.login_required();
    }
    let uploads = match ctx.app.storage.uploads_in_progress().await {
        Ok(u) => u,
        Err(e) => return ctx.error(e.into()),
    };
    let rows = uploads
        .into_iter()
        .filter(|u| ctx.may_on(u.repository.as_str(), Action::Push))
        .map(|u| Row {
            href: path::repository(&u.repository),
            repository: u.repository.to_string(),
            id: u.id.to_string(),
            started: When::maybe(u.started, ctx.now),
            last_write: When::of(u.last_write, ctx.now),
            bytes: u
                .bytes
                .map_or_else(|| Size::unknown("unreadable"), Size::of),
        })
        .collect();
    view::html(
        StatusCode::OK,
        &UploadsPage {
            chrome: ctx.chrome("uploads"),
            rows,
        },
    )
}
