//! A UDP fault proxy in front of one node's QUIC endpoint.
//!
//! Node `i` binds its endpoint on `127.0.T.(10+i)` and advertises the proxy's
//! address `127.0.T.i`. Every packet to node `i` enters its proxy, which knows
//! the sender from its source address (`127.0.T.(10+j)` is node `j`), and
//! relays it through one upstream socket per sender; answers come back the same
//! way. So the link `j → i` and its answers `i → j` pass through here, where
//! the test can delay or cut either direction.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// Faults shared by every proxy of one test cluster.
#[derive(Default)]
pub struct Faults {
    /// Directed links (from node, to node) that drop everything.
    cut: HashSet<(u8, u8)>,
    /// One-way delay added to every packet.
    delay: Duration,
    /// UDP payload bytes relayed so far, both directions, every link.
    relayed: u64,
}

/// Handle on the faults of a cluster's links.
#[derive(Clone, Default)]
pub struct Links(Arc<Mutex<Faults>>);

impl Links {
    /// Adds `delay` to every packet in both directions (RTT grows by 2×).
    pub fn set_delay(&self, delay: Duration) {
        self.0.lock().expect("faults").delay = delay;
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: u8, b: u8) {
        let mut f = self.0.lock().expect("faults");
        f.cut.insert((a, b));
        f.cut.insert((b, a));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.0.lock().expect("faults").cut.clear();
    }

    /// UDP payload bytes relayed so far: every QUIC packet between the
    /// nodes (replication, membership, handshakes), headers and TLS included.
    pub fn relayed_bytes(&self) -> u64 {
        self.0.lock().expect("faults").relayed
    }

    /// The delay for a packet of `bytes` from `from` to `to`, counted as
    /// relayed; `None` (dropped) if the link is cut.
    fn verdict(&self, from: u8, to: u8, bytes: usize) -> Option<Duration> {
        let mut f = self.0.lock().expect("faults");
        if f.cut.contains(&(from, to)) {
            return None;
        }
        f.relayed += bytes as u64;
        Some(f.delay)
    }
}

/// The loopback address of node `i`'s proxy in cluster `t`.
pub fn proxy_ip(t: u8, i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, t, i))
}

/// The loopback address node `i` of cluster `t` binds.
pub fn node_ip(t: u8, i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, t, 10 + i))
}

/// A running proxy for node `i`.
pub struct Proxy {
    /// The address peers use for node `i`.
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
}

impl Proxy {
    /// Binds the proxy of node `i` in cluster `t`; the target comes later.
    pub async fn bind(t: u8, i: u8, links: Links) -> Proxy {
        let socket = Arc::new(
            UdpSocket::bind(SocketAddr::new(proxy_ip(t, i), 0))
                .await
                .expect("bind proxy"),
        );
        let addr = socket.local_addr().expect("proxy addr");
        let target = Arc::new(Mutex::new(None));
        tokio::spawn(front(socket, i, links, target.clone()));
        Proxy { addr, target }
    }

    /// Where node `i`'s endpoint really is.
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().expect("target") = Some(target);
    }
}

/// Which node a source address belongs to: `127.0.T.(10+j)` is node `j`.
fn node_of(addr: SocketAddr) -> Option<u8> {
    match addr.ip() {
        IpAddr::V4(v4) => v4.octets()[3].checked_sub(10),
        IpAddr::V6(_) => None,
    }
}

fn relay(socket: Arc<UdpSocket>, bytes: Vec<u8>, to: SocketAddr, delay: Duration) {
    if delay.is_zero() {
        let _ = socket.try_send_to(&bytes, to);
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = socket.send_to(&bytes, to).await;
        });
    }
}

async fn front(
    socket: Arc<UdpSocket>,
    me: u8,
    links: Links,
    target: Arc<Mutex<Option<SocketAddr>>>,
) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let (Some(sender), Some(to)) = (node_of(from), *target.lock().expect("target")) else {
            continue;
        };
        let Some(delay) = links.verdict(sender, me, n) else {
            continue;
        };
        let upstream = match upstreams.get(&from) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) =
                    UdpSocket::bind(SocketAddr::new(socket.local_addr().expect("addr").ip(), 0))
                        .await
                else {
                    continue;
                };
                let u = Arc::new(u);
                tokio::spawn(back(
                    u.clone(),
                    socket.clone(),
                    from,
                    sender,
                    me,
                    links.clone(),
                ));
                upstreams.insert(from, u.clone());
                u
            }
        };
        relay(upstream, buf[..n].to_vec(), to, delay);
    }
}

/// Carries node `me`'s answers to `peer` (node `sender`) back out of the front.
async fn back(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    sender: u8,
    me: u8,
    links: Links,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = upstream.recv_from(&mut buf).await else {
            return;
        };
        if let Some(delay) = links.verdict(me, sender, n) {
            relay(front.clone(), buf[..n].to_vec(), peer, delay);
        }
    }
}
