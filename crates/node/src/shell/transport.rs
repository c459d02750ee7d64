//! The cluster transport: QUIC (quinn) with mutual TLS. It only moves bytes.
//!
//! - One QUIC endpoint per node, bound to the peer address, is both server and
//!   client. Connections are cached per peer address and reused in both
//!   directions: a connection a peer opened to us is the one we answer on. A
//!   lost connection is dialled again on the next send (5 s connect timeout,
//!   then 1 s of backing off, during which messages to that peer are dropped;
//!   anti-entropy resends whatever mattered).
//! - Membership packets travel as QUIC datagrams (unreliable, one packet);
//!   one too large for the path's current datagram size falls back to a stream.
//! - Replication messages travel one per unidirectional stream, framed as
//!   `[lane: u8][sender region: u16 BE][message]` and read with a size limit.
//! - Both sides present a certificate signed by the cluster CA, or the
//!   handshake fails: a node without one can neither join nor send a delta.
//!   A peer with a valid certificate is trusted to name its own region.
//! - Each peer has its own bounded queue; when it is full (a slow or dead
//!   peer), messages to that peer are dropped rather than buffered forever.

use crate::MAX_MESSAGE_BYTES;
use crate::NodeError;
use crate::Transmit;
use crate::shell::certs::{SERVER_NAME, TlsFiles};
use crate::shell::engine::Engine;
use ledger_crdt::RegionId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const ALPN: &[u8] = b"maas/1";
const LANE_REPLICATION: u8 = 0;
const LANE_GOSSIP: u8 = 1;
const FRAME_HEADER: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF: Duration = Duration::from_secs(1);
const PEER_QUEUE: usize = 4096;

/// The running transport.
pub(crate) struct Transport {
    endpoint: quinn::Endpoint,
    region: RegionId,
    engine: Arc<Engine>,
    connections: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    queues: Mutex<HashMap<SocketAddr, mpsc::Sender<Transmit>>>,
}

fn err(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Transport(format!("{what}: {e}"))
}

/// Loads the CA, certificate and key, and builds quinn's server and client
/// configurations, each demanding a peer certificate signed by the CA.
fn configs(tls: &TlsFiles) -> Result<(quinn::ServerConfig, quinn::ClientConfig), NodeError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| err(&format!("reading {}", path.display()), e))
    };
    let ca_pem = read(&tls.ca)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&tls.cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| err("node certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?).map_err(|e| err("node key", e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&ca_pem) {
        roots
            .add(ca.map_err(|e| err("CA certificate", e))?)
            .map_err(|e| err("CA certificate", e))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| err("client verifier", e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err("TLS", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| err("server certificate", e))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err("TLS", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| err("client certificate", e))?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(10)).map_err(|e| err("idle", e))?,
    ));
    transport.max_concurrent_uni_streams(1024u32.into());
    let transport = Arc::new(transport);

    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(|e| err("QUIC server", e))?,
    ));
    server_config.transport_config(transport.clone());
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(|e| err("QUIC client", e))?,
    ));
    client_config.transport_config(transport);
    Ok((server_config, client_config))
}

impl Transport {
    /// Serves QUIC on `socket` (bound by the caller, who needed its address
    /// for the node's identity), starts accepting peers, and hands the engine
    /// a channel for what its replica sends.
    pub(crate) fn start(
        socket: std::net::UdpSocket,
        tls: &TlsFiles,
        region: RegionId,
        engine: Arc<Engine>,
    ) -> Result<Arc<Self>, NodeError> {
        let (server, client) = configs(tls)?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(client);
        let transport = Arc::new(Self {
            endpoint,
            region,
            engine: engine.clone(),
            connections: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        engine.set_outbound(tx);
        tokio::spawn(transport.clone().accept());
        tokio::spawn(transport.clone().dispatch(rx));
        Ok(transport)
    }

    /// Closes every connection, waiting up to `grace` for data in flight to be
    /// acknowledged first.
    pub(crate) async fn close(&self, grace: Duration) {
        let _ = tokio::time::timeout(grace, async {
            // Let queued messages reach their streams before closing.
            loop {
                let busy = {
                    let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                    queues.values().any(|q| q.capacity() < q.max_capacity())
                };
                if !busy {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        })
        .await;
        self.endpoint.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }

    async fn accept(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let transport = self.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(conn) => {
                        transport.remember(conn.clone());
                        transport.serve(conn).await;
                    }
                    // A peer without a certificate from our CA ends here.
                    Err(e) => tracing::warn!(error = %e, "refused a peer connection"),
                }
            });
        }
    }

