//! Who is logged in to the web UI: server-side sessions in this process's memory, found by the
//! random id in the session cookie.
//!
//! Kept here rather than in a signed cookie so that logging out ends the session for good (a
//! signed cookie stays valid until it expires, wherever a copy of it went), and so that the store
//! is bounded: at most `max` sessions, each ending after `idle` without use and `absolute` after
//! the login whatever happens; when full, the session used longest ago makes room. The map is
//! keyed by the SHA-256 of the id, so neither a lookup's timing nor the process's memory gives
//! away a usable cookie. Sessions do not survive a restart and are not shared between nodes: a
//! browser talks to one node, and logs in again after that node restarts.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// How many sessions may live, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max: usize,
    /// A session unused this long is over.
    pub idle: Duration,
    /// A session this old is over, however busy.
    pub absolute: Duration,
}

/// Sessions kept at most: a few MB of memory, more than the operators of any cluster this daemon
/// serves, and a bound on what logging in over and over can take.
pub const MAX_SESSIONS: usize = 10_000;

impl Limits {
    /// The limits of `[ui]` (`session_idle_secs`, `session_max_secs`), with [`MAX_SESSIONS`].
    pub fn from_settings(ui: &crate::http::settings::UiSettings) -> Limits {
        Limits {
            max: MAX_SESSIONS,
            idle: ui.session_idle,
            absolute: ui.session_max,
        }
    }
}

/// A live session, as the pages use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// The account's tag when the session began (`Auth::account_tag`): a session whose account
    /// changed since (removed, new password) is over.
    pub account: [u8; 32],
    /// The token every state-changing form of this session carries (see `csrf`).
    pub csrf: String,
}

struct Entry {
    session: Session,
    created: Instant,
    used: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

/// Why no session could be made.
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed: {0}")]
pub struct NoRandomness(String);

/// The UI's sessions: one store per process, like the metrics registry, since a browser's cookie
/// names a session of the process that made it.
pub fn store() -> &'static Sessions {
    static STORE: LazyLock<Sessions> = LazyLock::new(Sessions::default);
    &STORE
}

/// 32 random bytes from the operating system, URL-safe base64 (43 characters): session ids and
/// CSRF tokens.
pub fn random_token() -> Result<String, NoRandomness> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding the map leaves plain data behind; keep using it.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins a session for `user` (just logged in) and returns the id for its cookie.
    pub fn open(
        &self,
        user: &str,
        account: [u8; 32],
        limits: Limits,
        now: Instant,
    ) -> Result<(String, Session), NoRandomness> {
        let id = random_token()?;
        let session = Session {
            user: user.to_string(),
            account,
            csrf: random_token()?,
        };
        let mut map = self.lock();
        if map.len() >= limits.max {
            map.retain(|_, e| live(e, limits, now));
        }
        while map.len() >= limits.max.max(1) {
            let Some(oldest) = map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            key(&id),
            Entry {
                session: session.clone(),
                created: now,
                used: now,
            },
        );
        Ok((id, session))
    }

    /// The live session `id` names, marked used now; an expired one is removed.
    pub fn find(&self, id: &str, limits: Limits, now: Instant) -> Option<Session> {
        let k = key(id);
        let mut map = self.lock();
        let entry = map.get_mut(&k)?;
        if !live(entry, limits, now) {
            map.remove(&k);
            return None;
        }
        entry.used = now;
        Some(entry.session.clone())
    }

    /// Ends the session `id` (logout, or an account that changed).
    pub fn close(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn live(e: &Entry, limits: Limits, now: Instant) -> bool {
    now.saturating_duration_since(e.used) < limits.idle
        && now.saturating_duration_since(e.created) < limits.absolute
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max: 3,
        idle: Duration::from_secs(60),
        absolute: Duration::from_secs(300),
    };

    #[test]
    fn a_session_is_found_by_its_id_only() {
        let s = Sessions::default();
        let now = Instant::now();
        let (id, made) = s.open("alice", [1; 32], L, now).unwrap();
        assert_eq!(id.len(), 43);
        assert_eq!(s.find(&id, L, now), Some(made.clone()));
        assert_eq!(made.user, "alice");
        assert_ne!(made.csrf, id, "the form token is not the cookie");
        assert_eq!(s.find("not-an-id", L, now), None);
        let (other, _) = s.open("alice", [1; 32], L, now).unwrap();
        assert_ne!(other, id, "every login gets a session of its own");
    }

    #[test]
    fn idle_sessions_end_and_use_keeps_them() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (used, _) = s.open("a", [0; 32], L, t0).unwrap();
        let (idle, _) = s.open("b", [0; 32], L, t0).unwrap();
        for k in 1..=4u64 {
            // Used every 40 s: within the idle limit each time.
            assert!(s.find(&used, L, t0 + Duration::from_secs(40 * k)).is_some());
        }
        assert_eq!(s.find(&idle, L, t0 + Duration::from_secs(61)), None);
        assert_eq!(s.len(), 1, "an expired session found is removed");
    }

    #[test]
    fn sessions_end_at_the_absolute_limit_however_busy() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, _) = s.open("a", [0; 32], L, t0).unwrap();
        for k in 1..=9u64 {
            // Used every 30 s up to 270 s: never idle.
            assert!(s.find(&id, L, t0 + Duration::from_secs(30 * k)).is_some());
        }
        assert_eq!(s.find(&id, L, t0 + Duration::from_secs(300)), None);
    }

    #[test]
    fn the_store_is_bounded_and_evicts_the_longest_unused() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let (a, _) = s.open("a", [0; 32], L, at(0)).unwrap();
        let (b, _) = s.open("b", [0; 32], L, at(1)).unwrap();
        let (c, _) = s.open("c", [0; 32], L, at(2)).unwrap();
        // a is used after b: b is the one used longest ago when d arrives.
        assert!(s.find(&a, L, at(3)).is_some());
        let (d, _) = s.open("d", [0; 32], L, at(4)).unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.find(&b, L, at(5)).is_none(), "evicted");
        for id in [&a, &c, &d] {
            assert!(s.find(id, L, at(5)).is_some());
        }
        // Expired sessions make room before any live one is evicted.
        let later = at(5) + Duration::from_secs(61);
        let (e, _) = s.open("e", [0; 32], L, later).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s.find(&e, L, later).is_some());
    }

    #[test]
    fn closing_ends_a_session() {
        let s = Sessions::default();
        let now = Instant::now();
        let (id, _) = s.open("a", [0; 32], L, now).unwrap();
        s.close(&id);
        assert_eq!(s.find(&id, L, now), None);
        assert!(s.is_empty());
    }
}
