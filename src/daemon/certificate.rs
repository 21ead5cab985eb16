//! The certificate in the daemon's life: checked before start (`registryd preflight`), loaded at
//! start (a bad pair stops start-up, with the reason), watched while serving and reloaded on SIGHUP
//! (a bad new pair is refused and the previous one stays in service).

use std::sync::Arc;

use super::board;
use super::status::Status;
use crate::config::Config;
use crate::http::handlers::App;
use crate::node::systemd;
use crate::node::tls::{Reload, Tls};
use crate::shutdown::Shutdown;

/// Whether the configuration can run: it parsed (the caller loaded it) and, with TLS, the
/// certificate pair loads. `Err` says what to do.
pub fn preflight(config: &Config) -> Result<String, String> {
    if !config.tls.enabled {
        return Ok("configuration ok (TLS off)".into());
    }
    let t = Tls::load(&config.tls.certificate, &config.tls.key).map_err(|e| {
        format!(
            "no usable TLS certificate: {e}. Put a certificate chain and key at {} and {} (or run `registryd cert init --hosts {}`), then `systemctl start registryd`",
            config.tls.certificate.display(),
            config.tls.key.display(),
            config.node.hostnames.join(",")
        )
    })?;
    let i = t.info();
    Ok(format!(
        "configuration ok; certificate for {} expires {}",
        i.names.join(", "),
        i.expiry_date()
    ))
}

/// Start-up phase: the certificate pair, when TLS is on. Refuses to start on a bad pair, with the
/// reason; warns loudly when TLS is off.
pub(super) fn load(config: &Config) -> anyhow::Result<Option<Arc<Tls>>> {
    if !config.tls.enabled {
        tracing::warn!(
            "TLS is OFF (--plain-http / tls.enabled = false): traffic and credentials travel in clear text. Use this only for development on loopback."
        );
        return Ok(None);
    }
    let t = Tls::load(&config.tls.certificate, &config.tls.key).map_err(|e| {
        anyhow::anyhow!(
            "TLS: {e}. Set tls.certificate and tls.key, make a pair with `registryd cert init`, or use --plain-http on loopback"
        )
    })?;
    log_certificate(&t, config);
    Ok(Some(t))
}

fn log_certificate(tls: &Tls, config: &Config) {
    let info = tls.info();
    tracing::info!(names = ?info.names, expires = %info.expiry_date(), days_left = info.days_left(), "certificate loaded");
    if info.days_left() <= config.tls.expiry_warning_days as i64 {
        tracing::warn!(expires = %info.expiry_date(), days_left = info.days_left(), "certificate expires soon: renew it (the new files are picked up without a restart)");
    }
    for h in &config.node.hostnames {
        if !info.covers(h) {
            tracing::warn!(hostname = %h, names = ?info.names, "certificate does not cover this hostname: clients using it will fail TLS verification");
        }
    }
}

/// Background task: reloads the certificate whenever its files change, until `shutdown`, and
/// puts the outcome in the log, the status line and the status board. Without a watch (inotify
/// refused), SIGHUP still reloads.
pub(super) fn watch(tls: &Arc<Tls>, app: &Arc<App>, status: Status, shutdown: Shutdown) {
    let (me, app) = (tls.clone(), app.clone());
    let watched = tls.watch(shutdown, move |outcome| {
        match outcome {
            Ok(Reload::Replaced(info)) => tracing::info!(names = ?info.names, expires = %info.expiry_date(), "certificate reloaded"),
            Ok(Reload::Unchanged) => {}
            Err(e) => tracing::error!(error = %e, "new certificate refused, previous one stays in service"),
        }
        board::post_certificate(&app.status, &me);
        systemd::status(&status());
    });
    if let Err(e) = watched {
        tracing::warn!(error = %e, "cannot watch the certificate directory; reload with SIGHUP");
    }
}

/// SIGHUP: reads the pair again and logs what happened.
pub(super) fn reload(t: &Tls) {
    match t.reload() {
        Ok(Reload::Replaced(info)) => {
            tracing::info!(names = ?info.names, expires = %info.expiry_date(), "certificate reloaded")
        }
        Ok(Reload::Unchanged) => tracing::info!("certificate unchanged"),
        Err(e) => {
            tracing::error!(error = %e, "new certificate refused, previous one stays in service")
        }
    }
}
