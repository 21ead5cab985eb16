//! Pull-through cache: repositories under an upstream's prefix (or named with containerd's
//! `?ns=`, or bare names matching the default patterns) are served from storage when stored, and
//! otherwise fetched from the upstream, stored under the same durability rules, and served.
//!
//! Every naming form maps to one stored repository, `<upstream name>/<upstream repository>`, so
//! `docker.io/library/alpine`, `library/alpine?ns=docker.io` and (with docker.io as the default
//! upstream) `library/alpine` share one cache. Pushes never reach an upstream.
//!
//! Fetches are coalesced: one manifest fetch per repository and reference on a node at a time, and
//! one blob fetch per digest across every node sharing the storage (a lock on the shared mount,
//! see [`crate::storage::fill`]); every other request streams from the fetch in progress.
//!
//! Handlers read through [`Repositories`] (in `repository.rs`), which decides whether a name is
//! local or an upstream's and counts the cache's hits and misses; `manifests.rs` keeps cached tags
//! current, `blobs.rs` and `fill.rs` fetch missing blobs.
//!
//! Nothing an upstream sends is held whole in memory: a manifest is read up to
//! `limits.max_manifest_bytes` and refused beyond it, a blob goes to its partial file as it arrives.
//! A blob fetch has an overall deadline (`proxy.fetch_deadline_secs`) and a minimum rate
//! (`proxy.fetch_min_bytes_per_sec`, judged over every `proxy.upstream_timeout_secs`), and stops
//! when no client on this node follows it any more, unless more than half of a blob of known size
//! has arrived (then it is worth finishing: the next pull finds it stored).

mod blobs;
pub mod evict;
mod fill;
mod manifests;
pub mod prewarm;
mod repository;
pub mod totals;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::registry::{Digest, RepoName};
use crate::status::Board;
use crate::storage::StorageError;
use fill::FillWatch;
pub use repository::{Blob, Repositories, Repository, UpstreamBlob};
pub use upstream::{Upstream, UpstreamError, UpstreamSettings};

/// What `[proxy]`, `[[upstream]]` and the manifest and blob limits say, as the daemon hands them
/// over.
#[derive(Clone)]
pub struct ProxySettings {
    pub upstreams: Vec<UpstreamSettings>,
    /// The upstream of bare names matching `default_patterns`; empty: none.
    pub default_upstream: String,
    pub default_patterns: Vec<String>,
    /// How long a tag fetched from an upstream is served without asking it again.
    pub tag_ttl: Duration,
    /// Bound on each upstream request.
    pub timeout: Duration,
    pub max_manifest_bytes: u64,
    /// 0: no limit.
    pub max_blob_bytes: u64,
    /// Overall bound on one blob fetch.
    pub fetch_deadline: Duration,
    /// Bytes per second a blob fetch must average; 0: no minimum.
    pub min_rate: u64,
}

/// Why a proxied request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream {upstream} sent a manifest that is not valid: {reason}")]
    BadManifest { upstream: String, reason: String },
}

/// Where a repository name leads when it is not (only) local.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// The repository the cache stores it under.
    pub cached: RepoName,
    /// The repository's name on the upstream.
    pub remote: String,
    /// For a bare name (the registry-mirrors form): the name as the client sent it, which is
    /// looked up locally first, so images already stored under it are served as they are.
    pub literal: Option<RepoName>,
}

/// How a manifest was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// From storage, known current.
    Hit,
    /// Fetched from the upstream just now.
    Fetched,
    /// From storage, but the upstream could not confirm it.
    Stale,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Hit => "hit",
            Freshness::Fetched => "fetched",
            Freshness::Stale => "stale",
        }
    }
}

pub struct Proxy {
    upstreams: Vec<Arc<Upstream>>,
    default_upstream: Option<Arc<Upstream>>,
    default_patterns: Vec<String>,
    tag_ttl: Duration,
    timeout: Duration,
    max_manifest_bytes: u64,
    /// 0: no limit.
    max_blob_bytes: u64,
    fetch_deadline: Duration,
    /// 0: no minimum.
    min_rate: u64,
    /// The blob fetches this node's clients wait for, by digest: what a fetch's followers hold
    /// (a fetch nobody holds may stop) and how it ended (so followers hear a failure at once).
    fills: Mutex<HashMap<Digest, Weak<FillWatch>>>,
    /// One manifest fetch per (repository, reference) on this node at a time.
    manifest_fetches: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When this node last recorded a pull of each cached manifest.
    pulled: Mutex<HashMap<String, std::time::Instant>>,
    /// Where each upstream's reachability, answers and cache totals are posted for the web UI.
    board: Arc<Board>,
}

