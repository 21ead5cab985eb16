//! Online garbage collection over Distribution's layout, safe while every node keeps pushing.
//!
//! First, the `[[retention]]` rules untag what they let go (`super::retention`). Mark: every
//! manifest revision linked in any repository is kept; where untagged manifests go
//! (`delete_untagged`, or a rule's `untagged_after_days`), only the tagged ones, those linked
//! since the cutoff (never less than the grace period, since a push links children before it
//! tags the index), the children of kept indexes, the subjects of kept referrers and the
//! referrers of kept manifests. Every blob a kept manifest references is marked. Sweep: a blob neither marked nor younger than the grace
//! period goes, with the old layer links that name it.
//!
//! Why a push in flight on another node never loses a blob: pushes hold the storage's sweep lock
//! shared while they check that referenced blobs exist and link them (manifest PUT, upload
//! completion, mount); the sweep holds it exclusive while it rescans every link written since the
//! mark began, marks what they reference, and removes the rest, each removal re-checking right
//! before that no repository links the blob. One collector at a time across the cluster: an
//! advisory lock on the shared storage, released by the kernel if the collector dies.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::Serialize;

use super::retention::{self, RepoRetention, RetentionOptions};
use crate::registry::{Digest, Reference, RepoName, manifest};
use crate::storage::inventory::StoredBlob;
use crate::storage::{Storage, StorageError};

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would go, remove nothing.
    pub dry_run: bool,
    /// Remove manifests no tag reaches (Distribution's `--delete-untagged`).
    pub delete_untagged: bool,
    /// Nothing written more recently than this is removed.
    pub grace: Duration,
    /// Upload sessions idle longer than this are removed.
    pub upload_max_age: Duration,
    /// How long the sweep waits for pushes holding the sweep lock.
    pub lock_wait: Duration,
    /// `[[retention]]`: what the pass untags first, and when untagged manifests go.
    pub retention: RetentionOptions,
}

/// What a pass found and did (with `dry_run`, what it would do).
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub manifests: usize,
    pub manifests_removed: usize,
    pub blobs: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub blobs_young_kept: usize,
    pub layer_links_removed: usize,
    pub uploads_removed: usize,
    /// Cache fills whose fetcher died, removed (files or chunk objects).
    pub fills_removed: usize,
    /// Tags the retention rules untagged.
    pub tags_removed: usize,
    /// Per repository a retention rule covers: each tag kept and why, each tag untagged and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RepoRetention>,
}

/// The phase a pass is in, for progress display.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Mark,
    Sweep,
}

struct Rev {
    repo: RepoName,
    digest: Digest,
    linked_at: SystemTime,
    refs: Vec<Digest>,
    subject: Option<Digest>,
    tagged: bool,
}

async fn revision_refs(
    storage: &Storage,
    repo: &RepoName,
    digest: &Digest,
) -> Result<(Vec<Digest>, Option<Digest>), StorageError> {
    match storage
        .resolve_manifest(repo, &Reference::Digest(digest.clone()))
        .await
    {
        Ok((_, m)) => Ok(manifest::references(&m.bytes).unwrap_or_default()),
        // Removed meanwhile, or bytes missing (fsck reports it): it references nothing.
        Err(StorageError::ManifestUnknown) => Ok((Vec::new(), None)),
        Err(e) => Err(e),
    }
}

/// Repositories read at once while the sweep lock is held.
const RESCAN_PARALLEL: usize = 16;

/// Repositories the mark reads at once, and manifests of one repository at once.
const MARK_REPOS_PARALLEL: usize = 4;
const MARK_MANIFESTS_PARALLEL: usize = 8;

/// Blobs the sweep removes at once.
const SWEEP_PARALLEL: usize = 8;

/// Runs one pass; `None` when another collector (on any node) holds the lock.
pub async fn collect(
    storage: &Storage,
    opts: &GcOptions,
    progress: &(dyn Fn(Phase, usize, usize) + Sync),
) -> Result<Option<GcReport>, StorageError> {
    let Some(collector) = storage.try_lock("gc").await? else {
        return Ok(None);
    };
    let result = collect_as_the_collector(storage, opts, progress).await;
    // Released before returning (a lease object in a bucket is deleted now, not when a background
    // task gets to it), so the next pass, on any node, can start at once.
    collector.release().await;
    result.map(Some)
}

