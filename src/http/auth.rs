//! The HTTP side of authentication and authorization: who sent a request (its credentials checked
//! through `crate::auth`), whether they may make it (before any storage is touched), and the
//! answers when not: 401 with the listener's challenge (`WWW-Authenticate`: Bearer with the token
//! endpoint's URL where tokens are used, else Basic), 403, or 429 while failed logins are
//! throttled.

use std::time::Duration;

use http::{StatusCode, header};

use super::app::{App, Conn, Req};
use super::error::{ApiError, Code};
use super::route::Route;
use crate::auth::{Action, Anonymous, AuthError, Principal};

/// The `service` named in Bearer challenges and accepted by the token endpoint.
const TOKEN_SERVICE: &str = "registryd";

/// Who sent a request, and what this listener lets anonymous clients do.
pub struct Caller {
    pub who: Principal,
    pub anon: Anonymous,
    /// The token endpoint's URL when this listener uses the Bearer flow.
    pub token_realm: Option<String>,
}

/// Checks the credentials a request carries (none is the anonymous principal), or gives the
/// refusal for credentials that were not accepted.
pub async fn identify(
    app: &App,
    parts: &http::request::Parts,
    conn: Conn,
    route: &Route,
) -> Result<Caller, ApiError> {
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let policy = app.auth.policy();
    let anon = policy.anonymous_on(conn.listener);
    let token_realm =
        (policy.has_accounts() && anon != Anonymous::None).then(|| token_url(parts, conn));
    // Tokens are made and checked with the key on the shared storage: read it first if need be.
    let bearer = authorization.is_some_and(crate::auth::is_bearer);
    if policy.has_accounts() && (*route == Route::Token || bearer) {
        app.token_key().await?;
    }
    let who = match app.auth.identify(authorization, conn.client.ip()).await {
        Ok(who) => who,
        Err(e) => return Err(auth_refusal(app, token_realm.as_deref(), e)),
    };
    Ok(Caller {
        who,
        anon,
        token_realm,
    })
}

/// Refuses a request its principal may not make, before any storage is touched.
///
/// A read is judged against the repository it reads as well as the name in the path: through the
/// pull-through cache, `private/app?ns=up`, `gh/app` (a second prefix of an upstream) and a bare
/// name under `proxy.default_patterns` are all reads of the cached repository
/// `<upstream prefix>/<remote name>`, and rules written for that name must hold whichever form
/// reached it. The path's name must allow the pull too: a bare name reads its own repository
/// first, and rules written against a second prefix keep applying.
pub fn authorize(app: &App, route: &Route, req: &Req) -> Result<(), ApiError> {
    let policy = app.auth.policy();
    match route {
        // The ping tells clients how to authenticate: where tokens are used, anonymous clients
        // get the challenge (and fetch an anonymous token) even though they may pull.
        Route::Base if req.who == Principal::Anonymous && req.token_realm.is_some() => {
            return Err(refusal(app, req, None, "use this registry".into()));
        }
        Route::Base | Route::Catalog => {
            if policy.may_pull_somewhere(&req.who, req.anon) {
                return Ok(());
            }
            return Err(refusal(app, req, None, "use this registry".into()));
        }
        _ => {}
    }
    // The probes and the token endpoint name no repository, and are open to all.
    let Some(name) = route.repository() else {
        return Ok(());
    };
    // An upload session is its pusher's: even reading its status takes push rights.
    let push =
        route.is_write(&req.method) || matches!(route, Route::UploadStart(_) | Route::Upload(..));
    let action = if push { Action::Push } else { Action::Pull };
    // Writes always land on the name in the path; reads may be served from the cache.
    let mut read = vec![name.clone()];
    if action == Action::Pull
        && let Some(t) = app.target(name, req)
        && t.cached != *name
    {
        read.push(t.cached);
    }
    let Some(refused) = read
        .iter()
        .find(|n| !policy.allows(&req.who, req.anon, n.as_str(), action))
    else {
        return Ok(());
    };
    let (verb, scope) = match action {
        Action::Pull => ("pull from", format!("repository:{name}:pull")),
        Action::Push => ("push to", format!("repository:{name}:pull,push")),
    };
    let what = if refused == name {
        format!("{verb} {name}")
    } else {
        format!("{verb} {refused} (which {name} reads through the pull-through cache)")
    };
    Err(refusal(app, req, Some(scope), what))
}

