//! Deciding which tags of a repository a retention rule keeps, and why: pure, so the dry run, the
//! real pass and the web UI read the same decision.
//!
//! A tag is kept when any of these holds, checked in this order and all of them reported:
//! an immutable rule covers it; it moved less than the GC grace period ago (a push in flight); it
//! matches `keep_tags`; it is among the `keep_last` most recently pushed; it was pushed within
//! `keep_pushed_within_days`; its manifest was pulled, by any node, within
//! `keep_pulled_within_days`. A cosign-style tag (`sha256-<hex>.sig`, `.att`, `.sbom`) follows the
//! manifest it names: kept while a kept tag points at that manifest, untagged with it, and not
//! counted in `keep_last`. If the rule would leave the repository without a tag, it untags none
//! there unless it says `allow_empty = true`.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::rules::{Retention, Rules};
use crate::registry::Digest;

/// What is known of one tag when its fate is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    pub tag: String,
    pub digest: Digest,
    /// When the tag last moved.
    pub pushed: SystemTime,
    /// When its manifest was last pulled, by any node (`None`: never, as far as recorded).
    pub pulled: Option<SystemTime>,
}

/// Why a tag is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Why {
    Immutable {
        by: String,
    },
    /// Moved less than the GC grace period ago.
    Grace,
    KeepTags {
        glob: String,
    },
    KeepLast {
        newest: usize,
        keep_last: u32,
    },
    KeepPushedWithinDays {
        days: u32,
    },
    KeepPulledWithinDays {
        days: u32,
    },
    /// A cosign-style tag whose manifest keeps a tag.
    SubjectKept {
        subject: String,
    },
    /// A cosign-style tag whose manifest no tag here names: not the rule's to judge.
    SubjectNotTagged {
        subject: String,
    },
    /// The rule would leave the repository without tags and does not say `allow_empty`.
    WouldEmpty,
    /// The rule sets no `keep_*` key: it removes untagged manifests and leaves tags alone.
    NoTagKeys,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Immutable { by } => write!(f, "{by}"),
            Why::Grace => f.write_str("moved less than gc.grace_secs ago"),
            Why::KeepTags { glob } => write!(f, "keep_tags {glob:?}"),
            Why::KeepLast { newest, keep_last } => {
                write!(f, "keep_last = {keep_last} (newest #{newest})")
            }
            Why::KeepPushedWithinDays { days } => write!(f, "keep_pushed_within_days = {days}"),
            Why::KeepPulledWithinDays { days } => write!(f, "keep_pulled_within_days = {days}"),
            Why::SubjectKept { subject } => write!(f, "its subject {subject} keeps a tag"),
            Why::SubjectNotTagged { subject } => {
                write!(f, "its subject {subject} has no tag here")
            }
            Why::NoTagKeys => f.write_str("the rule sets no keep_* key, so it leaves tags alone"),
            Why::WouldEmpty => f.write_str(
                "the rule would untag every tag of the repository and does not say allow_empty = true",
            ),
        }
    }
}

/// One tag's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDecision {
    pub facts: TagFacts,
    /// Empty: the tag goes.
    pub kept_by: Vec<Why>,
    /// Its place among the tags by push time, newest first (`None` for cosign-style tags).
    pub newest: Option<usize>,
}

impl TagDecision {
    pub fn kept(&self) -> bool {
        !self.kept_by.is_empty()
    }
}

/// What a rule decides for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPlan {
    pub repository: String,
    /// The rule that applies, as it is named in logs.
    pub rule: String,
    pub rule_number: usize,
    /// Sorted newest first.
    pub tags: Vec<TagDecision>,
    /// The rule would have untagged every tag, and untagged none.
    pub kept_from_empty: bool,
}

impl RepoPlan {
    pub fn untagged(&self) -> impl Iterator<Item = &TagDecision> {
        self.tags.iter().filter(|t| !t.kept())
    }
}

