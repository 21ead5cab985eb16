//! Authentication and authorization: who sent a request (HTTP Basic against an htpasswd file of
//! bcrypt hashes) and what the access policy lets them do (`policy`).
//!
//! bcrypt is slow on purpose (tens of milliseconds), so it runs on the blocking pool, and a
//! successful check is remembered for `auth.cache_secs` under a salted SHA-256 of the credentials
//! (never the password itself): a pull of 50 layers costs one bcrypt, not 50. Failed logins are
//! logged with the client and user (never the password) and, past `auth.max_failures` in a minute,
//! refused for the rest of that minute without running bcrypt at all.

pub mod htpasswd;
pub mod policy;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

pub use htpasswd::Users;
pub use policy::{Action, Anonymous, Policy, Principal};
pub use token::TokenKey;

/// What `[auth]`, `[[access]]` and `[[group]]` say, as the daemon hands them over.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The htpasswd file (`auth.htpasswd`); empty: no accounts.
    pub htpasswd: PathBuf,
    /// The realm of the Basic challenge (`auth.realm`).
    pub realm: String,
    /// How long a verified login is remembered (`auth.cache_secs`).
    pub cache_ttl: Duration,
    /// Failed logins per client and minute before it is refused (`auth.max_failures_per_minute`).
    pub max_failures: u32,
    pub policy: Policy,
}

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The `Authorization` header is not `Basic base64(user:password)`.
    Malformed(String),
    /// Unknown user or wrong password.
    BadCredentials,
    /// Too many failures from this client lately; try again after this long.
    Throttled(Duration),
    /// A Bearer token that is not ours, has expired, or names an account that no longer exists
    /// as it was (deleted, or its password changed): the client fetches a new one.
    BadToken,
    /// A token offered for a fresh one after its chain's session ran out: log in again.
    SessionOver,
    /// The key that signs and checks tokens lives on the shared storage and has not been read
    /// from it yet (the storage is not usable): a token can be neither made nor checked.
    NoTokenKey,
}

/// Settings a reload may change.
#[derive(Debug, Clone)]
struct Tuning {
    realm: String,
    cache_ttl: Duration,
    max_failures: u32,
}

const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// A bcrypt hash of cost 5 (`htpasswd -nbB -C 5 x x`): the dummy until the users are loaded.
const DUMMY_HASH: &str = "$2y$05$B0jN8qgaO5AszKUPQrT5NugfuJbVc3mYLwVrN.DH01F9UL.p2lbG.";

struct Failures {
    count: u32,
    since: Instant,
}

/// The authentication state of the daemon.
pub struct Auth {
    policy: ArcSwap<Policy>,
    users: ArcSwap<Users>,
    tuning: ArcSwap<Tuning>,
    htpasswd: Mutex<PathBuf>,
    /// SHA-256 of the htpasswd text in force, so a reload that changes nothing does nothing.
    loaded: Mutex<[u8; 32]>,
    /// Salted credential hash → (user, verified at).
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    salt: [u8; 16],
    /// The key every node on this storage signs tokens with, once read from the storage
    /// (`Storage::token_key`). Never a key of this node's own: tokens it signed would be refused
    /// by the other nodes, and a key made while the shared mount is missing would land on the
    /// local disk under the mount point.
    token_key: ArcSwapOption<TokenKey>,
    /// Signs the tokens an open registry (no accounts) hands out: nothing checks them there
    /// (`identify` serves every client as anonymous), so they need no shared key.
    open_key: Arc<TokenKey>,
    /// Verified against when the user does not exist: a hash of the highest cost in the htpasswd
    /// file, so an unknown user costs the same time as a wrong password (no probing for user
    /// names by timing).
    dummy: Arc<Mutex<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    /// No accounts: every client is anonymous and may do everything.
    pub fn open() -> Auth {
        Auth::with(
            Policy::open(),
            Users::default(),
            PathBuf::new(),
            default_tuning(),
        )
    }

    /// The authentication the settings describe; loads the htpasswd file (an unreadable or
    /// invalid one is an error: the daemon must not start open when the operator asked for logins).
    pub fn from_settings(s: &AuthSettings) -> Result<Auth, String> {
        let auth = Auth::with(
            s.policy.clone(),
            Users::default(),
            s.htpasswd.clone(),
            tuning(s),
        );
        auth.reload_users()?;
        Ok(auth)
    }

