//! Upgraded connections (WebSocket): once both sides have switched protocols, bytes are
//! copied both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Spawns the tunnel between the client's and the upstream's upgraded connections.
pub(super) fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(bytes.up = up, bytes.down = down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended with error"),
        }
    });
}
