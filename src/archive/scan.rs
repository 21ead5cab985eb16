//! Reading an archive in passes: a tarball (gzip or not) or a directory. The first pass notes every
//! file's size and digest, and keeps in memory the archive's indexes (`index.json`,
//! `manifest.json`) and, within a budget ([`HOLD_BUDGET`]), the small JSON-looking blobs that may be
//! the manifests the index names; the last pass streams only the files to store. A manifest the
//! index names that the first pass did not keep (it came after the budget ran out) is read by a
//! pass of its own ([`Source::load`]), whatever its place in the tar: `docker save` writes its
//! index after the blobs, an OCI layout tarred by hand in any order. What is held stays bounded
//! however many JSON-looking files a hostile archive has. A tarball is read from the start each
//! pass instead of being unpacked to disk: an archive of several GiB needs no scratch space.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::registry::Digest;

/// The largest index or manifest read into memory (as `limits.max_manifest_bytes` by default).
const SMALL_JSON: u64 = 4 << 20;

/// Bytes of JSON-looking blobs the first pass keeps, in case the index names them.
const HOLD_BUDGET: u64 = 32 << 20;

/// Bytes of manifests an import holds in all: beyond it the archive is refused.
const HOLD_LIMIT: u64 = 64 << 20;

/// The files that say what an archive holds: kept by the first pass wherever they are.
const INDEXES: [&str; 2] = ["index.json", "manifest.json"];

/// One regular file of the archive.
#[derive(Debug, Clone)]
pub struct Entry {
    pub size: u64,
    /// From the name for `blobs/<algorithm>/<hex>` (verified when stored), else computed.
    pub digest: Digest,
    /// The first bytes, to tell gzip and zstd layers from plain tar.
    pub magic: [u8; 4],
}

impl Entry {
    /// The layer media type its bytes show, for archives that do not say (Docker's legacy layout).
    pub fn layer_type(&self) -> &'static str {
        match self.magic {
            [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

#[derive(Debug, Default)]
pub struct Scan {
    small: HashMap<String, Vec<u8>>,
    /// Bytes of `small`.
    held: u64,
    /// For tests: a smaller [`HOLD_BUDGET`].
    budget: Option<u64>,
    entries: HashMap<String, Entry>,
    /// Symbolic and hard links: path → the path it points at (archive-relative).
    links: HashMap<String, String>,
}

impl Scan {
    /// The real path behind `path` (following links) and its entry.
    pub fn entry(&self, path: &str) -> Option<(String, &Entry)> {
        let mut p = normalize(path)?;
        for _ in 0..8 {
            if let Some(e) = self.entries.get(&p) {
                return Some((p, e));
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }

    /// The bytes of an index, or of a manifest the first pass kept or [`Source::load`] read.
    pub fn small(&self, path: &str) -> Option<&[u8]> {
        let (p, _) = self.entry(path)?;
        self.small.get(&p).map(Vec::as_slice)
    }

    /// Whether `path` is in the archive but not held: [`Source::load`] reads it.
    pub fn needs_load(&self, path: &str) -> bool {
        self.entry(path)
            .is_some_and(|(p, _)| !self.small.contains_key(&p))
    }

    fn hold(&mut self, path: String, bytes: Vec<u8>) -> io::Result<()> {
        let before = self.small.get(&path).map_or(0, |b| b.len() as u64);
        let after = self.held - before + bytes.len() as u64;
        if after > HOLD_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the archive's manifests take more than {} MiB; refused",
                    HOLD_LIMIT >> 20
                ),
            ));
        }
        self.held = after;
        self.small.insert(path, bytes);
        Ok(())
    }

    /// The archive path of a blob in the OCI layout.
    pub fn blob_path(digest: &Digest) -> String {
        format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
    }
}

/// Where images are read from.
pub enum Source {
    Tar(PathBuf),
    Dir(PathBuf),
}

impl Source {
    pub fn open(path: &Path) -> io::Result<Source> {
        if std::fs::metadata(path)?.is_dir() {
            Ok(Source::Dir(path.to_path_buf()))
        } else {
            Ok(Source::Tar(path.to_path_buf()))
        }
    }

