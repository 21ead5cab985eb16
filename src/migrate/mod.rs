//! `registryd import-config`: a CNCF Distribution `config.yml` (the registry:2 image, Debian's
//! docker-registry) turned into the equivalent registryd TOML, with a warning for each setting that
//! has no equivalent or means something else here. The output is a complete configuration file:
//! only the keys that differ from registryd's defaults, plus the warnings as comments at the top.

mod sections;
mod yaml;

use serde_json::Value as Yaml;
use toml::{Table, Value};

use self::yaml::to_json;

/// The TOML text and the warnings (also written into the text as comments).
pub struct Migrated {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Converts the text of a Distribution configuration.
pub fn convert(yaml: &str) -> Result<Migrated, String> {
    let docs =
        yaml_rust2::YamlLoader::load_from_str(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
    let doc = docs.first().map(to_json).unwrap_or(Yaml::Null);
    if !doc.is_object() {
        return Err("not a Distribution configuration (the top level is not a mapping)".into());
    }
    let mut m = Migration {
        out: Table::new(),
        warnings: Vec::new(),
    };
    m.storage(&doc)?;
    m.http(&doc)?;
    m.auth(&doc)?;
    m.health(&doc)?;
    m.proxy(&doc)?;
    m.log(&doc);
    for (key, why) in [
        (
            "notifications",
            "webhook notifications have no equivalent; metrics and the journal are registryd's event sources",
        ),
        (
            "redis",
            "no Redis: registryd caches manifests in memory per node and reads links from the shared storage",
        ),
        (
            "validation",
            "manifest validation settings have no equivalent: registryd always checks that referenced blobs exist",
        ),
        ("compatibility", "schema1 is not served by registryd"),
        ("reporting", "bugsnag/newrelic reporting has no equivalent"),
        (
            "middleware",
            "storage and registry middleware (CloudFront, redirects) have no equivalent",
        ),
        (
            "loglevel",
            "the old top-level loglevel is ignored; use log.level",
        ),
    ] {
        if doc.get(key).is_some_and(|v| !v.is_null()) {
            m.warn(format!("{key}: {why}"));
        }
    }
    let mut text = String::from(
        "# registryd configuration converted from a Distribution config.yml by\n# `registryd import-config`. Every key not set here has registryd's default\n# (`registryd check-config` prints them all).\n# Distribution has no retention or immutable-tag settings, so none were converted: the\n# scripts or housekeepers that deleted old tags map to [[retention]] rules, and protected\n# release tags to [[immutable]] rules (README, \"Retention and immutable tags\").\n",
    );
    for w in &m.warnings {
        text.push_str(&format!("# warning: {w}\n"));
    }
    text.push('\n');
    text.push_str(&toml::to_string(&m.out).map_err(|e| format!("cannot write the TOML: {e}"))?);
    Ok(Migrated {
        toml: text,
        warnings: m.warnings,
    })
}

/// The TOML being built and the warnings so far; `sections` fills it one Distribution section at
/// a time.
struct Migration {
    out: Table,
    warnings: Vec<String>,
}

impl Migration {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    fn set(&mut self, section: &str, key: &str, v: Value) {
        let t = self
            .out
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = t {
            t.insert(key.to_string(), v);
        }
    }
}

/// `registryd import-config FILE`: the TOML on stdout, warnings on stderr; exit 2 when the file
/// cannot be read, 1 when it cannot be converted.
pub fn cli(file: &std::path::Path) -> std::process::ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "registryd import-config: cannot read {}: {e}",
                file.display()
            );
            return std::process::ExitCode::from(2);
        }
    };
    match convert(&text) {
        Ok(m) => {
            print!("{}", m.toml);
            for w in &m.warnings {
                eprintln!("registryd import-config: warning: {w}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registryd import-config: {}: {e}", file.display());
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::yaml::duration_secs;
    use super::*;

    #[test]
    fn an_absurd_duration_is_refused_with_its_key() {
        let huge = "99999999999999999999999999999999999999999h1h";
        assert!(duration_secs(&Yaml::String(huge.into())).is_err());
        // Go's own limit (Distribution's parser): i64::MAX nanoseconds, about 292 years.
        let d = |s: &str| duration_secs(&Yaml::String(s.into()));
        assert_eq!(d("2562047h47m16.854775807s"), Ok(9_223_372_037));
        assert!(d("2562047h47m16.854775808s").is_err());
        assert!(d("2562048h").is_err());
        assert_eq!(d("1.5s"), Ok(2));
        assert_eq!(d("0.5h"), Ok(1_800));
        assert_eq!(d("1ns"), Ok(1));
        assert_eq!(d("1.000000000000000000000001s"), Ok(1));
        for (yaml, key) in [
            (
                format!("storage:\n  maintenance:\n    uploadpurging:\n      age: {huge}\n"),
                "storage.maintenance.uploadpurging.age",
            ),
            (
                format!("storage:\n  maintenance:\n    uploadpurging:\n      interval: {huge}\n"),
                "storage.maintenance.uploadpurging.interval",
            ),
            (
                format!("http:\n  draintimeout: {huge}\n"),
                "http.draintimeout",
            ),
        ] {
            let e = convert(&format!("version: 0.1\n{yaml}")).err();
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.starts_with(key) && !e.contains('\n')),
                "{yaml}: {e:?}"
            );
        }
    }

    #[test]
    fn compose_style() {
        let m = convert(
            r#"
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  tls:
    certificate: /certs/domain.crt
    key: /certs/domain.key
  headers:
    X-Content-Type-Options: [nosniff]
    Access-Control-Allow-Origin: ['http://ui.example']
    Access-Control-Allow-Methods: ['HEAD,GET,OPTIONS,DELETE']
    Access-Control-Max-Age: [1728000]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"#,
        )
        .unwrap();
        let t: Table = toml::from_str(&m.toml).unwrap();
        assert_eq!(t["storage"]["root"].as_str(), Some("/var/lib/registry"));
        assert_eq!(t["server"]["listen"][0].as_str(), Some("0.0.0.0:5000"));
        assert_eq!(
            t["server"]["headers"][0].as_str(),
            Some("X-Content-Type-Options: nosniff")
        );
        assert_eq!(
            t["cors"]["allowed_methods"].as_array().map(Vec::len),
            Some(4)
        );
        assert_eq!(t["cors"]["max_age_secs"].as_integer(), Some(1_728_000));
        assert_eq!(t["storage"]["check_interval_secs"].as_integer(), Some(10));
        assert!(convert("- a list").is_err());
    }

    #[test]
    fn s3_driver() {
        let m = convert(
            r#"
version: 0.1
storage:
  s3:
    accesskey: AKIDEXAMPLE
    secretkey: wJalrXUtnFEMI
    region: garage
    regionendpoint: garage.internal:3900
    secure: false
    bucket: registry
    rootdirectory: /docker
    storageclass: STANDARD
  redirect:
    disable: true
http:
  addr: :5000
"#,
        )
        .unwrap();
        let t: Table = toml::from_str(&m.toml).unwrap();
        assert_eq!(t["storage"]["driver"].as_str(), Some("s3"));
        assert_eq!(
            t["s3"]["endpoint"].as_str(),
            Some("http://garage.internal:3900")
        );
        assert_eq!(t["s3"]["prefix"].as_str(), Some("docker"));
        assert_eq!(t["s3"]["path_style"].as_bool(), Some(true));
        assert_eq!(t["s3"]["redirect_blobs"].as_bool(), Some(false));
        assert_eq!(t["s3"]["secret_access_key"].as_str(), Some("wJalrXUtnFEMI"));
        assert!(m.warnings.iter().any(|w| w.contains("storageclass")));
        let aws = convert("version: 0.1\nstorage:\n  s3:\n    region: eu-west-1\n    bucket: b\n")
            .unwrap();
        let t: Table = toml::from_str(&aws.toml).unwrap();
        assert_eq!(
            t["s3"]["endpoint"].as_str(),
            Some("https://s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(t["s3"]["redirect_blobs"].as_bool(), Some(true));
    }
}
