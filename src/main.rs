//! The `registryd` command: `serve`, `check-config`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use registryd::config::{Config, Overrides};

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
}

#[derive(Args)]
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
    /// Development mode: --plain-http --listen 127.0.0.1:5000 --storage ./registry-data.
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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never in files or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => match args.load() {
            Ok(c) => {
                print!("{}", c.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("registryd: configuration errors:\n{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let config = match args.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("registryd: configuration errors:\n{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config);
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("registryd: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(registryd::daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("registryd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
