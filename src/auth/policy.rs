//! What a client may do, decided from configuration alone (pure, no I/O): the anonymous policy of
//! the listener it came through, and per-repository rules naming users, `@groups`, `*` (any
//! authenticated user) and `anonymous`.
//!
//! Decision order for `(who, repository, action)`:
//! 1. The rule with the longest prefix covering the repository, if any, lists who may `pull` and who
//!    may `push` (push implies pull, delete counts as push).
//! 2. Without a rule, authenticated users may do everything and anonymous clients what their
//!    listener allows.
//! 3. Anonymous clients never exceed their listener's policy, whatever a rule says: a `0.0.0.0`
//!    listener that allows nothing stays closed even under a rule that lists `anonymous`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One `[[access]]` rule: who may pull and push under a repository prefix. The configuration's
/// schema uses this type as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub prefix: String,
    #[serde(default)]
    pub pull: Vec<String>,
    #[serde(default)]
    pub push: Vec<String>,
}

/// One `[[group]]`: a name the access rules use as `@name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// What clients without credentials may do on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    None,
    Pull,
    All,
}

impl FromStr for Anonymous {
    type Err = String;
    fn from_str(s: &str) -> Result<Anonymous, String> {
        match s {
            "none" => Ok(Anonymous::None),
            "pull" => Ok(Anonymous::Pull),
            "all" => Ok(Anonymous::All),
            _ => Err(format!("{s:?} is not one of none, pull, all")),
        }
    }
}

