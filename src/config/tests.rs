use std::path::PathBuf;

use super::s3::aws_credentials;
use super::*;

fn load(file: &str, env: &[(&str, &str)], o: &Overrides) -> Result<Config, ConfigErrors> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    Config::from_layers(Some(("test.toml", file)), &env, o)
}

#[test]
fn defaults_parse() {
    let d = Config::defaults();
    assert_eq!(d.server.listen, vec!["169.254.254.254:8443"]);
    assert!(d.tls.enabled);
    assert_eq!(d.storage.root, PathBuf::from("/var/lib/registryd"));
    assert_eq!(
        Config::from_layers(None, &[], &Overrides::default()).unwrap(),
        d
    );
    // The shipped file is the defaults.
    assert_eq!(load(DEFAULTS_TOML, &[], &Overrides::default()).unwrap(), d);
}

#[test]
fn layers_override_in_order() {
    let o = Overrides {
        listen: vec!["127.0.0.1:5000".into()],
        storage: None,
        plain_http: true,
    };
    let c = load(
        "[storage]\nroot = \"/from/file\"\ndelete_enabled = false\n",
        &[
            ("REGISTRYD_STORAGE_ROOT", "/from/env"),
            ("REGISTRYD_NODE_HOSTNAMES", "a.home, b.home"),
        ],
        &o,
    )
    .unwrap();
    assert_eq!(c.storage.root, PathBuf::from("/from/env"));
    assert!(!c.storage.delete_enabled);
    assert_eq!(c.server.listen, vec!["127.0.0.1:5000"]);
    assert!(!c.tls.enabled);
    assert_eq!(c.node.hostnames, vec!["a.home", "b.home"]);
}

#[test]
fn s3_driver_settings() {
    let file = "[default]\naws_access_key_id = AK1\naws_secret_access_key = SK1\n\
                [profile ci]\naws_access_key_id=AK2\naws_secret_access_key=SK2\n";
    assert_eq!(
        aws_credentials(file, "default"),
        Some(("AK1".into(), "SK1".into()))
    );
    assert_eq!(
        aws_credentials(file, "ci"),
        Some(("AK2".into(), "SK2".into()))
    );
    assert_eq!(aws_credentials(file, "other"), None);
    let ok = "[storage]\ndriver = \"s3\"\n[s3]\nendpoint = \"http://127.0.0.1:3900\"\n\
              bucket = \"b\"\nregion = \"garage\"\naccess_key_id = \"k\"\n\
              secret_access_key = \"very-secret\"\n";
    let c = load(ok, &[], &Overrides::default()).unwrap();
    assert!(!c.to_toml().contains("very-secret"));
    let s = c.s3.settings(std::time::Duration::from_secs(1)).unwrap();
    assert_eq!((s.region.as_str(), s.bucket.as_str()), ("garage", "b"));
    let bad = "[storage]\ndriver = \"s4\"\n";
    let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
    assert_eq!(errs[0].key, "storage.driver");
    let bad = "[storage]\ndriver = \"s3\"\nrequire_mount = \"/mnt\"\n";
    let keys: Vec<_> = load(bad, &[], &Overrides::default())
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert!(keys.contains(&"s3.bucket".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"storage.require_mount".to_string()),
        "{keys:?}"
    );
}

#[test]
fn upstreams() {
    let ok = "[proxy]\ndefault_upstream = \"docker.io\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\nusername = \"u\"\npassword = \"pw-1f8e\"\n";
    let c = load(ok, &[], &Overrides::default()).unwrap();
    assert_eq!(c.upstream.len(), 1);
    assert_eq!(c.upstream[0].prefixes(), vec!["docker.io".to_string()]);
    assert!(!c.to_toml().contains("pw-1f8e"), "{}", c.to_toml());
    let bad = "[proxy]\ndefault_upstream = \"quay.io\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"ftp://x\"\nuser = \"u\"\n[[upstream]]\nurl = \"https://x\"\n";
    let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"upstream[0].user"), "{keys:?}");
    assert!(keys.contains(&"upstream[1].name"), "{keys:?}");
    let bad = "[proxy]\ndefault_upstream = \"quay.io\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"ftp://x\"\npassword = \"p\"\n";
    let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "upstream.url",
        "upstream.username",
        "proxy.default_upstream",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn secrets_stay_out_of_check_config() {
    let text = "[proxy]\ndefault_upstream = \"up\"\n[[upstream]]\nname = \"up\"\nurl = \"https://u:S3CRET-url@example.net\"\n";
    let c = load(text, &[], &Overrides::default()).unwrap();
    let shown = c.to_toml();
    assert!(!shown.contains("S3CRET"), "{shown}");
    assert!(shown.contains("https://u:REDACTED@example.net"), "{shown}");
    // A syntax error on a password's line names the place, not the line.
    let text = "[[upstream]]\nname = \"up\"\npassword = \"S3CRET-pw\n";
    let errs = load(text, &[], &Overrides::default()).unwrap_err().0;
    let all: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
    assert!(!all.iter().any(|m| m.contains("S3CRET")), "{all:?}");
    assert!(all.iter().any(|m| m.contains("line 3")), "{all:?}");
    let bad = "[[upstream]]\nname = \"up\"\nurl = \"ftp://u:S3CRET@x\"\n";
    let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
    let all: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
    assert!(!all.iter().any(|m| m.contains("S3CRET")), "{all:?}");
    assert_eq!(
        redact_url("https://registry-1.docker.io"),
        "https://registry-1.docker.io"
    );
}

