//! One upstream registry: requests with its authentication (anonymous, basic, or the Bearer token
//! flow of Docker Hub, GHCR, Quay and Distribution's token auth), and its failures sorted into what
//! a client needs to hear (unreachable, unauthorized, not found).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, header};

use crate::status::Board;

/// One `[[upstream]]`, as the daemon hands it over.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub url: String,
    /// Empty: anonymous.
    pub username: String,
    pub password: String,
    /// Read at start instead of `password` when set.
    pub password_file: PathBuf,
    /// PEM file of extra CA certificates to trust; empty: the system store.
    pub ca: PathBuf,
    /// The repository prefixes it serves (its name when none are configured).
    pub prefixes: Vec<String>,
    /// Whether clients may push under its prefixes.
    pub push: bool,
    /// Hosts a plain-http token realm may be on to receive the credentials.
    pub token_realm_hosts: Vec<String>,
}

/// Manifest media types asked of an upstream, every kind a client may pull.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Why an upstream request failed. Messages never hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("upstream {0} refused the credentials registryd has for it: {1}")]
    Unauthorized(String, String),
    #[error("upstream {0} does not have it")]
    NotFound(String),
    #[error("upstream {0} failed: {1}")]
    Failed(String, String),
}

impl UpstreamError {
    /// Whether the upstream said, authoritatively, that the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound(_))
    }
}

/// A token (or basic credentials) for one repository scope.
#[derive(Clone)]
enum Grant {
    Bearer { token: String, until: Instant },
    Basic,
}

pub struct Upstream {
    pub name: String,
    /// Base URL without a trailing `/`.
    base: String,
    pub prefixes: Vec<String>,
    pub push: bool,
    credentials: Option<(String, String)>,
    /// Hosts a plain-http token realm may be on to receive the credentials (`token_realm_hosts`).
    realm_hosts: Vec<String>,
    http: reqwest::Client,
    timeout: Duration,
    grants: Mutex<HashMap<String, Grant>>,
    /// Where what it answers (or not) is posted for the web UI.
    pub(super) board: Arc<Board>,
}

