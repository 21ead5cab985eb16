//! The one-line status systemd shows (`systemctl status`): where the registry listens, the
//! certificate's expiry and any refused reload, the storage's health, read-only modes.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::health::Health;
use crate::http::handlers::App;
use crate::node::tls::Tls;

/// Renders the status line as it is now; shared by every task that changes what it says.
pub(super) type Status = Arc<dyn Fn() -> String + Send + Sync>;

/// The status line of this daemon, read fresh at each call.
pub(super) fn reporter(listen: &[SocketAddr], tls: Option<&Arc<Tls>>, app: &Arc<App>) -> Status {
    let (tls, app, listen) = (tls.cloned(), app.clone(), listen.to_vec());
    Arc::new(move || {
        status_line(
            &listen,
            tls.as_deref(),
            &app.health,
            app.settings().read_only,
        )
    })
}

fn status_line(
    listen: &[SocketAddr],
    tls: Option<&Tls>,
    health: &Health,
    read_only: bool,
) -> String {
    let addrs: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
    let mut s = format!("serving on {}", addrs.join(", "));
    match tls {
        Some(t) => {
            let i = t.info();
            s.push_str(&format!(
                "; certificate expires {} ({} days)",
                i.expiry_date(),
                i.days_left()
            ));
            if let Some(e) = t.last_error() {
                s.push_str(&format!(
                    "; certificate reload REFUSED: {e} (previous certificate in service)"
                ));
            }
        }
        None => s.push_str("; TLS OFF"),
    }
    if health.is_ready() {
        s.push_str("; storage ok");
    } else {
        s.push_str(&format!("; storage UNAVAILABLE: {}", health.reason()));
    }
    if read_only {
        s.push_str("; READ-ONLY (storage.read_only)");
    }
    if let Some(reason) = health.low_space() {
        s.push_str(&format!("; READ-ONLY: {reason}"));
    }
    s
}