/// Why a tag goes, for the dry run and the log: the facts the rule weighed.
pub fn why_not(rule: &Retention, d: &TagDecision, now: SystemTime) -> String {
    let mut parts = vec![format!("{rule} keeps it by none of its keys")];
    if let (Some(n), Some(k)) = (d.newest, rule.keep_last) {
        parts.push(format!("newest #{n}, past keep_last = {k}"));
    }
    parts.push(format!("pushed {} ago", days(now, d.facts.pushed)));
    match d.facts.pulled {
        Some(p) => parts.push(format!("last pulled {} ago", days(now, p))),
        None => parts.push("never pulled".into()),
    }
    parts.join("; ")
}

fn days(now: SystemTime, then: SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    if secs < 2 * 86_400 {
        format!("{} h", secs / 3600)
    } else {
        format!("{} days", secs / 86_400)
    }
}

/// The subject a cosign-style tag names: `sha256-<64 hex>` with an optional `.<kind>` suffix.
pub fn cosign_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.get(..64)?;
    let tail = rest.get(64..)?;
    if !(tail.is_empty() || tail.starts_with('.')) {
        return None;
    }
    Digest::sha256_hex(hex)
}

/// Decides every tag of `repository` under `rule`.
pub fn plan(
    rule: &Retention,
    rules: &Rules,
    repository: &str,
    mut tags: Vec<TagFacts>,
    now: SystemTime,
    grace: Duration,
) -> RepoPlan {
    tags.sort_by(|a, b| b.pushed.cmp(&a.pushed).then_with(|| a.tag.cmp(&b.tag)));
    let young = now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let within = |days: u32| {
        now.checked_sub(Duration::from_secs(u64::from(days) * 86_400))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let mut rank = 0usize;
    let mut decisions: Vec<TagDecision> = Vec::with_capacity(tags.len());
    for facts in tags {
        let subject = cosign_subject(&facts.tag);
        let newest = if subject.is_none() {
            rank += 1;
            Some(rank)
        } else {
            None
        };
        let mut why = Vec::new();
        if let Some(r) = rules.immutable(repository, &facts.tag) {
            why.push(Why::Immutable { by: r.to_string() });
        }
        if facts.pushed >= young {
            why.push(Why::Grace);
        }
        if !rule.judges_tags() {
            why.push(Why::NoTagKeys);
        }
        if subject.is_none() {
            if let Some(g) = rule.keep_tags.iter().find(|g| g.matches(&facts.tag)) {
                why.push(Why::KeepTags {
                    glob: g.as_str().to_string(),
                });
            }
            if let (Some(k), Some(n)) = (rule.keep_last, newest)
                && n <= k as usize
            {
                why.push(Why::KeepLast {
                    newest: n,
                    keep_last: k,
                });
            }
            if let Some(days) = rule.keep_pushed_within_days
                && facts.pushed >= within(days)
            {
                why.push(Why::KeepPushedWithinDays { days });
            }
            if let Some(days) = rule.keep_pulled_within_days
                && facts.pulled.is_some_and(|p| p >= within(days))
            {
                why.push(Why::KeepPulledWithinDays { days });
            }
        }
        decisions.push(TagDecision {
            facts,
            kept_by: why,
            newest,
        });
    }
    // Cosign-style tags follow the tags of the manifest they name.
    let tagged: HashSet<Digest> = decisions
        .iter()
        .filter(|d| d.newest.is_some())
        .map(|d| d.facts.digest.clone())
        .collect();
    let kept: HashSet<Digest> = decisions
        .iter()
        .filter(|d| d.newest.is_some() && d.kept())
        .map(|d| d.facts.digest.clone())
        .collect();
    for d in &mut decisions {
        if let Some(subject) = cosign_subject(&d.facts.tag) {
            if kept.contains(&subject) {
                d.kept_by.push(Why::SubjectKept {
                    subject: subject.to_string(),
                });
            } else if !tagged.contains(&subject) {
                d.kept_by.push(Why::SubjectNotTagged {
                    subject: subject.to_string(),
                });
            }
        }
    }
    // Over the ordinary tags: a signature tag left behind does not make a repository "not empty".
    let ordinary = || decisions.iter().filter(|d| d.newest.is_some());
    let kept_from_empty =
        !rule.allow_empty && ordinary().next().is_some() && ordinary().all(|d| !d.kept());
    if kept_from_empty {
        for d in decisions.iter_mut().filter(|d| !d.kept()) {
            d.kept_by.push(Why::WouldEmpty);
        }
    }
    RepoPlan {
        repository: repository.to_string(),
        rule: rule.to_string(),
        rule_number: rule.number,
        tags: decisions,
        kept_from_empty,
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::{ImmutableRule, RetentionRule};
    use super::*;

    const DAY: u64 = 86_400;

    fn rules(r: RetentionRule, immutable: &[&str]) -> Rules {
        let im: Vec<ImmutableRule> = if immutable.is_empty() {
            vec![]
        } else {
            vec![ImmutableRule {
                repositories: "**".into(),
                tags: immutable.iter().map(|s| s.to_string()).collect(),
            }]
        };
        Rules::compile(&[r], &im).unwrap()
    }

    fn base() -> RetentionRule {
        RetentionRule {
            repositories: "ci/**".into(),
            keep_tags: vec![],
            keep_last: None,
            keep_pushed_within_days: None,
            keep_pulled_within_days: None,
            untagged_after_days: None,
            allow_empty: false,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 * DAY)
    }

    fn tag(name: &str, digest: u8, pushed_days_ago: u64, pulled_days_ago: Option<u64>) -> TagFacts {
        TagFacts {
            tag: name.into(),
            digest: Digest::sha256_of(&[digest]),
            pushed: now() - Duration::from_secs(pushed_days_ago * DAY),
            pulled: pulled_days_ago.map(|d| now() - Duration::from_secs(d * DAY)),
        }
    }

    fn run(r: RetentionRule, immutable: &[&str], tags: Vec<TagFacts>) -> Vec<(String, bool)> {
        let rules = rules(r, immutable);
        let rule = rules.retention_for("ci/app").unwrap().clone();
        let p = plan(
            &rule,
            &rules,
            "ci/app",
            tags,
            now(),
            Duration::from_secs(3600),
        );
        let mut out: Vec<(String, bool)> = p
            .tags
            .iter()
            .map(|d| (d.facts.tag.clone(), d.kept()))
            .collect();
        out.sort();
        out
    }

    fn kept(v: &[(String, bool)]) -> Vec<&str> {
        v.iter()
            .filter(|(_, k)| *k)
            .map(|(t, _)| t.as_str())
            .collect()
    }

    #[test]
    fn any_keep_key_keeps_a_tag() {
        let r = RetentionRule {
            keep_tags: vec!["latest".into(), "v*".into()],
            keep_last: Some(2),
            keep_pushed_within_days: Some(30),
            keep_pulled_within_days: Some(14),
            ..base()
        };
        let tags = vec![
            tag("latest", 1, 400, None),
            tag("v1.0", 2, 300, None),
            tag("c1", 3, 1, None),      // newest
            tag("c2", 4, 2, None),      // second newest
            tag("c3", 5, 20, None),     // pushed within 30 days
            tag("c4", 6, 60, Some(3)),  // pulled lately
            tag("c5", 7, 60, Some(20)), // pulled, but not lately
            tag("c6", 8, 90, None),     // nothing keeps it
        ];
        assert_eq!(
            kept(&run(r, &[], tags)),
            ["c1", "c2", "c3", "c4", "latest", "v1.0"]
        );
    }

    #[test]
    fn keep_last_counts_by_push_time() {
        let r = RetentionRule {
            keep_last: Some(2),
            ..base()
        };
        let tags = (1..=5)
            .map(|i| tag(&format!("t{i}"), i, u64::from(i) * 10, None))
            .collect();
        assert_eq!(kept(&run(r, &[], tags)), ["t1", "t2"]);
    }

    #[test]
    fn immutable_and_young_tags_are_never_untagged() {
        let r = RetentionRule {
            keep_last: Some(1),
            ..base()
        };
        let mut young = tag("fresh", 3, 0, None);
        young.pushed = now() - Duration::from_secs(60);
        let tags = vec![
            tag("a", 1, 5, None),
            tag("v1", 2, 500, None),
            tag("old", 4, 50, None),
            young,
        ];
        assert_eq!(kept(&run(r, &["v*"], tags)), ["fresh", "v1"]);
    }

    #[test]
    fn a_rule_that_would_empty_the_repository_untags_none() {
        let r = RetentionRule {
            keep_tags: vec!["release".into()],
            ..base()
        };
        let tags = vec![tag("a", 1, 50, None), tag("b", 2, 60, None)];
        assert_eq!(kept(&run(r.clone(), &[], tags.clone())), ["a", "b"]);
        let r = RetentionRule {
            allow_empty: true,
            ..r
        };
        assert!(kept(&run(r, &[], tags)).is_empty());
    }

    #[test]
    fn a_leftover_signature_tag_does_not_count_as_a_tag_kept() {
        let r = RetentionRule {
            keep_tags: vec!["release".into()],
            ..base()
        };
        let orphan = format!("sha256-{}.sig", Digest::sha256_of(&[9]).hex());
        let tags = vec![
            tag("a", 1, 50, None),
            tag("b", 2, 60, None),
            tag(&orphan, 3, 60, None),
        ];
        let out = run(r, &[], tags);
        assert_eq!(
            kept(&out).len(),
            3,
            "the repository is not emptied: {out:?}"
        );
    }

    #[test]
    fn cosign_tags_follow_their_subject() {
        let r = RetentionRule {
            keep_last: Some(1),
            ..base()
        };
        let kept_digest = Digest::sha256_of(&[1]);
        let gone_digest = Digest::sha256_of(&[2]);
        let sig = |d: &Digest, ext: &str| format!("sha256-{}{ext}", d.hex());
        let tags = vec![
            tag("new", 1, 1, None),
            tag("old", 2, 50, None),
            tag(&sig(&kept_digest, ".sig"), 9, 50, None),
            tag(&sig(&gone_digest, ".att"), 9, 40, None),
            tag(&sig(&Digest::sha256_of(&[7]), ".sig"), 9, 40, None),
        ];
        let out = run(r, &[], tags);
        let k = kept(&out);
        assert!(k.contains(&"new"));
        assert!(k.contains(&sig(&kept_digest, ".sig").as_str()));
        assert!(!k.contains(&sig(&gone_digest, ".att").as_str()));
        assert!(
            k.contains(&sig(&Digest::sha256_of(&[7]), ".sig").as_str()),
            "subject untagged here: left alone"
        );
        assert!(!k.contains(&"old"));
    }

    #[test]
    fn a_rule_without_tag_keys_keeps_every_tag() {
        let r = RetentionRule {
            untagged_after_days: Some(2),
            ..base()
        };
        let tags = vec![tag("a", 1, 500, None)];
        assert_eq!(kept(&run(r, &[], tags)), ["a"]);
    }

    #[test]
    fn cosign_subjects_parse() {
        let hex = "a".repeat(64);
        assert!(cosign_subject(&format!("sha256-{hex}.sig")).is_some());
        assert!(cosign_subject(&format!("sha256-{hex}")).is_some());
        assert!(cosign_subject(&format!("sha256-{hex}x")).is_none());
        assert!(cosign_subject("sha256-abc.sig").is_none());
        assert!(cosign_subject("v1").is_none());
    }
}