    /// Total bytes to read per pass (the compressed size for a gzip tarball), for progress.
    pub fn size(&self) -> u64 {
        match self {
            Source::Tar(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Source::Dir(_) => 0,
        }
    }

    /// First pass. `progress` gets the bytes of the archive read so far.
    pub fn scan(&self, progress: &mut dyn FnMut(u64)) -> io::Result<Scan> {
        self.scan_holding(HOLD_BUDGET, progress)
    }

    fn scan_holding(&self, budget: u64, progress: &mut dyn FnMut(u64)) -> io::Result<Scan> {
        if let Source::Tar(path) = self {
            let mut head = Vec::with_capacity(512);
            open_tar(path)?.take(512).read_to_end(&mut head)?;
            if head.len() < 512 || head.get(257..262) != Some(b"ustar".as_slice()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a tar archive (nor a gzip'ed one, nor a directory)",
                ));
            }
        }
        self.scan_entries(budget, progress).map_err(|e| {
            let m = e.to_string();
            if e.kind() == io::ErrorKind::UnexpectedEof || m.contains("entire block") || m.contains("unexpected EOF") {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the archive ends in the middle of a file: truncated, or still being copied? ({e})"),
                )
            } else {
                e
            }
        })
    }

    fn scan_entries(&self, budget: u64, progress: &mut dyn FnMut(u64)) -> io::Result<Scan> {
        let mut scan = Scan {
            budget: Some(budget),
            ..Scan::default()
        };
        let mut read = 0u64;
        match self {
            Source::Tar(path) => {
                let mut ar = tar::Archive::new(open_tar(path)?);
                for e in ar.entries()? {
                    let mut e = e?;
                    let Some(p) = normalize(&e.path()?.to_string_lossy()) else {
                        continue;
                    };
                    match e.header().entry_type() {
                        tar::EntryType::Regular | tar::EntryType::Continuous => {
                            let size = e.size();
                            scan.add(p, size, &mut e)?;
                            read += size;
                            progress(read);
                        }
                        tar::EntryType::Symlink => {
                            if let Some(target) = e.link_name()? {
                                let dir = Path::new(&p).parent().unwrap_or(Path::new(""));
                                if let Some(t) = normalize(&dir.join(target).to_string_lossy()) {
                                    scan.links.insert(p, t);
                                }
                            }
                        }
                        tar::EntryType::Link => {
                            if let Some(t) =
                                e.link_name()?.and_then(|t| normalize(&t.to_string_lossy()))
                            {
                                scan.links.insert(p, t);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Source::Dir(root) => {
                for (p, full) in walk(root)? {
                    let mut f = File::open(&full)?;
                    let size = f.metadata()?.len();
                    scan.add(p, size, &mut f)?;
                    read += size;
                    progress(read);
                }
            }
        }
        Ok(scan)
    }

    /// Reads the files at `paths` (as [`Scan::entry`] names them) into memory, in one more pass
    /// over a tarball.
    pub fn load(&self, scan: &mut Scan, paths: &HashSet<String>) -> anyhow::Result<()> {
        self.each(paths, &mut |p, r| {
            let mut bytes = Vec::new();
            r.take(SMALL_JSON + 1).read_to_end(&mut bytes)?;
            if bytes.len() as u64 > SMALL_JSON {
                anyhow::bail!("{p} is larger than {} MiB", SMALL_JSON >> 20);
            }
            scan.hold(p.to_string(), bytes)?;
            Ok(())
        })
    }

    /// Second pass: calls `f` with each file of `wanted` (real paths, as [`Scan::entry`] gives
    /// them) and a reader of its bytes, in archive order.
    pub fn each(
        &self,
        wanted: &HashSet<String>,
        f: &mut dyn FnMut(&str, &mut dyn Read) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match self {
            Source::Tar(path) => {
                let mut ar = tar::Archive::new(open_tar(path)?);
                for e in ar.entries()? {
                    let mut e = e?;
                    if !matches!(
                        e.header().entry_type(),
                        tar::EntryType::Regular | tar::EntryType::Continuous
                    ) {
                        continue;
                    }
                    if let Some(p) = normalize(&e.path()?.to_string_lossy())
                        && wanted.contains(&p)
                    {
                        f(&p, &mut e)?;
                    }
                }
            }
            Source::Dir(root) => {
                let mut paths: Vec<&String> = wanted.iter().collect();
                paths.sort();
                for p in paths {
                    let mut file = File::open(root.join(p))?;
                    f(p, &mut file)?;
                }
            }
        }
        Ok(())
    }
}

impl Scan {
    fn add(&mut self, path: String, size: u64, r: &mut dyn Read) -> io::Result<()> {
        let named = digest_from_path(&path);
        let budget = self.budget.unwrap_or(HOLD_BUDGET);
        let index = INDEXES.contains(&path.as_str()) && size <= SMALL_JSON;
        // A blob that may be a manifest, while the budget lasts; an unnamed small file (a config
        // of the legacy layout) is only hashed: its size and digest are all an import needs.
        let candidate = named.is_some() && size <= SMALL_JSON && self.held + size <= budget;
        let (digest, magic) = if index || candidate {
            let mut bytes = Vec::with_capacity(size as usize);
            r.read_to_end(&mut bytes)?;
            let magic = magic_of(&bytes);
            let digest = named.unwrap_or_else(|| Digest::sha256_of(&bytes));
            if index
                || matches!(
                    bytes.iter().find(|b| !b.is_ascii_whitespace()),
                    Some(b'{' | b'[')
                )
            {
                self.hold(path.clone(), bytes)?;
            }
            (digest, magic)
        } else {
            let mut r = BufReader::with_capacity(1 << 20, r);
            let magic = magic_of(r.fill_buf()?);
            let digest = match named {
                // Verified when stored; hashing it here too would read it twice for nothing (the
                // tar reader skips what is left of the entry).
                Some(d) => d,
                None => {
                    let mut h = Sha256::new();
                    loop {
                        let buf = r.fill_buf()?;
                        if buf.is_empty() {
                            break;
                        }
                        h.update(buf);
                        let n = buf.len();
                        r.consume(n);
                    }
                    Digest::from_sha256_output(&h.finalize())
                }
            };
            (digest, magic)
        };
        self.entries.insert(
            path,
            Entry {
                size,
                digest,
                magic,
            },
        );
        Ok(())
    }
}

/// The first four bytes of a file (zero-padded), enough to tell gzip and zstd from tar.
fn magic_of(head: &[u8]) -> [u8; 4] {
    let mut magic = [0u8; 4];
    for (m, h) in magic.iter_mut().zip(head) {
        *m = *h;
    }
    magic
}

/// `blobs/sha256/<hex>` names its digest.
fn digest_from_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// An archive path without `./`, leading `/` or `..`; `None` for the archive root itself.
fn normalize(p: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A tarball, decompressed on the fly when it is gzip.
fn open_tar(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let gzip = f.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// Every regular file under `root`, with its path relative to `root` (symbolic links followed).
fn walk(root: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let full = e.path();
            let meta = std::fs::metadata(&full)?;
            if meta.is_dir() {
                dirs.push(full);
            } else if meta.is_file()
                && let Ok(rel) = full.strip_prefix(root)
                && let Some(p) = normalize(&rel.to_string_lossy())
            {
                out.push((p, full));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            normalize("./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(normalize("/a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("./"), None);
        let d = Digest::sha256_of(b"x");
        assert_eq!(digest_from_path(&Scan::blob_path(&d)), Some(d));
        assert_eq!(digest_from_path("abc/layer.tar"), None);
    }

    /// JSON-looking junk past the budget is not held, and a manifest after it (its index last,
    /// as `docker save` orders a tar) is read by a pass of its own.
    #[test]
    fn holds_within_budget_and_loads_the_rest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("a.tar");
        let mut b = tar::Builder::new(File::create(&path).unwrap_or_else(|e| panic!("{e}")));
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data)
                .unwrap_or_else(|e| panic!("{e}"));
        };
        let junk = [b"{".as_slice(), &[b' '; 999]].concat();
        for i in 0..10 {
            add(&format!("blobs/sha256/{i:064x}"), &junk);
        }
        let manifest = br#"{"schemaVersion":2,"layers":[]}"#;
        let d = Digest::sha256_of(manifest);
        add(&Scan::blob_path(&d), manifest);
        add("index.json", br#"{"manifests":[]}"#);
        b.finish().unwrap_or_else(|e| panic!("{e}"));
        drop(b);
        let source = Source::Tar(path);
        let mut scan = source
            .scan_holding(3000, &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(scan.held <= 3000 + 16, "held {}", scan.held);
        assert!(scan.small("index.json").is_some());
        let p = Scan::blob_path(&d);
        assert!(scan.needs_load(&p));
        source
            .load(&mut scan, &[p.clone()].into_iter().collect())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scan.small(&p), Some(manifest.as_slice()));
        // Every entry was seen, held or not.
        assert!(scan.entry(&format!("blobs/sha256/{:064x}", 9)).is_some());
    }
}
