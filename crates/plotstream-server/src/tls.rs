//! TLS listeners (`--tls-listen`), for node `plot()`, which speaks only HTTPS, and for
//! chart_studio when its streaming domain says `https` (PROTOCOL.md §1.3, §8.1).
//!
//! Each TLS connection is terminated here and relayed to a plaintext listener of the same
//! server on loopback, so every route, limit and teardown rule applies unchanged inside TLS
//! (RELIABILITY.md §1.1). The relay forwards half-closes in both directions, so the graceful
//! close (response, FIN, linger) reaches the client as TLS close_notify.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Loads a PEM certificate chain and private key into a rustls server config.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {e}"))?;
    Ok(Arc::new(config))
}

/// Accepts TLS on `listener` and relays each connection to `backend` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    backend: SocketAddr,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((tcp, peer)) => {
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        if let Err(e) = relay(acceptor, tcp, backend).await {
                            tracing::debug!(%peer, error = %e, "tls connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tls accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn relay(acceptor: TlsAcceptor, tcp: TcpStream, backend: SocketAddr) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake timed out")
        })??;
    let mut plain = TcpStream::connect(backend).await?;
    plain.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut tls, &mut plain).await?;
    Ok(())
}
