//! Distribution `config.yml` import (`migrate::convert`, behind `registryd import-config`): YAML
//! written for another program, any of its versions.
//!
//! Invariants: no panic; a conversion that succeeds writes TOML that parses, and that
//! registryd's configuration loader reads without panicking (whether it accepts it depends on
//! what the YAML asked for: check-config says what to fix). Every warning is in the text as a
//! comment, as the operator reads it there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryd::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let yaml = String::from_utf8_lossy(data);
    let Ok(m) = registryd::migrate::convert(&yaml) else {
        return;
    };
    if let Err(e) = toml::from_str::<toml::Table>(&m.toml) {
        panic!(
            "import-config wrote TOML that does not parse: {e}\n{}",
            m.toml
        );
    }
    for w in &m.warnings {
        assert!(
            m.toml.contains(w.lines().next().unwrap_or("")),
            "warning {w:?} not in the text"
        );
    }
    let _ = Config::from_layers(
        Some(("converted.toml", &m.toml)),
        &[],
        &Overrides::default(),
    );
});
