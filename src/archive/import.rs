//! `registryd import`: image archives straight into storage.
//!
//! Which layout an archive has is read from its files: `index.json` is the OCI image layout (also
//! what Docker 25+ `docker save` writes, beside a legacy `manifest.json` that is then ignored);
//! `manifest.json` alone is Docker's legacy `docker save` layout, whose images have no registry
//! manifest yet: one is built (an OCI image manifest, which every client pulls and every OCI
//! layout tool reads back; layers as they are in the archive, so the config and layer digests are
//! the archive's own). Where the archive has manifests, their bytes are
//! stored unchanged, so every digest stays what it was.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use super::scan::{Scan, Source};
use super::split_reference;
use crate::registry::manifest::{self, OCI_MANIFEST};
use crate::registry::{Digest, Reference, RepoName, Tag};
use crate::retention::Rules;
use crate::storage::manifests::ReferrerEntry;
use crate::storage::{Storage, StorageError};

/// What an import stored.
#[derive(Debug, Default)]
pub struct Imported {
    /// Every tag set, and the untagged images (tag `None`), with the manifest digest.
    pub images: Vec<(RepoName, Option<Tag>, Digest)>,
    pub manifests: usize,
    pub blobs_stored: usize,
    pub bytes_stored: u64,
    pub blobs_present: usize,
    pub warnings: Vec<String>,
    /// `oci` or `docker-legacy`.
    pub layout: &'static str,
}

pub(crate) struct PlannedBlob {
    path: String,
    size: u64,
    repos: BTreeSet<RepoName>,
}

pub(crate) struct PlannedManifest {
    repo: RepoName,
    digest: Digest,
    bytes: Vec<u8>,
    tags: Vec<Tag>,
    parsed: manifest::Manifest,
}

#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) blobs: BTreeMap<Digest, PlannedBlob>,
    /// Children before the indexes that list them.
    pub(crate) manifests: Vec<PlannedManifest>,
    pub(crate) warnings: Vec<String>,
}

impl Plan {
    fn add_blob(
        &mut self,
        scan: &Scan,
        repo: &RepoName,
        digest: &Digest,
        path: &str,
    ) -> anyhow::Result<()> {
        let (real, entry) = scan
            .entry(path)
            .ok_or_else(|| anyhow!("{path} (blob {digest}) is not in the archive"))?;
        self.blobs
            .entry(digest.clone())
            .or_insert_with(|| PlannedBlob {
                path: real,
                size: entry.size,
                repos: BTreeSet::new(),
            })
            .repos
            .insert(repo.clone());
        Ok(())
    }

    /// Adds a manifest stored as `blobs/<alg>/<hex>` in an OCI layout, with everything it
    /// references that the archive holds.
    fn add_oci_manifest(
        &mut self,
        scan: &Scan,
        repo: &RepoName,
        digest: &Digest,
        media_type: Option<&str>,
        tag: Option<Tag>,
    ) -> anyhow::Result<()> {
        if let Some(m) = self
            .manifests
            .iter_mut()
            .find(|m| m.repo == *repo && m.digest == *digest)
        {
            m.tags.extend(tag);
            return Ok(());
        }
        let path = Scan::blob_path(digest);
        let bytes = scan
            .small(&path)
            .ok_or_else(|| anyhow!("manifest {digest} is not in the archive"))?;
        if Digest::compute(digest.algorithm(), bytes) != *digest {
            bail!("the archive is damaged: {path} does not match its digest");
        }
        let parsed = manifest::parse(media_type, bytes)
            .map_err(|e| anyhow!("manifest {digest} in the archive: {e}"))?;
        for b in &parsed.blobs {
            if b.has_urls && scan.entry(&Scan::blob_path(&b.digest)).is_none() {
                // A foreign layer: clients fetch it from its URLs, as from any registry.
                continue;
            }
            self.add_blob(scan, repo, &b.digest, &Scan::blob_path(&b.digest))
                .with_context(|| format!("manifest {digest}"))?;
        }
        let mut missing = 0;
        for child in &parsed.manifests {
            if scan.entry(&Scan::blob_path(&child.digest)).is_some() {
                self.add_oci_manifest(scan, repo, &child.digest, Some(&child.media_type), None)?;
            } else {
                missing += 1;
            }
        }
        if missing > 0 {
            self.warnings.push(format!(
                "{repo}: index {digest} lists {} manifests, {missing} of them not in the archive \
                 (platforms not saved); stored as is so its digest stays the same, and pulls for \
                 those platforms will fail",
                parsed.manifests.len()
            ));
        }
        self.manifests.push(PlannedManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            bytes: bytes.to_vec(),
            tags: tag.into_iter().collect(),
            parsed,
        });
        Ok(())
    }
}

