//! Bearer tokens for listeners where anonymous clients may pull and accounts exist.
//!
//! Why: docker, podman, skopeo and containerd learn how to authenticate from the `/v2/` ping only.
//! A 200 there makes them send no credentials ever after (a `docker login` then "succeeds" without a
//! check and the push gets 401), and a Basic challenge makes clients without a login fail ("no basic
//! auth credentials"). The token flow serves both: `/v2/` answers 401 with a Bearer challenge,
//! clients without a login fetch an anonymous token from `/auth/token`, logged-in clients fetch one
//! with their Basic credentials, and every request is then authorized by the access policy as usual.
//!
//! A token is `base64url(user "\n" expiry "\n" login_at "\n" account) "." base64url(HMAC-SHA256(key,
//! that))`. `account` is a keyed tag of the user's htpasswd entry, so a token stops working when the
//! user is deleted or changes password; `login_at` bounds how long tokens can be traded for fresh
//! ones without the password (`MAX_SESSION_SECS`). The key lives on
//! the shared storage (`Storage::token_key`, created once by whichever node comes first, from the
//! bytes of a [`TokenKey::random`] key), so a token from one node is good on every node behind the
//! same name. Storage keeps the key as opaque bytes; this module only turns bytes into a key and back.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest as _, Sha256};

use super::Principal;

/// How long a token is good for, in seconds (clients fetch a new one when it runs out).
pub const LIFETIME_SECS: u64 = 300;

/// How long a chain of tokens may be refreshed with tokens alone after the login (Basic
/// credentials, or an anonymous request) that began it. Clients with a login send it again for
/// each token, so only a token holder without the password ever meets this bound.
pub const MAX_SESSION_SECS: u64 = 3600;

