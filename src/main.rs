//! The `atgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use atgate::config::{Config, LogConfig};

#[derive(Parser)]
#[command(
    name = "atgate",
    version,
    about = "An authenticating reverse proxy for the atproto ecosystem"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The YAML config file.
        #[arg(long, short, default_value = "config/atgate.yaml")]
        config: PathBuf,
    },
    /// Validate a config file (and the files it names); print every error.
    Check {
        /// The YAML config file.
        #[arg(long, short, default_value = "config/atgate.yaml")]
        config: PathBuf,
    },
    /// Run the gateway on an embedded config in front of a built-in echo upstream.
    Demo {
        /// Make one request through the gateway, print it, and exit 0 only if it worked.
        #[arg(long)]
        once: bool,
    },
}

fn init_logs(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.compact().init();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            match Config::load(&config).and_then(atgate::state::Runtime::build) {
                Ok(runtime) => {
                    let c = &runtime.config;
                    println!(
                        "{}: ok ({} routes, {} upstreams)",
                        config.display(),
                        c.routes.len(),
                        c.upstreams.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            init_logs(&config.log);
            runtime().block_on(async {
                match atgate::app::Gateway::start(config).await {
                    Ok(gateway) => {
                        if atgate::app::serve_until_signal(gateway).await {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start");
                        eprintln!("{e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Demo { once } => {
            let level = if once { "warn" } else { "info" };
            init_logs(&LogConfig {
                level: level.into(),
                json: false,
            });
            match runtime().block_on(atgate::demo::run(once)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("demo failed to start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
