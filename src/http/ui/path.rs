//! UI paths to pages, a pure function like `http::route`. Repository names hold any number of
//! `/`, so a segment `-` (never a valid name component) ends the name and what follows says what
//! of the repository is addressed: `/ui/r/<name>/-/manifest/<ref>`, `/-/blob/<digest>`,
//! `/-/delete`. Names, references and digests are parsed here, once; a path that names nothing is
//! [`Page::NotFound`], which the UI answers with its 404 page.

use crate::registry::{Digest, Reference, RepoName};

/// A file the UI serves from the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetFile {
    Css,
    Js,
}

/// What a UI path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// `/` and `/ui`: sent to `/ui/`.
    Home,
    /// `/ui/`: the repositories.
    Repositories,
    /// `/ui/r/<name>`: its tags and untagged manifests.
    Repository(RepoName),
    /// `/ui/r/<name>/-/manifest/<tag or digest>`
    Manifest(RepoName, Reference),
    /// `/ui/r/<name>/-/blob/<digest>`: a file of an artifact, downloaded.
    Blob(RepoName, Digest),
    /// `/ui/r/<name>/-/delete`: the confirmation (GET) and the delete (POST).
    Delete(RepoName),
    Upstreams,
    Node,
    Uploads,
    Login,
    Logout,
    /// `/ui/static/<version>/<file>`: the version is the file's content hash, checked on serving.
    Static(String, AssetFile),
    NotFound,
}

impl Page {
    /// Whether the page takes `POST` (a form's target) rather than `GET`/`HEAD`. Login and delete
    /// take both: the form, and its submission.
    pub fn accepts_post(&self) -> bool {
        matches!(self, Page::Login | Page::Logout | Page::Delete(_))
    }