const INDEXES_BY_NAME: [&str; 2] = ["index.json", "manifest.json"];

/// Indexes of an OCI layout nest: index.json → an image index → its manifests, and so on.
const MAX_NESTING: usize = 8;

/// Reads into `scan` every manifest `index.json` names, directly or through the indexes it
/// names, that the first pass did not keep: one more pass per level of nesting that needs one,
/// none for an archive whose manifests the first pass kept.
fn load_manifests(source: &Source, scan: &mut Scan) -> anyhow::Result<()> {
    fn listed(bytes: &[u8]) -> Vec<Digest> {
        serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.get("digest")?.as_str()?.parse().ok())
            .collect()
    }
    let mut level = listed(scan.small("index.json").unwrap_or_default());
    let mut seen = HashSet::new();
    for _ in 0..MAX_NESTING {
        level.retain(|d| seen.insert(d.clone()));
        if level.is_empty() {
            return Ok(());
        }
        let missing: HashSet<String> = level
            .iter()
            .map(Scan::blob_path)
            .filter(|p| scan.needs_load(p))
            .filter_map(|p| scan.entry(&p).map(|(real, _)| real))
            .collect();
        if !missing.is_empty() {
            source.load(scan, &missing)?;
        }
        level = level
            .iter()
            .filter_map(|d| scan.small(&Scan::blob_path(d)))
            .flat_map(listed)
            .collect();
    }
    bail!("its indexes nest more than {MAX_NESTING} deep")
}

