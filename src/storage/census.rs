//! The census: which blobs each repository links and which no other repository does, measured over
//! the whole store in one background pass, so a repository's "unique size" (what deleting it would
//! free) never costs a walk of the store per request.
//!
//! A census starts when a summary is asked for and the last one is missing, older than
//! [`CENSUS_MAX_AGE`], or (after [`CENSUS_MIN_GAP`]) no longer matches a repository's size, and
//! runs on its own task while the pages are answered with what the last one found and its age. It
//! reads repositories in batches (one blocking call of the filesystem, or concurrent listings of a
//! bucket, per batch), so it never holds more than one slot of the storage's pool. Memory is one
//! small entry per distinct blob (about 40 bytes: [`BlobKey`], owner, size), bounded by
//! [`MAX_CENSUS_BLOBS`]; a store past it gets no unique sizes rather than an unbounded pass.
//!
//! A census that could not read some repository keeps the previous figures: a blob shared with an
//! unread repository would otherwise count as unique to the other.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::summary::{BlobKey, Measured, RepoFacts, RepoSummary};
use super::{Driver, Result, Storage, StorageError};
use crate::registry::RepoName;

/// Age past which the next summary starts a new census.
pub const CENSUS_MAX_AGE: Duration = Duration::from_secs(600);
/// Shortest time between two censuses, when sizes changed since the last one.
pub const CENSUS_MIN_GAP: Duration = Duration::from_secs(60);
/// Repositories read per storage call of a census.
const CENSUS_BATCH: usize = 64;
/// Distinct blobs a census may count before it gives up (bounded memory, ~80 MiB).
const MAX_CENSUS_BLOBS: usize = 2_000_000;
/// Owner of a blob that more than one repository links.
const SHARED: u32 = u32::MAX;

/// The last census, and the lock that keeps censuses one at a time on this node.
#[derive(Default)]
pub struct CensusState {
    last: Mutex<Option<Arc<Census>>>,
    running: Arc<tokio::sync::Mutex<()>>,
    /// A summary saw a size that differs from the last census's: its figures are out of date.
    drifted: AtomicBool,
}

/// What a census found: per repository, the bytes only it links and its size then.
struct Census {
    started: SystemTime,
    finished: SystemTime,
    repos: HashMap<RepoName, (u64, u64)>,
}

/// What one census measured.
#[derive(Debug, Clone)]
pub struct CensusReport {
    pub repositories: usize,
    /// Distinct blobs the repositories link.
    pub blobs: usize,
    /// Bytes of those blobs.
    pub bytes: u64,
    pub took: Duration,
}

impl CensusState {
    fn last(&self) -> Option<Arc<Census>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Storage {
    fn census_state(&self) -> &CensusState {
        &self.inner.census
    }

    /// `facts` of `name` with the unique size the last census measured (at most its size now).
    pub(super) fn with_unique_size(&self, name: &RepoName, facts: RepoFacts) -> RepoSummary {
        let state = self.census_state();
        let last = state.last();
        let known = last
            .as_ref()
            .and_then(|c| c.repos.get(name).map(|e| (c.started, *e)));
        let (unique_size, unique_as_of) = match known {
            Some((at, (unique, size_then))) => {
                if size_then != facts.size {
                    state.drifted.store(true, Ordering::Relaxed);
                }
                (Some(unique.min(facts.size)), Some(at))
            }
            None => {
                if last.is_some() && facts.size > 0 {
                    state.drifted.store(true, Ordering::Relaxed);
                }
                (None, None)
            }
        };
        RepoSummary {
            tags: facts.tags,
            last_push: facts.last_push,
            size: facts.size,
            unique_size,
            unique_as_of,
        }
    }

    /// Starts a census on its own task if one is due and none runs on this node.
    pub(super) fn census_if_due(&self) {
        let state = self.census_state();
        let since = |t: SystemTime| SystemTime::now().duration_since(t).unwrap_or_default();
        let due = match state.last() {
            None => true,
            Some(c) => {
                since(c.started) >= CENSUS_MAX_AGE
                    || (state.drifted.load(Ordering::Relaxed)
                        && since(c.finished) >= CENSUS_MIN_GAP)
            }
        };
        if !due {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(running) = state.running.clone().try_lock_owned() else {
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            let _one_at_a_time = running;
            match me.run_census().await {
                Ok(r) => tracing::info!(
                    repositories = r.repositories,
                    blobs = r.blobs,
                    bytes = r.bytes,
                    took_ms = r.took.as_millis() as u64,
                    "census of repository sizes done"
                ),
                Err(e) => tracing::warn!(error = %e, "census of repository sizes failed; unique sizes not updated"),
            }
        });
    }

    /// Runs a census now (after the one running, if any) and keeps its figures: what
    /// [`repository_summary`](Storage::repository_summary) then reports as unique sizes.
    pub async fn measure_unique_sizes(&self) -> Result<CensusReport> {
        let _one_at_a_time = self.census_state().running.clone().lock_owned().await;
        self.run_census().await
    }

    async fn run_census(&self) -> Result<CensusReport> {
        let (started, clock) = (SystemTime::now(), Instant::now());
        self.census_state().drifted.store(false, Ordering::Relaxed);
        let names = self.all_repositories().await?;
        let sizes = self.inner.summary.blob_sizes.clone();
        let mut owners: HashMap<BlobKey, (u32, u64)> = HashMap::new();
        let mut measured_sizes = Vec::with_capacity(names.len());
        let mut owner = 0u32;
        for batch in names.chunks(CENSUS_BATCH) {
            let measured = match self.driver() {
                Driver::Fs(fs) => fs.repo_facts(batch.to_vec(), sizes.clone(), true).await?,
                Driver::S3(s3) => s3.repo_facts(batch, &sizes, true).await,
            };
            for (name, m) in batch.iter().zip(measured) {
                let Measured { facts, links } = m.map_err(|e| {
                    StorageError::Unavailable(format!("census: repository {}: {e}", name.as_str()))
                })?;
                for (key, size) in links.unwrap_or_default() {
                    match owners.entry(key) {
                        Entry::Vacant(v) => {
                            v.insert((owner, size));
                        }
                        Entry::Occupied(mut o) if o.get().0 != owner => o.get_mut().0 = SHARED,
                        Entry::Occupied(_) => {}
                    }
                }
                measured_sizes.push(facts.size);
                owner = owner
                    .checked_add(1)
                    .filter(|o| *o != SHARED)
                    .ok_or_else(|| {
                        StorageError::Unavailable("census: too many repositories".into())
                    })?;
            }
            if owners.len() > MAX_CENSUS_BLOBS {
                return Err(StorageError::Unavailable(format!(
                    "census: more than {MAX_CENSUS_BLOBS} distinct blobs; unique sizes are not measured on a store this large"
                )));
            }
        }
        let mut unique = vec![0u64; measured_sizes.len()];
        let mut bytes = 0u64;
        for (o, size) in owners.values() {
            bytes = bytes.saturating_add(*size);
            if let Some(u) = unique.get_mut(*o as usize) {
                *u = u.saturating_add(*size);
            }
        }
        let repos: HashMap<RepoName, (u64, u64)> = names
            .into_iter()
            .zip(unique.into_iter().zip(measured_sizes))
            .collect();
        let report = CensusReport {
            repositories: repos.len(),
            blobs: owners.len(),
            bytes,
            took: clock.elapsed(),
        };
        *self
            .census_state()
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Census {
            started,
            finished: SystemTime::now(),
            repos,
        }));
        Ok(report)
    }
}
