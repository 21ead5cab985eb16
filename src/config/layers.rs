//! Layering: the embedded defaults, then the config file, then `REGISTRYD_<SECTION>_<KEY>`
//! environment variables, then command-line flags; later wins. Each layer is merged as TOML values
//! against the defaults, which double as the schema: a key they lack is unknown, a value of another
//! type is wrong, and both are reported with the key and where it came from (file line, variable or
//! flag), all at once. Only a merge without such errors is turned into a [`Config`] and validated.

use std::collections::HashMap;

use toml::{Table, Value};

use super::closed::CLOSED_SETS;
use super::{Config, ConfigError, ConfigErrors, DEFAULTS_TOML, Overrides};

/// The keys an array-of-tables entry may hold, with a value of each one's type.
type KeyType = (&'static str, fn() -> Value);
const ACCESS_KEYS: &[KeyType] = &[
    ("prefix", || Value::String(String::new())),
    ("pull", || Value::Array(Vec::new())),
    ("push", || Value::Array(Vec::new())),
];
const GROUP_KEYS: &[KeyType] = &[
    ("name", || Value::String(String::new())),
    ("members", || Value::Array(Vec::new())),
];
/// The arrays of tables the configuration has: name, keys, required keys, what one describes.
const TABLE_ARRAYS: &[(&str, &[KeyType], &[&str], &str)] = &[
    (
        "upstream",
        UPSTREAM_KEYS,
        &["name", "url"],
        "one per upstream registry",
    ),
    (
        "access",
        ACCESS_KEYS,
        &["prefix"],
        "one per repository prefix",
    ),
    ("group", GROUP_KEYS, &["name"], "one per group of users"),
    (
        "retention",
        RETENTION_KEYS,
        &["repositories"],
        "one per retention rule",
    ),
    (
        "immutable",
        IMMUTABLE_KEYS,
        &["repositories", "tags"],
        "one per immutable-tags rule",
    ),
];
const RETENTION_KEYS: &[KeyType] = &[
    ("repositories", || Value::String(String::new())),
    ("keep_tags", || Value::Array(Vec::new())),
    ("keep_last", || Value::Integer(0)),
    ("keep_pushed_within_days", || Value::Integer(0)),
    ("keep_pulled_within_days", || Value::Integer(0)),
    ("untagged_after_days", || Value::Integer(0)),
    ("allow_empty", || Value::Boolean(false)),
];
const IMMUTABLE_KEYS: &[KeyType] = &[
    ("repositories", || Value::String(String::new())),
    ("tags", || Value::Array(Vec::new())),
];
const UPSTREAM_KEYS: &[KeyType] = &[
    ("name", || Value::String(String::new())),
    ("url", || Value::String(String::new())),
    ("username", || Value::String(String::new())),
    ("password", || Value::String(String::new())),
    ("password_file", || Value::String(String::new())),
    ("ca", || Value::String(String::new())),
    ("prefixes", || Value::Array(Vec::new())),
    ("push", || Value::Boolean(false)),
    ("token_realm_hosts", || Value::Array(Vec::new())),
];

impl Config {
    /// Builds the configuration from explicit layers (testable without touching the process).
    pub fn from_layers(
        file: Option<(&str, &str)>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigErrors> {
        let schema: Table = toml::from_str(DEFAULTS_TOML).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: "-".into(),
                origin: "embedded defaults".into(),
                message: e.to_string(),
            }])
        })?;
        let mut m = Merge::new(schema);
        if let Some((fname, text)) = file {
            m.file(fname, text);
        }
        m.env(env);
        m.flags(overrides);
        if !m.errors.is_empty() {
            return Err(ConfigErrors(m.errors));
        }
        let rejected = m.closed_sets();
        let mut config: Config =
            Value::Table(m.merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ConfigErrors(vec![ConfigError {
                        key: "-".into(),
                        origin: "merged configuration".into(),
                        message: e.to_string(),
                    }])
                })?;
        let origins = m.origins;
        let origin = |k: &str| origins.get(k).cloned().unwrap_or_else(|| "default".into());
        config.warnings = m.warnings;
        let problems: Vec<_> = rejected.into_iter().chain(config.validate()).collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(
                problems
                    .into_iter()
                    .map(|(key, message)| ConfigError {
                        origin: origin(key),
                        key: key.into(),
                        message,
                    })
                    .collect(),
            ))
        }
    }
}

