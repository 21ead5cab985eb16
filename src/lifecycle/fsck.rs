//! `registryd fsck`: does every stored byte still say what its name says? Verifies every blob's
//! sha256 against its name (in parallel), and finds links to missing blobs, manifests that do not
//! parse or reference missing blobs, tags naming missing revisions, and temp files left by crashes.
//! With `repair`, corrupt blobs are quarantined (moved aside, never deleted: an operator may want
//! the bytes), dangling links and tags are dropped, and old temp files removed.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::registry::{Digest, Reference, manifest};
use crate::storage::{Storage, StorageError};

#[derive(Debug, Clone)]
pub struct FsckOptions {
    pub repair: bool,
    /// Blobs hashed at once.
    pub jobs: usize,
}

/// One thing wrong.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    pub kind: &'static str,
    pub what: String,
    pub repaired: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub repositories: usize,
    pub problems: Vec<Problem>,
}

/// Temp files younger than this may belong to a write in flight.
const TEMP_AGE: Duration = Duration::from_secs(3600);

/// Runs the checks; `progress(done, total)` hears about blob hashing.
pub async fn check(
    storage: &Storage,
    opts: &FsckOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<FsckReport, StorageError> {
    let mut report = FsckReport::default();
    let problem = |kind: &'static str, what: String, repaired: bool| Problem {
        kind,
        what,
        repaired,
    };

    // --- Blobs: content against name, in parallel on the blocking pool.
    let blobs = storage.all_blobs().await?;
    let total = blobs.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for b in blobs {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Unavailable("fsck stopped".into()))?;
        let storage = storage.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let got = storage.hash_blob(&b.digest).await;
            (b, got)
        });
    }
    let mut corrupt = Vec::new();
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((b, got)) = joined else { continue };
        done += 1;
        progress(done, total);
        report.blobs_checked += 1;
        report.bytes_checked += b.size;
        match got {
            Ok(Some(hex)) if hex == b.digest.hex() => {}
            Ok(Some(hex)) => corrupt.push((b.digest, format!("content hashes to sha256:{hex}"))),
            // Removed meanwhile (GC, another node): nothing wrong.
            Ok(None) => {}
            Err(e) => corrupt.push((b.digest, format!("unreadable: {e}"))),
        }
    }
    progress(total, total);
    for (d, why) in corrupt {
        let repaired = opts.repair && storage.quarantine_blob(&d).await?;
        report
            .problems
            .push(problem("corrupt-blob", format!("{d}: {why}"), repaired));
    }

    // --- Repositories: links, manifests, tags.
    let repos = storage.all_repositories().await?;
    report.repositories = repos.len();
    for repo in &repos {
        let inv = storage.inventory(repo).await?;
        for d in &inv.layers {
            if storage.blob_size_global(d).await?.is_none() {
                let repaired = opts.repair && storage.unlink_blob(repo, d).await.is_ok();
                report.problems.push(problem(
                    "dangling-layer-link",
                    format!("{repo}: layer link to missing blob {d}"),
                    repaired,
                ));
            }
        }
        for (d, _) in &inv.revisions {
            let bytes = match storage
                .resolve_manifest(repo, &Reference::Digest(d.clone()))
                .await
            {
                Ok((_, m)) => Some(m.bytes.clone()),
                Err(StorageError::ManifestUnknown) => None,
                Err(e) => return Err(e),
            };
            let Some(bytes) = bytes else {
                // The revision link exists (inventory saw it) but its blob does not.
                let repaired = opts.repair && storage.delete_manifest(repo, d, None).await.is_ok();
                report.problems.push(problem(
                    "dangling-revision",
                    format!("{repo}: manifest {d} is linked but its blob is missing (its tags go with it on repair)"),
                    repaired,
                ));
                continue;
            };
            match manifest::references(&bytes) {
                Err(e) => report.problems.push(problem(
                    "unparseable-manifest",
                    format!("{repo}: manifest {d} does not parse: {e}"),
                    false,
                )),
                Ok((refs, _)) => {
                    for r in refs {
                        if storage.blob_size_global(&r).await?.is_none() {
                            report.problems.push(problem(
                                "missing-referenced-blob",
                                format!("{repo}: manifest {d} references missing {r}"),
                                false,
                            ));
                        }
                    }
                }
            }
        }
        let revisions: std::collections::HashSet<&Digest> =
            inv.revisions.iter().map(|(d, _)| d).collect();
        for (tag, target) in &inv.tags {
            let ok = target.as_ref().is_some_and(|d| revisions.contains(d));
            if !ok {
                let repaired = opts.repair && storage.delete_tag(repo, tag).await.is_ok();
                report.problems.push(problem(
                    "dangling-tag",
                    format!(
                        "{repo}:{tag} names {}, which is not a stored revision",
                        target
                            .as_ref()
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "nothing readable".into())
                    ),
                    repaired,
                ));
            }
        }
    }

    // --- Temp files a crash left behind (a bucket has none: objects appear whole).
    for (t, repaired) in storage.orphan_temp_files(TEMP_AGE, opts.repair).await? {
        report.problems.push(problem(
            "orphan-temp-file",
            t.display().to_string(),
            repaired,
        ));
    }
    Ok(report)
}
