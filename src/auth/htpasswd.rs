//! The htpasswd file, as `htpasswd -B` writes it: `user:$2y$05$...` per line. Only bcrypt is
//! accepted (`$2y$`, `$2b$`, `$2a$`): MD5-crypt, SHA-1 and plain entries are cheap to brute-force, and
//! a file that holds one is refused whole, naming the line, rather than silently locking that user out.

use std::collections::HashMap;

/// Users and their bcrypt hashes.
#[derive(Debug, Clone, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.hashes.get(user).map(String::as_str)
    }

    /// The highest bcrypt cost among the users (what a failed login of an unknown user must cost).
    pub fn max_cost(&self) -> Option<u32> {
        self.hashes
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Parses the file's text; the error names the first bad line and what to do about it.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut hashes = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let n = i + 1;
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {n}: not USER:HASH"));
            };
            if user.is_empty() {
                return Err(format!("line {n}: empty user name"));
            }
            let bcrypt_prefix = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
            if !bcrypt_prefix {
                return Err(format!(
                    "line {n}: user {user:?} has a {} hash; only bcrypt is accepted (create entries with `htpasswd -B`)",
                    kind(hash)
                ));
            }
            if let Err(e) = hash.parse::<bcrypt::HashParts>() {
                return Err(format!(
                    "line {n}: user {user:?}: malformed bcrypt hash ({e})"
                ));
            }
            if hashes.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(format!("line {n}: user {user:?} appears twice"));
            }
        }
        Ok(Users { hashes })
    }
}

/// Names the hash scheme an entry uses, for the error message.
fn kind(hash: &str) -> &'static str {
    if hash.starts_with("$apr1$") {
        "MD5 (apr1)"
    } else if hash.starts_with("{SHA}") {
        "SHA-1"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "SHA-crypt"
    } else if hash.starts_with('$') {
        "non-bcrypt crypt"
    } else {
        "plain-text or DES"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB alice secret`
    const ALICE: &str = "alice:$2y$05$B0jN8qgaO5AszKUPQrT5NugfuJbVc3mYLwVrN.DH01F9UL.p2lbG.";

    #[test]
    fn accepts_bcrypt_and_skips_comments() {
        let u = Users::parse(&format!("# users\n\n{ALICE}\r\n")).unwrap();
        assert_eq!(u.len(), 1);
        assert!(u.hash_of("alice").unwrap().starts_with("$2y$05$"));
        assert!(u.hash_of("bob").is_none());
    }

    #[test]
    fn refuses_other_schemes_naming_the_line() {
        let e = Users::parse(&format!("{ALICE}\nbob:$apr1$abc$def\n")).unwrap_err();
        assert!(
            e.starts_with("line 2: user \"bob\" has a MD5 (apr1) hash"),
            "{e}"
        );
        assert!(e.contains("htpasswd -B"), "{e}");
        let e = Users::parse("carol:{SHA}abc=\n").unwrap_err();
        assert!(e.contains("SHA-1"), "{e}");
        let e = Users::parse("dave:plain\n").unwrap_err();
        assert!(e.contains("plain-text"), "{e}");
        let e = Users::parse("nocolon\n").unwrap_err();
        assert_eq!(e, "line 1: not USER:HASH");
        let e = Users::parse("eve:$2y$05$short\n").unwrap_err();
        assert!(e.contains("malformed bcrypt"), "{e}");
        let e = Users::parse(&format!("{ALICE}\n{ALICE}\n")).unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
    }
}
