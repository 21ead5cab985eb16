//! Tags and references: a manifest is addressed by a tag (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`) or
//! by a digest.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag {0:?}: up to 128 characters of [a-zA-Z0-9_.-], not starting with '.' or '-'")]
pub struct TagError(pub String);

/// A tag that passed the grammar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && b.first()
                .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(TagError(s.to_string()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a manifest is addressed in `/v2/<name>/manifests/<reference>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// A reference containing ':' can only be a digest (':' is not allowed in tags).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok:?}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", &"a".repeat(129), "a b"] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        let d = Digest::sha256_of(b"x").to_string();
        assert!(matches!(d.parse(), Ok(Reference::Digest(_))));
        assert!(matches!(
            "sha256:zz".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            "..".parse::<Reference>(),
            Err(ReferenceError::Tag(_))
        ));
    }
}
