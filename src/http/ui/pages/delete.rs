//! `GET /ui/r/<name>/-/delete?tag=<tag>` (or `?digest=`): the confirmation, saying what goes;
//! `POST` to the same path: the delete, through the API's own (`handlers::manifests::remove`),
//! after the checks the API makes of every write (the access rules' push right, the storage's
//! health, read-only and low-space refusals) and the form's origin and token. Works without
//! JavaScript: a page and a form.

use std::collections::HashMap;

use askama::Template;
use http::{Method, Response, StatusCode};

use super::super::ctx::Ctx;
use super::super::path;
use super::super::view::{self, Chrome};
use crate::auth::Principal;
use crate::http::Body;
use crate::http::error::ApiError;
use crate::http::handlers::manifests;
use crate::http::route::Route;
use crate::registry::{Reference, RepoName};

#[derive(Template)]
#[template(path = "delete.html")]
struct DeletePage {
    chrome: Chrome,
    name: String,
    repo_href: String,
    action: String,
    csrf: String,
    /// `tag` or `digest`: the form field, and what is deleted.
    field: &'static str,
    value: String,
    /// The manifest the tag names, or the manifest itself.
    digest: String,
    /// Tags that go with a manifest deleted by digest.
    tags: Vec<String>,
    /// Why the registry refuses the delete now (no form then).
    refused: Option<String>,
}

/// The tag or digest a delete names, from the query (confirmation) or the form (delete).
fn target(fields: &HashMap<String, String>) -> Option<(&'static str, Reference)> {
    if let Some(t) = fields.get("tag") {
        return Some(("tag", Reference::Tag(t.parse().ok()?)));
    }
    let d = fields.get("digest")?;
    Some(("digest", Reference::Digest(d.parse().ok()?)))
}

/// The access checks, the API's: the refusal page for a visitor who may not delete (one who may
/// not even read the repository is told it does not exist; one who may read is told why not).
fn access_refused(
    ctx: &mut Ctx<'_>,
    name: &RepoName,
    reference: &Reference,
) -> Option<Response<Body>> {
    let route = Route::Manifest(name.clone(), reference.clone());
    if !ctx.may(&route, Method::GET) {
        return Some(ctx.not_found(&format!("Repository {name}")));
    }
    if ctx.may(&route, Method::DELETE) {
        return None;
    }
    Some(match &ctx.req.who {
        Principal::Anonymous if ctx.app.auth.policy().has_accounts() => ctx.error_page(
            StatusCode::UNAUTHORIZED,
            "Log in".into(),
            format!("Log in as a user who may delete in {name}."),
        ),
        Principal::Anonymous => ctx.error_page(
            StatusCode::FORBIDDEN,
            "Not allowed".into(),
            format!("Anonymous visitors may not delete in {name} here."),
        ),
        Principal::User(u) => ctx.error_page(
            StatusCode::FORBIDDEN,
            "Not allowed".into(),
            format!("User {u} may not delete in {name}."),
        ),
    })
}

/// Why the registry refuses deletes now, as the API would answer one.
fn refusal(ctx: &Ctx<'_>) -> Option<ApiError> {
    if !ctx.app.settings().delete_enabled {
        return Some(crate::http::handlers::deletes_disabled());
    }
    ctx.app.refuse_write().err()
}

pub async fn confirm(ctx: &mut Ctx<'_>, name: &RepoName) -> Response<Body> {
    if let Some(r) = ctx.unavailable() {
        return r;
    }
    let Some((field, reference)) = target(&ctx.query) else {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            "Nothing to delete".into(),
            "Say what to delete: ?tag=<tag> or ?digest=<digest>.".into(),
        );
    };
    if let Some(r) = access_refused(ctx, name, &reference) {
        return r;
    }
    let digest = match ctx
        .app
        .proxy
        .repository(name, None)
        .manifest(&reference)
        .await
    {
        Ok((d, _, _)) => d,
        Err(e) => {
            let e = ApiError::from(e);
            return match e.status {
                StatusCode::NOT_FOUND => ctx.not_found(&format!("{reference} in {name}")),
                _ => ctx.error(e),
            };
        }
    };
    let tags = match &reference {
        Reference::Tag(_) => Vec::new(),
        Reference::Digest(d) => match ctx.app.storage.tag_details(name).await {
            Ok(all) => all
                .into_iter()
                .filter(|t| t.digest.as_ref() == Some(d))
                .map(|t| t.tag)
                .collect(),
            Err(e) => return ctx.error(e.into()),
        },
    };
    let refused = refusal(ctx);
    let status = refused.as_ref().map_or(StatusCode::OK, |e| e.status);
    let csrf = match ctx.form_token() {
        Ok(t) => t,
        Err(e) => return ctx.no_randomness(e),
    };
    view::html(
        status,
        &DeletePage {
            chrome: ctx.chrome("repositories"),
            name: name.to_string(),
            repo_href: path::repository(name),
            action: path::delete(name),
            csrf,
            field,
            value: reference.to_string(),
            digest: digest.to_string(),
            tags,
            refused: refused.map(|e| e.message),
        },
    )
}

pub async fn submit(ctx: &mut Ctx<'_>, name: &RepoName) -> Response<Body> {
    let form = match ctx.form().await {
        Ok(f) => f,
        Err(e) => return ctx.error(e),
    };
    if let Err(refused) = ctx.check_form(&form) {
        tracing::warn!(client = %ctx.conn.client, repository = %name, reason = ?refused, "UI delete refused: cross-site or no token");
        return ctx.error_page(StatusCode::FORBIDDEN, "Refused".into(), refused.message());
    }
    let Some((field, reference)) = target(&form) else {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            "Nothing to delete".into(),
            "The form named no valid tag or digest.".into(),
        );
    };
    if let Some(r) = access_refused(ctx, name, &reference) {
        return r;
    }
    if let Some(r) = ctx.unavailable() {
        return r;
    }
    if let Err(e) = ctx.app.refuse_write() {
        return ctx.error(e);
    }
    match manifests::remove(ctx.app, name, &reference).await {
        Ok(()) => {
            tracing::info!(
                user = ctx.user().unwrap_or("anonymous"), client = %ctx.conn.client,
                repository = %name, reference = %reference, "UI delete"
            );
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair(&format!("deleted_{field}"), &reference.to_string())
                .finish();
            view::redirect(&format!("{}?{q}", path::repository(name)))
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            ctx.not_found(&format!("{reference} in {name}"))
        }
        Err(e) => ctx.error(e),
    }
}