impl Proxy {
    /// A proxy with no upstreams: every name is local.
    pub fn none() -> Proxy {
        Proxy {
            upstreams: Vec::new(),
            default_upstream: None,
            default_patterns: Vec::new(),
            tag_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 0,
            fetch_deadline: Duration::from_secs(3600),
            min_rate: 0,
            fills: Mutex::new(HashMap::new()),
            manifest_fetches: Mutex::new(HashMap::new()),
            pulled: Mutex::new(HashMap::new()),
            board: Board::new(),
        }
    }

    /// The proxy `settings` describe; reads the upstreams' password and CA files. Each upstream
    /// is listed on `board` at once and reports there from then on.
    pub fn from_settings(settings: &ProxySettings, board: Arc<Board>) -> anyhow::Result<Proxy> {
        let timeout = settings.timeout;
        let upstreams = settings
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, timeout, board.clone()).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let default_upstream = upstreams
            .iter()
            .find(|u| u.name == settings.default_upstream)
            .cloned();
        Ok(Proxy {
            upstreams,
            default_upstream,
            default_patterns: settings.default_patterns.clone(),
            tag_ttl: settings.tag_ttl,
            timeout,
            max_manifest_bytes: settings.max_manifest_bytes,
            max_blob_bytes: settings.max_blob_bytes,
            fetch_deadline: settings.fetch_deadline,
            min_rate: settings.min_rate,
            fills: Mutex::new(HashMap::new()),
            manifest_fetches: Mutex::new(HashMap::new()),
            pulled: Mutex::new(HashMap::new()),
            board,
        })
    }

    /// The board this proxy's upstreams report on (the app's: the UI reads it there).
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.name.clone()).collect()
    }

    /// Where `name` (with containerd's `ns` query, if any) leads; `None` when it is local only.
    pub fn target(&self, name: &RepoName, ns: Option<&str>) -> Option<Target> {
        if self.upstreams.is_empty() {
            return None;
        }
        let name = name.as_str();
        if let Some(ns) = ns {
            let u = self
                .upstreams
                .iter()
                .find(|u| u.name == ns || u.prefixes.iter().any(|p| p == ns))?;
            return self.make_target(u, name, None);
        }
        let mut best: Option<(&Arc<Upstream>, &str)> = None;
        for u in &self.upstreams {
            for p in &u.prefixes {
                if let Some(rest) = name
                    .strip_prefix(p.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    && best.is_none_or(|(_, r)| rest.len() < r.len())
                {
                    best = Some((u, rest));
                }
            }
        }
        if let Some((u, rest)) = best {
            return self.make_target(u, rest, None);
        }
        let u = self.default_upstream.as_ref()?;
        if self.default_patterns.iter().any(|p| matches(p, name)) {
            return self.make_target(u, name, name.parse().ok());
        }
        None
    }

    fn make_target(
        &self,
        u: &Arc<Upstream>,
        repo: &str,
        literal: Option<RepoName>,
    ) -> Option<Target> {
        let remote = u.remote_name(repo);
        let prefix = u.prefixes.first().unwrap_or(&u.name);
        let cached = format!("{prefix}/{remote}").parse().ok()?;
        Some(Target {
            upstream: u.clone(),
            cached,
            remote,
            literal,
        })
    }

    /// Whether `name` is a repository of the cache (under an upstream's prefix).
    pub fn is_cached_repo(&self, name: &RepoName) -> bool {
        self.cache_owner(name).is_some()
    }

    /// The upstream whose cache `name` is in (under its prefix; the longest prefix wins, as a
    /// request's name is led).
    pub fn cache_owner(&self, name: &RepoName) -> Option<&Arc<Upstream>> {
        let mut best: Option<(&Arc<Upstream>, usize)> = None;
        for u in &self.upstreams {
            for p in &u.prefixes {
                if name.is_under(p) && best.is_none_or(|(_, len)| p.len() > len) {
                    best = Some((u, p.len()));
                }
            }
        }
        best.map(|(u, _)| u)
    }

    /// The upstream whose namespace `name` is in, when pushes there are refused.
    pub fn refuses_push(&self, name: &RepoName) -> Option<String> {
        let t = self.target(name, None)?;
        (!t.upstream.push).then(|| t.upstream.name.clone())
    }
}

