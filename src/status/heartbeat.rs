//! The heartbeat every node writes to the shared storage, and the node names its file is named
//! by. A beat carries the period its writer beats at, so any reader judges its age the same way
//! (`is_stale`) whatever its own period; times are RFC 3339 so an operator can read the file.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Seconds between beats when the writer did not say (and `node.heartbeat_secs`' default).
pub const DEFAULT_PERIOD_SECS: u64 = 30;

/// A node is stale once its last beat is older than this many of its periods: one late write
/// (a slow mount, a long GC pause) must not flag it.
pub const STALE_AFTER_PERIODS: u32 = 3;

/// A node silent this long is gone: its beat is removed, so the cluster page does not list a
/// machine retired a year ago.
pub const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// What one node writes to the shared storage every beat, and the cluster page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub version: String,
    pub addresses: Vec<String>,
    #[serde(default, with = "rfc3339")]
    pub certificate_not_after: Option<SystemTime>,
    pub ready: bool,
    /// Why it is not ready.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it wrote this beat (its own clock).
    #[serde(default, with = "rfc3339")]
    pub seen: Option<SystemTime>,
    /// Seconds between this node's beats (0: [`DEFAULT_PERIOD_SECS`]).
    #[serde(default)]
    pub period_secs: u64,
    /// Drawn at each daemon start: two processes beating under one node name (two machines with
    /// one hostname) tell each other apart by it.
    #[serde(default)]
    pub instance: String,
}

impl Heartbeat {
    /// The period this beat's writer beats at.
    pub fn period(&self) -> Duration {
        match self.period_secs {
            0 => Duration::from_secs(DEFAULT_PERIOD_SECS),
            s => Duration::from_secs(s),
        }
    }

    /// How old the beat is at `now` (zero for a beat from a clock ahead of ours; `None`: it has
    /// no time).
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.seen
            .map(|seen| now.duration_since(seen).unwrap_or(Duration::ZERO))
    }

    /// Whether the node stopped beating: its last beat is older than [`STALE_AFTER_PERIODS`] of
    /// its periods at `now`, or carries no time at all.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.age(now)
            .is_none_or(|age| age > self.period() * STALE_AFTER_PERIODS)
    }

    /// `alive` or `stale`, as the cluster page's `data-state` says it.
    pub fn state(&self, now: SystemTime) -> &'static str {
        if self.is_stale(now) { "stale" } else { "alive" }
    }
}

/// A node's name as its heartbeat file is named: 1 to 128 of `A-Z a-z 0-9 . _ -`, starting with
/// a letter or digit, so it is one safe path component (no `/`, no `..`, no hidden or temp file)
/// on a filesystem and in a bucket alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub const MAX_LEN: usize = 128;

    fn allowed(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    }

    /// `s` if it is a valid node name; otherwise why not.
    pub fn parse(s: &str) -> Result<NodeName, String> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(format!(
                "{s:?} is not a node name: it must be 1 to {} characters",
                Self::MAX_LEN
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !s.chars().all(Self::allowed) {
            return Err(format!(
                "{s:?} is not a node name: use letters, digits, '.', '_' and '-', starting with a letter or digit"
            ));
        }
        Ok(NodeName(s.to_string()))
    }

    /// The machine's hostname as a node name: any character a name may not hold becomes `-`
    /// (the kernel takes any bytes as a hostname; a name must be one path component).
    pub fn from_hostname(host: &str) -> NodeName {
        let mut s: String = host
            .trim()
            .chars()
            .map(|c| if Self::allowed(c) { c } else { '-' })
            .skip_while(|c| !c.is_ascii_alphanumeric())
            .take(Self::MAX_LEN)
            .collect();
        if s.is_empty() {
            s = "node".into();
        }
        NodeName(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = String;

    fn from_str(s: &str) -> Result<NodeName, String> {
        NodeName::parse(s)
    }
}

/// `Option<SystemTime>` as an RFC 3339 string (or null), readable in the file by an operator.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            None => s.serialize_none(),
            Some(t) => {
                let text = OffsetDateTime::from(*t)
                    .format(&Rfc3339)
                    .map_err(serde::ser::Error::custom)?;
                s.serialize_str(&text)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
                .map(|t| Some(SystemTime::from(t)))
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_beat_goes_stale_after_three_of_its_own_periods() {
        let beat = Heartbeat {
            node: "a".into(),
            seen: Some(at(1_000)),
            period_secs: 10,
            ..Default::default()
        };
        assert!(!beat.is_stale(at(1_000)));
        assert!(!beat.is_stale(at(1_030)));
        assert_eq!(beat.state(at(1_030)), "alive");
        assert!(beat.is_stale(at(1_031)));
        assert_eq!(beat.state(at(1_031)), "stale");
        // From a clock ahead of ours: not stale, age zero.
        assert!(!beat.is_stale(at(900)));
        assert_eq!(beat.age(at(900)), Some(Duration::ZERO));
        // Without a period, the default one; without a time, stale.
        let old = Heartbeat {
            period_secs: 0,
            ..beat.clone()
        };
        assert!(!old.is_stale(at(1_090)));
        assert!(old.is_stale(at(1_091)));
        let timeless = Heartbeat { seen: None, ..beat };
        assert!(timeless.is_stale(at(1_000)));
    }

    #[test]
    fn a_beat_reads_back_as_written_with_readable_times() {
        let beat = Heartbeat {
            node: "node-1".into(),
            version: "1.2.3".into(),
            addresses: vec!["127.0.0.1:5000".into()],
            certificate_not_after: Some(at(1_798_761_600)),
            ready: false,
            reason: Some("storage check failed".into()),
            seen: Some(at(1_798_000_000) + Duration::from_millis(250)),
            period_secs: 30,
            instance: "x".into(),
        };
        let json = serde_json::to_string(&beat).unwrap();
        assert!(
            json.contains("\"certificate_not_after\":\"2027-01-01T00:00:00Z\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Heartbeat>(&json).unwrap(), beat);
        // A beat from an older or newer version: missing keys take defaults, unknown ones pass.
        let sparse: Heartbeat = serde_json::from_str(
            r#"{"node":"b","version":"0.9","addresses":[],"ready":true,"more":1}"#,
        )
        .unwrap();
        assert_eq!(sparse.seen, None);
        assert_eq!(sparse.period(), Duration::from_secs(DEFAULT_PERIOD_SECS));
        assert!(serde_json::from_str::<Heartbeat>(r#"{"node":"b","seen":"yesterday"}"#).is_err());
    }

    #[test]
    fn node_names_are_one_safe_path_component() {
        for good in ["a", "node-1", "n1.example.net", "A_b", &"x".repeat(128)] {
            assert_eq!(NodeName::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "../x",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(NodeName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(NodeName::from_hostname("host-1\n").as_str(), "host-1");
        assert_eq!(NodeName::from_hostname("../a/b c").as_str(), "a-b-c");
        assert_eq!(NodeName::from_hostname("").as_str(), "node");
        assert_eq!(NodeName::from_hostname("///").as_str(), "node");
        let long = NodeName::from_hostname(&"y".repeat(300));
        assert!(NodeName::parse(long.as_str()).is_ok());
    }
}
