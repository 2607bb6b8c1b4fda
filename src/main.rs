//! The `atgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use atgate::config::{Config, LogConfig};

#[derive(Parser)]
#[command(name = "atgate", version, about = "An authenticating reverse proxy for the atproto ecosystem")]
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
    /// Generate an ES256 key pair: the private JWK on stdout, its thumbprint on stderr.
    Keygen,
    /// Make one DPoP request (signing the proof, retrying once for a server nonce).
    Curl {
        /// The URL.
        url: String,
        /// Private JWK file of the DPoP key (from `atgate keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The access token (or use --token-file).
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the access token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The method.
        #[arg(short = 'X', long, default_value = "GET")]
        request: String,
        /// A request body.
        #[arg(short, long)]
        data: Option<String>,
        /// Extra header, `Name: value` (repeatable).
        #[arg(short = 'H', long)]
        header: Vec<String>,
        /// Print the status line and response headers too.
        #[arg(short, long)]
        include: bool,
    },
    /// Scope tools.
    #[command(subcommand)]
    Scope(ScopeCommand),
    /// Run the gateway on an embedded config in front of a built-in echo upstream.
    Demo {
        /// Make one request through the gateway, print it, and exit 0 only if it worked.
        #[arg(long)]
        once: bool,
    },
}

#[derive(clap::Subcommand)]
enum ScopeCommand {
    /// Show how each granted scope parses and why each check passes or fails; exits 1 if
    /// any check is denied.
    Explain {
        /// The granted scopes (a token's `scope` claim, space separated).
        #[arg(long)]
        granted: String,
        /// A check, e.g. "repo app.example.post create", "rpc com.example.getThing
        /// did:web:api.example.com#svc", "blob image/png", "account email manage",
        /// "identity handle" (repeatable).
        #[arg(long)]
        check: Vec<String>,
    },
    /// Print what `include:NSID[?aud=...]` grants, from a directory of pinned lexicons.
    Resolve {
        /// The permission set's NSID.
        nsid: String,
        /// The audience its rpc permissions inherit (`did:web:api.example.com#svc`).
        #[arg(long)]
        aud: Option<String>,
        /// Read the set from this directory of pinned lexicons (`permission_sets.pinned_dir`)
        /// instead of resolving it over the network.
        #[arg(long)]
        pinned_dir: Option<PathBuf>,
        /// The PLC directory for the authority's DID (network resolution).
        #[arg(long, default_value = "https://plc.directory")]
        plc_url: url::Url,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config).and_then(atgate::state::Runtime::build) {
            Ok(runtime) => {
                let c = &runtime.config;
                println!("{}: ok ({} routes, {} upstreams)", config.display(), c.routes.len(), c.upstreams.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            runtime().block_on(async {
                let telemetry = match atgate::telemetry::init(&config.log) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("cannot start logging: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match atgate::app::Gateway::start(config).await {
                    Ok(gateway) => {
                        let drained = atgate::app::serve_until_signal(gateway.watch(path)).await;
                        telemetry.shutdown();
                        if drained { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start");
                        eprintln!("{e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Scope(ScopeCommand::Explain { granted, check }) => {
            let mut checks = Vec::new();
            for c in &check {
                match atgate::tools::explain::parse_check(c) {
                    Ok(c) => checks.push(c),
                    Err(e) => {
                        eprintln!("atgate scope explain: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            let (text, all) = atgate::tools::explain::explain(&granted, &checks);
            print!("{text}");
            if all { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::Scope(ScopeCommand::Resolve { nsid, aud, pinned_dir, plc_url }) => {
            let resolved = runtime().block_on(atgate::tools::explain::resolve(
                &nsid,
                aud.as_deref(),
                pinned_dir.as_deref(),
                plc_url,
            ));
            match resolved {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("atgate scope resolve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keygen => {
            let key = atgate::jose::sign::SigningKey::generate();
            println!("{}", key.private_jwk());
            eprintln!("jkt (RFC 7638 thumbprint): {}", key.thumbprint());
            ExitCode::SUCCESS
        }
        Command::Curl { url, key, token, token_file, request, data, header, include } => {
            match curl(url, key, token, token_file, request, data, header, include) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("atgate curl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { once } => {
            let level = if once { "warn" } else { "info" };
            let _ = atgate::telemetry::init(&LogConfig { level: level.into(), json: false, otlp: None });
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

#[allow(clippy::too_many_arguments)]
fn curl(
    url: String,
    key: PathBuf,
    token: Option<String>,
    token_file: Option<PathBuf>,
    method: String,
    data: Option<String>,
    headers: Vec<String>,
    include: bool,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?)
            .context("the key file is not JSON")?;
    let key = atgate::jose::sign::SigningKey::from_jwk(&jwk)?;
    let token = match (token, token_file) {
        (Some(t), _) => t,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?.trim().to_owned()
        }
        (None, None) => anyhow::bail!("give --token or --token-file"),
    };
    let mut extra = Vec::new();
    for h in headers {
        let (name, value) = h.split_once(':').context("headers are written `Name: value`")?;
        extra.push((http::HeaderName::try_from(name.trim())?, http::HeaderValue::try_from(value.trim())?));
    }
    let req = atgate::tools::curl::CurlRequest {
        method: http::Method::from_bytes(method.as_bytes())?,
        url,
        token,
        signer: atgate::tools::DpopSigner { key },
        body: data.map(bytes::Bytes::from),
        headers: extra,
    };
    let res = runtime().block_on(atgate::tools::curl::send(&req))?;
    if include {
        println!("{} (attempts: {})", res.status, res.attempts);
        for (k, v) in &res.headers {
            println!("{k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
        println!();
    }
    println!("{}", String::from_utf8_lossy(&res.body));
    Ok(if res.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
