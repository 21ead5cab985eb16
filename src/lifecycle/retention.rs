//! The retention pass: what `[[retention]]` rules untag, run by the GC collector (one node at a
//! time, under the cluster-wide GC lock) before it marks, so what the rules let go is collected in
//! the same pass. The decisions are [`crate::retention::plan`]'s; this module reads the facts
//! from storage and acts.
//!
//! A tag pushed while the pass runs is never lost: each repository's untagging happens under the
//! exclusive sweep lock (pushes hold it shared while they link and tag), after reading its tags
//! again, and a tag whose digest or push time changed since the plan is left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::registry::{Digest, RepoName, Tag};
use crate::retention::plan::{self, RepoPlan, TagFacts};
use crate::retention::{Retention, Rules};
use crate::storage::{Storage, StorageError};

/// What a pass needs besides storage.
#[derive(Debug, Clone, Default)]
pub struct RetentionOptions {
    pub rules: Arc<Rules>,
    /// Repositories of the pull-through cache (under these prefixes) follow the cache's eviction,
    /// never retention.
    pub cache_prefixes: Vec<String>,
}

impl RetentionOptions {
    fn is_cached(&self, name: &RepoName) -> bool {
        self.cache_prefixes.iter().any(|p| name.is_under(p))
    }

    /// The rule over `name`'s pushed content, if any.
    pub fn rule_for(&self, name: &RepoName) -> Option<&Retention> {
        if self.is_cached(name) {
            return None;
        }
        self.rules.retention_for(name.as_str())
    }
}

/// One tag in a report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TagLine {
    pub tag: String,
    pub digest: String,
    /// Why it is kept (every rule that keeps it), or why it goes.
    pub reasons: Vec<String>,
}

/// What the pass decided for one repository.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RepoRetention {
    pub repository: String,
    pub rule: String,
    pub kept: Vec<TagLine>,
    /// Untagged (with the dry run: would be).
    pub removed: Vec<TagLine>,
    /// Left alone: moved since the plan was made (a push during the pass).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved_meanwhile: Vec<String>,
    /// The rule would have untagged every tag, and untagged none.
    pub kept_from_empty: bool,
}

/// The plans of every repository a rule covers, with the facts read now.
pub async fn plan_all(
    storage: &Storage,
    opts: &RetentionOptions,
    grace: Duration,
    now: SystemTime,
) -> Result<Vec<(RepoPlan, Retention)>, StorageError> {
    if opts.rules.retention_rules().is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for repo in storage.all_repositories().await? {
        let Some(rule) = opts.rule_for(&repo) else {
            continue;
        };
        let rule = rule.clone();
        let p = plan_repository(storage, opts, &rule, &repo, grace, now).await?;
        out.push((p, rule));
    }
    Ok(out)
}

/// The plan for one repository under `rule`.
pub async fn plan_repository(
    storage: &Storage,
    opts: &RetentionOptions,
    rule: &Retention,
    repo: &RepoName,
    grace: Duration,
    now: SystemTime,
) -> Result<RepoPlan, StorageError> {
    let tags = storage.tag_details(repo).await?;
    let mut pulled: HashMap<Digest, Option<SystemTime>> = HashMap::new();
    let mut facts = Vec::with_capacity(tags.len());
    for t in tags {
        // A tag whose link is unreadable is fsck's to report; retention leaves it alone.
        let (Some(digest), Some(pushed)) = (t.digest, t.pushed) else {
            continue;
        };
        let when = match pulled.get(&digest) {
            Some(p) => *p,
            None if rule.keep_pulled_within_days.is_some() => {
                let p = storage.pulled_at(repo, &digest).await?;
                pulled.insert(digest.clone(), p);
                p
            }
            None => None,
        };
        facts.push(TagFacts {
            tag: t.tag,
            digest,
            pushed,
            pulled: when,
        });
    }
    Ok(plan::plan(
        rule,
        &opts.rules,
        repo.as_str(),
        facts,
        now,
        grace,
    ))
}

