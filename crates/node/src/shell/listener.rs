//! HTTP connections: the accept loop and the limits that protect it.
//!
//! `axum::serve` has no header timeout, no connection cap and no bound on its
//! drain, and a black-box run showed what that costs: 2,000 idle or half-sent
//! connections held the process at its file-descriptor limit, `/health` timed
//! out, nothing was logged, and SIGTERM waited forever. Here:
//!
//! - a connection that does not deliver a complete request head within
//!   [`Limits::header_read_timeout`] is closed, whether it is half-sent or idle
//!   between keep-alive requests (hyper runs one timer for both);
//! - at most [`Limits::max_connections`] are served at once; past that a
//!   connection gets a 503 problem and is closed, and the log says so;
//! - it counts the connections it serves, for `/metrics` and for the group
//!   commit (which stops waiting for more writes once each of them has a
//!   request waiting);
//! - on shutdown the listener closes, open connections finish their current
//!   request, and whatever is still open after [`Limits::shutdown_grace`] is
//!   closed, so shutdown (and its final flush) always comes;
//! - the answers hyper writes by itself for bytes it cannot parse (400, 414,
//!   431) are rewritten into problem+json ([`ParseErrorsAsProblems`]).

use crate::shell::problem::{Problem, ProblemKind};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// What a connection serves: axum's `Router`, or the front around one
/// ([`crate::shell::front::Front`]), served as it is: no router of its own
/// outside it to pass every request on.
pub(crate) trait HttpService:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The limits of the HTTP listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// A request head must arrive completely within this, counted from when the
    /// connection starts waiting for it (so it also closes idle keep-alives).
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long shutdown lets open connections finish.
    pub shutdown_grace: Duration,
}

/// How the listener ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Connections still open when the grace ran out, closed by force.
    pub closed_by_force: usize,
}

/// At most this many over-the-cap connections are being answered 503 at once;
/// beyond that they are closed without a word (each holds a descriptor).
const MAX_REFUSING: usize = 64;