    /// Caches `conn` for its peer unless a live connection is cached already.
    fn remember(&self, conn: quinn::Connection) {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let addr = conn.remote_address();
        let live = map.get(&addr).is_some_and(|c| c.close_reason().is_none());
        if !live {
            map.insert(addr, conn);
        }
    }

    fn cached(&self, addr: SocketAddr) -> Option<quinn::Connection> {
        let map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&addr)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Reads everything a peer sends on one connection.
    async fn serve(self: Arc<Self>, conn: quinn::Connection) {
        loop {
            tokio::select! {
                stream = conn.accept_uni() => match stream {
                    Ok(recv) => {
                        let transport = self.clone();
                        tokio::spawn(async move { transport.read_stream(recv).await });
                    }
                    Err(_) => break,
                },
                datagram = conn.read_datagram() => match datagram {
                    Ok(bytes) => self.engine.gossip(&bytes),
                    Err(_) => break,
                },
            }
        }
    }

    async fn read_stream(&self, mut recv: quinn::RecvStream) {
        let frame = match recv.read_to_end(MAX_MESSAGE_BYTES + FRAME_HEADER).await {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(error = %e, "dropped a peer stream");
                return;
            }
        };
        let Some((&[lane, hi, lo], body)) = frame.split_first_chunk::<FRAME_HEADER>() else {
            return;
        };
        match lane {
            LANE_REPLICATION => self
                .engine
                .peer(RegionId(u16::from_be_bytes([hi, lo])), body),
            LANE_GOSSIP => self.engine.gossip(body),
            _ => tracing::debug!(lane, "dropped a frame of an unknown lane"),
        }
    }

    /// Hands each outgoing message to its peer's queue.
    async fn dispatch(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Transmit>) {
        while let Some(output) = rx.recv().await {
            let addr = output.addr();
            let queue = {
                let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                queues
                    .entry(addr)
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(PEER_QUEUE);
                        tokio::spawn(self.clone().send_loop(addr, rx));
                        tx
                    })
                    .clone()
            };
            if queue.try_send(output).is_err() {
                self.engine.metrics().peer_message_dropped();
            }
        }
    }

    /// Sends one peer's messages in order over its (re-established) connection.
    async fn send_loop(self: Arc<Self>, addr: SocketAddr, mut rx: mpsc::Receiver<Transmit>) {
        let mut failed_at: Option<Instant> = None;
        while let Some(output) = rx.recv().await {
            if failed_at.is_some_and(|t| t.elapsed() < BACKOFF) {
                self.engine.metrics().peer_message_dropped();
                continue;
            }
            let conn = match self.connect(addr).await {
                Ok(conn) => {
                    failed_at = None;
                    conn
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "peer unreachable");
                    failed_at = Some(Instant::now());
                    self.engine.metrics().peer_message_dropped();
                    continue;
                }
            };
            let (kind, len) = match &output {
                Transmit::Gossip { bytes, .. } => ("gossip", bytes.len()),
                Transmit::Replication { bytes, kind, .. } => (*kind, bytes.len()),
            };
            let sent = match output {
                Transmit::Gossip { bytes, .. } => {
                    let fits = conn
                        .max_datagram_size()
                        .is_some_and(|max| bytes.len() <= max);
                    if fits {
                        conn.send_datagram(bytes.into())
                            .map_err(|e| err("datagram", e))
                    } else {
                        self.send_stream(&conn, LANE_GOSSIP, &bytes).await
                    }
                }
                Transmit::Replication { bytes, .. } => {
                    self.send_stream(&conn, LANE_REPLICATION, &bytes).await
                }
            };
            match sent {
                Ok(()) => self.engine.metrics().peer_bytes_sent(kind, len),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "send to peer failed");
                    self.engine.metrics().peer_message_dropped();
                }
            }
        }
    }

    async fn send_stream(
        &self,
        conn: &quinn::Connection,
        lane: u8,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let mut send = conn.open_uni().await.map_err(|e| err("open stream", e))?;
        let [hi, lo] = self.region.0.to_be_bytes();
        send.write_all(&[lane, hi, lo])
            .await
            .map_err(|e| err("write", e))?;
        send.write_all(bytes).await.map_err(|e| err("write", e))?;
        send.finish().map_err(|e| err("finish", e))?;
        Ok(())
    }

    /// The cached connection to `addr`, or a new one.
    async fn connect(self: &Arc<Self>, addr: SocketAddr) -> Result<quinn::Connection, NodeError> {
        if let Some(conn) = self.cached(addr) {
            return Ok(conn);
        }
        let connecting = self
            .endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| err("connect", e))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| err("connect", "timed out"))?
            .map_err(|e| err("handshake", e))?;
        self.remember(conn.clone());
        tokio::spawn(self.clone().serve(conn.clone()));
        Ok(conn)
    }
}