/// The secret that signs tokens.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key for this process only (when the shared one cannot be read).
    pub fn random() -> TokenKey {
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        TokenKey(k)
    }

    /// A key from its 32 bytes (as storage keeps them); `None` for any other length.
    pub fn from_bytes(b: &[u8]) -> Option<TokenKey> {
        <[u8; 32]>::try_from(b).ok().map(TokenKey)
    }

    /// The key's bytes, to store it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        // HMAC-SHA256 (RFC 2104) with a 32-byte key, which is shorter than the 64-byte block.
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for ((i, o), b) in ipad.iter_mut().zip(opad.iter_mut()).zip(&self.0) {
            *i ^= b;
            *o ^= b;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// A tag that changes whenever `user`'s account changes (removed and re-added, new password):
    /// a token carries the tag of the account it was issued for, so it dies with that account.
    /// Keyed, so the token (readable by its holder) says nothing about the password hash.
    pub fn account_tag(&self, user: &str, hash: &str) -> String {
        let msg = format!("account\0{user}\0{hash}");
        hex::encode(&self.mac(msg.as_bytes())[..12])
    }

    /// A token for `who` (whose account carries `account`, the tag of [`Self::account_tag`]; empty
    /// for anonymous), in a session that began at `login_at`: good for `LIFETIME_SECS`, never past
    /// `MAX_SESSION_SECS` after the login. `None` once the session is over.
    pub fn issue(&self, who: &Principal, account: &str, login_at: u64) -> Option<String> {
        let now = now();
        let end = login_at.saturating_add(MAX_SESSION_SECS);
        let expiry = now.saturating_add(LIFETIME_SECS).min(end);
        (expiry > now).then(|| self.issue_at(who, account, login_at, expiry))
    }

    fn issue_at(&self, who: &Principal, account: &str, login_at: u64, expiry: u64) -> String {
        let payload = format!("{}\n{expiry}\n{login_at}\n{account}", who.name());
        let mac = self.mac(payload.as_bytes());
        format!("{}.{}", B64.encode(payload), B64.encode(mac))
    }

    /// What a token says, if it is ours and still good. The caller checks the account tag against
    /// the account as it is now.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (payload, mac) = token.trim().split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let mac = B64.decode(mac).ok()?;
        let expected = self.mac(&payload);
        // Constant-time comparison: the MAC must not be guessable byte by byte.
        if mac.len() != expected.len()
            || mac
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return None;
        }
        let text = String::from_utf8(payload).ok()?;
        // The user name comes first and is the only field that could hold a newline.
        let mut fields = text.rsplitn(4, '\n');
        let account = fields.next()?.to_string();
        let login_at = fields.next()?.parse::<u64>().ok()?;
        let expiry = fields.next()?.parse::<u64>().ok()?;
        let user = fields.next()?;
        if expiry < now() {
            return None;
        }
        Some(Claims {
            who: if user.is_empty() {
                Principal::Anonymous
            } else {
                Principal::User(user.to_string())
            },
            login_at,
            account,
        })
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub who: Principal,
    /// When the login that began this chain of tokens happened (seconds since the epoch).
    pub login_at: u64,
    /// The account tag the token was issued for (empty for anonymous).
    pub account: String,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_vector_shape() {
        // RFC 4231 test case 2 uses a short key ("Jefe"), padded with zeros like ours.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = TokenKey(key).mac(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_verify_only_when_ours_and_fresh() {
        let k = TokenKey::random();
        let alice = Principal::User("alice".into());
        let tag = k.account_tag("alice", "$2y$05$hash");
        let t = k.issue(&alice, &tag, now()).unwrap();
        let claims = k.verify(&t).unwrap();
        assert_eq!((claims.who, claims.account), (alice.clone(), tag.clone()));
        let anon = k.issue(&Principal::Anonymous, "", now()).unwrap();
        assert_eq!(k.verify(&anon).unwrap().who, Principal::Anonymous);
        assert_eq!(
            k.verify(&k.issue_at(&alice, &tag, now(), now() - 1)),
            None,
            "expired"
        );
        assert_eq!(TokenKey::random().verify(&t), None, "other key");
        let forged = format!(
            "{}.{}",
            B64.encode(format!("root\n99999999999\n{}\n{tag}", now())),
            &t[t.find('.').unwrap() + 1..]
        );
        assert_eq!(k.verify(&forged), None, "payload swapped");
        assert_eq!(k.verify("garbage"), None);
        // A user name with newlines cannot shift the fields.
        let odd = Principal::User("a\n1\n2".into());
        assert_eq!(
            k.verify(&k.issue(&odd, "t", now()).unwrap()).unwrap().who,
            odd
        );
    }

    #[test]
    fn account_tags_follow_the_entry() {
        let k = TokenKey::random();
        let a = k.account_tag("alice", "$2y$05$one");
        assert_eq!(a, k.account_tag("alice", "$2y$05$one"));
        assert_ne!(a, k.account_tag("alice", "$2y$05$two"), "new password");
        assert_ne!(a, k.account_tag("bob", "$2y$05$one"), "other user");
        assert_ne!(a, TokenKey::random().account_tag("alice", "$2y$05$one"));
    }

    #[test]
    fn a_session_ends_max_session_secs_after_the_login() {
        let k = TokenKey::random();
        let alice = Principal::User("alice".into());
        let fresh = k.verify(&k.issue(&alice, "t", now()).unwrap()).unwrap();
        assert!(fresh.login_at <= now());
        // Near the end of the session, the token runs only to the session's end.
        let late = now() - MAX_SESSION_SECS + 10;
        let t = k.issue(&alice, "t", late).unwrap();
        let (payload, _) = t.split_once('.').unwrap();
        let text = String::from_utf8(B64.decode(payload).unwrap()).unwrap();
        let expiry: u64 = text.split('\n').nth(1).unwrap().parse().unwrap();
        assert_eq!(expiry, late + MAX_SESSION_SECS);
        assert_eq!(k.issue(&alice, "t", now() - MAX_SESSION_SECS), None);
    }
}
