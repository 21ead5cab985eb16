//! The globs of `[[retention]]` and `[[immutable]]` rules: over repository names (`*` and `?`
//! within one path component, `**` as a whole component for any number of them, none included)
//! and over tag names (`*` and `?` anywhere). Pure, and small enough to read in one go.

use std::fmt;

/// A glob over repository names, such as `ci/**` or `team-*/app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoGlob {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `**`: any number of components.
    Any,
    /// One component, matched by [`wild`].
    One(Vec<char>),
}

/// A glob over tag names, such as `v*` or `release-?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagGlob {
    text: String,
    chars: Vec<char>,
}

impl RepoGlob {
    /// Parses a repository glob; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err(
                "an empty repository glob matches nothing (\"**\" matches every repository)".into(),
            );
        }
        let mut parts = Vec::new();
        for c in s.split('/') {
            if c == "**" {
                parts.push(Part::Any);
                continue;
            }
            if c.is_empty() {
                return Err(format!("{s:?} has an empty path component"));
            }
            if c.contains("**") {
                return Err(format!(
                    "{s:?}: \"**\" stands alone between slashes (write \"a/**\", not \"a**\")"
                ));
            }
            if let Some(bad) = c
                .chars()
                .find(|ch| !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '_' | '-' | '*' | '?'))
            {
                return Err(format!(
                    "{s:?}: {bad:?} cannot be in a repository name (lower-case letters, digits, '.', '_', '-', and the wildcards '*', '?', '**')"
                ));
            }
            parts.push(Part::One(c.chars().collect()));
        }
        Ok(RepoGlob {
            text: s.to_string(),
            parts,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        let comps: Vec<&str> = name.split('/').collect();
        repo_match(&self.parts, &comps)
    }

    /// How specific the glob is: more literal characters first, then fewer `**`, then fewer
    /// single wildcards. Of two rules matching a repository, the more specific one applies.
    pub fn specificity(&self) -> (usize, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
        let mut literal = 0;
        let mut any = 0;
        let mut wild_chars = 0;
        for p in &self.parts {
            match p {
                Part::Any => any += 1,
                Part::One(cs) => {
                    for c in cs {
                        if matches!(c, '*' | '?') {
                            wild_chars += 1;
                        } else {
                            literal += 1;
                        }
                    }
                }
            }
        }
        (
            literal,
            std::cmp::Reverse(any),
            std::cmp::Reverse(wild_chars),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn repo_match(parts: &[Part], comps: &[&str]) -> bool {
    match parts.split_first() {
        None => comps.is_empty(),
        Some((Part::Any, rest)) => {
            // `**` takes none, one, ... or all of the remaining components.
            (0..=comps.len()).any(|k| comps.get(k..).is_some_and(|tail| repo_match(rest, tail)))
        }
        Some((Part::One(p), rest)) => match comps.split_first() {
            Some((c, tail)) => wild(p, &c.chars().collect::<Vec<_>>()) && repo_match(rest, tail),
            None => false,
        },
    }
}

impl TagGlob {
    /// Parses a tag glob: a tag's characters (letters, digits, `_`, `.`, `-`) and `*`, `?`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 128 {
            return Err(format!("{s:?} is not a tag glob (1 to 128 characters)"));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?')))
        {
            return Err(format!(
                "{s:?}: {bad:?} cannot be in a tag (letters, digits, '_', '.', '-', and the wildcards '*', '?')"
            ));
        }
        Ok(TagGlob {
            text: s.to_string(),
            chars: s.chars().collect(),
        })
    }

    pub fn matches(&self, tag: &str) -> bool {
        wild(&self.chars, &tag.chars().collect::<Vec<_>>())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for RepoGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for TagGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*` (any run of characters) and `?` (one character) over `text`, iteratively with one
/// backtrack point: linear in practice, quadratic at worst, never exponential.
fn wild(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some('*'), _) => {
                star = Some((p, t));
                p += 1;
            }
            (Some(pc), Some(tc)) if *pc == '?' || pc == tc => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RepoGlob {
        RepoGlob::parse(s).unwrap()
    }

    #[test]
    fn repository_globs_keep_to_their_components() {
        assert!(r("**").matches("a"));
        assert!(r("**").matches("a/b/c"));
        assert!(r("ci/**").matches("ci/app"));
        assert!(r("ci/**").matches("ci/team/app"));
        assert!(r("ci/**").matches("ci"), "** takes none too");
        assert!(!r("ci/**").matches("cid/app"));
        assert!(r("ci/*").matches("ci/app"));
        assert!(
            !r("ci/*").matches("ci/team/app"),
            "* stays in its component"
        );
        assert!(r("team-*/app").matches("team-a/app"));
        assert!(!r("team-*/app").matches("team-a/b/app"));
        assert!(r("**/app").matches("x/y/app"));
        assert!(r("**/app").matches("app"));
        assert!(r("a/**/z").matches("a/z"));
        assert!(r("a/**/z").matches("a/b/c/z"));
        assert!(!r("a/**/z").matches("a/b/c"));
        assert!(r("lib?").matches("lib1"));
        assert!(!r("lib?").matches("lib"));
        assert!(r("exact/name").matches("exact/name"));
        assert!(!r("exact/name").matches("exact/name/more"));
    }

    #[test]
    fn bad_globs_say_what_is_wrong() {
        for bad in ["", "a//b", "a**", "A/b", "a b", "a/b:c"] {
            assert!(RepoGlob::parse(bad).is_err(), "{bad}");
        }
        for bad in ["", "v 1", "a/b", &"x".repeat(129)] {
            assert!(TagGlob::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_globs() {
        let t = |s: &str| TagGlob::parse(s).unwrap();
        assert!(t("v*").matches("v1.2.3"));
        assert!(t("v*").matches("v"));
        assert!(!t("v*").matches("main"));
        assert!(t("release-*").matches("release-2026.12"));
        assert!(t("*-rc?").matches("1.0-rc1"));
        assert!(!t("*-rc?").matches("1.0-rc10"));
        assert!(t("latest").matches("latest"));
        assert!(!t("latest").matches("latest2"));
        assert!(t("*a*b*c").matches("xxaxxbxxc"));
        assert!(!t("*a*b*c").matches("xxaxxcxxb"));
        assert!(!t(&"*a".repeat(30)).matches(&"a".repeat(29)));
    }

    #[test]
    fn the_more_specific_glob_sorts_higher() {
        assert!(r("ci/frontend/*").specificity() > r("ci/**").specificity());
        assert!(r("ci/**").specificity() > r("**").specificity());
        assert!(r("ci/app").specificity() > r("ci/ap?").specificity());
        assert!(r("ci/*").specificity() > r("ci/**").specificity());
    }
}