impl Anonymous {
    fn permits(self, action: Action) -> bool {
        match (self, action) {
            (Anonymous::All, _) | (Anonymous::Pull, Action::Pull) => true,
            (Anonymous::Pull, Action::Push) | (Anonymous::None, _) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload, write manifests and tags, delete.
    Push,
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User(String),
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "",
            Principal::User(u) => u,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    pull: Vec<String>,
    push: Vec<String>,
}

impl Rule {
    fn covers(&self, repo: &str) -> bool {
        self.prefix.is_empty()
            || repo == self.prefix
            || (repo.starts_with(&self.prefix) && repo[self.prefix.len()..].starts_with('/'))
    }
}

/// The access policy in force (rebuilt from the configuration on reload).
#[derive(Debug, Clone)]
pub struct Policy {
    /// `auth.anonymous`; `None` is "auto" (see `anonymous_on`).
    anonymous: Option<Anonymous>,
    by_listener: Vec<(SocketAddr, Anonymous)>,
    /// Longest prefix first, so the first rule that covers a name is the one that applies.
    rules: Vec<Rule>,
    groups: HashMap<String, Vec<String>>,
    /// Whether any accounts exist (auth.htpasswd set).
    accounts: bool,
}

impl Policy {
    /// Everyone may do everything: no accounts, no rules (the default, and `serve --dev`).
    pub fn open() -> Policy {
        Policy {
            anonymous: Some(Anonymous::All),
            by_listener: Vec::new(),
            rules: Vec::new(),
            groups: HashMap::new(),
            accounts: false,
        }
    }

    /// The policy of (validated) settings: `anonymous` is `auth.anonymous` (`None`: "auto"),
    /// `by_listener` the parsed `auth.anonymous_by_listener`, `accounts` whether an htpasswd file
    /// is set.
    pub fn new(
        anonymous: Option<Anonymous>,
        by_listener: Vec<(SocketAddr, Anonymous)>,
        access: &[AccessRule],
        groups: &[Group],
        accounts: bool,
    ) -> Policy {
        let mut rules: Vec<Rule> = access.iter().map(rule).collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Policy {
            anonymous,
            by_listener,
            rules,
            groups: groups
                .iter()
                .map(|Group { name, members }| (name.clone(), members.clone()))
                .collect(),
            accounts,
        }
    }

    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether requests without credentials should be asked for them (401) rather than refused.
    pub fn has_accounts(&self) -> bool {
        self.accounts
    }

    /// What anonymous clients may do on the listener bound to `listener`. "auto" is: everything when
    /// there are no accounts; with accounts, pull on loopback and link-local listeners (the node's
    /// own containers and daemons) and nothing on any other (`0.0.0.0`, a LAN address).
    pub fn anonymous_on(&self, listener: SocketAddr) -> Anonymous {
        if let Some((_, a)) = self.by_listener.iter().find(|(l, _)| *l == listener) {
            return *a;
        }
        match self.anonymous {
            Some(a) => a,
            None if !self.accounts => Anonymous::All,
            None if is_node_local(listener.ip()) => Anonymous::Pull,
            None => Anonymous::None,
        }
    }

    /// Whether `who`, on a listener whose anonymous policy is `anon`, may do `action` on `repo`.
    pub fn allows(&self, who: &Principal, anon: Anonymous, repo: &str, action: Action) -> bool {
        if *who == Principal::Anonymous && !anon.permits(action) {
            return false;
        }
        let Some(rule) = self.rules.iter().find(|r| r.covers(repo)) else {
            return true;
        };
        let listed = |list: &[String]| list.iter().any(|entry| self.matches(entry, who));
        match action {
            Action::Pull => listed(&rule.pull) || listed(&rule.push),
            Action::Push => listed(&rule.push),
        }
    }

    /// Whether `who` may pull at least one repository somewhere (answers `/v2/` and `_catalog`).
    pub fn may_pull_somewhere(&self, who: &Principal, anon: Anonymous) -> bool {
        *who != Principal::Anonymous || anon.permits(Action::Pull)
    }

    fn matches(&self, entry: &str, who: &Principal) -> bool {
        match (entry, who) {
            ("anonymous", _) => true,
            (_, Principal::Anonymous) => false,
            ("*", Principal::User(_)) => true,
            (e, Principal::User(u)) => match e.strip_prefix('@') {
                Some(g) => self.groups.get(g).is_some_and(|m| m.iter().any(|x| x == u)),
                None => e == u,
            },
        }
    }
}

fn rule(r: &AccessRule) -> Rule {
    Rule {
        prefix: r.prefix.trim_end_matches('/').to_string(),
        pull: r.pull.clone(),
        push: r.push.clone(),
    }
}

/// Loopback and link-local addresses only reach clients on this node (its containers, its daemons).
pub(crate) fn is_node_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Parses one `auth.anonymous_by_listener` entry, `ADDRESS:PORT=none|pull|all`.
pub fn parse_listener_policy(s: &str) -> Result<(SocketAddr, Anonymous), String> {
    let (addr, policy) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not ADDRESS:PORT=none|pull|all"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} in {s:?} is not ADDRESS:PORT"))?;
    Ok((addr, policy.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(anonymous: Option<Anonymous>, rules: &[(&str, &[&str], &[&str])]) -> Policy {
        let mut rules: Vec<Rule> = rules
            .iter()
            .map(|(p, pull, push)| Rule {
                prefix: p.to_string(),
                pull: pull.iter().map(|s| s.to_string()).collect(),
                push: push.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Policy {
            anonymous,
            by_listener: vec![("0.0.0.0:9000".parse().unwrap(), Anonymous::Pull)],
            rules,
            groups: [("ci".to_string(), vec!["bot".to_string()])].into(),
            accounts: true,
        }
    }

    fn user(u: &str) -> Principal {
        Principal::User(u.into())
    }

    #[test]
    fn auto_anonymous_depends_on_the_listener() {
        let p = policy(None, &[]);
        let on = |a: &str| p.anonymous_on(a.parse().unwrap());
        assert_eq!(on("169.254.254.254:8443"), Anonymous::Pull);
        assert_eq!(on("127.0.0.1:5000"), Anonymous::Pull);
        assert_eq!(on("[::1]:5000"), Anonymous::Pull);
        assert_eq!(on("0.0.0.0:8443"), Anonymous::None);
        assert_eq!(on("10.0.0.5:8443"), Anonymous::None);
        assert_eq!(
            on("0.0.0.0:9000"),
            Anonymous::Pull,
            "explicit listener entry"
        );
        assert_eq!(
            Policy::open().anonymous_on("0.0.0.0:1".parse().unwrap()),
            Anonymous::All
        );
    }

    #[test]
    fn without_rules_users_do_everything_and_anonymous_what_the_listener_allows() {
        let p = policy(None, &[]);
        assert!(p.allows(&user("a"), Anonymous::None, "x/y", Action::Push));
        assert!(p.allows(&Principal::Anonymous, Anonymous::Pull, "x/y", Action::Pull));
        assert!(!p.allows(&Principal::Anonymous, Anonymous::Pull, "x/y", Action::Push));
        assert!(!p.allows(&Principal::Anonymous, Anonymous::None, "x/y", Action::Pull));
        assert!(p.allows(&Principal::Anonymous, Anonymous::All, "x/y", Action::Push));
    }

    #[test]
    fn longest_prefix_rule_decides() {
        let p = policy(
            None,
            &[
                ("", &["*", "anonymous"], &["alice", "@ci"]),
                ("team", &["carol"], &["dave"]),
                ("team/public", &["anonymous"], &["dave"]),
            ],
        );
        let anon = Principal::Anonymous;
        // The catch-all rule: everyone reads, only alice and the ci group write.
        assert!(p.allows(&user("reader"), Anonymous::Pull, "app", Action::Pull));
        assert!(!p.allows(&user("reader"), Anonymous::Pull, "app", Action::Push));
        assert!(p.allows(&user("bot"), Anonymous::Pull, "app", Action::Push));
        assert!(p.allows(&anon, Anonymous::Pull, "app", Action::Pull));
        // team/...: private to carol (read) and dave (write, so read too).
        assert!(!p.allows(&anon, Anonymous::Pull, "team/x", Action::Pull));
        assert!(!p.allows(&user("alice"), Anonymous::Pull, "team/x", Action::Pull));
        assert!(p.allows(&user("carol"), Anonymous::Pull, "team/x", Action::Pull));
        assert!(!p.allows(&user("carol"), Anonymous::Pull, "team/x", Action::Push));
        assert!(p.allows(&user("dave"), Anonymous::Pull, "team", Action::Pull));
        // A prefix is whole path components: "teammate" is not under "team".
        assert!(p.allows(&anon, Anonymous::Pull, "teammate/x", Action::Pull));
        // A public corner inside the private prefix, still capped by the listener.
        assert!(p.allows(&anon, Anonymous::Pull, "team/public/x", Action::Pull));
        assert!(!p.allows(&anon, Anonymous::None, "team/public/x", Action::Pull));
        assert!(!p.allows(&anon, Anonymous::All, "team/public/x", Action::Push));
    }

    #[test]
    fn listener_policy_entries() {
        assert_eq!(
            parse_listener_policy("0.0.0.0:8443=pull"),
            Ok(("0.0.0.0:8443".parse().unwrap(), Anonymous::Pull))
        );
        assert_eq!(
            parse_listener_policy("[::]:8443=none"),
            Ok(("[::]:8443".parse().unwrap(), Anonymous::None))
        );
        assert!(parse_listener_policy("0.0.0.0:8443").is_err());
        assert!(parse_listener_policy("0.0.0.0:8443=read").is_err());
        assert!(parse_listener_policy("host:8443=pull").is_err());
    }
}
