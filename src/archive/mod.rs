//! Image archives in and out of storage, for clusters without internet: `registryd import` loads
//! `docker save` archives (the legacy layout and the OCI layout Docker 25+ writes), OCI image-layout
//! directories and tarballs, gzip or not; `registryd export` writes an OCI layout tarball (with a
//! Docker `manifest.json` beside it, so `docker load` takes it too).
//!
//! Both go through the storage driver's own calls (uploads, links, manifests under the push lock),
//! so an import follows the durability rules and is safe while the daemons and the garbage
//! collector run on any node. Manifest bytes from an archive are stored as they are: every digest
//! the archive has stays the same.

pub mod cli;
pub mod export;
pub mod import;
pub(crate) mod scan;

use crate::registry::{RepoName, Tag};

/// `[HOST/]PATH[:TAG]` as archives and users write image references, split into the repository
/// this registry stores it under and the tag. The host part (a first component with a `.` or `:`,
/// or `localhost`) is dropped: `docker.io/library/alpine:3.20` and `registry.home:8443/team/app:v1`
/// are stored as `library/alpine` and `team/app`.
pub fn split_reference(s: &str) -> Result<(RepoName, Option<Tag>), String> {
    let s = s.split('@').next().unwrap_or(s);
    let (path, tag) = match s.rfind(':') {
        Some(i) if !s[i + 1..].contains('/') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    };
    let path = match path.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => path,
    };
    let repo: RepoName = path
        .parse()
        .map_err(|e| format!("{s:?}: not a repository name: {e}"))?;
    let tag = tag
        .map(|t| t.parse::<Tag>().map_err(|e| format!("{s:?}: {e}")))
        .transpose()?;
    Ok((repo, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, Option<String>) {
        let (r, t) = split_reference(s).unwrap();
        (r.to_string(), t.map(|t| t.as_str().to_string()))
    }

    #[test]
    fn references() {
        assert_eq!(split("alpine:3.20"), ("alpine".into(), Some("3.20".into())));
        assert_eq!(
            split("docker.io/library/alpine:3.20"),
            ("library/alpine".into(), Some("3.20".into()))
        );
        assert_eq!(
            split("registry.home:8443/team/app"),
            ("team/app".into(), None)
        );
        assert_eq!(
            split("localhost/app:v1@sha256:abc"),
            ("app".into(), Some("v1".into()))
        );
        assert!(split_reference("UPPER/case:v1").is_err());
        assert!(split_reference("app:-bad").is_err());
    }
}
