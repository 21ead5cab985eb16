//! The one place that turns logical objects into paths (on a filesystem) and keys (in a bucket, the
//! same path under the key prefix), as Distribution's `registry/storage/paths.go` does. Nothing else
//! in registryd builds a storage path by hand; both drivers name what they store through here.
//!
//! Under the storage root, Distribution's tree, exactly (so `registry:2` data is served unchanged and
//! Distribution can serve what registryd wrote):
//!
//! ```text
//! docker/registry/v2/                                               fsck walks this tree for temps
//!   blobs/<alg>/<2 hex>/<hex>/data                                  blob bytes (manifests too)
//!   repositories/<name>/
//!     _layers/<alg>/<hex>/link                                      "<alg>:<hex>": blob is in <name>
//!     _manifests/revisions/<alg>/<hex>/link                         manifest is in <name>
//!     _manifests/tags/<tag>/current/link                            what <tag> points at now
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link                  every manifest <tag> pointed at
//!     _uploads/<uuid>/data                                          upload bytes, appended in place
//!     _uploads/<uuid>/startedat                                     RFC 3339 start time
//!     _uploads/<uuid>/hashstates/<alg>/<offset>                     acknowledged offset + hash state
//!     _uploads/<uuid>/s3state                                       (bucket) parts, offset, hash state
//!     _uploads/<uuid>/tail-<offset>                                 (bucket) bytes short of a part
//! ```
//!
//! Any file there may have, for as long as an atomic write of it takes (or until fsck removes what a
//! crash left), a temp file `.<name>.tmp-<uuid>` beside it.
//!
//! And beside it, what registryd adds (Distribution never looks there):
//!
//! ```text
//! .registryd-probe-<token>                                          a storage check's write, removed
//! .registryd-clock-<token>                                          (bucket) a probe the store dates
//! registryd/
//!   v1/repositories/<name>/_referrers/<alg>/<subject hex>/<alg>-<hex>.json
//!                                                                   one descriptor per referrer
//!   auth/token.key                                                  the key signing Bearer tokens
//!   auth/.token.key.<uuid>                                          the key being made, then linked
//!   nodes/<node>.json                                               a node's heartbeat (status::
//!                                                                   Heartbeat), rewritten each beat
//!   quarantine/<hex>/data                                           a blob that failed its digest
//!   locks/<name>.lock                                               cluster-wide locks (flock; a
//!                                                                   lease object in a bucket):
//!                                                                   gc, gc-sweep, proxy-evict,
//!                                                                   fill-<hex> (bucket fills),
//!                                                                   upload-<uuid> (bucket uploads)
//!   locks/mkdir-<nn>.lock                                           held while a new shared directory
//!                                                                   is made (nn: 00..15, from its
//!                                                                   path; see `Layout::dir_lock`)
//!   proxy/fills/<hex>.{lock,partial,size,synced}                    a cache fill in progress (fs)
//!   proxy/fills/<hex>/{size,<8-digit n>}                            a cache fill in progress (bucket)
//!   proxy/<kind>/<2 hex>/<hex>                                      a stamp (its mtime): `validated`
//!                                                                   cached tags, `pulled` manifests
//!                                                                   (cached or pushed); hex is the
//!                                                                   sha256 of `<repo>@<digest>`
//! ```
//!
//! Every argument is a parsed type (`RepoName`, `Tag`, `Digest`, `Uuid`) or a name registryd chose,
//! so no path built here can leave the root.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use sha2::Digest as _;

use crate::registry::{Algorithm, Digest, RepoName, Tag};
use crate::status::NodeName;

/// What every storage check's probe is named from (see [`Layout::probe`]).
const PROBE_PREFIX: &str = ".registryd-probe-";

/// How a heartbeat file's name ends.
const HEARTBEAT_SUFFIX: &str = ".json";

/// How many lock files new directories are spread over (see [`Layout::dir_lock`]): enough that
/// pushes of unrelated repositories rarely wait for each other, few enough to make them all once.
pub const DIR_LOCKS: usize = 16;