#[test]
fn reports_every_error_with_key_and_line() {
    let file = "[server]\nlisten = [\"nope\"]\nbogus = 1\n\n[storage]\ndelete_enabled = \"yes\"\n[extra]\nx=1\n";
    let env = [("REGISTRYD_TLS_NOPE", "1"), ("REGISTRYD_BIN", "/x")];
    let errs = load(file, &env, &Overrides::default()).unwrap_err().0;
    let keys: Vec<_> = errs
        .iter()
        .map(|e| (e.key.as_str(), e.origin.as_str()))
        .collect();
    assert!(
        keys.contains(&("server.bogus", "test.toml line 3")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&("storage.delete_enabled", "test.toml line 6")),
        "{keys:?}"
    );
    assert!(keys.contains(&("extra", "test.toml line 7")), "{keys:?}");
    assert!(
        keys.iter().any(|(k, _)| *k == "REGISTRYD_TLS_NOPE"),
        "{keys:?}"
    );
    // Outside every section: someone else's variable, a warning and no error.
    assert!(!keys.iter().any(|(k, _)| *k == "REGISTRYD_BIN"), "{keys:?}");
    let c = load("", &[("REGISTRYD_BIN", "/x")], &Overrides::default()).unwrap();
    assert_eq!(c.warnings.len(), 1);
    // semantic errors come after type errors are fixed, still with their origin
    let errs = load(
        "[server]\nlisten = [\"nope\"]\n[log]\nlevel = \"loud!\"\n",
        &[],
        &Overrides::default(),
    )
    .unwrap_err()
    .0;
    assert_eq!(errs[0].key, "server.listen");
    assert_eq!(errs[0].origin, "test.toml line 2");
    assert_eq!(errs[1].key, "log.level");
}

#[test]
fn bad_env_values_name_the_variable() {
    let errs = load(
        "",
        &[("REGISTRYD_STORAGE_DELETE_ENABLED", "maybe")],
        &Overrides::default(),
    )
    .unwrap_err()
    .0;
    assert_eq!(errs[0].key, "storage.delete_enabled");
    assert!(errs[0].origin.contains("REGISTRYD_STORAGE_DELETE_ENABLED"));
}

#[test]
fn cidr() {
    assert!(parse_cidr("169.254.254.254/32").is_some());
    assert!(parse_cidr("169.254.254.254/33").is_none());
    assert!(parse_cidr("fe80::1/64").is_some());
    assert!(parse_cidr("x/1").is_none());
}

#[test]
fn ui_sessions_are_bounded_in_time() {
    let c = load(
        "[ui]\nsession_idle_secs = 600\nsession_max_secs = 3600\n",
        &[],
        &Overrides::default(),
    )
    .unwrap();
    let ui = c.http_settings().ui;
    assert_eq!(ui.session_idle, std::time::Duration::from_secs(600));
    assert_eq!(ui.session_max, std::time::Duration::from_secs(3600));
    for bad in [
        "[ui]\nsession_idle_secs = 0\n",
        "[ui]\nsession_idle_secs = 7200\nsession_max_secs = 3600\n",
    ] {
        let errs = load(bad, &[], &Overrides::default()).unwrap_err().0;
        assert!(
            errs.iter().any(|e| e.key == "ui.session_idle_secs"),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn node_names_are_checked_where_they_are_set() {
    let c = load(
        "[node]\nname = \"node-1\"\nheartbeat_secs = 2\n",
        &[],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!((c.node.name.as_str(), c.node.heartbeat_secs), ("node-1", 2));
    // Empty: the hostname, at start.
    assert_eq!(Config::defaults().node.name, "");
    let errs = load("[node]\nname = \"../etc\"\n", &[], &Overrides::default())
        .unwrap_err()
        .0;
    assert_eq!(errs[0].key, "node.name");
    assert_eq!(errs[0].origin, "test.toml line 2");
}

#[test]
fn retention_and_immutable_rules() {
    let c = load(
        "[[retention]]\nrepositories = \"ci/**\"\nkeep_tags = [\"latest\", \"v*\"]\nkeep_last = 20\nuntagged_after_days = 2\n\n[[immutable]]\nrepositories = \"**\"\ntags = [\"v*\"]\n",
        &[],
        &Overrides::default(),
    )
    .unwrap();
    let rules = c.rules();
    assert_eq!(
        rules.retention_for("ci/app").map(|r| r.keep_last),
        Some(Some(20))
    );
    assert!(rules.retention_for("other").is_none());
    assert!(rules.immutable("a/b", "v1").is_some());
    assert!(c.http_settings().rules.immutable("a", "v2").is_some());

    let errs = load(
        "[[retention]]\nrepositories = \"Bad Glob\"\nkeep_last = \"twenty\"\n\n[[retention]]\nrepositories = \"x/**\"\n\n[[immutable]]\nrepositories = \"**\"\n",
        &[],
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(errs.contains("retention[0].keep_last"), "{errs}");
    assert!(errs.contains("immutable[0].tags"), "{errs}");
    let errs = load(
        "[[retention]]\nrepositories = \"Bad Glob\"\nkeep_last = 3\n\n[[retention]]\nrepositories = \"x/**\"\n",
        &[],
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errs.contains("retention.repositories") && errs.contains("Bad Glob"),
        "{errs}"
    );
    assert!(errs.contains("does nothing"), "{errs}");
}
