//! `[[retention]]` and `[[immutable]]`: the rules as the config file writes them (this module
//! defines that vocabulary, as the access policy defines `[[access]]`), and compiled for use.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::glob::{RepoGlob, TagGlob};

/// One `[[retention]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// The repositories it covers (see [`RepoGlob`]).
    pub repositories: String,
    /// Tags matching any of these globs are always kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// The most recently pushed tags kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pushed_within_days: Option<u32>,
    /// Pulled by any node within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pulled_within_days: Option<u32>,
    /// Untagged manifests older than this go (with what only they reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged_after_days: Option<u32>,
    /// Whether the rule may untag every tag of a repository.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
}

/// One `[[immutable]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableRule {
    pub repositories: String,
    pub tags: Vec<String>,
}

/// A retention rule, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Its place in the file, from 1, to name it in logs and reports.
    pub number: usize,
    pub repositories: RepoGlob,
    pub keep_tags: Vec<TagGlob>,
    pub keep_last: Option<u32>,
    pub keep_pushed_within_days: Option<u32>,
    pub keep_pulled_within_days: Option<u32>,
    pub untagged_after_days: Option<u32>,
    pub allow_empty: bool,
}

impl Retention {
    /// Whether the rule says anything about tags. One that only sets `untagged_after_days`
    /// cleans up untagged manifests and leaves every tag alone.
    pub fn judges_tags(&self) -> bool {
        !self.keep_tags.is_empty()
            || self.keep_last.is_some()
            || self.keep_pushed_within_days.is_some()
            || self.keep_pulled_within_days.is_some()
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retention rule {} (repositories {:?})",
            self.number,
            self.repositories.as_str()
        )
    }
}

/// An immutable-tags rule, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Immutable {
    pub number: usize,
    pub repositories: RepoGlob,
    pub tags: Vec<TagGlob>,
}

impl fmt::Display for Immutable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tags: Vec<&str> = self.tags.iter().map(TagGlob::as_str).collect();
        write!(
            f,
            "immutable rule {} (repositories {:?}, tags {:?})",
            self.number,
            self.repositories.as_str(),
            tags
        )
    }
}

/// Every rule, compiled: what the daemon, `registryd gc` and the web UI consult.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    retention: Vec<Retention>,
    immutable: Vec<Immutable>,
}

