//! The `Authorization` header (`auth`): the Basic credentials split and the Bearer tokens
//! registryd issues and verifies.
//!
//! Invariants: no panic; `Basic base64(user:password)` gives back exactly that user and password
//! (a user without `:`, any password), in any case of the scheme and with blanks around it; a
//! token registryd issued verifies to the principal, login time and account it was issued for,
//! whatever the user name; a token from another key, or one changed in any byte, does not verify;
//! no input verifies that was not issued (an HMAC forgery would be a crash here).
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use registryd::auth::token::now;
use registryd::auth::{Principal, TokenKey};
use registryd::fuzzing::parse_basic;

#[derive(Arbitrary, Debug)]
struct Input {
    header: String,
    user: String,
    password: String,
    scheme_case: u8,
    blanks: (u8, u8),
    key: [u8; 32],
    flip: (u16, u8),
}

fuzz_target!(|i: Input| {
    let _ = parse_basic(&i.header);
    let _ = registryd::auth::is_bearer(&i.header);
    let key = TokenKey::from_bytes(&i.key).unwrap();
    // Random text never verifies: only our own MAC does.
    assert!(key.verify(&i.header).is_none(), "{:?} verified", i.header);

    let user: String = i.user.chars().filter(|&c| c != ':').collect();
    let scheme = ["Basic", "basic", "BASIC", "bAsIc"][usize::from(i.scheme_case % 4)];
    let pad = |n: u8| " ".repeat(usize::from(n % 3));
    let header = format!(
        "{}{scheme} {}{}",
        pad(i.blanks.0),
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", i.password)),
        pad(i.blanks.1)
    );
    assert_eq!(
        parse_basic(&header),
        Ok((user.clone(), i.password.clone())),
        "{header:?}"
    );

    let who = if user.is_empty() {
        Principal::Anonymous
    } else {
        Principal::User(user.clone())
    };
    let account = key.account_tag(&user, &i.password);
    let login_at = now();
    let Some(token) = key.issue(&who, &account, login_at) else {
        return;
    };
    let claims = key
        .verify(&token)
        .unwrap_or_else(|| panic!("our token for {user:?} refused"));
    assert_eq!(
        (claims.who, claims.login_at, claims.account),
        (who, login_at, account)
    );
    let other = TokenKey::from_bytes(&i.key.map(|b| b ^ 0x5a)).unwrap();
    assert!(other.verify(&token).is_none(), "verified with another key");
    let mut bytes = token.clone().into_bytes();
    let at = usize::from(i.flip.0) % bytes.len();
    bytes[at] ^= i.flip.1 | 1;
    if let Ok(changed) = String::from_utf8(bytes) {
        // Base64 without padding has spare bits in its last character: a change there may decode
        // to the same bytes, which is the same token. Blanks around it are trimmed.
        let same = changed.trim() == token
            || changed
                .split_once('.')
                .zip(token.split_once('.'))
                .is_some_and(|(c, t)| {
                    let d = |s: &str| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(s)
                            .ok()
                    };
                    d(c.0) == d(t.0) && d(c.1) == d(t.1) && d(c.0).is_some()
                });
        if !same {
            assert!(
                key.verify(&changed).is_none(),
                "a changed token verified: {changed:?}"
            );
        }
    }
});
