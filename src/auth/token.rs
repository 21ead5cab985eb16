//! Bearer tokens for listeners where anonymous clients may pull and accounts exist.
//!
//! Why: docker, podman, skopeo and containerd learn how to authenticate from the `/v2/` ping only.
//! A 200 there makes them send no credentials ever after (a `docker login` then "succeeds" without a
//! check and the push gets 401), and a Basic challenge makes clients without a login fail ("no basic
//! auth credentials"). The token flow serves both: `/v2/` answers 401 with a Bearer challenge,
//! clients without a login fetch an anonymous token from `/auth/token`, logged-in clients fetch one
//! with their Basic credentials, and every request is then authorized by the access policy as usual.
//!
//! A token is `base64url(user "\n" expiry) "." base64url(HMAC-SHA256(key, that))`. The key lives on
//! the shared storage (`registryd/auth/token.key`, created once by whichever node comes first), so a
//! token from one node is good on every node behind the same name.

use std::io::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest as _, Sha256};

use super::Principal;

/// How long a token is good for, in seconds (clients fetch a new one when it runs out).
pub const LIFETIME_SECS: u64 = 300;

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

    /// Reads the key at `path`, or creates it there if no node has yet. Creation publishes with
    /// `link`, which fails when the file exists, so two nodes starting at once agree on one key.
    pub fn load_or_create(path: &Path) -> std::io::Result<TokenKey> {
        if let Some(k) = Self::read(path)? {
            return Ok(k);
        }
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("token key path has no parent"))?;
        crate::storage::atomic::create_dir_all_durable(dir)?;
        let fresh = TokenKey::random();
        let tmp = dir.join(format!(".token.key.{}", uuid::Uuid::new_v4()));
        let made = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&fresh.0)?;
            f.sync_all()?;
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => crate::storage::atomic::fsync_dir(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        made?;
        Self::read(path)?.ok_or_else(|| std::io::Error::other("token key vanished after creation"))
    }

    /// A key from its 32 bytes (as stored); `None` for any other length.
    pub fn from_bytes(b: &[u8]) -> Option<TokenKey> {
        <[u8; 32]>::try_from(b).ok().map(TokenKey)
    }

    /// The key's bytes, to store it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn read(path: &Path) -> std::io::Result<Option<TokenKey>> {
        match std::fs::read(path) {
            Ok(b) if b.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&b);
                Ok(Some(TokenKey(k)))
            }
            Ok(b) => Err(std::io::Error::other(format!(
                "{} holds {} bytes, not a 32-byte key; remove it and restart",
                path.display(),
                b.len()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        // HMAC-SHA256 (RFC 2104) with a 32-byte key, which is shorter than the 64-byte block.
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, b) in self.0.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
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

    /// A token for `who`, good for `LIFETIME_SECS`.
    pub fn issue(&self, who: &Principal) -> String {
        self.issue_at(who, now() + LIFETIME_SECS)
    }

    fn issue_at(&self, who: &Principal, expiry: u64) -> String {
        let payload = format!("{}\n{expiry}", who.name());
        let mac = self.mac(payload.as_bytes());
        format!("{}.{}", B64.encode(payload), B64.encode(mac))
    }

    /// Who a token speaks for, if it is ours and still good.
    pub fn verify(&self, token: &str) -> Option<Principal> {
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
        let (user, expiry) = text.rsplit_once('\n')?;
        if expiry.parse::<u64>().ok()? < now() {
            return None;
        }
        Some(if user.is_empty() {
            Principal::Anonymous
        } else {
            Principal::User(user.to_string())
        })
    }
}

fn now() -> u64 {
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
        assert_eq!(k.verify(&k.issue(&alice)), Some(alice.clone()));
        assert_eq!(
            k.verify(&k.issue(&Principal::Anonymous)),
            Some(Principal::Anonymous)
        );
        assert_eq!(k.verify(&k.issue_at(&alice, now() - 1)), None, "expired");
        assert_eq!(
            TokenKey::random().verify(&k.issue(&alice)),
            None,
            "other key"
        );
        let t = k.issue(&alice);
        let forged = format!(
            "{}.{}",
            B64.encode("root\n99999999999"),
            &t[t.find('.').unwrap() + 1..]
        );
        assert_eq!(k.verify(&forged), None, "payload swapped");
        assert_eq!(k.verify("garbage"), None);
    }

    #[test]
    fn nodes_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("registryd/auth/token.key");
        let a = TokenKey::load_or_create(&p).unwrap();
        let b = TokenKey::load_or_create(&p).unwrap();
        assert_eq!(a.0, b.0);
        std::fs::write(&p, b"short").unwrap();
        assert!(TokenKey::load_or_create(&p).is_err());
    }
}
