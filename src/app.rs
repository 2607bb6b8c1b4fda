//! Config -> Shared -> stack -> listeners; owns startup, signals and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::dpop::redis_store::{Failure, RedisReplayStore};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::server::{self, Listener, tls::CertStore};
use crate::stack;
use crate::state::{Runtime, Shared};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config (or a file it names) is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(ConfigErrors(vec![e]))
    }
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    certs: Option<Arc<CertStore>>,
    stop: watch::Sender<bool>,
    drained: JoinHandle<bool>,
    config_path: Option<PathBuf>,
}

impl Gateway {
    /// Builds the runtime, binds every listener and starts serving.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let runtime = Runtime::build(config)?;
        let config = runtime.config.clone();
        let certs = config.tls.clone().map(CertStore::load).transpose()?;
        let acceptor = certs.as_ref().map(|c| tokio_rustls::TlsAcceptor::from(c.server_config()));

        let mut listeners = Vec::with_capacity(config.listen.len());
        for &addr in &config.listen {
            let tcp = server::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
            listeners.push(Listener { tcp, tls: acceptor.clone() });
        }
        let admin = match config.admin_listen {
            Some(addr) => Some(server::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        let addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.tcp.local_addr().ok()).collect();
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());

        if let Some(dpop) = &runtime.dpop {
            dpop.issuers.spawn_refreshers();
        }
        let shared = match &config.replay.redis_url {
            None => Shared::new(runtime),
            Some(url) => {
                let text = url.read()?;
                let url_text =
                    String::from_utf8(text).map_err(|_| url.origin().error("the Redis URL is not UTF-8".into()))?;
                let r = &config.replay;
                let failure = if r.fail_open_local { Failure::OpenLocal } else { Failure::Closed };
                let store = RedisReplayStore::connect(
                    &url_text,
                    r.key_prefix.as_deref().unwrap_or("atgate:replay:"),
                    r.timeout.unwrap_or(Duration::from_millis(250)),
                    failure,
                    config.dpop.replay_capacity,
                )
                .await
                .map_err(|e| url.origin().error(e))?;
                // Browser sessions share the connection (and Redis) with the replay store.
                let prefix = r.key_prefix.as_ref().map_or("atgate:oauth:".to_owned(), |p| format!("{p}oauth:"));
                let timeout = r.timeout.unwrap_or(Duration::from_millis(250));
                let sessions = crate::oauth::store::for_gateway(Some((store.connection(), timeout)), &prefix);
                Shared::with_stores(runtime, Arc::new(store), sessions)
            }
        };
        let service = stack::build(&shared);
        let builder = server::http_builder(&config.limits);
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop, stop_rx) = watch::channel(false);

        let mut loops = Vec::new();
        for listener in listeners {
            loops.push(tokio::spawn(server::accept_loop(
                listener,
                service.clone(),
                builder.clone(),
                graceful.clone(),
                stop_rx.clone(),
                config.limits.header_timeout,
            )));
        }
        if let Some(admin) = admin {
            tokio::spawn(server::admin::serve(admin, shared.clone(), stop_rx.clone()));
        }
        shared.set_ready(true);
        for addr in &addrs {
            tracing::info!(addr = %addr, tls = certs.is_some(), "listening");
        }
        if let Some(addr) = admin_addr {
            tracing::info!(addr = %addr, "admin listening");
        }

        let drained = tokio::spawn(drain(shared.clone(), stop_rx, loops, graceful, config.limits.shutdown_timeout));
        crate::ratelimit::spawn_sweeper(&shared);
        Ok(Gateway { shared, addrs, admin_addr, certs, stop, drained, config_path: None })
    }

    /// Ties the gateway to its config file: SIGHUP reloads it, and it is polled for
    /// changes while `reload.watch` is on.
    pub fn watch(mut self, path: PathBuf) -> Gateway {
        crate::reload::spawn_watcher(self.shared.clone(), path.clone(), self.stop.subscribe());
        self.config_path = Some(path);
        self
    }

    /// Reloads the config file (when there is one) and the TLS certificate.
    pub async fn reload(&self) {
        if let Some(path) = &self.config_path {
            let _ = crate::reload::reload_file(&self.shared, path).await;
        }
        match self.reload_tls() {
            Ok(()) if self.certs.is_some() => tracing::info!("TLS certificate reloaded"),
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the old certificate"),
        }
    }

    /// Where the public listeners are bound (ports resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the admin listener is bound.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// State shared with the pipeline.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the TLS certificate and key; the old pair stays on error.
    pub fn reload_tls(&self) -> Result<(), ConfigError> {
        let Some(certs) = &self.certs else {
            return Ok(());
        };
        let result = certs.reload();
        self.shared.metrics.reload("tls", result.is_ok());
        result
    }

    /// Starts a graceful shutdown: not ready, no new connections, in-flight requests
    /// finish (up to `limits.shutdown_timeout`).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the gateway has shut down; true if every connection drained in time.
    pub async fn wait(self) -> bool {
        self.drained.await.unwrap_or(false)
    }
}

async fn drain(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    loops: Vec<JoinHandle<()>>,
    graceful: Arc<GracefulShutdown>,
    timeout: Duration,
) -> bool {
    let _ = stop.wait_for(|s| *s).await;
    shared.set_ready(false);
    for l in loops {
        let _ = l.await;
    }
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return false;
    };
    let open = graceful.count();
    tracing::info!(connections = open, "draining");
    match tokio::time::timeout(timeout, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!("drained");
            true
        }
        Err(_) => {
            tracing::warn!(timeout = ?timeout, "shutdown timeout: closing remaining connections");
            false
        }
    }
}

/// Runs the gateway from a config file until SIGTERM or SIGINT; SIGHUP or an edit of the
/// file reloads the config, SIGHUP also the TLS certificate.
pub async fn run(path: &Path) -> Result<(), StartError> {
    let config = Config::load(path)?;
    let gateway = Gateway::start(config).await?.watch(path.to_owned());
    serve_until_signal(gateway).await;
    Ok(())
}

/// Waits for signals, then shuts the gateway down gracefully.
pub async fn serve_until_signal(gateway: Gateway) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::error!("cannot install signal handlers");
        gateway.shutdown();
        return gateway.wait().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => gateway.reload().await,
        }
    }
    tracing::info!("shutting down");
    gateway.shutdown();
    gateway.wait().await
}