/// The refusal for a request its principal may not make: 401 with a challenge when logging in
/// could help, 403 when the principal is known and simply not allowed.
pub fn refusal(app: &App, req: &Req, scope: Option<String>, what: String) -> ApiError {
    match &req.who {
        Principal::Anonymous if app.auth.policy().has_accounts() => challenge(
            app,
            req.token_realm.as_deref(),
            scope,
            format!("authentication required to {what}"),
        ),
        Principal::Anonymous => ApiError::new(
            StatusCode::FORBIDDEN,
            Code::Denied,
            format!("anonymous clients may not {what} here"),
        ),
        Principal::User(u) => ApiError::new(
            StatusCode::FORBIDDEN,
            Code::Denied,
            format!("user {u} may not {what}"),
        ),
    }
}

/// 401 with the challenge of this listener: Bearer where anonymous clients may pull (see
/// `auth::token` for why), Basic where every client must log in.
pub fn challenge(
    app: &App,
    token_realm: Option<&str>,
    scope: Option<String>,
    message: String,
) -> ApiError {
    let value = match token_realm {
        Some(url) => {
            let mut v = format!("Bearer realm=\"{url}\",service=\"{TOKEN_SERVICE}\"");
            if let Some(scope) = scope {
                v.push_str(&format!(",scope=\"{scope}\""));
            }
            v
        }
        None => format!("Basic realm=\"{}\", charset=\"UTF-8\"", app.auth.realm()),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message)
        .header(header::WWW_AUTHENTICATE, value)
}

/// The answer to credentials that were not accepted: 429 while throttled, else 401 with the
/// listener's challenge and what went wrong.
pub fn auth_refusal(app: &App, token_realm: Option<&str>, e: AuthError) -> ApiError {
    let message = match e {
        AuthError::Throttled(wait) => return throttled(wait),
        AuthError::BadCredentials => "wrong user name or password".into(),
        AuthError::BadToken => {
            "the token is not valid here, has expired, or its account changed; fetch a new one"
                .into()
        }
        AuthError::SessionOver => format!(
            "tokens are renewed with tokens for {} s after a login; log in again",
            crate::auth::token::MAX_SESSION_SECS
        ),
        AuthError::Malformed(m) => m,
        AuthError::NoTokenKey => {
            return ApiError::storage_unavailable(
                "the key that signs tokens is kept on the shared storage and could not be read yet",
            );
        }
    };
    challenge(app, token_realm, None, message)
}

/// 429 for a client whose failed logins are throttled, with when to come back.
pub fn throttled(wait: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        Code::TooManyRequests,
        "too many failed logins from this address; wait and retry",
    )
    .header(header::RETRY_AFTER, wait.as_secs().max(1).to_string())
}

/// The token endpoint as this client reaches it: the host it asked for, on this listener's scheme.
/// The `Host` header is the client's to choose, so only a plain `host[:port]` is echoed into the
/// challenge; anything else (user info, paths, quotes) gets the listener's own address.
fn token_url(parts: &http::request::Parts, conn: Conn) -> String {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| is_host_port(h))
        .map(str::to_string)
        .unwrap_or_else(|| conn.listener.to_string());
    let scheme = if conn.tls { "https" } else { "http" };
    format!("{scheme}://{host}/auth/token")
}

/// Whether `s` is `host[:port]`: a DNS name or IPv4 address, or a bracketed IPv6 address, and an
/// optional numeric port.
fn is_host_port(s: &str) -> bool {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, tail)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => ("v6", tail),
            _ => return false,
        },
        None => s.split_at(s.find(':').unwrap_or(s.len())),
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        });
    let host_ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_hosts_reach_the_challenge() {
        for ok in [
            "registry.home",
            "registry.home:8443",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[fe80::1]",
            "a-b.example",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "a@evil.example",
            "evil.example/x",
            "evil.example:",
            "evil.example:99999",
            "evil.example:80:80",
            "evil.example:+80",
            "-a.example",
            "a..b",
            "",
            "[::1",
            "[zz]:1",
            "e\"vil",
            "host name",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
