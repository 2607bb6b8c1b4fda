//! TLS for the public listeners: rustls (aws-lc-rs), ALPN `h2` and `http/1.1`, and a
//! certificate that can be reloaded (SIGHUP) without dropping connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::config::{ConfigError, TlsFiles};

/// Serves the current certificate; [`CertStore::reload`] swaps it.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// Loads the certificate and key.
    pub fn load(files: TlsFiles) -> Result<Arc<CertStore>, ConfigError> {
        let key = load(&files)?;
        Ok(Arc::new(CertStore { files, current: ArcSwap::from_pointee(key) }))
    }

    /// Re-reads the files; on error the old certificate stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let key = load(&self.files)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// A rustls server config using this store, offering HTTP/2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load(files: &TlsFiles) -> Result<CertifiedKey, ConfigError> {
    let cert_pem = files.cert.read()?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| files.cert.error(format!("invalid PEM certificate in {}: {e}", files.cert.path.display())))?;
    if certs.is_empty() {
        return Err(files.cert.error(format!("no certificate in {}", files.cert.path.display())));
    }
    let key_pem = files.key.read()?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| files.key.error(format!("no usable private key in {}: {e}", files.key.path.display())))?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| files.key.error(format!("certificate and key do not fit together: {e}")))
}