/// The layers merged so far: the values, where each key was last set, and what was wrong.
struct Merge {
    /// The embedded defaults: every section and key, each with a value of its type.
    schema: Table,
    merged: Table,
    /// `section.key` -> the file line, variable or flag that set it last.
    origins: HashMap<String, String>,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

impl Merge {
    fn new(schema: Table) -> Merge {
        Merge {
            merged: schema.clone(),
            schema,
            origins: HashMap::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Sets `section.key` to `v`, set by `origin`.
    fn set(&mut self, section: &str, key: &str, v: Value, origin: String) {
        set(&mut self.merged, section, key, v);
        self.origins.insert(format!("{section}.{key}"), origin);
    }

    /// The config file `fname` holding `text`.
    fn file(&mut self, fname: &str, text: &str) {
        let table = match toml::from_str::<Table>(text) {
            Ok(table) => table,
            Err(e) => {
                self.errors.push(ConfigError {
                    key: "-".into(),
                    origin: fname.to_string(),
                    message: syntax_error(text, &e),
                });
                return;
            }
        };
        let lines = key_lines(text);
        let origin_of = |key: &str| match lines.get(key) {
            Some(l) => format!("{fname} line {l}"),
            None => fname.to_string(),
        };
        for (section, value) in table {
            if let Some(spec) = TABLE_ARRAYS.iter().find(|t| t.0 == section) {
                match check_table_array(spec, &value) {
                    Ok(()) => {
                        self.merged.insert(section.clone(), value);
                    }
                    Err(e) => self
                        .errors
                        .extend(e.into_iter().map(|(key, message)| ConfigError {
                            key,
                            origin: fname.to_string(),
                            message,
                        })),
                }
                continue;
            }
            let Some(Value::Table(schema_sec)) = self.schema.get(&section).cloned() else {
                self.errors.push(ConfigError {
                    key: section.clone(),
                    origin: origin_of(&section),
                    message: format!("unknown section [{section}]"),
                });
                continue;
            };
            let Value::Table(values) = value else {
                self.errors.push(ConfigError {
                    key: section.clone(),
                    origin: origin_of(&section),
                    message: "must be a [section] table".into(),
                });
                continue;
            };
            for (key, v) in values {
                let full = format!("{section}.{key}");
                let origin = origin_of(&full);
                match check_type(schema_sec.get(&key), &v) {
                    Err(message) => self.errors.push(ConfigError {
                        key: full,
                        origin,
                        message,
                    }),
                    Ok(()) => self.set(&section, &key, v, origin),
                }
            }
        }
    }

    /// The `REGISTRYD_*` variables of `env`.
    fn env(&mut self, env: &[(String, String)]) {
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix("REGISTRYD_") else {
                continue;
            };
            let origin = format!("environment variable {var}");
            let found = self.schema.iter().find_map(|(section, sec)| {
                let prefix = format!("{}_", section.to_uppercase());
                let key = rest.strip_prefix(&prefix)?.to_lowercase();
                let Value::Table(sec) = sec else { return None };
                sec.get(&key)
                    .map(|default| (section.clone(), key, default.clone()))
            });
            let Some((section, key, default)) = found else {
                // A known section with an unknown key is a typo worth stopping for; a variable
                // outside every section (REGISTRYD_HOME, say) may belong to someone else.
                let in_section = self
                    .schema
                    .keys()
                    .any(|s| rest.starts_with(&format!("{}_", s.to_uppercase())));
                if in_section {
                    self.errors.push(ConfigError {
                        key: var.clone(),
                        origin,
                        message: "no such configuration key (REGISTRYD_<SECTION>_<KEY>, e.g. REGISTRYD_STORAGE_ROOT)".into(),
                    });
                } else {
                    self.warnings.push(format!(
                        "ignoring environment variable {var}: not a configuration key"
                    ));
                }
                continue;
            };
            match value_from_env(&default, raw) {
                Ok(v) => self.set(&section, &key, v, origin),
                Err(message) => self.errors.push(ConfigError {
                    key: format!("{section}.{key}"),
                    origin,
                    message,
                }),
            }
        }
    }

    /// The command-line flags, the top layer.
    fn flags(&mut self, overrides: &Overrides) {
        if !overrides.listen.is_empty() {
            let v = Value::Array(
                overrides
                    .listen
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            );
            self.set("server", "listen", v, "flag --listen".into());
        }
        if let Some(root) = &overrides.storage {
            let v = Value::String(root.display().to_string());
            self.set("storage", "root", v, "flag --storage".into());
        }
        if overrides.plain_http {
            let v = Value::Boolean(false);
            self.set("tls", "enabled", v, "flag --plain-http".into());
        }
    }

    /// Checks every closed-set key of the merged layers. A name outside its set becomes a problem,
    /// reported with the validation problems (so a bad `storage.driver` and a bad
    /// `server.listen` still show up in one run), and the key falls back to its default so the
    /// merged table turns into a [`Config`] for validation to look at.
    fn closed_sets(&mut self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for closed in CLOSED_SETS {
            let Some((section, key)) = closed.key.split_once('.') else {
                continue;
            };
            let value = self.merged.get(section).and_then(|s| s.get(key));
            let Some(name) = value.and_then(Value::as_str) else {
                continue;
            };
            if closed.names.contains(&name) {
                continue;
            }
            problems.push((closed.key, (closed.rejection)(name)));
            if let Some(default) = self.schema.get(section).and_then(|s| s.get(key)).cloned() {
                set(&mut self.merged, section, key, default);
            }
        }
        problems
    }
}

/// A TOML syntax error without the source line the `toml` crate quotes (a password, perhaps):
/// where it is and what is wrong.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(
                "TOML syntax error at line {line}, column {column}: {}",
                e.message()
            )
        }
        None => format!("TOML syntax error: {}", e.message()),
    }
}

