//! htpasswd files (`auth::htpasswd`), read at start and on every reload from a file an operator
//! (or a tool) wrote.
//!
//! Invariants: no panic; every user a parsed file has is a user of one of its lines, with that
//! line's hash; and valid input is accepted: `USER:<bcrypt hash>` lines for distinct users without
//! `:` (as `htpasswd -B` writes them) parse, whatever the user names and the comments between them.
//! The first byte picks raw text (even) or built lines (odd, through `arbitrary`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use registryd::auth::Users;

/// A real `htpasswd -B` hash (of "x", cost 5) in each accepted prefix.
const HASHES: [&str; 3] = [
    "$2y$05$B0jN8qgaO5AszKUPQrT5NugfuJbVc3mYLwVrN.DH01F9UL.p2lbG.",
    "$2b$05$B0jN8qgaO5AszKUPQrT5NugfuJbVc3mYLwVrN.DH01F9UL.p2lbG.",
    "$2a$05$B0jN8qgaO5AszKUPQrT5NugfuJbVc3mYLwVrN.DH01F9UL.p2lbG.",
];

#[derive(Arbitrary, Debug)]
struct Built {
    users: Vec<(String, u8, Option<String>, bool)>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(users) = Users::parse(&text) {
            let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
            assert!(users.len() <= lines.len());
            for l in &lines {
                if let Some((u, h)) = l.split_once(':')
                    && !l.trim_start().starts_with('#')
                    && !l.trim().is_empty()
                {
                    assert_eq!(users.hash_of(u), Some(h), "line {l:?}");
                }
            }
        }
        return;
    }
    let Ok(b) = Built::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let mut text = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut want = Vec::new();
    for (user, h, comment, crlf) in &b.users {
        // A user name as htpasswd takes it: one line, no ':'; not blank and not a comment.
        let user: String = user
            .chars()
            .filter(|c| !matches!(c, ':' | '\n' | '\r'))
            .collect();
        if user.trim().is_empty()
            || user.trim_start().starts_with('#')
            || !seen.insert(user.clone())
        {
            continue;
        }
        let hash = HASHES[usize::from(*h) % 3];
        let eol = if *crlf { "\r\n" } else { "\n" };
        text.push_str(&format!("{user}:{hash}{eol}"));
        if let Some(c) = comment {
            text.push_str(&format!("# {}{eol}", c.replace(['\n', '\r'], " ")));
        }
        want.push((user, hash));
    }
    let users = Users::parse(&text).unwrap_or_else(|e| panic!("valid file refused: {e}\n{text}"));
    assert_eq!(users.len(), want.len());
    for (u, h) in &want {
        assert_eq!(users.hash_of(u), Some(*h), "user {u:?}");
    }
});
