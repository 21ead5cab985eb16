//! Reading an archive in two passes: a tarball (gzip or not) or a directory. The first pass keeps
//! the small JSON files (index, manifests, configs) in memory and notes every other file's size
//! and digest; the second streams only the files to store. A tarball is read from the start twice
//! instead of being unpacked to disk: an archive of several GiB needs no scratch space.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::registry::Digest;

/// Files up to this size that look like JSON are kept in memory by the first pass.
const SMALL_JSON: u64 = 4 << 20;

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

    /// The bytes of a small JSON file.
    pub fn small(&self, path: &str) -> Option<&[u8]> {
        let (p, _) = self.entry(path)?;
        self.small.get(&p).map(Vec::as_slice)
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
        if let Source::Tar(path) = self {
            let mut head = Vec::with_capacity(512);
            open_tar(path)?.take(512).read_to_end(&mut head)?;
            if head.len() < 512 || &head[257..262] != b"ustar" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a tar archive (nor a gzip'ed one, nor a directory)",
                ));
            }
        }
        self.scan_entries(progress).map_err(|e| {
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

    fn scan_entries(&self, progress: &mut dyn FnMut(u64)) -> io::Result<Scan> {
        let mut scan = Scan::default();
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
        let (digest, magic) = if size <= SMALL_JSON {
            let mut bytes = Vec::with_capacity(size as usize);
            r.read_to_end(&mut bytes)?;
            let magic = magic_of(&bytes);
            let digest = named.unwrap_or_else(|| Digest::sha256_of(&bytes));
            if matches!(
                bytes.iter().find(|b| !b.is_ascii_whitespace()),
                Some(b'{' | b'[')
            ) {
                self.small.insert(path.clone(), bytes);
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
    let n = head.len().min(4);
    magic[..n].copy_from_slice(&head[..n]);
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
}