/// Acts on `plans` (or, with `dry_run`, only reports them). Each repository's untagging holds
/// the exclusive sweep lock for as long as it takes to re-read its tags and remove those still
/// as planned.
pub async fn apply(
    storage: &Storage,
    plans: Vec<(RepoPlan, Retention)>,
    dry_run: bool,
    lock_wait: Duration,
    now: SystemTime,
) -> Result<Vec<RepoRetention>, StorageError> {
    let mut out = Vec::with_capacity(plans.len());
    // One hold of the exclusive sweep lock for every repository's untagging (on a bucket, taking
    // the lease costs a wait of its own): pushes wait for it, briefly, as they do for a sweep.
    let untags = plans.iter().any(|(p, _)| p.untagged().next().is_some());
    let sweep = if dry_run || !untags {
        None
    } else {
        Some(storage.sweep_lock(true, lock_wait).await?)
    };
    let result = untag_all(storage, plans, dry_run, now, &mut out).await;
    if let Some(s) = sweep {
        s.release().await;
    }
    result.map(|()| out)
}

async fn untag_all(
    storage: &Storage,
    plans: Vec<(RepoPlan, Retention)>,
    dry_run: bool,
    now: SystemTime,
    out: &mut Vec<RepoRetention>,
) -> Result<(), StorageError> {
    for (p, rule) in plans {
        let mut report = RepoRetention {
            repository: p.repository.clone(),
            rule: p.rule.clone(),
            kept: Vec::new(),
            removed: Vec::new(),
            moved_meanwhile: Vec::new(),
            kept_from_empty: p.kept_from_empty,
        };
        for d in &p.tags {
            if d.kept() {
                report.kept.push(TagLine {
                    tag: d.facts.tag.clone(),
                    digest: d.facts.digest.to_string(),
                    reasons: d.kept_by.iter().map(ToString::to_string).collect(),
                });
            }
        }
        if p.kept_from_empty {
            tracing::warn!(
                repository = %p.repository,
                rule = %p.rule,
                "retention untagged nothing here: the rule would have untagged every tag (allow_empty = true permits it)"
            );
        }
        let going: Vec<_> = p.untagged().collect();
        if going.is_empty() {
            out.push(report);
            continue;
        }
        let Ok(repo) = p.repository.parse::<RepoName>() else {
            out.push(report);
            continue;
        };
        let now_tags: HashMap<String, (Option<Digest>, Option<SystemTime>)> = if dry_run {
            HashMap::new()
        } else {
            storage
                .tag_details(&repo)
                .await?
                .into_iter()
                .map(|t| (t.tag, (t.digest, t.pushed)))
                .collect()
        };
        for d in going {
            let line = TagLine {
                tag: d.facts.tag.clone(),
                digest: d.facts.digest.to_string(),
                reasons: vec![plan::why_not(&rule, d, now)],
            };
            if dry_run {
                report.removed.push(line);
                continue;
            }
            let unchanged = now_tags.get(&d.facts.tag).is_some_and(|(dg, at)| {
                dg.as_ref() == Some(&d.facts.digest) && *at == Some(d.facts.pushed)
            });
            if !unchanged {
                report.moved_meanwhile.push(d.facts.tag.clone());
                continue;
            }
            let Ok(tag) = d.facts.tag.parse::<Tag>() else {
                continue;
            };
            match storage.delete_tag(&repo, &tag).await {
                Ok(()) => {}
                // Gone meanwhile (an untag by hand): not this pass's doing.
                Err(StorageError::ManifestUnknown) => continue,
                Err(e) => return Err(e),
            }
            tracing::info!(
                repository = %p.repository,
                tag = %d.facts.tag,
                digest = %d.facts.digest,
                rule = %p.rule,
                why = %line.reasons.join("; "),
                "retention untagged"
            );
            crate::metrics::get().retention_untagged(rule.number);
            report.removed.push(line);
        }
        out.push(report);
    }
    Ok(())
}

/// When untagged manifests of `repo` go: with the rule's `untagged_after_days`, those linked before
/// the returned time (never later than `young`, the grace); `None`: the rule does not say.
pub fn untagged_cutoff(
    opts: &RetentionOptions,
    repo: &RepoName,
    now: SystemTime,
    young: SystemTime,
) -> Option<SystemTime> {
    let days = opts.rule_for(repo)?.untagged_after_days?;
    let cut = now
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Some(cut.min(young))
}
