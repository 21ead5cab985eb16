//! The one place that turns logical objects into paths, as Distribution's `registry/storage/paths.go`
//! does. Nothing else in registryd builds a storage path by hand.
//!
//! Under the storage root, Distribution's tree, exactly (so `registry:2` data is served unchanged and
//! Distribution can serve what registryd wrote):
//!
//! ```text
//! docker/registry/v2/
//!   blobs/<alg>/<2 hex>/<hex>/data                                  blob bytes (manifests too)
//!   repositories/<name>/
//!     _layers/<alg>/<hex>/link                                      "<alg>:<hex>": blob is in <name>
//!     _manifests/revisions/<alg>/<hex>/link                         manifest is in <name>
//!     _manifests/tags/<tag>/current/link                            what <tag> points at now
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link                  every manifest <tag> pointed at
//!     _uploads/<uuid>/data                                          upload bytes, appended in place
//!     _uploads/<uuid>/startedat                                     RFC 3339 start time
//!     _uploads/<uuid>/hashstates/<alg>/<offset>                     acknowledged offset + hash state
//! ```
//!
//! and beside it, what registryd adds (Distribution never looks there):
//!
//! ```text
//! registryd/v1/repositories/<name>/_referrers/<alg>/<subject hex>/<alg>-<hex>.json
//!                                                                   one descriptor per referrer
//! registryd/auth/token.key                                         the key signing Bearer tokens
//! registryd/quarantine/<hex>/data                                  a blob that failed its digest
//! registryd/locks/<name>.lock                                       cluster-wide advisory locks
//! ```
//!
//! Every argument is a parsed type (`RepoName`, `Tag`, `Digest`, `Uuid`), so no path built here can
//! leave the root.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::registry::{Algorithm, Digest, RepoName, Tag};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key that signs Bearer tokens, shared by every node on this storage.
    pub fn token_key(&self) -> PathBuf {
        self.root.join("registryd/auth/token.key")
    }

    fn v2(&self) -> PathBuf {
        self.root.join("docker/registry/v2")
    }

    /// Where sha256 blobs live: `blobs/sha256/<2 hex>/<hex>/data`.
    pub fn blobs_root(&self) -> PathBuf {
        self.v2().join("blobs/sha256")
    }

    /// A cluster-wide advisory lock file (`flock`), e.g. `gc`, `gc-sweep`, `proxy-evict`.
    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.root
            .join("registryd/locks")
            .join(format!("{name}.lock"))
    }

    /// Where fsck moves a blob whose content no longer matches its name (Distribution never looks).
    pub fn quarantine_dir(&self, d: &Digest) -> PathBuf {
        self.root.join("registryd/quarantine").join(d.hex())
    }

    pub fn blob_dir(&self, d: &Digest) -> PathBuf {
        self.v2()
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    pub fn blob_data(&self, d: &Digest) -> PathBuf {
        self.blob_dir(d).join("data")
    }

    pub fn repositories(&self) -> PathBuf {
        self.v2().join("repositories")
    }

    pub fn repo_dir(&self, name: &RepoName) -> PathBuf {
        self.repositories().join(name.as_str())
    }

    fn digest_dir(base: PathBuf, d: &Digest) -> PathBuf {
        base.join(d.algorithm().as_str()).join(d.hex())
    }

    pub fn layers_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name).join("_layers")
    }

    pub fn layer_link(&self, name: &RepoName, d: &Digest) -> PathBuf {
        Self::digest_dir(self.layers_dir(name), d).join("link")
    }

    pub fn manifests_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name).join("_manifests")
    }

    pub fn revision_dir(&self, name: &RepoName, d: &Digest) -> PathBuf {
        Self::digest_dir(self.manifests_dir(name).join("revisions"), d)
    }

    pub fn revision_link(&self, name: &RepoName, d: &Digest) -> PathBuf {
        self.revision_dir(name, d).join("link")
    }

    pub fn tags_dir(&self, name: &RepoName) -> PathBuf {
        self.manifests_dir(name).join("tags")
    }

    pub fn tag_dir(&self, name: &RepoName, tag: &Tag) -> PathBuf {
        self.tags_dir(name).join(tag.as_str())
    }

    pub fn tag_current_link(&self, name: &RepoName, tag: &Tag) -> PathBuf {
        self.tag_dir(name, tag).join("current/link")
    }

    pub fn tag_index_link(&self, name: &RepoName, tag: &Tag, d: &Digest) -> PathBuf {
        Self::digest_dir(self.tag_dir(name, tag).join("index"), d).join("link")
    }

    pub fn uploads_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name).join("_uploads")
    }

    pub fn upload_dir(&self, name: &RepoName, id: &Uuid) -> PathBuf {
        self.uploads_dir(name).join(id.hyphenated().to_string())
    }

    pub fn upload_data(&self, name: &RepoName, id: &Uuid) -> PathBuf {
        self.upload_dir(name, id).join("data")
    }

    pub fn upload_started_at(&self, name: &RepoName, id: &Uuid) -> PathBuf {
        self.upload_dir(name, id).join("startedat")
    }

    pub fn upload_hashstates(&self, name: &RepoName, id: &Uuid, alg: Algorithm) -> PathBuf {
        self.upload_dir(name, id)
            .join("hashstates")
            .join(alg.as_str())
    }

    pub fn upload_hashstate(
        &self,
        name: &RepoName,
        id: &Uuid,
        alg: Algorithm,
        offset: u64,
    ) -> PathBuf {
        self.upload_hashstates(name, id, alg)
            .join(offset.to_string())
    }

    pub fn referrers_dir(&self, name: &RepoName, subject: &Digest) -> PathBuf {
        let base = self
            .root
            .join("registryd/v1/repositories")
            .join(name.as_str())
            .join("_referrers");
        Self::digest_dir(base, subject)
    }

    pub fn referrer_entry(&self, name: &RepoName, subject: &Digest, referrer: &Digest) -> PathBuf {
        self.referrers_dir(name, subject).join(format!(
            "{}-{}.json",
            referrer.algorithm().as_str(),
            referrer.hex()
        ))
    }
}