/// Whether `name` matches `pattern`: `*` is one path component, `**` any number (at least one).
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[&str], n: &[&str]) -> bool {
        match (p, n) {
            ([], []) => true,
            (["**", p @ ..], [_, ..]) => (1..=n.len()).filter_map(|k| n.get(k..)).any(|n| go(p, n)),
            (["*", p @ ..], [_, n @ ..]) => go(p, n),
            ([a, p @ ..], [b, n @ ..]) if a == b => go(p, n),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("library/*", "library/alpine"));
        assert!(!matches("library/*", "library/a/b"));
        assert!(!matches("library/*", "team/app"));
        assert!(matches("library/**", "library/a/b"));
        assert!(matches("**", "a"));
        assert!(!matches("library/*", "library"));
    }

    fn upstream(name: &str, url: &str, prefixes: &[&str], push: bool) -> UpstreamSettings {
        UpstreamSettings {
            name: name.into(),
            url: url.into(),
            username: String::new(),
            password: String::new(),
            password_file: Default::default(),
            ca: Default::default(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            push,
            token_realm_hosts: Vec::new(),
        }
    }

    /// docker.io (its name its prefix) and ghcr.io (two prefixes, pushes allowed), with the
    /// shipped `[proxy]` defaults.
    fn proxy(default: &str) -> Proxy {
        let settings = ProxySettings {
            upstreams: vec![
                upstream(
                    "docker.io",
                    "https://registry-1.docker.io",
                    &["docker.io"],
                    false,
                ),
                upstream("ghcr.io", "https://ghcr.io", &["ghcr.io", "gh"], true),
            ],
            default_upstream: default.into(),
            default_patterns: vec!["library/*".into()],
            tag_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 0,
            fetch_deadline: Duration::from_secs(3600),
            min_rate: 16384,
        };
        Proxy::from_settings(&settings, Board::new()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn t(p: &Proxy, name: &str, ns: Option<&str>) -> Option<(String, String, bool)> {
        let name: RepoName = name.parse().unwrap_or_else(|e| panic!("{e}"));
        p.target(&name, ns)
            .map(|t| (t.cached.to_string(), t.remote, t.literal.is_some()))
    }

    #[test]
    fn naming_forms() {
        let p = proxy("docker.io");
        let alpine = Some((
            "docker.io/library/alpine".to_string(),
            "library/alpine".to_string(),
            false,
        ));
        assert_eq!(t(&p, "docker.io/library/alpine", None), alpine);
        assert_eq!(t(&p, "docker.io/alpine", None), alpine);
        assert_eq!(t(&p, "library/alpine", Some("docker.io")), alpine);
        assert_eq!(t(&p, "alpine", Some("docker.io")), alpine);
        let bare = t(&p, "library/alpine", None);
        assert_eq!(
            bare,
            Some((
                "docker.io/library/alpine".into(),
                "library/alpine".into(),
                true
            ))
        );
        // A private name outside the default patterns never goes upstream.
        assert_eq!(t(&p, "team/app", None), None);
        assert_eq!(t(&p, "docker.io", None), None);
        assert_eq!(
            t(&p, "gh/o/r", None),
            Some(("ghcr.io/o/r".into(), "o/r".into(), false))
        );
        assert_eq!(t(&p, "x/y", Some("quay.io")), None);
        let name: RepoName = "docker.io/library/alpine"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.refuses_push(&name), Some("docker.io".into()));
        let name: RepoName = "ghcr.io/o/r".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.refuses_push(&name), None);
        let none = proxy("");
        assert_eq!(t(&none, "library/alpine", None), None);
        let owner = |n: &str| {
            let n: RepoName = n.parse().unwrap_or_else(|e| panic!("{e}"));
            p.cache_owner(&n).map(|u| u.name.clone())
        };
        assert_eq!(owner("gh/o/r").as_deref(), Some("ghcr.io"));
        assert_eq!(
            owner("docker.io/library/alpine").as_deref(),
            Some("docker.io")
        );
        assert_eq!(owner("team/app"), None);
        assert_eq!(owner("ghcr.ioo/x"), None);
    }

    #[test]
    fn upstreams_are_listed_on_the_board_without_credentials() {
        let board = Board::new();
        let mut u = upstream("q", "https://user:secret@quay.example/", &["q"], false);
        u.username = "user".into();
        let settings = ProxySettings {
            upstreams: vec![u],
            default_upstream: String::new(),
            default_patterns: Vec::new(),
            tag_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 0,
            fetch_deadline: Duration::from_secs(3600),
            min_rate: 0,
        };
        let p = Proxy::from_settings(&settings, board.clone()).unwrap_or_else(|e| panic!("{e}"));
        let listed = board.upstreams();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "q");
        assert_eq!(listed[0].url, "https://quay.example/");
        assert_eq!(listed[0].reachable, None);
        assert!(Arc::ptr_eq(&p.board(), &board));
    }
}