    fn with(policy: Policy, users: Users, htpasswd: PathBuf, tuning: Tuning) -> Auth {
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..]);
        Auth {
            policy: ArcSwap::from_pointee(policy),
            users: ArcSwap::from_pointee(users),
            tuning: ArcSwap::from_pointee(tuning),
            htpasswd: Mutex::new(htpasswd),
            loaded: Mutex::new([0; 32]),
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            salt,
            token_key: ArcSwapOption::empty(),
            open_key: Arc::new(TokenKey::random()),
            dummy: Arc::new(Mutex::new(DUMMY_HASH.to_string())),
        }
    }

    /// Signs and checks tokens with `key` from now on (the shared key, read from the storage).
    pub fn set_token_key(&self, key: TokenKey) {
        self.token_key.store(Some(Arc::new(key)));
    }

    /// Whether the shared token key has been read.
    pub fn has_token_key(&self) -> bool {
        self.token_key.load().is_some()
    }

    fn key(&self) -> Result<Arc<TokenKey>, AuthError> {
        match self.token_key.load_full() {
            Some(k) => Ok(k),
            None if !self.policy.load().has_accounts() => Ok(self.open_key.clone()),
            None => Err(AuthError::NoTokenKey),
        }
    }

    /// A Bearer token for `who`, who sent `authorization` (already accepted by `identify`). A
    /// token traded for a new one keeps its chain's login time, so a chain of refreshes ends
    /// `token::MAX_SESSION_SECS` after the login that began it; a login (or an anonymous request)
    /// begins a new chain.
    pub fn issue_token(
        &self,
        authorization: Option<&str>,
        who: &Principal,
    ) -> Result<String, AuthError> {
        let key = self.key()?;
        let previous = match authorization.and_then(|h| strip_scheme(h, "bearer")) {
            Some(token) => Some(key.verify(token).ok_or(AuthError::BadToken)?),
            None => None,
        };
        let account = match who {
            Principal::Anonymous => String::new(),
            Principal::User(u) => {
                let users = self.users.load();
                let hash = users.hash_of(u).ok_or(AuthError::BadToken)?;
                key.account_tag(u, hash)
            }
        };
        // Checked again here, not only in `identify`: a reload between the two must not turn a
        // token of the old account into one of the new.
        if let Some(p) = &previous
            && (p.who != *who || p.account != account)
        {
            return Err(AuthError::BadToken);
        }
        let login_at = previous.map_or_else(token::now, |p| p.login_at);
        key.issue(who, &account, login_at)
            .ok_or(AuthError::SessionOver)
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn realm(&self) -> String {
        self.tuning.load().realm.clone()
    }

    pub fn htpasswd_path(&self) -> PathBuf {
        lock(&self.htpasswd).clone()
    }

    pub fn user_count(&self) -> usize {
        self.users.load().len()
    }

    /// A value that changes whenever `user`'s htpasswd entry does (removed and re-added, new
    /// password), `None` when there is no such user: a web UI session remembers it at login and
    /// ends when it changes, as tokens do. Salted per process, so it says nothing of the hash.
    pub fn account_tag(&self, user: &str) -> Option<[u8; 32]> {
        let users = self.users.load();
        let hash = users.hash_of(user)?;
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(b"account\0");
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(hash.as_bytes());
        Some(h.finalize().into())
    }

    /// Applies a reloaded configuration: the policy at once, the users when the file changed path.
    pub fn apply(&self, s: &AuthSettings) -> Result<(), String> {
        self.policy.store(Arc::new(s.policy.clone()));
        self.tuning.store(Arc::new(tuning(s)));
        let changed = {
            let mut p = lock(&self.htpasswd);
            let changed = *p != s.htpasswd;
            *p = s.htpasswd.clone();
            changed
        };
        if changed {
            *lock(&self.loaded) = [0; 32];
        }
        self.reload_users().map(|_| ())
    }

    /// Re-reads the htpasswd file: `Some(users)` when it changed and loaded, `None` when its text is
    /// the same. A file that does not load keeps the previous users (a half-edited file must not
    /// lock everybody out) and the error says why.
    pub fn reload_users(&self) -> Result<Option<usize>, String> {
        let path = self.htpasswd_path();
        let text = if path.as_os_str().is_empty() {
            String::new()
        } else {
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read htpasswd file {}: {e}", path.display()))?
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if *lock(&self.loaded) == digest {
            return Ok(None);
        }
        let users =
            Users::parse(&text).map_err(|e| format!("htpasswd file {}: {e}", path.display()))?;
        let n = users.len();
        self.set_dummy_cost(users.max_cost());
        self.users.store(Arc::new(users));
        *lock(&self.loaded) = digest;
        // A removed user or a changed password must not live on in the cache.
        lock(&self.cache).clear();
        Ok(Some(n))
    }

    /// Makes the dummy hash as costly as the costliest real one (once per cost: a reload that keeps
    /// the costs keeps the hash). Hashing at a high cost takes seconds, so it runs on a thread of
    /// its own and the previous dummy serves until it is done; start and reloads do not wait.
    fn set_dummy_cost(&self, cost: Option<u32>) {
        let Some(cost) = cost else { return };
        let current = lock(&self.dummy).parse::<bcrypt::HashParts>().ok();
        if current.map(|p| p.get_cost()) == Some(cost) {
            return;
        }
        let dummy = self.dummy.clone();
        let made =
            std::thread::Builder::new().name("dummy-hash".into()).spawn(
                move || match bcrypt::hash(uuid::Uuid::new_v4().to_string(), cost) {
                    Ok(h) => *lock(&dummy) = h,
                    Err(e) => {
                        tracing::warn!(cost, error = %e, "cannot make a dummy hash of this cost")
                    }
                },
            );
        if let Err(e) = made {
            tracing::warn!(error = %e, "cannot start the dummy-hash thread");
        }
    }

    /// Who sent a request with these headers from `client`.
    pub async fn identify(
        &self,
        authorization: Option<&str>,
        client: IpAddr,
    ) -> Result<Principal, AuthError> {
        let Some(header) = authorization else {
            return Ok(Principal::Anonymous);
        };
        if !self.policy.load().has_accounts() {
            // Without accounts there is nothing to check against; clients that send stored
            // credentials anyway (a `docker login` from before) are served as anonymous.
            return Ok(Principal::Anonymous);
        }
        if let Some(token) = strip_scheme(header, "bearer") {
            let key = self.key()?;
            let claims = key.verify(token).ok_or(AuthError::BadToken)?;
            // The account must still exist with the password it had when the token was issued.
            if let Principal::User(u) = &claims.who {
                let users = self.users.load();
                let current = users.hash_of(u).map(|h| key.account_tag(u, h));
                if current.as_deref() != Some(claims.account.as_str()) {
                    return Err(AuthError::BadToken);
                }
            }
            return Ok(claims.who);
        }
        let (user, password) = parse_basic(header)?;
        if let Some(wait) = self.throttled(client) {
            return Err(AuthError::Throttled(wait));
        }
        let key = self.cache_key(&user, &password);
        let ttl = self.tuning.load().cache_ttl;
        if let Some((u, at)) = lock(&self.cache).get(&key)
            && at.elapsed() < ttl
        {
            return Ok(Principal::User(u.clone()));
        }
        let users = self.users.load_full();
        let hash = users.hash_of(&user).map(str::to_string);
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| lock(&self.dummy).clone());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && known {
            let mut cache = lock(&self.cache);
            if cache.len() >= 10_000 {
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            cache.insert(key, (user.clone(), Instant::now()));
            return Ok(Principal::User(user));
        }
        let failures = self.record_failure(client);
        tracing::warn!(
            client = %client,
            user = %user,
            known_user = known,
            failures_last_minute = failures,
            "login failed"
        );
        Err(AuthError::BadCredentials)
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn throttled(&self, client: IpAddr) -> Option<Duration> {
        let max = self.tuning.load().max_failures;
        let f = lock(&self.failures);
        let entry = f.get(&client)?;
        let age = entry.since.elapsed();
        (max > 0 && entry.count >= max && age < FAILURE_WINDOW).then(|| FAILURE_WINDOW - age)
    }

    fn record_failure(&self, client: IpAddr) -> u32 {
        let mut f = lock(&self.failures);
        if f.len() >= 10_000 {
            f.retain(|_, e| e.since.elapsed() < FAILURE_WINDOW);
        }
        let e = f.entry(client).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        if e.since.elapsed() >= FAILURE_WINDOW {
            *e = Failures {
                count: 0,
                since: Instant::now(),
            };
        }
        e.count += 1;
        e.count
    }
}

fn default_tuning() -> Tuning {
    Tuning {
        realm: "registryd".into(),
        cache_ttl: Duration::from_secs(60),
        max_failures: 10,
    }
}

fn tuning(s: &AuthSettings) -> Tuning {
    Tuning {
        realm: s.realm.clone(),
        cache_ttl: s.cache_ttl,
        max_failures: s.max_failures,
    }
}

/// Whether an `Authorization` header carries a Bearer token.
pub fn is_bearer(header: &str) -> bool {
    strip_scheme(header, "bearer").is_some()
}

/// The credentials after `scheme` (case-insensitive), if the header uses that scheme.
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

/// Splits `Basic base64(user:password)`.
pub(crate) fn parse_basic(header: &str) -> Result<(String, String), AuthError> {
    let Some(rest) = strip_scheme(header, "basic") else {
        let scheme = header.split(' ').next().unwrap_or("");
        return Err(AuthError::Malformed(format!(
            "{scheme} authentication is not supported here; use Basic (docker login)"
        )));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| AuthError::Malformed("Basic credentials are not valid base64".into()))?;
    let text = String::from_utf8(raw)
        .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8".into()))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| AuthError::Malformed("Basic credentials are not user:password".into()))?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    fn auth_with_alice() -> Auth {
        let users = Users::parse(&format!("alice:{DUMMY_HASH}")).unwrap();
        Auth::with(
            accounts_policy(),
            users,
            PathBuf::new(),
            Tuning {
                realm: "r".into(),
                cache_ttl: Duration::from_secs(60),
                max_failures: 3,
            },
        )
    }

    #[test]
    fn basic_header_parsing() {
        assert_eq!(parse_basic(&basic("a:b:c")), Ok(("a".into(), "b:c".into())));
        assert!(parse_basic("Bearer xyz").is_err());
        assert!(parse_basic("Basic !!!").is_err());
        assert!(parse_basic(&basic("nocolon")).is_err());
        assert_eq!(
            parse_basic(&format!("basic  {}", &basic("u:p")[6..])),
            Ok(("u".into(), "p".into()))
        );
    }

    #[tokio::test]
    async fn checks_cache_and_throttle() {
        let a = auth_with_alice();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(a.identify(None, ip).await, Ok(Principal::Anonymous));
        assert_eq!(
            a.identify(Some(&basic("alice:secret")), ip).await,
            Ok(Principal::User("alice".into()))
        );
        assert_eq!(lock(&a.cache).len(), 1, "the login is remembered");
        for _ in 0..3 {
            assert_eq!(
                a.identify(Some(&basic("alice:wrong")), ip).await,
                Err(AuthError::BadCredentials)
            );
        }
        // Throttled now, even with the right password; another client is not.
        assert!(matches!(
            a.identify(Some(&basic("alice:secret")), ip).await,
            Err(AuthError::Throttled(_))
        ));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            a.identify(Some(&basic("nobody:secret")), other).await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            a.identify(Some(&basic("alice:secret")), other).await,
            Ok(Principal::User("alice".into()))
        );
    }

    /// The default policy ("auto", no rules) of a registry with accounts.
    fn accounts_policy() -> Policy {
        Policy::new(None, Vec::new(), &[], &[], true)
    }

    /// An `Auth` over an htpasswd file the test rewrites, as an operator would with `htpasswd`.
    fn auth_on_file(path: &std::path::Path) -> Auth {
        let a = Auth::with(
            accounts_policy(),
            Users::default(),
            path.to_path_buf(),
            default_tuning(),
        );
        a.reload_users().unwrap();
        a.set_token_key(TokenKey::random());
        a
    }

    fn payload(token: &str) -> Vec<String> {
        let (p, _) = token.split_once('.').unwrap();
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap();
        String::from_utf8(text)
            .unwrap()
            .split('\n')
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn tokens_die_with_their_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let one = bcrypt::hash("one", 4).unwrap();
        std::fs::write(&path, format!("alice:{one}\nbob:{one}\n")).unwrap();
        let a = auth_on_file(&path);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let alice = Principal::User("alice".into());
        let bob = Principal::User("bob".into());
        let login = |u: &str| basic(&format!("{u}:one"));
        let bearer = |t: String| format!("Bearer {t}");
        let ta = bearer(a.issue_token(Some(&login("alice")), &alice).unwrap());
        let tb = bearer(a.issue_token(Some(&login("bob")), &bob).unwrap());
        assert_eq!(a.identify(Some(&ta), ip).await, Ok(alice.clone()));
        assert_eq!(a.identify(Some(&tb), ip).await, Ok(bob.clone()));
        // A refresh works while the account is as it was.
        let ta2 = bearer(a.issue_token(Some(&ta), &alice).unwrap());

        // `htpasswd -D bob` and a new password for alice.
        let two = bcrypt::hash("two", 4).unwrap();
        std::fs::write(&path, format!("alice:{two}\n")).unwrap();
        assert_eq!(a.reload_users(), Ok(Some(1)));
        for t in [&ta, &ta2, &tb] {
            assert_eq!(a.identify(Some(t), ip).await, Err(AuthError::BadToken));
        }
        assert_eq!(a.issue_token(Some(&tb), &bob), Err(AuthError::BadToken));
        // The new password gets tokens that work.
        let fresh = bearer(a.issue_token(Some(&basic("alice:two")), &alice).unwrap());
        assert_eq!(a.identify(Some(&fresh), ip).await, Ok(alice.clone()));

        // bob comes back with the same password: his old token stays dead only if the entry
        // differs; a re-added entry is a new bcrypt salt, so it does.
        let again = bcrypt::hash("one", 4).unwrap();
        std::fs::write(&path, format!("alice:{two}\nbob:{again}\n")).unwrap();
        a.reload_users().unwrap();
        assert_eq!(a.identify(Some(&tb), ip).await, Err(AuthError::BadToken));
    }

    #[tokio::test]
    async fn refresh_chains_keep_their_login_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
        let a = auth_on_file(&path);
        let alice = Principal::User("alice".into());
        let key = a.key().unwrap();
        let tag = key.account_tag("alice", a.users.load().hash_of("alice").unwrap());
        // A token from a login 10 s short of the session's end.
        let login_at = token::now() - token::MAX_SESSION_SECS + 10;
        let old = format!("Bearer {}", key.issue(&alice, &tag, login_at).unwrap());
        let mut t = old.clone();
        for _ in 0..5 {
            let next = a.issue_token(Some(&t), &alice).unwrap();
            let fields = payload(&next);
            assert_eq!(fields[2], login_at.to_string(), "the chain keeps its login");
            let expiry: u64 = fields[1].parse().unwrap();
            assert!(
                expiry <= login_at + token::MAX_SESSION_SECS,
                "never past the session"
            );
            t = format!("Bearer {next}");
        }
        // A login begins a new session.
        let relogin = a.issue_token(Some(&basic("alice:pw")), &alice).unwrap();
        let fields = payload(&relogin);
        assert!(fields[2].parse::<u64>().unwrap() >= token::now() - 1);
        // A chain whose session is over cannot be renewed.
        let ended = key.issue(&alice, &tag, token::now() - token::MAX_SESSION_SECS);
        assert_eq!(ended, None);
    }

    #[test]
    fn the_dummy_hash_costs_what_the_real_ones_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let h = |cost| bcrypt::hash("pw", cost).unwrap();
        std::fs::write(&path, format!("a:{}\nb:{}\n", h(4), h(6))).unwrap();
        let a = auth_on_file(&path);
        // Made on a thread of its own: wait for it (a few milliseconds at these costs).
        let cost_becomes = |a: &Auth, want: u32| {
            (0..500).any(|_| {
                let c = lock(&a.dummy)
                    .parse::<bcrypt::HashParts>()
                    .unwrap()
                    .get_cost();
                c == want || {
                    std::thread::sleep(Duration::from_millis(10));
                    false
                }
            })
        };
        assert!(cost_becomes(&a, 6));
        std::fs::write(&path, format!("a:{}\n", h(7))).unwrap();
        a.reload_users().unwrap();
        assert!(cost_becomes(&a, 7));
    }

    #[tokio::test]
    async fn credentials_are_ignored_without_accounts() {
        let a = Auth::open();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            a.identify(Some(&basic("x:y")), ip).await,
            Ok(Principal::Anonymous)
        );
    }
}
