//! `registryd doctor`: checks this node the way an operator would by hand, and prints one verdict
//! per line with how to fix what fails. Exit code 1 when anything fails (warnings do not), so it
//! fits a monitoring check or a deployment step.
//!
//! It reads and probes only: it changes nothing on the node except a probe file in the storage
//! root (written, fsynced and removed, as the daemon's own health check does).

mod listeners;
mod node;
mod storage;

use std::path::Path;

use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, check: &'static str, verdict: Verdict, message: String, fix: Option<String>) {
        self.0.push(Finding {
            check,
            verdict,
            message,
            fix,
        });
    }
    fn ok(&mut self, check: &'static str, message: String) {
        self.add(check, Verdict::Ok, message, None);
    }
    fn warn(&mut self, check: &'static str, message: String, fix: String) {
        self.add(check, Verdict::Warn, message, Some(fix));
    }
    fn fail(&mut self, check: &'static str, message: String, fix: String) {
        self.add(check, Verdict::Fail, message, Some(fix));
    }
    fn skip(&mut self, check: &'static str, message: String) {
        self.add(check, Verdict::Skip, message, None);
    }
}

/// Runs every check; `extra_ca` is trusted besides the system store and the usual CA files when
/// the listeners are tried.
pub async fn run(config: &Config, extra_ca: Option<&Path>) -> Vec<Finding> {
    let mut r = Report::default();
    let ip = crate::config::parse_cidr(&config.node.address).map(|(ip, _)| ip);
    node::address(&mut r, config, ip).await;
    node::hosts(&mut r, config, ip);
    let cert = node::certificate(&mut r, config, ip);
    node::clock(&mut r, cert.as_ref());
    if config.storage.driver == crate::config::StorageDriver::S3 {
        storage::bucket(&mut r, config).await;
    } else {
        storage::filesystem(&mut r, config);
    }
    listeners::check(&mut r, config, ip, extra_ca).await;
    systemd(&mut r);
    r.0
}

fn systemd(r: &mut Report) {
    if !Path::new("/run/systemd/system").is_dir() {
        r.skip("systemd", "this system does not run systemd".into());
        return;
    }
    let ask = |what: &str| {
        std::process::Command::new("systemctl")
            .args([what, "registryd.service"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let (active, enabled) = (ask("is-active"), ask("is-enabled"));
    if active == "active" && enabled == "enabled" {
        r.ok("systemd", "registryd.service is active and enabled".into());
    } else if active == "active" {
        r.warn(
            "systemd",
            format!("registryd.service is active but {enabled}: it will not start at boot"),
            "systemctl enable registryd".into(),
        );
    } else {
        r.fail(
            "systemd",
            format!("registryd.service is {active} ({enabled})"),
            "systemctl enable --now registryd; journalctl -u registryd -n 50 says why it stopped"
                .into(),
        );
    }
}

/// The report as text lines: `ok    check  message`, with `      fix: ...` under what fails.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let v = match f.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        };
        out.push_str(&format!("{v:<5} {:<12} {}\n", f.check, f.message));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("{:<18} fix: {fix}\n", ""));
        }
    }
    out
}

/// `registryd doctor`: the findings as text or JSON; exit 1 when any check failed.
pub fn cli(config: &Config, extra_ca: Option<&Path>, json: bool) -> std::process::ExitCode {
    let Ok(rt) = crate::lifecycle::cli::runtime() else {
        return std::process::ExitCode::FAILURE;
    };
    let findings = rt.block_on(run(config, extra_ca));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else {
        print!("{}", render(&findings));
    }
    if findings.iter().any(|f| f.verdict == Verdict::Fail) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