/// The OCI image layout: `index.json` lists the images, named by annotations.
fn plan_oci(scan: &Scan, repo_override: Option<&RepoName>) -> anyhow::Result<Plan> {
    let index: Value = serde_json::from_slice(scan.small("index.json").unwrap_or_default())
        .context("index.json is not valid JSON")?;
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("index.json lists no manifests"))?;
    let mut plan = Plan::default();
    for d in list {
        let digest: Digest = d
            .get("digest")
            .and_then(Value::as_str)
            .unwrap_or("")
            .parse()
            .map_err(|e| anyhow!("index.json: a manifest's digest: {e}"))?;
        let ann = |k: &str| {
            d.get("annotations")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let ref_name = ann("org.opencontainers.image.ref.name");
        let (repo, tag) = match (ann("io.containerd.image.name"), ref_name) {
            (Some(full), _) => split_reference(full).map(|(r, t)| (Some(r), t)),
            (None, Some(r)) if r.contains(['/', ':']) => {
                split_reference(r).map(|(r, t)| (Some(r), t))
            }
            (None, Some(t)) => t
                .parse::<Tag>()
                .map(|t| (None, Some(t)))
                .map_err(|e| e.to_string()),
            (None, None) => Ok((None, None)),
        }
        .map_err(|e| anyhow!("index.json: {e}"))?;
        let repo = repo_override.cloned().or(repo).ok_or_else(|| {
            anyhow!(
                "image {digest} (ref {:?}) names no repository; pass --repo NAME",
                ref_name.unwrap_or("")
            )
        })?;
        let media_type = d.get("mediaType").and_then(Value::as_str);
        plan.add_oci_manifest(scan, &repo, &digest, media_type, tag)?;
    }
    Ok(plan)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Docker's legacy `docker save` layout: `manifest.json` lists config and layer files; the
/// registry manifest is built here.
fn plan_legacy(scan: &Scan, repo_override: Option<&RepoName>) -> anyhow::Result<Plan> {
    let list: Vec<LegacyImage> =
        serde_json::from_slice(scan.small("manifest.json").unwrap_or_default())
            .context("manifest.json is not a docker save manifest")?;
    let mut plan = Plan::default();
    for img in list {
        // Its size and digest are all the manifest needs (the digest is verified when stored).
        let (_, config) = scan.entry(&img.config).ok_or_else(|| {
            anyhow!(
                "config {} listed in manifest.json is not in the archive",
                img.config
            )
        })?;
        let config_digest = config.digest.clone();
        let mut layers = Vec::new();
        for l in &img.layers {
            let (_, e) = scan.entry(l).ok_or_else(|| {
                anyhow!("layer {l} listed in manifest.json is not in the archive")
            })?;
            layers.push((l.clone(), e.clone()));
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": config.size,
                "digest": config_digest.to_string(),
            },
            "layers": layers.iter().map(|(_, e)| json!({
                "mediaType": e.layer_type(),
                "size": e.size,
                "digest": e.digest.to_string(),
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&m)?;
        let digest = Digest::sha256_of(&bytes);
        let parsed = manifest::parse(Some(OCI_MANIFEST), &bytes)
            .map_err(|e| anyhow!("building the manifest of {}: {e}", img.config))?;
        let mut targets: Vec<(RepoName, Option<Tag>)> = Vec::new();
        for rt in img.repo_tags.iter().flatten() {
            let (r, t) = split_reference(rt).map_err(|e| anyhow!("manifest.json RepoTags: {e}"))?;
            targets.push((repo_override.cloned().unwrap_or(r), t));
        }
        if targets.is_empty() {
            let repo = repo_override
                .cloned()
                .ok_or_else(|| anyhow!("image {} has no RepoTags; pass --repo NAME", img.config))?;
            plan.warnings.push(format!(
                "{repo}: image {} has no tag in the archive; stored untagged as {digest}",
                img.config
            ));
            targets.push((repo, None));
        }
        for (repo, tag) in targets {
            plan.add_blob(scan, &repo, &config_digest, &img.config)?;
            for (path, e) in &layers {
                plan.add_blob(scan, &repo, &e.digest, path)?;
            }
            match plan
                .manifests
                .iter_mut()
                .find(|m| m.repo == repo && m.digest == digest)
            {
                Some(m) => m.tags.extend(tag),
                None => plan.manifests.push(PlannedManifest {
                    repo,
                    digest: digest.clone(),
                    bytes: bytes.clone(),
                    tags: tag.into_iter().collect(),
                    parsed: parsed.clone(),
                }),
            }
        }
    }
    Ok(plan)
}

/// What the archive `path` (read by `source`, first pass done) holds and how to store it, and
/// its layout's name. Apart from [`import`], storage untouched, so the fuzz target plans
/// imports of hostile archives exactly as an import does.
pub(crate) fn plan(
    source: &Source,
    mut scan: Scan,
    path: &Path,
    repo_override: Option<&RepoName>,
) -> anyhow::Result<(Plan, &'static str)> {
    Ok(if scan.small("index.json").is_some() {
        load_manifests(source, &mut scan)
            .with_context(|| format!("cannot read the manifests of {}", path.display()))?;
        (plan_oci(&scan, repo_override)?, "oci")
    } else if scan.small("manifest.json").is_some() {
        (plan_legacy(&scan, repo_override)?, "docker-legacy")
    } else if let Some(index) = INDEXES_BY_NAME.iter().find(|i| scan.entry(i).is_some()) {
        bail!("{}: its {index} is larger than 4 MiB", path.display());
    } else {
        bail!(
            "{} has neither index.json (OCI layout) nor manifest.json (docker save)",
            path.display()
        );
    })
}

/// Refuses moving an immutable tag `repo:tag` to `digest`.
fn check_immutable(
    rt: &Runtime,
    storage: &Storage,
    rules: &Rules,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> anyhow::Result<()> {
    let Some(rule) = rules.immutable(repo.as_str(), tag.as_str()) else {
        return Ok(());
    };
    match rt.block_on(storage.resolve_manifest(repo, &Reference::Tag(tag.clone()))) {
        Ok((current, _)) if current != *digest => bail!(
            "tag {repo}:{tag} is immutable ({rule}): it names {current}, and the archive would move it to {digest}; nothing more was imported"
        ),
        Ok(_) | Err(StorageError::ManifestUnknown) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Imports one archive (file or directory) into `storage`. `progress(label, done, total)` is
/// called as bytes are read and stored (MiB).
pub fn import(
    rt: &Runtime,
    storage: &Storage,
    path: &Path,
    repo_override: Option<&RepoName>,
    rules: &Rules,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<Imported> {
    let source = Source::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total = source.size();
    let scan = source
        .scan(&mut |read| progress("read", read >> 20, total.max(read) >> 20))
        .with_context(|| {
            format!(
                "cannot read {} as an image archive (tar, tar.gz or directory)",
                path.display()
            )
        })?;
    // Only the plan is needed from here on: what the scan held goes with it.
    let (plan, layout) = plan(&source, scan, path, repo_override)?;
    // An immutable tag is never moved, by an import either: refused before anything is stored
    // (and checked again right before each tag is written, below).
    let mut named: HashMap<(&RepoName, &Tag), &Digest> = HashMap::new();
    for m in &plan.manifests {
        for t in &m.tags {
            if let Some(other) = named.insert((&m.repo, t), &m.digest)
                && *other != m.digest
                && rules.immutable(m.repo.as_str(), t.as_str()).is_some()
            {
                bail!(
                    "the archive names two manifests as immutable tag {}:{t} ({other} and {}); nothing was imported",
                    m.repo,
                    m.digest
                );
            }
            check_immutable(rt, storage, rules, &m.repo, t, &m.digest)?;
        }
    }
    let mut out = Imported {
        warnings: plan.warnings,
        layout,
        ..Default::default()
    };

    // Blobs: link those already stored (by any repository), stream the others in.
    let mut wanted: HashMap<String, Vec<&Digest>> = HashMap::new();
    let mut to_store = 0u64;
    for (digest, b) in &plan.blobs {
        if rt.block_on(storage.blob_size_global(digest))?.is_some() {
            let _push = rt.block_on(storage.push_guard())?;
            for repo in &b.repos {
                rt.block_on(storage.link_blob(repo, digest))?;
            }
            out.blobs_present += 1;
        } else {
            wanted.entry(b.path.clone()).or_default().push(digest);
            to_store += b.size;
        }
    }
    let paths: HashSet<String> = wanted.keys().cloned().collect();
    let mut stored = 0u64;
    source.each(&paths, &mut |path, reader| {
        let digests = wanted.get(path).map(Vec::as_slice).unwrap_or_default();
        let Some(&digest) = digests.first() else {
            return Ok(());
        };
        // `wanted` holds only the plan's blobs: the look-up finds it.
        let Some(b) = plan.blobs.get(digest) else {
            return Ok(());
        };
        let mut repos = b.repos.iter();
        let Some(first) = repos.next() else {
            return Ok(());
        };
        let mut counted = Counting {
            inner: reader,
            done: &mut stored,
            total: to_store,
            progress: &mut *progress,
        };
        let size = store_blob(rt, storage, first, digest, &mut counted)
            .with_context(|| format!("storing {path} ({digest})"))?;
        let _push = rt.block_on(storage.push_guard())?;
        for repo in repos {
            rt.block_on(storage.link_blob(repo, digest))?;
        }
        out.blobs_stored += 1;
        out.bytes_stored += size;
        Ok(())
    })?;
    for (path, digests) in &wanted {
        for d in digests {
            if rt.block_on(storage.blob_size_global(d))?.is_none() {
                bail!(
                    "{path} ({d}) was in the archive's first read but not in its second: did the file change?"
                );
            }
        }
    }

    // Manifests, children first; each tag last (durability rule 3, as a push does).
    for m in &plan.manifests {
        let _push = rt.block_on(storage.push_guard())?;
        let referrer = ReferrerEntry::of(&m.parsed, &m.digest, m.bytes.len());
        for t in &m.tags {
            check_immutable(rt, storage, rules, &m.repo, t, &m.digest)?;
        }
        let mut tags = m.tags.iter();
        rt.block_on(storage.put_manifest(
            &m.repo,
            &m.digest,
            m.bytes.clone(),
            tags.next(),
            referrer,
        ))?;
        for t in tags {
            rt.block_on(storage.put_manifest(&m.repo, &m.digest, m.bytes.clone(), Some(t), None))?;
        }
        out.manifests += 1;
        if m.tags.is_empty() {
            if !plan
                .manifests
                .iter()
                .any(|p| p.parsed.manifests.iter().any(|c| c.digest == m.digest))
            {
                out.images.push((m.repo.clone(), None, m.digest.clone()));
            }
        } else {
            for t in &m.tags {
                out.images
                    .push((m.repo.clone(), Some(t.clone()), m.digest.clone()));
            }
        }
    }
    Ok(out)
}

/// Streams `reader` into storage as an upload of `repo` and publishes it as `digest` (verified
/// before it becomes visible). Returns the size.
fn store_blob(
    rt: &Runtime,
    storage: &Storage,
    repo: &RepoName,
    digest: &Digest,
    reader: &mut dyn Read,
) -> anyhow::Result<u64> {
    let id = rt.block_on(storage.start_upload(repo))?;
    let chunks = std::iter::from_fn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
            match reader.read(rest) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
        (n > 0).then(|| {
            buf.truncate(n);
            Ok(Bytes::from(buf))
        })
    });
    let result = rt.block_on(storage.complete_upload(
        repo,
        &id,
        digest,
        None,
        Some(futures_util::stream::iter(chunks)),
    ));
    match result {
        Ok(size) => Ok(size),
        Err(e) => {
            let _ = rt.block_on(storage.cancel_upload(repo, &id));
            Err(e.into())
        }
    }
}

/// A reader that reports the bytes read through it.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    done: &'a mut u64,
    total: u64,
    progress: &'a mut dyn FnMut(&str, u64, u64),
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.done += n as u64;
        (self.progress)("store", *self.done >> 20, self.total >> 20);
        Ok(n)
    }
}