impl Rules {
    /// Compiles the rules; every problem is reported, each with the key it is under.
    pub fn compile(
        retention: &[RetentionRule],
        immutable: &[ImmutableRule],
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let mut rules = Rules::default();
        for (i, r) in retention.iter().enumerate() {
            let number = i + 1;
            let repositories = RepoGlob::parse(&r.repositories)
                .map_err(|e| problems.push(("retention.repositories", e)))
                .ok();
            let keep_tags: Vec<TagGlob> = r
                .keep_tags
                .iter()
                .filter_map(|t| {
                    TagGlob::parse(t)
                        .map_err(|e| problems.push(("retention.keep_tags", e)))
                        .ok()
                })
                .collect();
            if r.keep_last == Some(0) {
                problems.push((
                    "retention.keep_last",
                    format!("rule {number}: 0 keeps nothing; leave the key out instead"),
                ));
            }
            for (key, v) in [
                (
                    "retention.keep_pushed_within_days",
                    r.keep_pushed_within_days,
                ),
                (
                    "retention.keep_pulled_within_days",
                    r.keep_pulled_within_days,
                ),
            ] {
                if v == Some(0) {
                    problems.push((
                        key,
                        format!("rule {number}: 0 days keeps nothing; leave the key out instead"),
                    ));
                }
            }
            if let Some(repositories) = repositories {
                let rule = Retention {
                    number,
                    repositories,
                    keep_tags,
                    keep_last: r.keep_last,
                    keep_pushed_within_days: r.keep_pushed_within_days,
                    keep_pulled_within_days: r.keep_pulled_within_days,
                    untagged_after_days: r.untagged_after_days,
                    allow_empty: r.allow_empty,
                };
                if !rule.judges_tags() && rule.untagged_after_days.is_none() {
                    problems.push((
                        "retention",
                        format!(
                            "rule {number} ({:?}) sets no keep_* key and no untagged_after_days, so it does nothing",
                            r.repositories
                        ),
                    ));
                }
                if let Some(same) = rules
                    .retention
                    .iter()
                    .find(|o| o.repositories.as_str() == rule.repositories.as_str())
                {
                    problems.push((
                        "retention.repositories",
                        format!(
                            "rules {} and {number} both cover {:?}; only one can apply",
                            same.number, r.repositories
                        ),
                    ));
                }
                rules.retention.push(rule);
            }
        }
        for (i, r) in immutable.iter().enumerate() {
            let number = i + 1;
            let repositories = RepoGlob::parse(&r.repositories)
                .map_err(|e| problems.push(("immutable.repositories", e)))
                .ok();
            if r.tags.is_empty() {
                problems.push((
                    "immutable.tags",
                    format!("rule {number} names no tags (\"*\" makes every tag immutable)"),
                ));
            }
            let tags: Vec<TagGlob> = r
                .tags
                .iter()
                .filter_map(|t| {
                    TagGlob::parse(t)
                        .map_err(|e| problems.push(("immutable.tags", e)))
                        .ok()
                })
                .collect();
            if let Some(repositories) = repositories {
                rules.immutable.push(Immutable {
                    number,
                    repositories,
                    tags,
                });
            }
        }
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(problems)
        }
    }

    /// The retention rule that applies to `repository`: the most specific one matching it, the
    /// first in the file of equally specific ones.
    pub fn retention_for(&self, repository: &str) -> Option<&Retention> {
        let mut best: Option<&Retention> = None;
        for r in &self.retention {
            if !r.repositories.matches(repository) {
                continue;
            }
            if best.is_none_or(|b| r.repositories.specificity() > b.repositories.specificity()) {
                best = Some(r);
            }
        }
        best
    }

    /// The first immutable rule making `repository:tag` immutable, if any.
    pub fn immutable(&self, repository: &str, tag: &str) -> Option<&Immutable> {
        self.immutable
            .iter()
            .find(|r| r.repositories.matches(repository) && r.tags.iter().any(|t| t.matches(tag)))
    }

    /// Whether any immutable rule covers `repository` (for the UI's badge).
    pub fn has_immutable(&self, repository: &str) -> bool {
        self.immutable
            .iter()
            .any(|r| r.repositories.matches(repository))
    }

    pub fn is_empty(&self) -> bool {
        self.retention.is_empty() && self.immutable.is_empty()
    }

    pub fn retention_rules(&self) -> &[Retention] {
        &self.retention
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ret(repos: &str) -> RetentionRule {
        RetentionRule {
            repositories: repos.into(),
            keep_tags: vec![],
            keep_last: Some(3),
            keep_pushed_within_days: None,
            keep_pulled_within_days: None,
            untagged_after_days: None,
            allow_empty: false,
        }
    }

    #[test]
    fn the_most_specific_rule_applies() {
        let rules = Rules::compile(
            &[ret("**"), ret("ci/**"), ret("ci/frontend/*"), ret("ci/*")],
            &[],
        )
        .unwrap();
        let n = |repo: &str| rules.retention_for(repo).map(|r| r.number);
        assert_eq!(n("ci/frontend/web"), Some(3));
        assert_eq!(n("ci/app"), Some(4));
        assert_eq!(n("ci/a/b/c"), Some(2));
        assert_eq!(n("other"), Some(1));
    }

    #[test]
    fn immutable_rules_match_repository_and_tag() {
        let rules = Rules::compile(
            &[],
            &[ImmutableRule {
                repositories: "**".into(),
                tags: vec!["v*".into(), "release-*".into()],
            }],
        )
        .unwrap();
        assert!(rules.immutable("a/b", "v1.0").is_some());
        assert!(rules.immutable("a", "release-1").is_some());
        assert!(rules.immutable("a", "latest").is_none());
        let text = rules.immutable("x", "v2").unwrap().to_string();
        assert!(
            text.contains("immutable rule 1") && text.contains("v*"),
            "{text}"
        );
    }

    #[test]
    fn bad_rules_are_all_reported() {
        let mut bad = ret("Bad Name");
        bad.keep_tags = vec!["no spaces".into()];
        let mut nothing = ret("x");
        nothing.keep_last = None;
        let errs = Rules::compile(
            &[bad, nothing, ret("dup"), ret("dup")],
            &[ImmutableRule {
                repositories: "**".into(),
                tags: vec![],
            }],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "retention.repositories",
                "retention.keep_tags",
                "retention",
                "retention.repositories",
                "immutable.tags"
            ],
            "{errs:?}"
        );
    }
}