/// The content of a link file: the digest, without a newline, as Distribution writes it.
pub fn link_content(d: &Digest) -> String {
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_distribution() {
        let l = Layout::new("/r");
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let n: RepoName = "library/alpine".parse().unwrap();
        let t: Tag = "latest".parse().unwrap();
        let hex = d.hex();
        assert_eq!(
            l.blob_data(&d),
            PathBuf::from(format!("/r/docker/registry/v2/blobs/sha256/e3/{hex}/data"))
        );
        let repo = "/r/docker/registry/v2/repositories/library/alpine";
        assert_eq!(
            l.layer_link(&n, &d),
            PathBuf::from(format!("{repo}/_layers/sha256/{hex}/link"))
        );
        assert_eq!(
            l.revision_link(&n, &d),
            PathBuf::from(format!("{repo}/_manifests/revisions/sha256/{hex}/link"))
        );
        assert_eq!(
            l.tag_current_link(&n, &t),
            PathBuf::from(format!("{repo}/_manifests/tags/latest/current/link"))
        );
        assert_eq!(
            l.tag_index_link(&n, &t, &d),
            PathBuf::from(format!(
                "{repo}/_manifests/tags/latest/index/sha256/{hex}/link"
            ))
        );
        let id = Uuid::nil();
        assert_eq!(
            l.upload_hashstate(&n, &id, Algorithm::Sha256, 42),
            PathBuf::from(format!(
                "{repo}/_uploads/00000000-0000-0000-0000-000000000000/hashstates/sha256/42"
            ))
        );
        assert!(l.referrer_entry(&n, &d, &d).starts_with("/r/registryd/v1/"));
    }
}