/// Checks `[[upstream]]`-style tables: known keys with values of the right type, required keys.
fn check_table_array(
    (name, keys, required, what): &(&str, &[KeyType], &[&str], &str),
    value: &Value,
) -> Result<(), Vec<(String, String)>> {
    let Value::Array(items) = value else {
        return Err(vec![(
            name.to_string(),
            format!("must be [[{name}]] tables ({what})"),
        )]);
    };
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Table(t) = item else {
            errors.push((
                format!("{name}[{i}]"),
                format!("must be a [[{name}]] table"),
            ));
            continue;
        };
        for (key, v) in t {
            let default = keys.iter().find(|(k, _)| k == key).map(|(_, make)| make());
            if let Err(message) = check_type(default.as_ref(), v) {
                errors.push((format!("{name}[{i}].{key}"), message));
            }
        }
        for r in *required {
            if !t.contains_key(*r) {
                errors.push((format!("{name}[{i}].{r}"), "is required".into()));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn set(table: &mut Table, section: &str, key: &str, v: Value) {
    if let Some(Value::Table(sec)) = table.get_mut(section) {
        sec.insert(key.to_string(), v);
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean (true or false)",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

fn check_type(default: Option<&Value>, v: &Value) -> Result<(), String> {
    let Some(default) = default else {
        return Err("unknown key".into());
    };
    if std::mem::discriminant(default) != std::mem::discriminant(v) {
        return Err(format!(
            "must be {}, not {}",
            type_name(default),
            type_name(v)
        ));
    }
    if let (Value::Array(_), Value::Array(items)) = (default, v)
        && items.iter().any(|i| !i.is_str())
    {
        return Err("must be a list of strings".into());
    }
    if let Value::Integer(i) = v
        && *i < 0
    {
        return Err("must not be negative".into());
    }
    Ok(())
}

fn value_from_env(default: &Value, raw: &str) -> Result<Value, String> {
    let v = match default {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Boolean(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Boolean(true),
            "false" | "0" | "no" | "off" => Value::Boolean(false),
            _ => return Err(format!("{raw:?} is not a boolean (true or false)")),
        },
        Value::Integer(_) => Value::Integer(
            raw.trim()
                .parse::<i64>()
                .ok()
                .filter(|i| *i >= 0)
                .ok_or_else(|| format!("{raw:?} is not a non-negative integer"))?,
        ),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        other => {
            return Err(format!(
                "cannot be set from the environment ({})",
                type_name(other)
            ));
        }
    };
    Ok(v)
}

/// Line numbers of `section` and `section.key` in a TOML text, for error messages.
fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return lines;
    };
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    for (section, value) in doc.get_ref() {
        let sname = section.get_ref().to_string();
        lines.insert(sname.clone(), line_of(section.span().start));
        if let toml::de::DeValue::Table(t) = value.get_ref() {
            for (k, _) in t {
                lines.insert(format!("{sname}.{}", k.get_ref()), line_of(k.span().start));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(file: &str, env: &[(&str, &str)]) -> Vec<(String, String, String)> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_layers(Some(("t.toml", file)), &env, &Overrides::default())
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| (e.key, e.origin, e.message))
            .collect()
    }

    /// A name outside a closed set is reported with its key, origin and the names allowed, and
    /// does not hide the other problems of the same run.
    #[test]
    fn closed_sets_name_key_origin_and_choices() {
        let errs = errors(
            "[server]\nlisten = [\"nope\"]\n[auth]\nanonymous = \"read\"\n[log]\nformat = \"xml\"\n",
            &[("REGISTRYD_STORAGE_DRIVER", "s4")],
        );
        let want = |key: &str, origin: &str, message: &str| {
            assert!(
                errs.iter()
                    .any(|(k, o, m)| k == key && o == origin && m == message),
                "{key} ({origin}): {message} missing from {errs:?}"
            );
        };
        want(
            "storage.driver",
            "environment variable REGISTRYD_STORAGE_DRIVER",
            "\"s4\" is not a storage driver (\"filesystem\" or \"s3\")",
        );
        want(
            "auth.anonymous",
            "t.toml line 4",
            "\"read\" is not one of auto, none, pull, all",
        );
        want(
            "log.format",
            "t.toml line 6",
            "\"xml\" is not one of auto, journald, text, json",
        );
        assert!(errs.iter().any(|(k, ..)| k == "server.listen"), "{errs:?}");
        // A wrong type is still a type error, reported before any value is judged.
        let errs = errors("[storage]\ndriver = 3\n", &[]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].2, "must be a string, not an integer");
    }
}