impl Upstream {
    /// The upstream `c` describes, listed on `board` (by name, and its URL without any
    /// credentials written into it).
    pub fn new(
        c: &UpstreamSettings,
        timeout: Duration,
        board: Arc<Board>,
    ) -> anyhow::Result<Upstream> {
        let password = if !c.password_file.as_os_str().is_empty() {
            let p = std::fs::read_to_string(&c.password_file).map_err(|e| {
                anyhow::anyhow!(
                    "upstream {}: cannot read password_file {}: {e}",
                    c.name,
                    c.password_file.display()
                )
            })?;
            p.trim_end_matches(['\n', '\r']).to_string()
        } else {
            c.password.clone()
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("registryd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5));
        if !c.ca.as_os_str().is_empty() {
            let pem = std::fs::read(&c.ca).map_err(|e| {
                anyhow::anyhow!(
                    "upstream {}: cannot read ca {}: {e}",
                    c.name,
                    c.ca.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "upstream {}: ca {} holds no PEM certificate: {e}",
                    c.name,
                    c.ca.display()
                )
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("upstream {}: cannot set up its client: {e}", c.name))?;
        board.update_upstream(&c.name, |r| r.url = shown_url(&c.url));
        Ok(Upstream {
            name: c.name.clone(),
            base: c.url.trim_end_matches('/').to_string(),
            prefixes: c.prefixes.clone(),
            push: c.push,
            credentials: (!c.username.is_empty()).then(|| (c.username.clone(), password)),
            realm_hosts: c
                .token_realm_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            http,
            timeout,
            grants: Mutex::new(HashMap::new()),
            board,
        })
    }

    /// The name Docker Hub knows a repository by: official images live under `library/`.
    pub fn remote_name(&self, repo: &str) -> String {
        if self.name == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        }
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `method` to `/v2/<repo>/<path>`, authenticating as the upstream asks. `whole`: the
    /// answer is small, so the upstream timeout bounds the whole request (a blob body is bounded
    /// per read instead).
    pub async fn send(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        accept: Option<&str>,
        whole: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let r = self.send_once(method, repo, path, accept, whole).await;
        self.report(r.as_ref().err());
        if let Err(e) = &r {
            let kind = match e {
                UpstreamError::Unreachable(..) => "unreachable",
                UpstreamError::Unauthorized(..) => "unauthorized",
                UpstreamError::Failed(..) => "failed",
                // An authoritative answer, not a failure.
                UpstreamError::NotFound(_) => return r,
            };
            crate::metrics::get().upstream_error(&self.name, kind);
        }
        r
    }

    /// Posts how a request went: reachable unless it got no answer at all (an answer refusing
    /// the credentials, or a 5xx, came from a reachable upstream: its error says the rest).
    /// [`send`](Self::send) posts each request; its callers post what failed after it (a body
    /// that stopped, a head that never came).
    pub(super) fn report(&self, error: Option<&UpstreamError>) {
        let now = std::time::SystemTime::now();
        self.board.update_upstream(&self.name, |u| {
            u.last_check = Some(now);
            u.reachable = Some(!matches!(error, Some(UpstreamError::Unreachable(..))));
            if let Some(e) = error.filter(|e| !e.is_not_found()) {
                u.last_error = Some(e.to_string());
                u.last_error_at = Some(now);
            }
        });
    }

    async fn send_once(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        accept: Option<&str>,
        whole: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}/v2/{repo}/{path}", self.base);
        let scope = format!("repository:{repo}:pull");
        let mut challenged = false;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            if whole {
                req = req.timeout(self.timeout);
            }
            let grant = self.grants().get(&scope).cloned();
            match grant {
                Some(Grant::Bearer { token, until }) if until > Instant::now() => {
                    req = req.bearer_auth(token);
                }
                Some(Grant::Basic) => {
                    if let Some((u, p)) = &self.credentials {
                        req = req.basic_auth(u, Some(p));
                    }
                }
                _ => {}
            }
            let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
            match resp.status() {
                s if s.is_success() => return Ok(resp),
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    let challenge = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let grant = self.answer(&challenge, &scope).await?;
                    self.grants().insert(scope.clone(), grant);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(UpstreamError::Unauthorized(
                        self.name.clone(),
                        format!("{} for {repo}", resp.status()),
                    ));
                }
                StatusCode::NOT_FOUND => return Err(UpstreamError::NotFound(self.name.clone())),
                StatusCode::TOO_MANY_REQUESTS => {
                    return Err(UpstreamError::Failed(
                        self.name.clone(),
                        "rate limited (429 Too Many Requests)".into(),
                    ));
                }
                s => {
                    return Err(UpstreamError::Failed(
                        self.name.clone(),
                        format!("{s} for {repo}/{path}"),
                    ));
                }
            }
        }
    }

    /// `method` (GET or HEAD) of manifest `reference` in `repo`, asking for every manifest kind.
    pub async fn manifest(
        &self,
        method: Method,
        repo: &str,
        reference: &crate::registry::Reference,
    ) -> Result<reqwest::Response, UpstreamError> {
        let path = format!("manifests/{reference}");
        self.send(method, repo, &path, Some(MANIFEST_ACCEPT), true)
            .await
    }

    fn unreachable(&self, e: &reqwest::Error) -> UpstreamError {
        // Walk to the root cause (connection refused, timeout, certificate) for the message; the
        // URL never holds credentials (they go in headers).
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        UpstreamError::Unreachable(self.name.clone(), msg)
    }

    /// Answers a `WWW-Authenticate` challenge: a Bearer token from the realm (with our
    /// credentials, if any), or basic credentials.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<Grant, UpstreamError> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            return match self.credentials {
                Some(_) => Ok(Grant::Basic),
                None => Err(UpstreamError::Unauthorized(
                    self.name.clone(),
                    "it asks for a username and password (set username and password in its [[upstream]])".into(),
                )),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(UpstreamError::Unauthorized(
                self.name.clone(),
                format!("unsupported authentication scheme {scheme:?}"),
            ));
        }
        let Some(realm) = params.get("realm") else {
            return Err(UpstreamError::Unauthorized(
                self.name.clone(),
                "Bearer challenge without a realm".into(),
            ));
        };
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("scope", scope);
            if let Some(s) = params.get("service") {
                q.append_pair("service", s);
            }
            q.finish()
        };
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{query}");
        let mut req = self.http.get(url).timeout(self.timeout);
        if let Some((u, p)) = &self.credentials {
            if self.may_send_credentials(realm) {
                req = req.basic_auth(u, Some(p));
            } else {
                // Asked anonymously instead: a public image still gets its token.
                tracing::warn!(
                    upstream = %self.name, realm = %realm,
                    "not sending the upstream's credentials to a plain-http token realm on another \
                     host (allow it with token_realm_hosts)"
                );
            }
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(UpstreamError::Unauthorized(
                self.name.clone(),
                format!("its token service answered {status}"),
            ));
        }
        let body = read_capped(resp, MAX_TOKEN_REPLY)
            .await
            .map_err(|e| match e {
                Capped::Read(e) => self.unreachable(&e),
                Capped::TooBig(n) => UpstreamError::Unauthorized(
                    self.name.clone(),
                    format!("its token service sent more than {n} bytes"),
                ),
            })?;
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            UpstreamError::Unauthorized(
                self.name.clone(),
                format!("its token service sent no token: {e}"),
            )
        })?;
        let token = reply.token.or(reply.access_token).ok_or_else(|| {
            UpstreamError::Unauthorized(self.name.clone(), "its token service sent no token".into())
        })?;
        // The spec's default lifetime is 60 s; renew a little early. At most a day: a lifetime
        // the upstream chose must not overflow the clock (`Instant + Duration` panics).
        let life = Duration::from_secs(reply.expires_in.unwrap_or(60).clamp(10, 86_400) - 5);
        Ok(Grant::Bearer {
            token,
            until: Instant::now() + life,
        })
    }
}

