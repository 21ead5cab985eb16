//! Configuration: TOML with serde, built-in defaults embedded from `etc/registryd/config.toml`.
//!
//! Layers, later wins: embedded defaults, the config file, `REGISTRYD_<SECTION>_<KEY>` environment
//! variables, command-line flags. Because the embedded defaults name every key, they are also the
//! schema: a key they lack is unknown, a value of another type is wrong, and both are reported with
//! the key and where it came from (file line, variable or flag), all at once rather than one per run.
//!
//! One file per concern: [`schema`] (the serde structs), [`closed`] (keys with a fixed set of
//! names, as enums), `layers` (merging the layers), `validate` (checks beyond types), `s3`
//! (the bucket's credentials) and [`settings`] (what each part of the daemon is handed).
//!
//! Configuration knows the parts; no part knows configuration. Storage, http, auth and proxy take
//! their own settings types, which [`settings`] builds from a [`Config`]; validation that needs a
//! part's grammar calls that part's pure parser.

pub mod closed;
mod layers;
mod s3;
pub mod schema;
pub mod settings;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use schema::*;
pub use validate::parse_cidr;

/// The commented configuration file the package installs; parsed, it is the built-in defaults.
pub const DEFAULTS_TOML: &str = include_str!("../../etc/registryd/config.toml");

/// Command-line overrides, the top layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub storage: Option<PathBuf>,
    pub plain_http: bool,
}

/// One problem with the configuration: which key, where it was set, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.origin, self.message)
    }
}

/// Every problem found, so the operator fixes them in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// The built-in defaults. `DEFAULTS_TOML` is compiled in and the `defaults_parse` test parses
    /// it, so this parse cannot fail at run time.
    pub fn defaults() -> Config {
        #[allow(clippy::expect_used, reason = "checked by the defaults_parse test")]
        toml::from_str(DEFAULTS_TOML).expect("embedded defaults parse")
    }

    /// Loads the effective configuration from `file` (if any), the process environment and flags.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("REGISTRYD_"))
            .collect();
        let text = match file {
            Some(p) => Some((
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        key: "-".into(),
                        origin: p.display().to_string(),
                        message: format!("cannot read config file: {e}"),
                    }])
                })?,
            )),
            None => None,
        };
        Self::from_layers(
            text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
            &env,
            overrides,
        )
    }

    /// The listen addresses, already validated.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.server
            .listen
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
