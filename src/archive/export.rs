//! `registryd export`: images out of storage into an OCI image-layout tarball, for carrying them
//! into an air-gapped cluster (`registryd import` there, or `skopeo copy oci-archive:`).
//!
//! Beside `index.json` the tarball holds a Docker `manifest.json` for every single-platform image,
//! as Docker 25+ writes it, so `docker load` of any version takes the same file. Manifest bytes are
//! written as stored: digests stay the same. Blobs are read through digest verification, so a
//! corrupt blob fails the export (and is quarantined) instead of travelling.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use super::scan::Scan;
use super::split_reference;
use crate::registry::manifest::{self, Kind};
use crate::registry::{Digest, Reference, RepoName, Tag};
use crate::storage::{BlobStream, Storage};

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Exported {
    pub images: Vec<(String, Digest)>,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// `REPO[:TAG]`, `REPO@DIGEST` (a registry host in front is ignored); no tag means `latest`.
fn parse_ref(s: &str) -> anyhow::Result<(RepoName, Reference, Option<Tag>)> {
    if let Some((name, digest)) = s.split_once('@') {
        let (repo, _) = split_reference(name).map_err(|e| anyhow!(e))?;
        let d: Digest = digest.parse().map_err(|e| anyhow!("{s:?}: {e}"))?;
        return Ok((repo, Reference::Digest(d), None));
    }
    let (repo, tag) = split_reference(s).map_err(|e| anyhow!(e))?;
    let tag = match tag {
        Some(t) => t,
        None => "latest".parse().map_err(|e| anyhow!("{e}"))?,
    };
    Ok((repo, Reference::Tag(tag.clone()), Some(tag)))
}

struct Collected {
    /// Manifests and blobs to write, by digest: the repository that holds them and the manifest
    /// bytes (`None` for blobs).
    files: BTreeMap<Digest, (RepoName, u64, Option<Bytes>)>,
    index: Vec<Value>,
    docker: Vec<Value>,
}

/// Writes the images `refs` to `out` (`-`: standard output); gzip when `out` ends in `.gz` or
/// `.tgz`. The file appears complete or not at all (written aside, fsynced, renamed).
pub fn export(
    rt: &Runtime,
    storage: &Storage,
    refs: &[String],
    out: &Path,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<Exported> {
    let mut report = Exported::default();
    let mut c = Collected {
        files: BTreeMap::new(),
        index: Vec::new(),
        docker: Vec::new(),
    };
    for r in refs {
        let (repo, reference, tag) = parse_ref(r)?;
        let (digest, m) = rt
            .block_on(storage.resolve_manifest(&repo, &reference))
            .map_err(|e| anyhow!("{r}: {e}"))?;
        let mut ann = serde_json::Map::new();
        if let Some(t) = &tag {
            ann.insert(
                "org.opencontainers.image.ref.name".into(),
                json!(t.as_str()),
            );
            ann.insert(
                "io.containerd.image.name".into(),
                json!(format!("{repo}:{}", t.as_str())),
            );
        } else {
            ann.insert("io.containerd.image.name".into(), json!(repo.to_string()));
        }
        c.index.push(json!({
            "mediaType": m.media_type,
            "digest": digest.to_string(),
            "size": m.bytes.len(),
            "annotations": ann,
        }));
        collect(
            rt,
            storage,
            &repo,
            &digest,
            m.bytes.clone(),
            &mut c,
            &mut report.warnings,
        )?;
        if let Some(t) = &tag
            && let Some((config, layers)) = image_parts(&m.bytes)
        {
            c.docker.push(json!({
                "Config": Scan::blob_path(&config),
                "RepoTags": [format!("{repo}:{}", t.as_str())],
                "Layers": layers.iter().map(Scan::blob_path).collect::<Vec<_>>(),
            }));
        }
        report.images.push((r.clone(), digest));
    }
    let total: u64 = c.files.values().map(|(_, size, _)| size).sum();
    report.manifests = c.files.values().filter(|f| f.2.is_some()).count();
    report.blobs = c.files.len() - report.manifests;
    report.bytes = total;

    let to_stdout = out.as_os_str() == "-";
    let gzip = out.extension().is_some_and(|e| e == "gz" || e == "tgz");
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?)
    };
    let written = write_tar(rt, storage, &c, sink, gzip, total, progress);
    if to_stdout {
        return written.map(|()| report);
    }
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot rename to {}", out.display()))?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()?;
    Ok(report)
}

