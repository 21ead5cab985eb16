//! The `registryd` command: `serve`, `check-config`, `hosts`, `cert init`, `pull`, `gc`, `fsck`,
//! `--version`.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

use registryd::config::{Config, LogFormat, Overrides};
use registryd::daemon::LevelSetter;
use registryd::node::{certgen, hosts};

/// Where the package installs the config file; read when present and no --config is given.
const DEFAULT_CONFIG: &str = "/etc/registryd/config.toml";

#[derive(Parser)]
#[command(
    name = "registryd",
    version,
    about = "A per-node container registry (OCI Distribution v1.1)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve(ConfigArgs),
    /// Print the effective configuration, or every error with its key and where it was set.
    CheckConfig(ConfigArgs),
    /// Write the registry's hostnames into the hosts file (node.hosts_file), or remove them.
    Hosts {
        #[command(flatten)]
        config: ConfigArgs,
        /// Remove registryd's block instead (the package runs this before removing the binary).
        #[arg(long)]
        remove: bool,
    },
    /// Certificates for users without a PKI.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Set up the node and exit: the link-local address and the hosts entries. The systemd unit runs
    /// this as root before `serve` (ExecStartPre=+), so the service itself needs no CAP_NET_ADMIN.
    Setup(ConfigArgs),
    /// Check that `serve` can start (configuration valid, certificate usable) and say what to fix if
    /// not. The systemd unit runs it as ExecCondition: a node without a certificate yet is skipped
    /// with this message in `systemctl status` and the journal, instead of failing.
    Preflight(ConfigArgs),
    /// Fetch images from their upstream into the pull-through cache now, so they are served when
    /// the upstream is gone. REF: docker.io/library/alpine:3.20, a bare name the default upstream
    /// serves, or NAME@DIGEST. Safe while the daemons run (the same locks).
    Pull {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only these platforms of a multi-platform image (os/arch[/variant], comma-separated);
        /// default: all.
        #[arg(long, value_delimiter = ',')]
        platform: Vec<String>,
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
    },
    /// Collect garbage now: remove blobs no stored manifest references (and, with
    /// --delete-untagged, manifests no tag reaches), and abandoned uploads. Safe while the daemons
    /// run on every node. Exit 3: another collector holds the lock.
    Gc {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove untagged manifests (gc.delete_untagged).
        #[arg(long)]
        delete_untagged: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove one tag on this node's storage (the manifest stays, addressable by digest). A tag an
    /// [[immutable]] rule covers needs --force; every removal is logged.
    Untag {
        #[command(flatten)]
        config: ConfigArgs,
        /// Also remove a tag an immutable rule protects.
        #[arg(long)]
        force: bool,
        #[arg(value_name = "REPO:TAG")]
        reference: String,
    },
    /// Verify every blob against its digest and every link, manifest and tag. Exit 4: problems
    /// found. --repair quarantines corrupt blobs and drops dangling links.
    Fsck {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        repair: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load image archives straight into storage: `docker save` tarballs (legacy and Docker 25+
    /// OCI layouts), OCI image-layout directories and tarballs, gzip or not. Manifest digests the
    /// archive has stay the same. Safe while the daemons run.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        /// Store every image under this repository (keeping its tags), instead of the names in
        /// the archive.
        #[arg(long, value_name = "NAME")]
        repo: Option<String>,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Write images to an OCI image-layout tarball (with a Docker manifest.json, so docker load
    /// takes it too), for carrying into an air-gapped cluster. REF: REPO[:TAG] or REPO@DIGEST.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tarball to write (gzip when it ends in .gz or .tgz; - for standard output).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
    },
    /// Convert a CNCF Distribution config.yml (registry:2, Debian's docker-registry) into registryd
    /// TOML on stdout, with a warning comment for each setting that has no equivalent.
    ImportConfig {
        #[arg(value_name = "CONFIG_YML")]
        file: PathBuf,
    },
    /// Check this node and say how to fix what is wrong: the link-local address, the hosts entries,
    /// the certificate (key, expiry, names), the clock, the storage (mount, writable, free space,
    /// GlusterFS options), every listener over TLS as a client here sees it, and systemd.
    /// Exit 1 when a check fails.
    Doctor {
        #[command(flatten)]
        config: ConfigArgs,
        /// The findings as JSON.
        #[arg(long)]
        json: bool,
        /// Also trust this CA (PEM) when trying the listeners, as a client that has it would.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Man,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Make (or reuse) a cluster CA and a server certificate for this node, at tls.certificate/tls.key.
    Init {
        #[command(flatten)]
        config: ConfigArgs,
        /// Hostnames the certificate covers (default: node.hostnames), comma-separated.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Where the CA lives; put it on the shared mount so every node reuses it.
        #[arg(long, value_name = "DIR", default_value = "/etc/registryd/ca")]
        ca_dir: PathBuf,
        /// Validity of the server certificate in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Also install the CA for docker, podman/skopeo, containerd and the system store here.
        #[arg(long)]
        install_trust: bool,
    },
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Config file (default: /etc/registryd/config.toml when it exists, else built-in defaults).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen on ADDR:PORT instead of server.listen (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// Storage root instead of storage.root.
    #[arg(long, value_name = "DIR")]
    storage: Option<PathBuf>,
    /// Serve plain HTTP (tls.enabled = false). Development on loopback only.
    #[arg(long)]
    plain_http: bool,
    /// Development mode: --plain-http --listen 127.0.0.1:5000 --storage ./registry-data, and no
    /// system file changed (no hosts entries, no link-local address).
    #[arg(long)]
    dev: bool,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, String> {
        let mut o = Overrides {
            listen: self.listen.clone(),
            storage: self.storage.clone(),
            plain_http: self.plain_http,
        };
        if self.dev {
            o.plain_http = true;
            if o.listen.is_empty() {
                o.listen = vec!["127.0.0.1:5000".into()];
            }
            if o.storage.is_none() {
                o.storage = Some(PathBuf::from("./registry-data"));
            }
        }
        let file = match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        Config::load(file.as_deref(), &o).map_err(|e| e.to_string())
    }
}

/// Is stderr the journal? systemd sets JOURNAL_STREAM to the device and inode of the stream it gave.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder().parse(level).map_err(|e| e.to_string())
}

/// Sets up logging: journald with structured fields when stderr is the journal, else text or JSON
/// lines on stderr. Returns how to change the level on reload.
fn init_logging(config: &Config) -> LevelSetter {
    let (filter_layer, handle) =
        reload::Layer::new(filter(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info")));
    let registry = tracing_subscriber::registry().with(filter_layer);
    let journald = match config.log.format {
        LogFormat::Journald => true,
        LogFormat::Auto => stderr_is_journal(),
        LogFormat::Text | LogFormat::Json => false,
    };
    let journal_layer = if journald {
        match tracing_journald::layer() {
            Ok(l) => Some(l.with_field_prefix(None)),
            Err(e) => {
                eprintln!("registryd: cannot reach journald ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };
    if let Some(l) = journal_layer {
        registry.with(l).init();
    } else if config.log.format == LogFormat::Json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        // Colour codes only for a person at a terminal, never in files or the journal.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .fmt_fields(registryd::logtext::escaped_fields())
                    .with_writer(std::io::stderr),
            )
            .init();
    }
    Box::new(move |level: &str| handle.reload(filter(level)?).map_err(|e| e.to_string()))
}

fn config_or_exit(args: &ConfigArgs) -> Result<Config, ExitCode> {
    args.load().map_err(|e| {
        eprintln!("registryd: configuration errors:\n{e}");
        ExitCode::from(2)
    })
}

/// The node's registry address, or the reason it has none.
fn node_ip(config: &Config) -> Result<IpAddr, ExitCode> {
    registryd::daemon::node_ip(config)
        .map(|(ip, _)| ip)
        .map_err(|e| {
            eprintln!("registryd: {e:#}");
            ExitCode::from(2)
        })
}

/// Builds the async runtime, or says why it cannot.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("registryd: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn serve(args: ConfigArgs) -> ExitCode {
    let config = match config_or_exit(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let set_level = init_logging(&config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let rt = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // `--dev` is a first try on someone's machine: it changes no system file, whatever the
    // configuration says.
    let node = if args.dev {
        registryd::daemon::NodeSetup::Off
    } else {
        registryd::daemon::NodeSetup::Managed
    };
    let loader = Box::new(move || args.load());
    match rt.block_on(registryd::daemon::run(config, loader, set_level, node)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging is up (stderr or the journal): one line, not two.
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `registryd pull`: fetches each reference into the cache; exit 1 when any failed.
fn pull(config: &Config, platforms: &[String], refs: &[String]) -> ExitCode {
    use registryd::proxy::{Proxy, prewarm};
    let mut parsed = Vec::new();
    for r in refs {
        match prewarm::parse_ref(r) {
            Ok(p) => parsed.push(p),
            Err(e) => {
                eprintln!("registryd pull: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let rt = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        // `pull` reports to no page: the board is its own, and dropped with it.
        let board = registryd::status::Board::new();
        let proxy = match Proxy::from_settings(&config.proxy_settings(), board) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => {
                eprintln!("registryd pull: no [[upstream]] is configured; add one to the config file");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("registryd pull: {e:#}");
                return ExitCode::from(2);
            }
        };
        let storage = match registryd::lifecycle::cli::open_storage(config, "pull") {
            Ok(s) => s,
            Err(code) => return code,
        };
        let mut failed = false;
        for (name, reference) in &parsed {
            match prewarm::pull(&proxy, &storage, name, reference, platforms).await {
                Ok(s) => println!(
                    "{name}:{reference}: {} manifests, {} blobs fetched ({:.1} MiB), {} already cached",
                    s.manifests,
                    s.blobs_fetched,
                    s.bytes_fetched as f64 / 1048576.0,
                    s.blobs_present
                ),
                Err(e) => {
                    eprintln!("registryd pull: {e}");
                    failed = true;
                }
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn cert_init(
    config: &Config,
    hosts: Vec<String>,
    ca_dir: PathBuf,
    days: u32,
    install: bool,
) -> ExitCode {
    let hosts = if hosts.is_empty() {
        config.node.hostnames.clone()
    } else {
        hosts
    };
    let ip = match node_ip(config) {
        Ok(ip) => ip,
        Err(code) => return code,
    };
    let made = match certgen::init(
        &ca_dir,
        &hosts,
        &[ip],
        &config.tls.certificate,
        &config.tls.key,
        days,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("registryd: cert init: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let port = config
        .listen_addrs()
        .first()
        .map(|a| a.port())
        .unwrap_or(8443);
    let hostports: Vec<String> = hosts
        .iter()
        .filter(|h| !h.starts_with('*'))
        .map(|h| format!("{h}:{port}"))
        .chain([format!("{ip}:{port}")])
        .collect();
    println!(
        "{} CA:      {}",
        if made.ca_created {
            "created"
        } else {
            "reused "
        },
        made.ca_cert.display()
    );
    println!(
        "certificate: {} (covers {} and {ip})",
        made.cert.display(),
        hosts.join(", ")
    );
    println!("key:         {} (mode 0600)", made.key.display());
    println!("\nOn other nodes, run the same command with the same --ca-dir to reuse this CA.");
    println!("\nTrust the CA on every client machine:");
    for hp in &hostports {
        for (who, path) in certgen::trust_locations(hp) {
            println!("  {who}: cp {} {}", made.ca_cert.display(), path.display());
        }
    }
    // With no host name there is no registry host for containerd's hosts.toml to name.
    if let Some(hp) = hostports.first() {
        println!(
            "  containerd also needs hosts.toml beside ca.crt:\n{}",
            certgen::containerd_hosts_toml(hp)
                .lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    println!(
        "  system store: cp {} /usr/local/share/ca-certificates/registryd-ca.crt && update-ca-certificates",
        made.ca_cert.display()
    );
    println!("Or run with --install-trust to do all of this on this node.");
    if install {
        match certgen::install_trust(&made.ca_cert, &hostports) {
            Ok(paths) => println!("\ninstalled the CA at {} places", paths.len()),
            Err(e) => {
                eprintln!("registryd: --install-trust: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig(args) => match config_or_exit(&args) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("registryd: warning: {w}");
                }
                print!("{}", c.to_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Hosts { config, remove } => {
            let config = match config_or_exit(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let path = &config.node.hosts_file;
            let result = if remove {
                hosts::remove(path)
            } else {
                let ip = match node_ip(&config) {
                    Ok(ip) => ip,
                    Err(code) => return code,
                };
                hosts::apply(path, &registryd::daemon::hosts_entries(&config, ip))
            };
            match result {
                Ok(w) => {
                    println!("{}: {w:?}", path.display());
                    for d in hosts::inspect(path).unwrap_or_default() {
                        eprintln!(
                            "registryd: warning: {}: {d}; left as it is (fix or delete it by hand)",
                            path.display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) if remove && e.kind() == std::io::ErrorKind::NotFound => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("registryd: cannot update {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Setup(args) => {
            let config = match config_or_exit(&args) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _ = init_logging(&config);
            let rt = match runtime(tokio::runtime::Builder::new_current_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(registryd::daemon::node_setup(&config)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Preflight(args) => {
            let Ok(config) = config_or_exit(&args) else {
                return ExitCode::FAILURE;
            };
            match registryd::daemon::preflight(&config) {
                Ok(msg) => {
                    println!("registryd: {msg}");
                    ExitCode::SUCCESS
                }
                Err(msg) => {
                    eprintln!("registryd: {msg}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Pull {
            config,
            platform,
            refs,
        } => {
            let Ok(config) = config_or_exit(&config) else {
                return ExitCode::from(2);
            };
            pull(&config, &platform, &refs)
        }
        Command::Gc {
            config,
            dry_run,
            delete_untagged,
            json,
        } => {
            let Ok(config) = config_or_exit(&config) else {
                return ExitCode::from(2);
            };
            registryd::lifecycle::cli::gc(&config, dry_run, delete_untagged, json)
        }
        Command::Fsck {
            config,
            repair,
            json,
        } => {
            let Ok(config) = config_or_exit(&config) else {
                return ExitCode::from(2);
            };
            registryd::lifecycle::cli::fsck(&config, repair, json)
        }
        Command::Import {
            config,
            repo,
            files,
        } => {
            let Ok(config) = config_or_exit(&config) else {
                return ExitCode::from(2);
            };
            registryd::archive::cli::import(&config, repo.as_deref(), &files)
        }
        Command::Export {
            config,
            output,
            refs,
        } => {
            let Ok(config) = config_or_exit(&config) else {
                return ExitCode::from(2);
            };
            registryd::archive::cli::export(&config, &refs, &output)
        }
        Command::Doctor { config, json, ca } => match config_or_exit(&config) {
            Ok(c) => registryd::doctor::cli(&c, ca.as_deref(), json),
            Err(_) => {
                println!("FAIL  config       the configuration has errors (above)");
                ExitCode::FAILURE
            }
        },
        Command::ImportConfig { file } => registryd::migrate::cli(&file),
        Command::Untag {
            config,
            force,
            reference,
        } => match config_or_exit(&config) {
            Ok(c) => registryd::lifecycle::cli::untag(&c, &reference, force),
            Err(code) => code,
        },
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd)
                .section("8")
                .render(&mut std::io::stdout())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("registryd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cert(CertCommand::Init {
            config,
            hosts,
            ca_dir,
            days,
            install_trust,
        }) => match config_or_exit(&config) {
            Ok(c) => cert_init(&c, hosts, ca_dir, days, install_trust),
            Err(code) => code,
        },
    }
}
