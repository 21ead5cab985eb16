//! The image-archive scanner and import planner (`archive::scan`, `archive::import`): `docker
//! save` tarballs (legacy `manifest.json` and OCI `index.json`), OCI layouts tarred by hand,
//! gzip'ed or not: everything `registryd import` reads before it writes to storage.
//!
//! Invariants: no panic, and no unbounded memory (libFuzzer's -rss_limit_mb catches a
//! declared-size allocation); every answer is a plan or an error. Two modes, by the first byte:
//! even, the rest is the archive file as is (seeds: real small tarballs); odd, the rest drives a
//! tarball built here (through `arbitrary`), whose blobs are named by their own sha256 and whose
//! index and manifests list those digests, so the planner is reached past the digest checks that
//! random bytes never pass. The directory form (`Source::Dir`) is not fuzzed: it reads the same
//! files through `std::fs`.
#![no_main]

use std::io::Write;
use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use registryd::fuzzing::archive_plan;
use registryd::registry::{Digest, RepoName};

#[derive(Arbitrary, Debug)]
enum Name {
    Index,
    Manifest,
    /// `blobs/sha256/<its own digest>`
    Blob,
    /// `blobs/sha256/<another file's digest>`
    BlobOf(u8),
    Path(String),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    /// An OCI index listing earlier files by digest, with these annotations.
    Index(Vec<(u8, u8, Option<String>)>),
    /// An OCI image manifest: config and layers are earlier files.
    Image(u8, Vec<u8>, Option<u8>),
    /// A docker-save manifest.json entry list: config, layers (as paths) and tags.
    Save(Vec<(u8, Vec<u8>, Vec<String>)>),
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File,
    Symlink(u8),
    Hardlink(u8),
    Dir,
}

#[derive(Arbitrary, Debug)]
struct Built {
    files: Vec<(Name, Body, Kind)>,
    gzip: bool,
    repo_override: bool,
}

const MEDIA: [&str; 5] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.layer.v1.tar",
    "x/weird",
];

struct Made {
    path: String,
    digest: Digest,
    size: usize,
}

fn nth(made: &[Made], i: u8) -> Option<&Made> {
    (!made.is_empty()).then(|| &made[usize::from(i) % made.len()])
}

fn desc(m: &Made, media: u8) -> String {
    format!(
        r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
        MEDIA[usize::from(media) % MEDIA.len()],
        m.digest,
        m.size
    )
}

fn body_of(body: &Body, made: &[Made]) -> Vec<u8> {
    match body {
        Body::Raw(b) => b.clone(),
        Body::Index(list) => {
            let items: Vec<String> = list
                .iter()
                .filter_map(|(i, media, name)| {
                    let m = nth(made, *i)?;
                    let d = desc(m, *media);
                    Some(match name {
                        Some(n) => format!(
                            r#"{},"annotations":{{"org.opencontainers.image.ref.name":{:?}}}}}"#,
                            &d[..d.len() - 1],
                            n
                        ),
                        None => d,
                    })
                })
                .collect();
            format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, items.join(",")).into_bytes()
        }
        Body::Image(config, layers, subject) => {
            let Some(c) = nth(made, *config) else {
                return b"{}".to_vec();
            };
            let layers: Vec<String> = layers
                .iter()
                .filter_map(|l| Some(desc(nth(made, *l)?, 3)))
                .collect();
            let subject = subject
                .and_then(|s| nth(made, s))
                .map(|s| format!(r#","subject":{}"#, desc(s, 0)))
                .unwrap_or_default();
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]{subject}}}"#,
                MEDIA[0],
                desc(c, 4),
                layers.join(",")
            )
            .into_bytes()
        }
        Body::Save(images) => {
            let items: Vec<String> = images
                .iter()
                .filter_map(|(c, layers, tags)| {
                    let c = nth(made, *c)?;
                    let layers: Vec<String> = layers
                        .iter()
                        .filter_map(|l| Some(format!("{:?}", nth(made, *l)?.path)))
                        .collect();
                    Some(format!(
                        r#"{{"Config":{:?},"RepoTags":{tags:?},"Layers":[{}]}}"#,
                        c.path,
                        layers.join(",")
                    ))
                })
                .collect();
            format!("[{}]", items.join(",")).into_bytes()
        }
    }
}

fn build(b: &Built) -> std::io::Result<Vec<u8>> {
    let mut made: Vec<Made> = Vec::new();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body, kind) in &b.files {
        let bytes = body_of(body, &made);
        let digest = Digest::sha256_of(&bytes);
        let path = match name {
            Name::Index => "index.json".to_string(),
            Name::Manifest => "manifest.json".to_string(),
            Name::Blob => format!("blobs/sha256/{}", digest.hex()),
            Name::BlobOf(i) => match nth(&made, *i) {
                Some(m) => format!("blobs/sha256/{}", m.digest.hex()),
                None => "blobs/sha256/x".to_string(),
            },
            Name::Path(p) => p.clone(),
        };
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        let ok = match kind {
            Kind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(bytes.len() as u64);
                tar.append_data(&mut h, &path, bytes.as_slice())
            }
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                let target = nth(&made, *t)
                    .map(|m| m.path.clone())
                    .unwrap_or_else(|| "..".into());
                h.set_entry_type(if matches!(kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_size(0);
                tar.append_link(&mut h, &path, &target)
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, &path, std::io::empty())
            }
        };
        // A name tar cannot write (too long, NUL) is skipped, as a real archive would not have it.
        if ok.is_ok() {
            made.push(Made {
                path,
                digest,
                size: bytes.len(),
            });
        }
    }
    let bytes = tar.into_inner()?;
    if !b.gzip {
        return Ok(bytes);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes)?;
    gz.finish()
}

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("registryd-fuzz-archive-{}.tar", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (bytes, use_repo) = if mode % 2 == 0 {
        (rest.to_vec(), mode % 4 == 0)
    } else {
        let Ok(b) = Built::arbitrary_take_rest(Unstructured::new(rest)) else {
            return;
        };
        let Ok(bytes) = build(&b) else { return };
        (bytes, b.repo_override)
    };
    let path = scratch();
    std::fs::write(&path, &bytes).unwrap();
    let repo: RepoName = "fuzz/import".parse().unwrap();
    let _ = archive_plan(&path, use_repo.then_some(&repo));
});