/// Config and layers of an image manifest; `None` for an index or an artifact without layers.
fn image_parts(bytes: &[u8]) -> Option<(Digest, Vec<Digest>)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let config = v.get("config")?.get("digest")?.as_str()?.parse().ok()?;
    let layers = v
        .get("layers")?
        .as_array()?
        .iter()
        .filter_map(|l| l.get("digest")?.as_str()?.parse().ok())
        .collect::<Vec<Digest>>();
    (!layers.is_empty()).then_some((config, layers))
}

/// Adds manifest `digest` of `repo` and everything it references to `c`.
fn collect(
    rt: &Runtime,
    storage: &Storage,
    repo: &RepoName,
    digest: &Digest,
    bytes: Bytes,
    c: &mut Collected,
    warnings: &mut Vec<String>,
) -> anyhow::Result<()> {
    if c.files.contains_key(digest) {
        return Ok(());
    }
    let parsed = manifest::parse(None, &bytes).map_err(|e| anyhow!("{repo}@{digest}: {e}"))?;
    c.files.insert(
        digest.clone(),
        (repo.clone(), bytes.len() as u64, Some(bytes)),
    );
    for b in &parsed.blobs {
        match rt.block_on(storage.blob_size(repo, &b.digest))? {
            Some(size) => {
                c.files.insert(b.digest.clone(), (repo.clone(), size, None));
            }
            None if b.has_urls => {}
            None => bail!(
                "{repo}@{digest} references blob {} that is not stored (run registryd fsck)",
                b.digest
            ),
        }
    }
    if parsed.kind == Kind::Index {
        for child in &parsed.manifests {
            match rt
                .block_on(storage.resolve_manifest(repo, &Reference::Digest(child.digest.clone())))
            {
                Ok((d, m)) => collect(rt, storage, repo, &d, m.bytes.clone(), c, warnings)?,
                Err(_) => warnings.push(format!(
                    "{repo}: index {digest} lists {} which is not stored; exported without it",
                    child.digest
                )),
            }
        }
    }
    Ok(())
}

fn write_tar(
    rt: &Runtime,
    storage: &Storage,
    c: &Collected,
    sink: Box<dyn Write>,
    gzip: bool,
    total: u64,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<()> {
    let w: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            BufWriter::with_capacity(1 << 20, sink),
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(BufWriter::with_capacity(1 << 20, sink))
    };
    let mut tar = tar::Builder::new(w);
    let put = |tar: &mut tar::Builder<Box<dyn Write>>, path: &str, size: u64, r: &mut dyn Read| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, r)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    put(
        &mut tar,
        "oci-layout",
        layout.len() as u64,
        &mut &layout[..],
    )?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": c.index,
    }))?;
    put(&mut tar, "index.json", index.len() as u64, &mut &index[..])?;
    if !c.docker.is_empty() {
        let docker = serde_json::to_vec(&c.docker)?;
        put(
            &mut tar,
            "manifest.json",
            docker.len() as u64,
            &mut &docker[..],
        )?;
    }
    let mut done = 0u64;
    for (digest, (_, size, bytes)) in &c.files {
        let path = Scan::blob_path(digest);
        match bytes {
            Some(b) => put(&mut tar, &path, b.len() as u64, &mut &b[..])?,
            None => {
                let stream = rt.block_on(storage.open_blob(digest, 0, *size))?;
                let mut r = BlobReader {
                    rt,
                    stream: storage.verifying(digest, stream),
                    buf: Bytes::new(),
                };
                put(&mut tar, &path, *size, &mut r).with_context(|| format!("blob {digest}"))?;
            }
        }
        done += size;
        progress("export", done >> 20, total >> 20);
    }
    let mut w = tar.into_inner()?;
    w.flush()?;
    drop(w);
    Ok(())
}

/// A blob stream read synchronously (the export writes a tar from the main thread).
struct BlobReader<'a> {
    rt: &'a Runtime,
    stream: BlobStream,
    buf: Bytes,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
            }
        }
        // A slice's read copies what fits and cannot fail.
        let n = self.buf.as_ref().read(out)?;
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        let (r, reference, tag) = parse_ref("team/app").unwrap();
        assert_eq!(r.to_string(), "team/app");
        assert_eq!(reference.to_string(), "latest");
        assert!(tag.is_some());
        let d = Digest::sha256_of(b"x");
        let (_, reference, tag) = parse_ref(&format!("registry.home:8443/team/app@{d}")).unwrap();
        assert_eq!(reference, Reference::Digest(d));
        assert!(tag.is_none());
        assert!(parse_ref("team/app@sha256:nothex").is_err());
    }
}