/// What marks an atomic write's temp file (see [`Layout::temp_beside`]).
const TEMP_INFIX: &str = ".tmp-";

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

    /// registryd's own subtree, beside Distribution's.
    fn registryd(&self) -> PathBuf {
        self.root.join("registryd")
    }

    /// The key that signs Bearer tokens, shared by every node on this storage.
    pub fn token_key(&self) -> PathBuf {
        self.registryd().join("auth/token.key")
    }

    /// Where a node writes the token key it makes before linking it to [`token_key`]
    /// (Self::token_key): beside it, so the link stays on one filesystem.
    pub fn token_key_temp(&self, id: &Uuid) -> PathBuf {
        self.registryd().join(format!("auth/.token.key.{id}"))
    }

    /// Where every node's heartbeat lives, one file each.
    pub fn heartbeats_dir(&self) -> PathBuf {
        self.registryd().join("nodes")
    }

    /// The heartbeat of `node` (a [`NodeName`] is one safe path component).
    pub fn heartbeat(&self, node: &NodeName) -> PathBuf {
        self.heartbeats_dir()
            .join(format!("{node}{HEARTBEAT_SUFFIX}"))
    }

    /// The node a file named `file_name` in [`heartbeats_dir`](Self::heartbeats_dir) is the
    /// heartbeat of; `None` for anything else there (an atomic write's temp file).
    pub fn heartbeat_node(file_name: &str) -> Option<NodeName> {
        NodeName::parse(file_name.strip_suffix(HEARTBEAT_SUFFIX)?).ok()
    }

    /// Where a storage check writes its probe: the root itself (nodes that start together and each
    /// create a shared subdirectory at the same instant can leave GlusterFS with a GFID mismatch).
    pub fn probe_dir(&self) -> &Path {
        &self.root
    }

    /// A storage check's probe, `token` being the check's own.
    pub fn probe(&self, token: &str) -> PathBuf {
        self.root.join(format!("{PROBE_PREFIX}{token}"))
    }

    /// Whether the file named `file_name` in [`probe_dir`](Self::probe_dir) is a probe.
    pub fn is_probe(file_name: &str) -> bool {
        file_name.starts_with(PROBE_PREFIX)
    }

    /// An object a bucket dates as it is written, to read the store's clock (removed again).
    pub fn clock_probe(&self, token: &str) -> PathBuf {
        self.root.join(format!(".registryd-clock-{token}"))
    }

    /// The temp file an atomic write of `path` goes through, beside it (`.<name>.tmp-<uuid>`, in
    /// the same directory so the rename stays on one filesystem); `None` for a path without a
    /// file name.
    pub fn temp_beside(path: &Path, id: &Uuid) -> Option<PathBuf> {
        let name = path.file_name()?;
        let tmp = format!(".{}{TEMP_INFIX}{}", name.to_string_lossy(), id.simple());
        Some(path.with_file_name(tmp))
    }

    /// Whether a file named `file_name` is such a temp file (fsck removes old ones).
    pub fn is_temp(file_name: &str) -> bool {
        file_name.contains(TEMP_INFIX)
    }

    fn v2(&self) -> PathBuf {
        self.root.join("docker/registry/v2")
    }

    /// Distribution's tree, which fsck walks for temp files a crash left behind.
    pub fn distribution_root(&self) -> PathBuf {
        self.v2()
    }

    /// Where cache fills in progress live.
    pub fn fills_dir(&self) -> PathBuf {
        self.registryd().join("proxy/fills")
    }

    /// One file of a filesystem fill: `<hex>.<ext>`, `ext` being `lock`, `partial`, `size`,
    /// `synced` (or `size.tmp`, `synced.tmp` while those are rewritten). `hex` is a digest's hex,
    /// or a name listed in [`fills_dir`](Self::fills_dir).
    pub fn fill_file(&self, hex: &str, ext: &str) -> PathBuf {
        self.fills_dir().join(format!("{hex}.{ext}"))
    }

    /// The name of the lease (a [`lock_file`](Self::lock_file)) a bucket's fill of `hex` is
    /// fetched under.
    pub fn fill_lease(hex: &str) -> String {
        format!("fill-{hex}")
    }

    /// The objects of a bucket's fill of `d`.
    pub fn s3_fill_dir(&self, d: &Digest) -> PathBuf {
        self.fills_dir().join(d.hex())
    }

    /// The size a bucket's fill of `d` announces.
    pub fn s3_fill_size(&self, d: &Digest) -> PathBuf {
        self.s3_fill_dir(d).join("size")
    }

    /// Chunk `n` of a bucket's fill of `d` (numbered so they list in order).
    pub fn s3_fill_chunk(&self, d: &Digest, n: u64) -> PathBuf {
        self.s3_fill_dir(d).join(format!("{n:08}"))
    }

    /// A stamp (its time is the value): `kind` is `validated` (a cached tag the upstream
    /// confirmed) or `pulled` (a manifest of any repository, cached or pushed, for eviction and
    /// retention), `key` the entry it dates. One small object per entry, never a shared file that
    /// several nodes rewrite.
    pub fn stamp(&self, kind: &str, key: &str) -> PathBuf {
        let hex = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        let prefix = hex.get(..2).unwrap_or_default().to_string();
        self.registryd()
            .join("proxy")
            .join(kind)
            .join(prefix)
            .join(hex)
    }

    /// Where sha256 blobs live: `blobs/sha256/<2 hex>/<hex>/data`.
    pub fn blobs_root(&self) -> PathBuf {
        self.v2().join("blobs/sha256")
    }

    /// A cluster-wide advisory lock file (`flock`), e.g. `gc`, `gc-sweep`, `proxy-evict`.
    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.registryd().join("locks").join(format!("{name}.lock"))
    }

    /// The lock held while `dir` is created, so two nodes never create the same new directory at
    /// the same moment (on GlusterFS that gives each replica its own identity, a GFID split-brain,
    /// when the nodes see different bricks). One of [`DIR_LOCKS`] files, chosen from the path
    /// relative to the root, so every node picks the same one whatever its mount point. `None` for
    /// what needs no lock: a path outside the root or the root itself, the lock directory and its
    /// parents (made before any node needs a lock, see `FsDriver::check`), and an upload session's
    /// directory and what it holds (named by a fresh UUID: only its own upload creates it).
    pub fn dir_lock(&self, dir: &Path) -> Option<PathBuf> {
        let rel = dir.strip_prefix(&self.root).ok()?;
        let parts: Vec<_> = rel.components().map(|c| c.as_os_str()).collect();
        let locks = self.registryd().join("locks");
        if parts.is_empty() || locks.starts_with(dir) {
            return None;
        }
        // `_uploads/<uuid>`: a repository name's components never start with `_`.
        let in_session = parts
            .iter()
            .position(|p| *p == "_uploads")
            .is_some_and(|i| i + 1 < parts.len());
        if in_session {
            return None;
        }
        let hash = sha2::Sha256::digest(rel.as_os_str().as_encoded_bytes());
        let stripe = hash.first().map_or(0, |b| usize::from(*b) % DIR_LOCKS);
        Some(self.lock_file(&format!("mkdir-{stripe:02}")))
    }

    /// Every lock file [`dir_lock`](Self::dir_lock) may name.
    pub fn dir_locks(&self) -> Vec<PathBuf> {
        (0..DIR_LOCKS)
            .map(|n| self.lock_file(&format!("mkdir-{n:02}")))
            .collect()
    }

    /// Where fsck moves a blob whose content no longer matches its name (Distribution never looks).
    pub fn quarantine_dir(&self, d: &Digest) -> PathBuf {
        self.registryd().join("quarantine").join(d.hex())
    }

    /// A quarantined blob's bytes.
    pub fn quarantine_data(&self, d: &Digest) -> PathBuf {
        self.quarantine_dir(d).join("data")
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

    pub fn layer_dir(&self, name: &RepoName, d: &Digest) -> PathBuf {
        Self::digest_dir(self.layers_dir(name), d)
    }

    pub fn layer_link(&self, name: &RepoName, d: &Digest) -> PathBuf {
        Self::link_in(&self.layer_dir(name, d))
    }

    /// The link file in a `<alg>/<hex>/` directory of links.
    pub fn link_in(dir: &Path) -> PathBuf {
        dir.join("link")
    }

    /// The sha256 level of a tree of `sha256/<hex>/link` links (`_layers`, `revisions`).
    pub fn sha256_links(dir: &Path) -> PathBuf {
        dir.join(Algorithm::Sha256.as_str())
    }

    pub fn manifests_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name).join("_manifests")
    }

    pub fn revisions_dir(&self, name: &RepoName) -> PathBuf {
        self.manifests_dir(name).join("revisions")
    }

    pub fn revision_dir(&self, name: &RepoName, d: &Digest) -> PathBuf {
        Self::digest_dir(self.revisions_dir(name), d)
    }

    pub fn revision_link(&self, name: &RepoName, d: &Digest) -> PathBuf {
        Self::link_in(&self.revision_dir(name, d))
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

    /// (bucket) An upload's state: its multipart upload, parts, offset and hash state.
    pub fn upload_s3_state(&self, name: &RepoName, id: &Uuid) -> PathBuf {
        self.upload_dir(name, id).join("s3state")
    }

    /// (bucket) The bytes of an upload past its last whole part, acknowledged at `offset`.
    pub fn upload_s3_tail(&self, name: &RepoName, id: &Uuid, offset: u64) -> PathBuf {
        self.upload_dir(name, id).join(format!("tail-{offset}"))
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
            .registryd()
            .join("v1/repositories")
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
        assert_eq!(l.token_key(), PathBuf::from("/r/registryd/auth/token.key"));
        assert_eq!(
            l.fill_file(hex, "partial"),
            PathBuf::from(format!("/r/registryd/proxy/fills/{hex}.partial"))
        );
        assert_eq!(
            l.s3_fill_chunk(&d, 3),
            PathBuf::from(format!("/r/registryd/proxy/fills/{hex}/00000003"))
        );
        assert!(Layout::is_probe(
            &l.probe("x").file_name().unwrap().to_string_lossy()
        ));
        let node = NodeName::parse("node-1").unwrap();
        assert_eq!(
            l.heartbeat(&node),
            PathBuf::from("/r/registryd/nodes/node-1.json")
        );
        assert_eq!(Layout::heartbeat_node("node-1.json"), Some(node));
        let temp = Layout::temp_beside(&l.heartbeat(&NodeName::parse("a").unwrap()), &id).unwrap();
        let temp = temp.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(Layout::heartbeat_node(&temp), None);
        assert_eq!(Layout::heartbeat_node("a.json.x"), None);
        let stamp = l.stamp("pulled", "a@b");
        assert!(stamp.starts_with("/r/registryd/proxy/pulled/"));
        assert_eq!(stamp.components().count(), 7);
    }
}
