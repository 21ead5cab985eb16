//! The TOML configuration through validation (`config::Config::from_layers`): the file, the
//! `REGISTRYD_*` environment layer, the merge and every check `registryd check-config` runs.
//!
//! Invariants: no panic; a configuration that loads prints (`check-config`'s output,
//! `Config::to_toml`) as a file that loads again to the same configuration, so what check-config
//! shows an operator is what the daemon runs. The input is the file's text, then after a NUL byte
//! optional `KEY=VALUE` lines for the environment (`REGISTRYD_` is put in front of each key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryd::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(file);
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("REGISTRYD_{k}"), v.to_string()))
        .collect();
    let Ok(config) = Config::from_layers(Some(("fuzz.toml", &text)), &env, &Overrides::default())
    else {
        return;
    };
    let printed = config.to_toml();
    let again = Config::from_layers(Some(("printed.toml", &printed)), &[], &Overrides::default())
        .unwrap_or_else(|e| panic!("check-config's own output refused: {e}\n{printed}"));
    assert_eq!(
        again.to_toml(),
        printed,
        "the printed configuration loads differently"
    );
    let (mut a, mut b) = (config, again);
    a.warnings.clear();
    b.warnings.clear();
    assert_eq!(a, b, "the printed configuration loads differently");
});
