//! Repository names, by the OCI Distribution grammar:
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
//!
//! A name that parses has no empty, `.` or `..` component and no character a filesystem treats
//! specially, so it maps to a directory path below the storage root and never outside it.

use std::fmt;
use std::str::FromStr;

/// Longest name accepted; clients refuse names whose full reference exceeds 255 characters.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid repository name {0:?}: use lowercase components [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'"
)]
pub struct NameError(pub String);

/// A repository name that passed the grammar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name lies under `prefix`, as a path: `hub/library/x` is under `hub`, and
    /// neither `hub` nor `hubby/x` is.
    pub fn is_under(&self, prefix: &str) -> bool {
        self.0
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().is_some_and(|&x| alnum(x)) || !b.last().is_some_and(|&x| alnum(x)) {
        return false;
    }
    // Separators: '.', '_', '__' or any run of '-'; each must sit between alphanumerics.
    let mut i = 0;
    while let Some(&x) = b.get(i) {
        if alnum(x) {
            i += 1;
            continue;
        }
        let start = i;
        while b.get(i).is_some_and(|&x| !alnum(x)) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_a_prefix_as_a_path() {
        let n: RepoName = "hub/library/x".parse().unwrap();
        assert!(n.is_under("hub") && n.is_under("hub/library"));
        assert!(!n.is_under("hu") && !n.is_under("hub/library/x"));
    }

    #[test]
    fn accepts_grammar() {
        for ok in [
            "a",
            "library/alpine",
            "a/b/c/d",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "v1.2",
            "0",
            "ghcr.io/org/x", // a proxy-style prefix is just more components
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok:?} rejected");
        }
    }

    #[test]
    fn rejects_outside_grammar() {
        for bad in [
            "", "../x", "a//b", "/a", "a/", "A", "a/B", "a..b", "a___b", "a_-b", "-a", "a-", ".a",
            "a/.", "a/..", "a b", "a\0b", "a%2fb", "_a",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} accepted");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }
}
