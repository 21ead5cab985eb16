//! TLS: the certificate pair, loaded and checked, served through a resolver that swaps atomically so
//! new handshakes get the new certificate while open connections keep theirs.
//!
//! Hot reload watches the certificate's **directory** (file watches miss certbot's rename-over and
//! Kubernetes/Nomad's `..data` symlink swap), debounces the burst of events a rotation makes, and
//! reloads only when the bytes changed (reading the PEM files makes events too). A pair that does
//! not parse, whose key does not match, or that is expired or not yet valid is refused: the old one
//! stays in service and the reason is logged and shown in the systemd status line.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use x509_parser::extensions::GeneralName;

use crate::shutdown::Shutdown;

/// What an operator wants to know about the certificate in service.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The subject's distinguished name, as OpenSSL prints it (`CN=registry.home`).
    pub subject: String,
    /// Subject alternative names (DNS names and IP addresses), or the CN when there are none.
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn days_left(&self) -> i64 {
        (self.not_after - now()) / 86_400
    }

    /// `not_after` as a UTC date, `YYYY-MM-DD`.
    pub fn expiry_date(&self) -> String {
        let days = self.not_after.div_euclid(86_400);
        // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one line of output.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// Whether the certificate covers `host` (exact name, or a `*.` wildcard for one label).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.names.iter().any(|n| {
            let n = n.to_ascii_lowercase();
            if let Some(suffix) = n.strip_prefix("*.") {
                host.split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
            } else {
                n == host
            }
        })
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Why a certificate pair was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: bad PEM certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: no usable PEM private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the private key does not match the certificate ({reason})")]
    Mismatch { reason: String },
    #[error("the certificate expired on {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0} (check the clock)")]
    NotYetValid(String),
}

/// A loaded, checked pair, and a fingerprint of the bytes it came from.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
    fingerprint: [u8; 32],
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and key (PEM).
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::Ipv4Addr::from(a).to_string())
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::Ipv6Addr::from(a).to_string())
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|c| c.as_str().ok())
                .map(str::to_string),
        );
    }
    let info = CertInfo {
        subject: parsed.subject().to_string(),
        names,
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    };
    let t = now();
    if t > info.not_after {
        return Err(TlsError::Expired(info.expiry_date()));
    }
    if t < info.not_before {
        let nb = CertInfo {
            not_after: info.not_before,
            ..info.clone()
        };
        return Err(TlsError::NotYetValid(nb.expiry_date()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
            reason: e.to_string(),
        })?;
    let mut h = Sha256::new();
    h.update(&cert_pem);
    h.update(&key_pem);
    Ok(Loaded {
        key: Arc::new(certified),
        info,
        fingerprint: h.finalize().into(),
    })
}

/// The certificate in service; what rustls asks on every handshake.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Owns the certificate paths, the resolver, and the state of the last reload.
pub struct Tls {
    resolver: Arc<CertResolver>,
    paths: Mutex<(PathBuf, PathBuf)>,
    state: Mutex<TlsState>,
}

#[derive(Clone)]
struct TlsState {
    info: CertInfo,
    fingerprint: [u8; 32],
    last_error: Option<String>,
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Replaced(CertInfo),
}

impl Tls {
    /// Loads the pair at start; a failure here stops start-up with the reason.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, TlsError> {
        let loaded = load_pair(cert, key)?;
        crate::metrics::get()
            .cert_expiry
            .set(loaded.info.not_after as f64);
        Ok(Arc::new(Tls {
            resolver: Arc::new(CertResolver {
                current: ArcSwap::new(loaded.key.clone()),
            }),
            paths: Mutex::new((cert.to_path_buf(), key.to_path_buf())),
            state: Mutex::new(TlsState {
                info: loaded.info,
                fingerprint: loaded.fingerprint,
                last_error: None,
            }),
        }))
    }

    /// The rustls configuration: TLS 1.3 and 1.2 only, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    pub fn info(&self) -> CertInfo {
        self.lock().info.clone()
    }

    /// The reason the last reload was refused, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TlsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn paths(&self) -> (PathBuf, PathBuf) {
        self.paths.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Points at new paths (a config reload); takes effect with the next `reload`.
    pub fn set_paths(&self, cert: PathBuf, key: PathBuf) {
        *self.paths.lock().unwrap_or_else(|p| p.into_inner()) = (cert, key);
    }

    /// Loads the pair again and swaps it in if its bytes changed and it passes every check.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let (cert, key) = self.paths();
        match load_pair(&cert, &key) {
            Ok(loaded) => {
                let mut st = self.lock();
                st.last_error = None;
                if loaded.fingerprint == st.fingerprint {
                    return Ok(Reload::Unchanged);
                }
                self.resolver.current.store(loaded.key);
                crate::metrics::get()
                    .cert_expiry
                    .set(loaded.info.not_after as f64);
                st.info = loaded.info.clone();
                st.fingerprint = loaded.fingerprint;
                Ok(Reload::Replaced(loaded.info))
            }
            Err(e) => {
                self.lock().last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Watches the certificate and key directories and reloads after each burst of changes.
    /// `on_reload` hears every outcome (to log it and update the status line). The watch lasts
    /// until `shutdown`.
    pub fn watch(
        self: &Arc<Self>,
        shutdown: Shutdown,
        on_reload: impl Fn(&Result<Reload, TlsError>) + Send + Sync + 'static,
    ) -> notify::Result<()> {
        let (cert, key) = self.paths();
        let me = self.clone();
        super::watch::watch_files(&[cert, key], shutdown, move || on_reload(&me.reload()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(names: &[&str]) -> CertInfo {
        CertInfo {
            subject: String::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
            not_before: 0,
            not_after: 0,
        }
    }

    #[test]
    fn wildcard_coverage() {
        let i = info(&["*.home.example.net", "registry.home"]);
        assert!(i.covers("registry.home"));
        assert!(i.covers("reg.home.example.net"));
        assert!(i.covers("REG.home.example.net"));
        assert!(!i.covers("a.b.home.example.net"));
        assert!(!i.covers("home.example.net"));
        assert!(!i.covers("other.home"));
    }

    #[test]
    fn expiry_date() {
        let i = CertInfo {
            subject: String::new(),
            names: vec![],
            not_before: 0,
            not_after: 1_798_761_600,
        };
        assert_eq!(i.expiry_date(), "2027-01-01");
    }
}