async fn collect_as_the_collector(
    storage: &Storage,
    opts: &GcOptions,
    progress: &(dyn Fn(Phase, usize, usize) + Sync),
) -> Result<GcReport, StorageError> {
    let started = SystemTime::now();
    // Links "written since the mark began" are told by the times the storage records, so the
    // start is read off the storage's own clock.
    let mark_began = storage.clock().await?;
    let young = started
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let stale_upload = started
        .checked_sub(opts.upload_max_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    // --- Retention first, so what it untags is collected in this pass. A dry run untags
    // nothing: the mark below counts its tags as gone, so it reports what the real pass removes.
    // Ages are judged by the storage's clock, which dated the links.
    let plans = retention::plan_all(storage, &opts.retention, opts.grace, mark_began).await?;
    report.retention =
        retention::apply(storage, plans, opts.dry_run, opts.lock_wait, mark_began).await?;
    report.tags_removed = report.retention.iter().map(|r| r.removed.len()).sum();
    // By repository: the mark looks each repository up once.
    let untagged_now: HashMap<&str, HashSet<&str>> = report
        .retention
        .iter()
        .map(|r| {
            let tags = r.removed.iter().map(|t| t.tag.as_str()).collect();
            (r.repository.as_str(), tags)
        })
        .collect();

    // --- Mark.
    let repos = storage.all_repositories().await?;
    report.repositories = repos.len();
    let mut revs: Vec<Rev> = Vec::new();
    let mut layer_links: HashMap<Digest, Vec<RepoName>> = HashMap::new();
    let mut expired_uploads = Vec::new();
    let mut young_links: HashSet<Digest> = HashSet::new();
    // Repositories read a few at once, each one's manifests a few at once: on a shared mount
    // every read is a network round trip, and one at a time a pass outgrew its minute.
    let mut read = std::pin::pin!(
        futures_util::stream::iter(repos.iter().cloned())
            .map(|repo| async move {
                let inv = storage.inventory(&repo).await?;
                let digests: Vec<Digest> = inv.revisions.iter().map(|(d, _)| d.clone()).collect();
                let repo_ref = &repo;
                let refs: Vec<_> = futures_util::stream::iter(digests)
                    .map(|d| async move { revision_refs(storage, repo_ref, &d).await })
                    .buffered(MARK_MANIFESTS_PARALLEL)
                    .collect()
                    .await;
                let refs = refs.into_iter().collect::<Result<Vec<_>, _>>()?;
                Ok::<_, StorageError>((repo, inv, refs))
            })
            .buffered(MARK_REPOS_PARALLEL)
    );
    let mut i = 0;
    while let Some(done) = read.next().await {
        progress(Phase::Mark, i, repos.len());
        i += 1;
        let (repo, inv, refs) = done?;
        let tagged: HashSet<&Digest> = inv
            .tags
            .iter()
            .filter(|(t, _)| {
                untagged_now
                    .get(repo.as_str())
                    .is_none_or(|gone| !gone.contains(t.as_str()))
            })
            .filter_map(|(_, d)| d.as_ref())
            .collect();
        for ((d, at), (refs, subject)) in inv.revisions.iter().zip(refs) {
            revs.push(Rev {
                repo: repo.clone(),
                digest: d.clone(),
                linked_at: *at,
                refs,
                subject,
                tagged: tagged.contains(d),
            });
        }
        for (d, at) in &inv.layer_links {
            layer_links.entry(d.clone()).or_default().push(repo.clone());
            if *at >= young {
                // Linked lately (an upload or mount of a push that has not sent its manifest).
                young_links.insert(d.clone());
            }
        }
        for (id, at) in &inv.uploads {
            if *at < stale_upload {
                expired_uploads.push((repo.clone(), *id));
            }
        }
    }
    // Uploads in repositories the catalog does not list (nothing linked there yet).
    for repo in storage.upload_repositories().await? {
        if repos.contains(&repo) {
            continue;
        }
        for (id, at) in storage.inventory(&repo).await?.uploads {
            if at < stale_upload {
                expired_uploads.push((repo.clone(), id));
            }
        }
    }
    progress(Phase::Mark, repos.len(), repos.len());
    report.manifests = revs.len();
    // Once per repository, not per revision: finding a repository's rule matches globs.
    let cutoffs: HashMap<&RepoName, Option<SystemTime>> = repos
        .iter()
        .map(|repo| {
            let c = retention::untagged_cutoff(&opts.retention, repo, mark_began, young)
                .or(opts.delete_untagged.then_some(young));
            (repo, c)
        })
        .collect();
    let cutoff = |repo: &RepoName| cutoffs.get(repo).copied().flatten();
    let keep = kept_revisions(&revs, &cutoff);
    let mut marked: HashSet<Digest> = HashSet::new();
    for (r, &k) in revs.iter().zip(&keep) {
        if k {
            marked.insert(r.digest.clone());
            marked.extend(r.refs.iter().cloned());
        }
    }

    // --- Abandoned uploads (nobody links an upload; no lock needed).
    for (repo, id) in &expired_uploads {
        report.uploads_removed += 1;
        if !opts.dry_run {
            match storage.cancel_upload(repo, id).await {
                Ok(()) | Err(StorageError::UploadUnknown) => {}
                Err(e) => return Err(e),
            }
        }
    }

    // --- What pull-through fetches that died left (the fill's lock or lease tells a live one).
    report.fills_removed = storage
        .remove_abandoned_fills(stale_upload, opts.dry_run)
        .await?;

    // --- Sweep candidates: unmarked and old.
    let blobs = storage.all_blobs().await?;
    report.blobs = blobs.len();
    let mut candidates = Vec::new();
    for b in &blobs {
        if marked.contains(&b.digest) {
            continue;
        }
        if b.modified >= young || young_links.contains(&b.digest) {
            report.blobs_young_kept += 1;
            continue;
        }
        candidates.push(b.clone());
    }
    let untagged: Vec<&Rev> = revs
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(r, _)| r)
        .collect();
    if opts.dry_run || (candidates.is_empty() && untagged.is_empty()) {
        report.manifests_removed = untagged.len();
        report.blobs_removed = candidates.len();
        report.bytes_freed = candidates.iter().map(|b| b.size).sum();
        return Ok(report);
    }

    // --- Under the sweep lock no push links anything. What was linked or tagged since the mark
    // began belongs to pushes that finished meanwhile: it stays, with what it references.
    // Pushes wait while this lock is held, so the rescan reads repositories in parallel (on a
    // shared mount each read is a network round trip).
    let sweep = storage.sweep_lock(true, opts.lock_wait).await?;
    let repos = storage.all_repositories().await?;
    let inventories: Vec<(RepoName, Result<_, StorageError>)> =
        futures_util::stream::iter(repos.iter().cloned())
            .map(|repo| async move {
                let inv = storage.inventory(&repo).await;
                (repo, inv)
            })
            .buffer_unordered(RESCAN_PARALLEL)
            .collect()
            .await;
    let mut tagged_now: HashSet<(RepoName, Digest)> = HashSet::new();
    for (repo, inv) in inventories {
        let inv = inv?;
        let repo = &repo;
        for (_, d) in &inv.tags {
            if let Some(d) = d {
                tagged_now.insert((repo.clone(), d.clone()));
            }
        }
        for (d, at) in &inv.revisions {
            if *at >= mark_began {
                marked.insert(d.clone());
                marked.extend(revision_refs(storage, repo, d).await?.0);
            }
        }
        for (d, at) in &inv.layer_links {
            if *at >= mark_began {
                marked.insert(d.clone());
            }
        }
    }
    for r in untagged {
        let still_untagged = !tagged_now.contains(&(r.repo.clone(), r.digest.clone()))
            && !marked.contains(&r.digest);
        if !still_untagged {
            // Tagged (or linked again) by a push meanwhile: it and what it references stay.
            marked.insert(r.digest.clone());
            marked.extend(r.refs.iter().cloned());
            continue;
        }
        match storage
            .delete_manifest(&r.repo, &r.digest, r.subject.clone())
            .await
        {
            Ok(()) => report.manifests_removed += 1,
            Err(StorageError::ManifestUnknown) => {}
            Err(e) => return Err(e),
        }
    }
    // Blobs removed a few at once: pushes wait while the sweep holds its lock.
    let (layer_links, revs) = (&layer_links, &revs);
    let unmarked: Vec<StoredBlob> = candidates
        .iter()
        .filter(|b| !marked.contains(&b.digest))
        .cloned()
        .collect();
    let mut removals = std::pin::pin!(
        futures_util::stream::iter(unmarked)
            .map(move |b| async move {
                let mut links_removed = 0;
                for repo in layer_links.get(&b.digest).into_iter().flatten() {
                    if storage
                        .remove_layer_link_older_than(repo, &b.digest, mark_began)
                        .await?
                    {
                        links_removed += 1;
                    }
                }
                // Every link written since the mark began was found by the rescan above (and
                // marked); what remains to re-check are the repositories that linked the blob
                // when it was marked.
                let linkers: Vec<RepoName> = layer_links
                    .get(&b.digest)
                    .into_iter()
                    .flatten()
                    .chain(
                        revs.iter()
                            .filter(|r| r.digest == b.digest)
                            .map(|r| &r.repo),
                    )
                    .cloned()
                    .collect();
                let freed = storage.delete_blob_if_unlinked(&b.digest, linkers).await?;
                let gone = freed > 0 || storage.blob_size_global(&b.digest).await?.is_none();
                Ok::<_, StorageError>((links_removed, gone, freed))
            })
            .buffer_unordered(SWEEP_PARALLEL)
    );
    let mut i = 0;
    while let Some(done) = removals.next().await {
        progress(Phase::Sweep, i, candidates.len());
        i += 1;
        let (links_removed, gone, freed) = done?;
        report.layer_links_removed += links_removed;
        if gone {
            report.blobs_removed += 1;
            report.bytes_freed += freed;
        }
    }
    progress(Phase::Sweep, candidates.len(), candidates.len());
    // Pushes wait while the sweep holds this: release it now.
    sweep.release().await;
    Ok(report)
}

