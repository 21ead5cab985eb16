//! Keys whose value is one of a few names: `storage.driver`, `auth.anonymous`, `log.format`. Each is
//! a serde enum in the schema, so the rest of the program matches on variants, never on strings.
//!
//! A name outside the set is caught while the layers are merged (`layers`), where its origin (file
//! line, variable, flag) is known; the message names the key and the names allowed, in the words
//! `check-config` has always used. (`log.level` is not here: it also takes filter directives.)

use serde::{Deserialize, Serialize};

/// A closed set as the layering checks it: the key, the names serde accepts, and what to say about
/// any other value.
pub struct ClosedSet {
    /// `section.key`.
    pub key: &'static str,
    pub names: &'static [&'static str],
    pub rejection: fn(&str) -> String,
}

/// Every closed set of the configuration.
pub const CLOSED_SETS: &[ClosedSet] = &[StorageDriver::SET, AnonymousPolicy::SET, LogFormat::SET];

/// Declares a closed-set enum: its serde names and its [`ClosedSet`] come from one list, so they
/// cannot disagree.
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        $name:ident at $key:literal, otherwise $rejection:expr;
        { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            pub const SET: ClosedSet = ClosedSet {
                key: $key,
                names: &[$($text),+],
                rejection: $rejection,
            };

            /// The name as the configuration file spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }
    };
}

closed_set! {
    /// `storage.driver`: where the registry's data lives.
    StorageDriver at "storage.driver",
    otherwise |v| format!("{v:?} is not a storage driver (\"filesystem\" or \"s3\")");
    {
        /// The filesystem under `storage.root`.
        Filesystem = "filesystem",
        /// The `[s3]` bucket.
        S3 = "s3",
    }
}

closed_set! {
    /// `auth.anonymous`: what clients without credentials may do on a listener that has no
    /// `auth.anonymous_by_listener` entry.
    AnonymousPolicy at "auth.anonymous",
    otherwise |v| format!("{v:?} is not one of auto, none, pull, all");
    {
        /// Everything without accounts; with accounts, pull on loopback and link-local
        /// listeners and nothing elsewhere.
        Auto = "auto",
        None = "none",
        Pull = "pull",
        All = "all",
    }
}

closed_set! {
    /// `log.format`: where and how log lines are written.
    LogFormat at "log.format",
    otherwise |v| format!("{v:?} is not one of auto, journald, text, json");
    {
        /// The journal when stderr is the journal's stream, else text.
        Auto = "auto",
        Journald = "journald",
        /// One line per event on stderr.
        Text = "text",
        /// One JSON object per event on stderr.
        Json = "json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct One<T> {
        v: T,
    }

    /// Every name of a set parses to the variant that prints as that name, and the message for any
    /// other value names the key's allowed names.
    fn round_trip<T: for<'de> Deserialize<'de> + Copy>(
        set: &ClosedSet,
        as_str: fn(T) -> &'static str,
    ) {
        for name in set.names {
            let one: One<T> = toml::from_str(&format!("v = {name:?}")).unwrap();
            assert_eq!(as_str(one.v), *name);
        }
        assert!(toml::from_str::<One<T>>("v = \"nope\"").is_err());
        let message = (set.rejection)("nope");
        assert!(message.starts_with("\"nope\" is not"), "{message}");
        for name in set.names {
            assert!(message.contains(name), "{message} lacks {name}");
        }
    }

    #[test]
    fn names_and_variants_agree() {
        round_trip(&StorageDriver::SET, StorageDriver::as_str);
        round_trip(&AnonymousPolicy::SET, AnonymousPolicy::as_str);
        round_trip(&LogFormat::SET, LogFormat::as_str);
        let keys: Vec<&str> = CLOSED_SETS.iter().map(|s| s.key).collect();
        assert_eq!(keys, ["storage.driver", "auth.anonymous", "log.format"]);
    }

    #[test]
    fn check_config_prints_the_names() {
        let shown = crate::config::Config::defaults().to_toml();
        for line in [
            "driver = \"filesystem\"",
            "anonymous = \"auto\"",
            "format = \"auto\"",
        ] {
            assert!(shown.contains(line), "{line} missing from {shown}");
        }
    }
}