impl Upstream {
    /// Whether the configured credentials may go to the token `realm` an upstream named: an
    /// `https` realm anywhere (as Docker Hub's auth.docker.io), a realm on the upstream's own
    /// scheme and host, or a host the operator listed in `token_realm_hosts`. A hostile or
    /// hijacked upstream can name any realm; a plain-http one elsewhere would get the password
    /// in clear to a host nobody chose.
    fn may_send_credentials(&self, realm: &str) -> bool {
        realm_allowed(&self.base, realm, &self.realm_hosts)
    }
}

/// See [`Upstream::may_send_credentials`].
fn realm_allowed(base: &str, realm: &str, extra_hosts: &[String]) -> bool {
    let Ok(realm) = url::Url::parse(realm) else {
        return false;
    };
    let Some(host) = realm.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    if realm.scheme() == "https" {
        return true;
    }
    if realm.scheme() != "http" {
        return false;
    }
    if let Ok(own) = url::Url::parse(base)
        && own.scheme() == realm.scheme()
        && own.host_str().map(str::to_ascii_lowercase).as_deref() == Some(host.as_str())
    {
        return true;
    }
    let with_port = match realm.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    extra_hosts.iter().any(|h| *h == host || *h == with_port)
}

/// `url` as the status page shows it: without a `user:password@` an operator may have written
/// into it (anything that does not parse is shown as it is: it has no such part to hide).
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Largest token-service reply read: tokens are a few KiB.
const MAX_TOKEN_REPLY: u64 = 1 << 20;

/// Why [`read_capped`] stopped.
#[derive(Debug)]
pub enum Capped {
    Read(reqwest::Error),
    /// More than this many bytes (declared or sent).
    TooBig(u64),
}

/// The body of `resp`, refused at once when its declared length is over `limit`, and cut off as
/// soon as more than `limit` bytes arrive: an upstream's body is never held whole before its size
/// is judged.
pub async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<bytes::Bytes, Capped> {
    if declared_length(resp.headers()).is_some_and(|n| n > limit) {
        return Err(Capped::TooBig(limit));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Read)? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(Capped::TooBig(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The `Content-Length` an answer declares. Read from the header, not from reqwest's
/// `content_length()`: that is the body's size hint, 0 for the answer to a HEAD.
pub fn declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Bearer realm="...",service="...",scope="..."` → ("Bearer", {realm, service, scope}).
pub fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            // Quoted value; backslash escapes one character.
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        rest = next.trim_start_matches([',', ' ']);
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/alpine:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p["realm"], "Registry Realm");
        let (s, p) = parse_challenge(r#"Bearer realm=https://x/t, service="a\"b""#);
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://x/t");
        assert_eq!(p["service"], "a\"b");
        assert_eq!(parse_challenge("").1.len(), 0);
        assert_eq!(parse_challenge("Bearer garbage").1.len(), 0);
    }

    #[test]
    fn realms_that_get_credentials() {
        let none: &[String] = &[];
        let up = "http://127.0.0.1:5000";
        // Any https realm (Docker Hub's is on auth.docker.io).
        assert!(realm_allowed(up, "https://auth.example/token", none));
        // The upstream's own scheme and host, on any port (its token server beside it).
        assert!(realm_allowed(up, "http://127.0.0.1:5001/token", none));
        // Plain http elsewhere: not unless listed.
        assert!(!realm_allowed(up, "http://127.0.0.2:5001/token", none));
        assert!(!realm_allowed(
            "https://127.0.0.1:5000",
            "http://127.0.0.1:5001/token",
            none
        ));
        let listed = ["127.0.0.2:5001".to_string()];
        assert!(realm_allowed(up, "http://127.0.0.2:5001/token", &listed));
        assert!(!realm_allowed(up, "http://127.0.0.2:5002/token", &listed));
        let listed = ["127.0.0.2".to_string()];
        assert!(realm_allowed(up, "http://127.0.0.2:5002/token", &listed));
        assert!(!realm_allowed(up, "ftp://127.0.0.1/token", none));
        assert!(!realm_allowed(up, "not a url", none));
    }
}