/// Which revisions survive. In a repository where untagged manifests go (`delete_untagged`, or
/// a retention rule's `untagged_after_days`: `cutoff` says since when), the tagged ones, those
/// linked since the cutoff (a push in flight, or not old enough), the children of kept indexes,
/// the subjects of kept referrers and the referrers of kept manifests; elsewhere, all of them.
fn kept_revisions(revs: &[Rev], cutoff: &dyn Fn(&RepoName) -> Option<SystemTime>) -> Vec<bool> {
    let mut keep: Vec<bool> = revs
        .iter()
        .map(|r| r.tagged || cutoff(&r.repo).is_none_or(|c| r.linked_at >= c))
        .collect();
    if keep.iter().all(|k| *k) {
        return keep;
    }
    loop {
        let kept: HashSet<(&RepoName, &Digest)> = revs
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .flat_map(|(r, _)| {
                std::iter::once((&r.repo, &r.digest))
                    .chain(r.refs.iter().map(move |d| (&r.repo, d)))
                    .chain(r.subject.iter().map(move |d| (&r.repo, d)))
            })
            .collect();
        let mut changed = false;
        for (r, k) in revs.iter().zip(keep.iter_mut()) {
            if *k {
                continue;
            }
            let child_of_kept = kept.contains(&(&r.repo, &r.digest));
            let referrer_of_kept = r
                .subject
                .as_ref()
                .is_some_and(|s| kept.contains(&(&r.repo, s)));
            if child_of_kept || referrer_of_kept {
                *k = true;
                changed = true;
            }
        }
        if !changed {
            return keep;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn rev(digest: u8, refs: &[u8], subject: Option<u8>, tagged: bool, age_secs: u64) -> Rev {
        Rev {
            repo: "r".parse().unwrap(),
            digest: d(digest),
            linked_at: SystemTime::now() - Duration::from_secs(age_secs),
            refs: refs.iter().map(|n| d(*n)).collect(),
            subject: subject.map(d),
            tagged,
        }
    }

    #[test]
    fn untagged_closure_keeps_children_referrers_and_young() {
        let young = SystemTime::now() - Duration::from_secs(3600);
        let revs = vec![
            rev(1, &[2, 3], None, true, 7200),   // tagged index
            rev(2, &[10], None, false, 7200),    // its child
            rev(3, &[11], None, false, 7200),    // its other child
            rev(4, &[12], Some(2), false, 7200), // a referrer of the child
            rev(5, &[13], None, false, 7200),    // untagged, old: goes
            rev(6, &[14], None, false, 60),      // untagged, young: a push in flight
            rev(7, &[15], Some(5), false, 7200), // referrer of what goes: goes too
        ];
        assert_eq!(
            kept_revisions(&revs, &|_| Some(young)),
            vec![true, true, true, true, false, true, false]
        );
        assert_eq!(kept_revisions(&revs, &|_| None), vec![true; 7]);
        // The subject of a kept (tagged) referrer stays.
        let revs = vec![
            rev(1, &[10], None, false, 7200),
            rev(2, &[11], Some(1), true, 7200),
        ];
        assert_eq!(kept_revisions(&revs, &|_| Some(young)), vec![true, true]);
    }
}
