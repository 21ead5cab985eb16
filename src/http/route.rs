//! Request paths to routes, a pure function. Repository names hold any number of `/`, so the path is
//! read from the right: the last segments say what is addressed (`manifests/<ref>`, `blobs/<digest>`,
//! `blobs/uploads/<id>`, `tags/list`, `referrers/<digest>`) and everything before them is the name.
//! Names, references and digests are parsed here, once, into their types.
//!
//! A request's path is parsed once, into a [`Routed`]: the handler, the metrics label and the
//! access log all read that one value, and [`Route::is_write`] is the one read/write decision.

use http::Method;
use uuid::Uuid;

use crate::registry::reference::ReferenceError;
use crate::registry::{Digest, Reference, RepoName};

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: API version check.
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/manifests/<reference>` with a reference that is neither a tag nor a digest: no
    /// such manifest can exist (reads and deletes get 404), and none can be pushed under it (400).
    BadReference(RepoName, ReferenceError),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, Uuid),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
    /// `/healthz`: the process answers.
    Healthz,
    /// `/readyz`: storage is usable.
    Readyz,
    /// `/auth/token`: a Bearer token for the credentials given (or none), see `auth::token`.
    Token,
}

impl Route {
    /// The repository addressed, for logs.
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::BadReference(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
            _ => None,
        }
    }

    /// The digest addressed, if the path names one, for logs.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Route::Blob(_, d)
            | Route::Referrers(_, d)
            | Route::Manifest(_, Reference::Digest(d)) => Some(d),
            _ => None,
        }
    }

    /// Whether `method` on this route changes what the registry holds (a push, an upload, a
    /// delete): the one read/write decision, behind both the rights a request needs (push or
    /// pull) and the refusal of writes while the registry is read-only. Any method but `GET` and
    /// `HEAD` on a manifest, blob or upload counts, so one the endpoint does not allow is judged
    /// as a write before it gets its 405; every request to start an upload is one.
    pub fn is_write(&self, method: &Method) -> bool {
        let read = matches!(*method, Method::GET | Method::HEAD);
        match self {
            Route::Manifest(..) | Route::BadReference(..) | Route::Blob(..) | Route::Upload(..) => {
                !read
            }
            Route::UploadStart(_) => true,
            Route::Base
            | Route::Catalog
            | Route::Tags(_)
            | Route::Referrers(..)
            | Route::Healthz
            | Route::Readyz
            | Route::Token => false,
        }
    }
}

/// A request's path, parsed once per request: what it addresses (or why it addresses nothing) and
/// the kind of endpoint it counts under in the metrics.
#[derive(Debug, Clone)]
pub struct Routed {
    pub route: Result<Route, RouteError>,
    pub kind: Kind,
}

impl Routed {
    /// Parses `path` (without query); `metrics_path` is where `/metrics` answers (`metrics.path`).
    pub fn of(path: &str, metrics_path: &str) -> Routed {
        Routed {
            route: parse(path),
            kind: kind(path, metrics_path),
        }
    }
}

/// The kind of endpoint a path addresses: the `route` label of the request metrics, a small fixed
/// set whatever the paths clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Probe,
    Token,
    Base,
    Catalog,
    Metrics,
    Upload,
    Blob,
    Manifest,
    Referrers,
    Tags,
    /// The web UI: `/ui/...`, and `/` (sent there).
    Ui,
    Other,
}

impl Kind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Probe => "probe",
            Kind::Token => "token",
            Kind::Base => "base",
            Kind::Catalog => "catalog",
            Kind::Metrics => "metrics",
            Kind::Upload => "upload",
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
            Kind::Referrers => "referrers",
            Kind::Tags => "tags",
            Kind::Ui => "ui",
            Kind::Other => "other",
        }
    }
}

/// Why a path is not a route; each becomes one OCI error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    NameInvalid(String),
    DigestInvalid(String),
    UploadUnknown,
}

fn name(segments: &[&str]) -> Result<RepoName, RouteError> {
    let joined = segments.join("/");
    joined
        .parse()
        .map_err(|e: crate::registry::name::NameError| RouteError::NameInvalid(e.to_string()))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn digest(s: &str) -> Result<Digest, RouteError> {
    decode(s)
        .parse()
        .map_err(|e: crate::registry::digest::DigestError| RouteError::DigestInvalid(e.to_string()))
}

/// The kind of endpoint `path` addresses: the same shape tests as [`parse`], without allocating or
/// validating (an invalid name still counts under its kind).
fn kind(path: &str, metrics_path: &str) -> Kind {
    match path {
        "/healthz" | "/readyz" => return Kind::Probe,
        "/auth/token" => return Kind::Token,
        "/v2" | "/v2/" => return Kind::Base,
        "/v2/_catalog" => return Kind::Catalog,
        p if p == metrics_path => return Kind::Metrics,
        "/" | "/ui" => return Kind::Ui,
        p if p.starts_with("/ui/") => return Kind::Ui,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Kind::Other;
    };
    let mut back = rest.rsplit('/');
    let (last, second, third) = (back.next(), back.next(), back.next());
    // `blobs/uploads/<id>`, and `blobs/uploads` without the final slash, which parse takes as the
    // upload start too.
    if (third == Some("blobs") && second == Some("uploads"))
        || (second == Some("blobs") && last == Some("uploads"))
    {
        return Kind::Upload;
    }
    match (second, last) {
        (Some("blobs"), _) => Kind::Blob,
        (Some("manifests"), _) => Kind::Manifest,
        (Some("referrers"), _) => Kind::Referrers,
        (Some("tags"), Some("list")) => Kind::Tags,
        _ => Kind::Other,
    }
}

/// Parses a request path (without query).
pub fn parse(path: &str) -> Result<Route, RouteError> {
    match path {
        "/healthz" => return Ok(Route::Healthz),
        "/readyz" => return Ok(Route::Readyz),
        "/auth/token" => return Ok(Route::Token),
        "/v2" | "/v2/" => return Ok(Route::Base),
        "/v2/_catalog" => return Ok(Route::Catalog),
        _ => {}
    }
    let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
    let seg: Vec<&str> = rest.split('/').collect();
    // Every route has a name of at least one component before its own segments.
    match seg.as_slice() {
        // /<name>/blobs/uploads/ and /<name>/blobs/uploads/<id>
        [repo @ .., "blobs", "uploads", last] if !repo.is_empty() => {
            let name = name(repo)?;
            if last.is_empty() {
                return Ok(Route::UploadStart(name));
            }
            let id = Uuid::try_parse(last).map_err(|_| RouteError::UploadUnknown)?;
            Ok(Route::Upload(name, id))
        }
        [repo @ .., "blobs", "uploads"] if !repo.is_empty() => Ok(Route::UploadStart(name(repo)?)),
        [repo @ .., "tags", "list"] if !repo.is_empty() => Ok(Route::Tags(name(repo)?)),
        [repo @ .., kind, target] if !repo.is_empty() => match *kind {
            "manifests" => {
                let name = name(repo)?;
                Ok(match decode(target).parse::<Reference>() {
                    Ok(reference) => Route::Manifest(name, reference),
                    Err(e) => Route::BadReference(name, e),
                })
            }
            "blobs" => Ok(Route::Blob(name(repo)?, digest(target)?)),
            "referrers" => Ok(Route::Referrers(name(repo)?, digest(target)?)),
            _ => Err(RouteError::NotFound),
        },
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn kinds_agree_with_parse() {
        let d = format!("/v2/a/blobs/{D}");
        let id = "/v2/a/blobs/uploads/6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        for (path, want) in [
            ("/v2/", "base"),
            ("/v2/a/blobs/uploads/", "upload"),
            // The upload start without its final slash, which parse also takes (a blob's digest
            // never reads `uploads`).
            ("/v2/a/blobs/uploads", "upload"),
            ("/v2/a/b/blobs/uploads", "upload"),
            (id, "upload"),
            (&d, "blob"),
            ("/v2/a/manifests/latest", "manifest"),
            ("/v2/a/tags/list", "tags"),
            ("/metrics", "metrics"),
        ] {
            assert_eq!(kind(path, "/metrics").label(), want, "{path}");
        }
    }

    #[test]
    fn writes_are_what_changes_the_registry() {
        let blob = parse(&format!("/v2/a/blobs/{D}")).unwrap();
        let manifest = parse("/v2/a/manifests/latest").unwrap();
        let bad = parse("/v2/a/manifests/-bad").unwrap();
        let upload = parse("/v2/a/blobs/uploads/6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap();
        for r in [&blob, &manifest, &bad, &upload] {
            assert!(!r.is_write(&Method::GET), "{r:?}");
            assert!(!r.is_write(&Method::HEAD), "{r:?}");
            for m in [Method::PUT, Method::DELETE, Method::PATCH, Method::POST] {
                assert!(r.is_write(&m), "{m} {r:?}");
            }
        }
        // Every request to start an upload is one, and listings never are.
        let start = parse("/v2/a/blobs/uploads/").unwrap();
        assert!(start.is_write(&Method::GET));
        for path in [
            "/v2/",
            "/v2/_catalog",
            "/v2/a/tags/list",
            "/healthz",
            "/auth/token",
        ] {
            assert!(!parse(path).unwrap().is_write(&Method::DELETE), "{path}");
        }
        let referrers = parse(&format!("/v2/a/referrers/{D}")).unwrap();
        assert!(!referrers.is_write(&Method::PUT));
    }

    #[test]
    fn routed_keeps_the_kind_of_an_invalid_path() {
        let r = Routed::of("/v2/A/manifests/x", "/metrics");
        assert!(matches!(r.route, Err(RouteError::NameInvalid(_))));
        assert_eq!(r.kind, Kind::Manifest);
        let r = Routed::of("/metrics", "/metrics");
        assert_eq!(
            (r.route, r.kind),
            (Err(RouteError::NotFound), Kind::Metrics)
        );
    }

    #[test]
    fn routes() {
        let d: Digest = D.parse().unwrap();
        assert_eq!(parse("/v2/"), Ok(Route::Base));
        assert_eq!(parse("/v2"), Ok(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Ok(Route::Catalog));
        assert_eq!(parse("/v2/a/b/tags/list"), Ok(Route::Tags(n("a/b"))));
        assert_eq!(
            parse("/v2/a/manifests/latest"),
            Ok(Route::Manifest(
                n("a"),
                Reference::Tag("latest".parse().unwrap())
            ))
        );
        assert_eq!(
            parse(&format!("/v2/a/manifests/{D}")),
            Ok(Route::Manifest(n("a"), Reference::Digest(d.clone())))
        );
        assert_eq!(
            parse(&format!("/v2/a/manifests/{}", D.replace(':', "%3A"))),
            Ok(Route::Manifest(n("a"), Reference::Digest(d.clone())))
        );
        assert_eq!(
            parse(&format!("/v2/x/y/z/blobs/{D}")),
            Ok(Route::Blob(n("x/y/z"), d.clone()))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/"),
            Ok(Route::UploadStart(n("a")))
        );
        assert_eq!(parse("/v2/a/blobs/uploads"), Ok(Route::UploadStart(n("a"))));
        let id = Uuid::new_v4();
        assert_eq!(
            parse(&format!("/v2/a/blobs/uploads/{id}")),
            Ok(Route::Upload(n("a"), id))
        );
        assert_eq!(
            parse(&format!("/v2/a/referrers/{D}")),
            Ok(Route::Referrers(n("a"), d))
        );
        assert_eq!(parse("/healthz"), Ok(Route::Healthz));
    }

    #[test]
    fn names_that_look_like_keywords_route_from_the_right() {
        // A repository may be called "blobs" or "manifests"; the rightmost segments decide.
        assert_eq!(
            parse("/v2/blobs/manifests/manifests/latest"),
            Ok(Route::Manifest(
                n("blobs/manifests"),
                Reference::Tag("latest".parse().unwrap())
            ))
        );
        assert_eq!(
            parse("/v2/tags/list/tags/list"),
            Ok(Route::Tags(n("tags/list")))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse("/v1/"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/a"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/a/unknown/x"), Err(RouteError::NotFound));
        assert!(matches!(
            parse("/v2/../x/tags/list"),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a//b/tags/list"),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/A/manifests/x"),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a%2F..%2Fb/tags/list"),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a/blobs/sha256:xyz"),
            Err(RouteError::DigestInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/-bad"),
            Ok(Route::BadReference(_, ReferenceError::Tag(_)))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/..%2F..%2Fx"),
            Ok(Route::BadReference(_, ReferenceError::Tag(_)))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/sha256:xyz"),
            Ok(Route::BadReference(_, ReferenceError::Digest(_)))
        ));
        assert_eq!(
            parse("/v2/a/blobs/uploads/../../x"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/not-a-uuid"),
            Err(RouteError::UploadUnknown)
        );
    }
}