/// The shortest interval between two log lines about the cap or accept errors.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then drains;
/// keeps `open` at the number of connections being served.
pub(crate) async fn serve(
    listener: TcpListener,
    app: impl HttpService,
    limits: Limits,
    open: Arc<AtomicUsize>,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Above our own limits (see `crate::http`), so that a long URI or large
        // headers reach the app and get its problem answer, not hyper's.
        .max_buf_size(256 * 1024);
    let http = Arc::new(http);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut quiet = Quiet::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, typically: the connection stays in
                        // the backlog, so back off instead of spinning on it.
                        quiet.log(|n| tracing::warn!(error = %e, times = n, "accepting a connection failed"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (http, app, stopped) = (http.clone(), app.clone(), stopped.clone());
                        let counted = Open::count(open.clone());
                        connections.spawn(async move {
                            serve_connection(stream, peer, &http, app, stopped).await;
                            drop((permit, counted));
                        });
                    }
                    Err(_) => {
                        quiet.log(|n| tracing::warn!(
                            cap = limits.max_connections,
                            refused = n,
                            "connection cap reached; refusing new connections with 503"
                        ));
                        if let Ok(slot) = refusing.clone().try_acquire_owned() {
                            connections.spawn(async move {
                                refuse(stream).await;
                                drop(slot);
                            });
                        }
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_ok()
    {
        return Drained::default();
    }
    let closed_by_force = connections.len();
    tracing::warn!(
        connections = closed_by_force,
        grace = ?limits.shutdown_grace,
        "shutdown grace is over; closing the connections still open"
    );
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Drained { closed_by_force }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    http: &http1::Builder,
    app: impl HttpService,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(ParseErrorsAsProblems::new(stream));
    // Handlers see the client's address (the per-IP rate limit needs it).
    let app = app.map_request(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let connection = http.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopped.wait_for(|s| *s) => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// Answers a connection over the cap with a 503 problem, and closes it.
async fn refuse(mut stream: TcpStream) {
    let answer = Problem::new(
        ProblemKind::Unavailable,
        "too many open connections; retry shortly",
    )
    .retry_after(1)
    .to_http1_closing();
    let write = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// One connection being served, counted while it lives (also when its task
/// is aborted at the end of the shutdown grace).
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Rate-limits a repeated log line.
#[derive(Default)]
struct Quiet {
    last: Option<Instant>,
    since: u64,
}

impl Quiet {
    fn log(&mut self, line: impl FnOnce(u64)) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            line(self.since);
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

/// A connection whose bare parse-error answers become problem+json.
///
/// hyper answers bytes it cannot parse (a bad request line or header, a
/// request target or header section past its limits) on its own, before any
/// handler runs, with a status line and no body. Every answer of ours carries a
/// `content-type` (the app turns every error into a problem), so a 400, 414 or
/// 431 head without one is hyper's: it is replaced, on its way out, by the
/// problem of the same status. hyper closes the connection after it.
pub(crate) struct ParseErrorsAsProblems {
    inner: TcpStream,
    /// Replacement bytes still to be written, and how many were.
    replacement: Option<(Vec<u8>, usize)>,
}

impl ParseErrorsAsProblems {
    /// Wraps a connection.
    pub(crate) fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            replacement: None,
        }
    }

    /// Writes what is left of a replacement; ready once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written >= bytes.len() {
                self.replacement = None;
                break;
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// The problem answer for hyper's own answer `head`, if that is what it is.
fn problem_for(head: &[u8]) -> Option<Vec<u8>> {
    let status = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let (kind, detail) = match status.get(..4)? {
        b"400 " => (
            ProblemKind::InvalidRequest,
            "the request line or a header could not be parsed",
        ),
        b"414 " => (
            ProblemKind::UriTooLong,
            "the request target is longer than this server accepts",
        ),
        b"431 " => (
            ProblemKind::HeadersTooLarge,
            "the request's headers are larger than this server accepts",
        ),
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let has_type = head[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.to_ascii_lowercase().starts_with(b"content-type:"));
    if has_type {
        return None;
    }
    Some(Problem::new(kind, detail).to_http1_closing())
}

impl AsyncRead for ParseErrorsAsProblems {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ParseErrorsAsProblems {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_replacement(cx))?;
        if let Some(problem) = problem_for(buf) {
            this.replacement = Some((problem, 0));
            // hyper's bytes count as written: the replacement stands for them.
            let _ = this.poll_replacement(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Raises the soft open-file limit to the hard one, where the OS allows, and
/// returns the soft limit in force.
pub(crate) fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (limit.current, limit.maximum)
        && current < max
    {
        limit.current = Some(max);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            return Some(current);
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until `open` reads `want`.
    async fn until_open(open: &AtomicUsize, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while open.load(Ordering::Relaxed) != want {
            assert!(
                Instant::now() < deadline,
                "open connections stayed at {}, not {want}",
                open.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A listener serving `app` on loopback: its address, its count of open
    /// connections, the switch that stops it, and its task.
    struct Running {
        addr: SocketAddr,
        open: Arc<AtomicUsize>,
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<Drained>,
    }

    async fn start(app: axum::Router, max_connections: usize, grace: Duration) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let limits = Limits {
            header_read_timeout: Duration::from_secs(30),
            max_connections,
            shutdown_grace: grace,
        };
        let open = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, open.clone(), async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            open,
            stop,
            server,
        }
    }

    #[tokio::test]
    async fn open_counts_the_connections_being_served() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let Running {
            addr,
            open,
            stop,
            server,
        } = start(app, 2, Duration::from_secs(1)).await;
        let first = TcpStream::connect(addr).await.expect("connect");
        let second = TcpStream::connect(addr).await.expect("connect");
        until_open(&open, 2).await;
        // Over the cap: refused with a 503, never counted as served.
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut third, &mut answer)
            .await
            .expect("read the refusal");
        assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
        assert_eq!(open.load(Ordering::Relaxed), 2);
        drop(first);
        until_open(&open, 1).await;
        drop(second);
        until_open(&open, 0).await;
        let _ = stop.send(());
        server.await.expect("the listener ends");
    }

    #[tokio::test]
    async fn connections_closed_by_force_at_shutdown_are_uncounted() {
        // A handler that never answers holds its connection past the grace.
        let app = axum::Router::new().route("/", axum::routing::get(std::future::pending::<()>));
        let Running {
            addr,
            open,
            stop,
            server,
        } = start(app, 8, Duration::from_millis(100)).await;
        let mut stuck = TcpStream::connect(addr).await.expect("connect");
        stuck
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("send");
        until_open(&open, 1).await;
        let _ = stop.send(());
        let drained = server.await.expect("the listener ends");
        assert_eq!(drained.closed_by_force, 1);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_hypers_bare_error_heads_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let problem = String::from_utf8(problem_for(bare).expect("rewritten")).expect("utf-8");
        assert!(problem.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(problem.contains("application/problem+json"));
        assert!(problem.ends_with(
            r#""status":400,"detail":"the request line or a header could not be parsed"}"#
        ));
        for (head, code) in [
            (&b"HTTP/1.1 414 URI Too Long\r\n\r\n"[..], "414"),
            (
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n",
                "431",
            ),
        ] {
            let p = String::from_utf8(problem_for(head).expect("rewritten")).expect("utf-8");
            assert!(p.contains(&format!(r#""status":{code}"#)), "{p}");
        }
        // Our own answers carry a content type and are left alone.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(problem_for(ours).is_none());
        assert!(problem_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            problem_for(b"HTTP/1.1 400 Bad").is_none(),
            "an incomplete head"
        );
    }
}