    /// Whether the page answers `GET`/`HEAD` (logout only ever changes state).
    pub fn accepts_get(&self) -> bool {
        !matches!(self, Page::Logout)
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a request path (without query).
pub fn parse(path: &str) -> Page {
    match path {
        "/" | "/ui" => return Page::Home,
        "/ui/" => return Page::Repositories,
        "/ui/upstreams" => return Page::Upstreams,
        "/ui/node" => return Page::Node,
        "/ui/uploads" => return Page::Uploads,
        "/ui/login" => return Page::Login,
        "/ui/logout" => return Page::Logout,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/ui/static/") {
        return match rest.split_once('/') {
            Some((version, "ui.css")) => Page::Static(version.to_string(), AssetFile::Css),
            Some((version, "ui.js")) => Page::Static(version.to_string(), AssetFile::Js),
            _ => Page::NotFound,
        };
    }
    let Some(rest) = path.strip_prefix("/ui/r/") else {
        return Page::NotFound;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    let (name, what) = match segments.iter().position(|s| *s == "-") {
        Some(i) => (
            segments.get(..i).unwrap_or_default(),
            segments.get(i + 1..).unwrap_or_default(),
        ),
        None => (segments.as_slice(), &[][..]),
    };
    let Ok(name) = decode(&name.join("/")).parse::<RepoName>() else {
        return Page::NotFound;
    };
    match what {
        [] if !rest.ends_with("/-") => Page::Repository(name),
        ["manifest", reference] => match decode(reference).parse() {
            Ok(r) => Page::Manifest(name, r),
            Err(_) => Page::NotFound,
        },
        ["blob", digest] => match decode(digest).parse() {
            Ok(d) => Page::Blob(name, d),
            Err(_) => Page::NotFound,
        },
        ["delete"] => Page::Delete(name),
        _ => Page::NotFound,
    }
}

/// The path of a repository's page.
pub fn repository(name: &RepoName) -> String {
    format!("/ui/r/{name}")
}

/// The path of a manifest's page (`reference`: a tag or a digest).
pub fn manifest(name: &RepoName, reference: &str) -> String {
    format!("/ui/r/{name}/-/manifest/{reference}")
}

/// The path a file of an artifact downloads from.
pub fn blob(name: &RepoName, digest: &str) -> String {
    format!("/ui/r/{name}/-/blob/{digest}")
}

/// The path of the delete confirmation, and of its form's target.
pub fn delete(name: &RepoName) -> String {
    format!("/ui/r/{name}/-/delete")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_pages() {
        assert_eq!(parse("/"), Page::Home);
        assert_eq!(parse("/ui"), Page::Home);
        assert_eq!(parse("/ui/"), Page::Repositories);
        assert_eq!(parse("/ui/upstreams"), Page::Upstreams);
        assert_eq!(parse("/ui/node"), Page::Node);
        assert_eq!(parse("/ui/uploads"), Page::Uploads);
        assert_eq!(parse("/ui/login"), Page::Login);
        assert_eq!(parse("/ui/logout"), Page::Logout);
        assert_eq!(parse("/ui/nothing"), Page::NotFound);
        assert_eq!(parse("/v2/"), Page::NotFound);
    }

    #[test]
    fn repositories_with_slashes_end_at_the_dash() {
        assert_eq!(parse("/ui/r/a"), Page::Repository(n("a")));
        assert_eq!(parse("/ui/r/a/b/c"), Page::Repository(n("a/b/c")));
        assert_eq!(parse("/ui/r/a/b/"), Page::Repository(n("a/b")));
        assert_eq!(
            parse("/ui/r/a/b/-/manifest/latest"),
            Page::Manifest(n("a/b"), Reference::Tag("latest".parse().unwrap()))
        );
        assert_eq!(
            parse(&format!("/ui/r/a/-/manifest/{D}")),
            Page::Manifest(n("a"), Reference::Digest(D.parse().unwrap()))
        );
        assert_eq!(
            parse(&format!("/ui/r/a/-/manifest/{}", D.replace(':', "%3A"))),
            Page::Manifest(n("a"), Reference::Digest(D.parse().unwrap()))
        );
        assert_eq!(
            parse(&format!("/ui/r/x/y/-/blob/{D}")),
            Page::Blob(n("x/y"), D.parse().unwrap())
        );
        assert_eq!(parse("/ui/r/a/b/-/delete"), Page::Delete(n("a/b")));
        // Names that look like the UI's own words are names all the same.
        assert_eq!(
            parse("/ui/r/manifest/delete/-/delete"),
            Page::Delete(n("manifest/delete"))
        );
    }

    #[test]
    fn what_names_nothing_is_not_found() {
        for p in [
            "/ui/r/",
            "/ui/r/A",
            "/ui/r/a//b",
            "/ui/r/../x",
            "/ui/r/a%2F..%2Fb",
            "/ui/r/a/-",
            "/ui/r/a/-/",
            "/ui/r/a/-/manifest",
            "/ui/r/a/-/manifest/-bad",
            "/ui/r/a/-/manifest/sha256:xyz",
            "/ui/r/a/-/manifest/x/y",
            "/ui/r/a/-/blob/latest",
            "/ui/r/a/-/other",
            "/ui/r/a/-/delete/x",
            "/ui/static/ui.css",
            "/ui/static/v1/other.txt",
        ] {
            assert_eq!(parse(p), Page::NotFound, "{p}");
        }
    }

    #[test]
    fn assets_carry_their_version() {
        assert_eq!(
            parse("/ui/static/abc/ui.css"),
            Page::Static("abc".into(), AssetFile::Css)
        );
        assert_eq!(
            parse("/ui/static/abc/ui.js"),
            Page::Static("abc".into(), AssetFile::Js)
        );
    }

    #[test]
    fn methods() {
        assert!(parse("/ui/logout").accepts_post());
        assert!(!parse("/ui/logout").accepts_get());
        assert!(parse("/ui/login").accepts_post() && parse("/ui/login").accepts_get());
        assert!(parse("/ui/r/a/-/delete").accepts_post());
        assert!(!parse("/ui/").accepts_post());
        assert!(!parse("/ui/r/a").accepts_post());
    }

    #[test]
    fn built_paths_parse_back() {
        let name = n("team/app");
        assert_eq!(parse(&repository(&name)), Page::Repository(name.clone()));
        assert_eq!(
            parse(&manifest(&name, D)),
            Page::Manifest(name.clone(), Reference::Digest(D.parse().unwrap()))
        );
        assert_eq!(
            parse(&blob(&name, D)),
            Page::Blob(name.clone(), D.parse().unwrap())
        );
        assert_eq!(parse(&delete(&name)), Page::Delete(name));
    }
}
