//! Finding 11: TLS was relayed over loopback, so every TLS client was one peer (127.0.0.1) for
//! L11 and 257 idle TLS connections locked out every TLS client and every loopback client.
//! TLS now terminates in the server and each client counts under its own address.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_rustls::rustls::{
    self, pki_types::ServerName, ClientConfig, ClientConnection, StreamOwned,
};

use crate::{connect_from, parse_reply, temp_dir, Reply, Server};

fn client_config(cert_der: Vec<u8>) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection from `local`, handshake complete.
fn tls_connect(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    local: &str,
) -> StreamOwned<ClientConnection, std::net::TcpStream> {
    let tcp = connect_from(addr, Some(local));
    let mut conn =
        ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    StreamOwned::new(conn, tcp)
}

fn tls_get(config: &Arc<ClientConfig>, addr: SocketAddr, local: &str, path: &str) -> Reply {
    let mut s = tls_connect(config, addr, local);
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_reply(&out)
}

#[test]
fn tls_clients_are_counted_by_their_own_address() {
    let dir = temp_dir("tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let s = Server::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--max-connections-per-peer",
        "8",
    ]);
    let tls_addr = s.tls_addr.unwrap();
    let config = client_config(ck.cert.der().to_vec());
    assert_eq!(
        tls_get(&config, tls_addr, "127.0.0.2", "/healthz").status,
        200
    );
    // Eight idle TLS connections from 127.0.0.2: its allowance (L11) is spent…
    let idle: Vec<_> = (0..8)
        .map(|_| tls_connect(&config, tls_addr, "127.0.0.2"))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let refused = tls_get(&config, tls_addr, "127.0.0.2", "/healthz");
    assert_eq!(refused.status, 503, "{refused:?}");
    // …and nobody else's: another TLS client and a plaintext client on 127.0.0.1.
    assert_eq!(
        tls_get(&config, tls_addr, "127.0.0.3", "/healthz").status,
        200
    );
    assert_eq!(s.get("/healthz").status, 200);
    assert!(s.metric("plotstream_limit_breaches_total{limit=\"L11\"}") >= 1);
    drop(idle);
}
