//! `GET`/`POST /ui/login` and `POST /ui/logout`. A login is checked exactly as the API checks
//! Basic credentials (`Auth::identify`: the htpasswd accounts, the cache, and the throttling of
//! failed logins per client address), then begins a server-side session (see `session`). The
//! login form is protected from cross-site posts like every other form: an origin check and a
//! token (the form cookie's, as there is no session yet).

use std::collections::HashMap;
use std::time::Instant;

use askama::Template;
use base64::Engine as _;
use http::{Response, StatusCode};

use super::super::csrf::{self, FORM_COOKIE, SESSION_COOKIE};
use super::super::ctx::Ctx;
use super::super::session::{self, Limits};
use super::super::view::{self, Chrome};
use crate::auth::{AuthError, Principal};
use crate::http::Body;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

/// Where to go after logging in: a page of this UI, never another site.
fn next_page(next: Option<&String>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.clone()
        }
        _ => "/ui/".into(),
    }
}

fn render(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    next: String,
    username: String,
    error: Option<String>,
) -> Response<Body> {
    if !ctx.app.auth.policy().has_accounts() {
        return ctx.error_page(
            StatusCode::NOT_FOUND,
            "No accounts".into(),
            "This registry has no accounts (auth.htpasswd is not set): everyone has the same \
             access, and there is nobody to log in as."
                .into(),
        );
    }
    let csrf = match ctx.form_token() {
        Ok(t) => t,
        Err(e) => return ctx.no_randomness(e),
    };
    view::html(
        status,
        &LoginPage {
            chrome: ctx.chrome("login"),
            csrf,
            next,
            username,
            error,
        },
    )
}

pub fn form(ctx: &mut Ctx<'_>) -> Response<Body> {
    let next = next_page(ctx.query.get("next"));
    render(ctx, StatusCode::OK, next, String::new(), None)
}

pub async fn submit(ctx: &mut Ctx<'_>, limits: Limits) -> Response<Body> {
    let form: HashMap<String, String> = match ctx.form().await {
        Ok(f) => f,
        Err(e) => return ctx.error(e),
    };
    if let Err(refused) = ctx.check_form(&form) {
        return ctx.error_page(StatusCode::FORBIDDEN, "Refused".into(), refused.message());
    }
    let next = next_page(form.get("next"));
    let user = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    if !ctx.app.auth.policy().has_accounts() {
        return render(ctx, StatusCode::NOT_FOUND, next, user, None);
    }
    if user.is_empty() || user.contains(':') {
        let e = Some("Enter your user name and password.".into());
        return render(ctx, StatusCode::BAD_REQUEST, next, user, e);
    }
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let refused = |status, m: String| (status, Some(m));
    let (status, error) = match ctx
        .app
        .auth
        .identify(Some(&basic), ctx.conn.client.ip())
        .await
    {
        Ok(Principal::User(u)) => match ctx.app.auth.account_tag(&u) {
            Some(account) => return begin(ctx, &u, account, limits, &next),
            None => refused(
                StatusCode::UNAUTHORIZED,
                "Wrong user name or password.".into(),
            ),
        },
        Ok(Principal::Anonymous) | Err(AuthError::BadCredentials) => refused(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.".into(),
        ),
        Err(AuthError::Throttled(wait)) => refused(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed logins from your address: wait {} s and try again.",
                wait.as_secs().max(1)
            ),
        ),
        Err(AuthError::Malformed(m)) => refused(StatusCode::BAD_REQUEST, m),
        Err(_) => refused(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.".into(),
        ),
    };
    render(ctx, status, next, user, error)
}

/// Begins the session of `user` (ending the one this browser had, so a session id never
/// outlives a change of who is logged in) and sends the browser on.
fn begin(
    ctx: &mut Ctx<'_>,
    user: &str,
    account: [u8; 32],
    limits: Limits,
    next: &str,
) -> Response<Body> {
    let store = session::store();
    if let Some((old, _)) = ctx.session.take() {
        store.close(&old);
    }
    let (id, _) = match store.open(user, account, limits, Instant::now()) {
        Ok(s) => s,
        Err(e) => return ctx.no_randomness(e),
    };
    tracing::info!(user, client = %ctx.conn.client, "UI login");
    let tls = ctx.conn.tls;
    ctx.cookies
        .push(csrf::set_cookie(SESSION_COOKIE, &id, tls, None));
    ctx.cookies
        .push(csrf::set_cookie(FORM_COOKIE, "", tls, Some(0)));
    view::redirect(next)
}

pub async fn logout(ctx: &mut Ctx<'_>) -> Response<Body> {
    let form = match ctx.form().await {
        Ok(f) => f,
        Err(e) => return ctx.error(e),
    };
    if let Err(refused) = ctx.check_form(&form) {
        return ctx.error_page(StatusCode::FORBIDDEN, "Refused".into(), refused.message());
    }
    if let Some((id, s)) = ctx.session.take() {
        session::store().close(&id);
        tracing::info!(user = %s.user, client = %ctx.conn.client, "UI logout");
    }
    ctx.cookies
        .push(csrf::set_cookie(SESSION_COOKIE, "", ctx.conn.tls, Some(0)));
    view::redirect("/ui/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_only_lead_to_this_ui() {
        let n = |s: &str| next_page(Some(&s.to_string()));
        assert_eq!(n("/ui/r/a/b"), "/ui/r/a/b");
        assert_eq!(n("/ui/?q=x"), "/ui/?q=x");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/v2/",
            "/ui/\\x",
            "/ui/\n",
        ] {
            assert_eq!(n(bad), "/ui/", "{bad:?}");
        }
        assert_eq!(next_page(None), "/ui/");
    }
}
