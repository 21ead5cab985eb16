//! The listener loop: HTTP/1.1 and HTTP/2 on one socket (hyper-util's auto builder), one access-log
//! line per request, graceful drain on shutdown, and the limits that keep hostile or broken
//! clients from holding resources: a bound on open connections, a deadline for the first request
//! (hyper's own header timeout starts only once it knows the protocol), hyper's header read timeout
//! for every HTTP/1.1 request head, an idle timeout for connections with no request running and
//! no byte moving, and a stall timeout for connections whose client stopped taking a response
//! (see `pacing`; PINGs move bytes but are no progress).
//!
//! HTTP/2 connections carry at most [`MAX_CONCURRENT_STREAMS`] streams at once, and are closed
//! (GOAWAY from h2, or cut by `h2guard`) when their client floods them: rapid reset, streams past
//! the limit or oversized header lists over and over, CONTINUATION, PING, SETTINGS floods. None of
//! these bounds is in `[limits]`: each is orders of magnitude from what a real client does, so an
//! operator has nothing to size them by (tests/system/h2-abuse.sh runs each attack).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::app::{App, Conn};
use super::dispatch;
use super::h2guard::FrameGuard;
use super::pacing::{self, Ledger};
use super::route::{Route, Routed};
use super::settings::ConnLimits;
use crate::shutdown::Shutdown;

/// Concurrent HTTP/2 streams per connection. Every stream may pin a little memory while its
/// client holds its flow-control window shut (see `pacing`), so this bounds what one connection
/// can pin. Pull clients use far fewer at once (containerd and Docker fetch 3 layers at a time,
/// containers/image tools such as podman and skopeo 6), and Go's HTTP/2 client, like most, opens
/// another connection rather than wait when a server's limit is reached. hyper's default is 200,
/// Go's net/http server (Distribution) allows 250, nginx 128.
pub const MAX_CONCURRENT_STREAMS: u32 = 32;

/// Bytes h2 buffers per stream before hyper waits to hand it more: a few 16 KiB frames instead
/// of hyper's 400 KB (a stream's chunks are counted in `pacing` whichever side holds them; this
/// keeps fewer of them in flight per stream).
const MAX_SEND_BUF_SIZE: usize = 64 * 1024;

/// Largest request header list (HPACK's decoded size: names, values and 32 bytes a field) an
/// HTTP/2 request may carry; past it the request gets 431, and a header block that goes on past
/// it closes the connection (h2). 64 KiB rather than hyper's 16 KiB: Bearer tokens of identity
/// providers that list a user's groups reach 8 to 12 KiB, and HTTP/1.1 requests (hyper's 400 KB
/// buffer) take more still.
const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// Streams h2 resets for what the client did wrong (opened past [`MAX_CONCURRENT_STREAMS`], a
/// header list past [`MAX_HEADER_LIST_SIZE`], a malformed request) before the connection gets
/// GOAWAY ENHANCE_YOUR_CALM. hyper's 1024 lets a client that ignores the stream limit have 1024
/// requests refused on each connection; a client that opened streams before it read the server's
/// limit (RFC 9113 lets it assume 100) has at most 68 refused.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 128;

/// Streams the client may reset before registryd accepted them, at any one time (h2's default,
/// its answer to rapid reset); those reset after they were accepted are charged by `h2guard`.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// What the idle watch of one connection needs to know.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` of the last byte read or written.
    last_ms: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    /// The socket's descriptor, valid while hyper serves the connection.
    fd: std::os::fd::RawFd,
    /// A second handle on the socket, taken at the first request with a body, for the
    /// lingering close (see [`linger`]).
    linger_fd: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
    /// Why `h2guard` cut the connection, if it did.
    cut: std::sync::OnceLock<&'static str>,
}

impl Activity {
    fn new(fd: std::os::fd::RawFd) -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            fd,
            linger_fd: std::sync::Mutex::new(None),
            cut: std::sync::OnceLock::new(),
        }
    }

    /// Keeps a second handle on the socket for the lingering close, once per connection. Called
    /// from hyper's service call, while the connection's stream (which owns `fd`) is alive.
    fn keep_fd_for_linger(&self) {
        let mut kept = self.linger_fd.lock().unwrap_or_else(|p| p.into_inner());
        if kept.is_none() {
            // SAFETY: `fd` belongs to the TcpStream hyper is serving this request on, which is
            // alive for the whole of this call; the borrow ends before this function returns.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
            *kept = fd.try_clone_to_owned().ok();
        }
    }

    fn take_linger_fd(&self) -> Option<std::os::fd::OwnedFd> {
        self.linger_fd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn touch(&self) {
        self.last_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Marks a request as running for as long as it lives (also when the client goes away mid-way).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> InFlight {
        a.requests.fetch_add(1, Ordering::Relaxed);
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Counts one open connection in the metrics for as long as it lives.
struct OpenConnection;

impl OpenConnection {
    fn count() -> OpenConnection {
        crate::metrics::get().connections_open.inc();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::metrics::get().connections_open.dec();
    }
}

/// A stream that records when bytes last moved either way (and counts them for the metrics), and
/// fails its reads once `h2guard` finds the client flooding it.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    guard: FrameGuard,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked {
            inner,
            activity,
            guard: FrameGuard::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().get(before..).unwrap_or_default();
        if !read.is_empty() {
            this.activity.touch();
            crate::metrics::get()
                .bytes_received
                .inc_by(read.len() as u64);
            if let Err(why) = this.guard.observe(read, Instant::now()) {
                let _ = this.activity.cut.set(why);
                return Poll::Ready(Err(io::Error::other(why)));
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.touch();
            crate::metrics::get().bytes_sent.inc_by(n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.touch();
            crate::metrics::get().bytes_sent.inc_by(n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves when the connection should be closed: no complete request within the header timeout
/// of opening it, idle (nothing running, nothing moving) for the idle timeout, or a response
/// whose client has taken none of its waiting bytes for the send stall timeout.
async fn conn_watch(
    activity: Arc<Activity>,
    ledger: Arc<Ledger>,
    limits: ConnLimits,
) -> &'static str {
    let tick = (limits
        .header_read_timeout
        .min(limits.idle_timeout)
        .min(limits.send_stall_timeout)
        / 4)
    .clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if ledger
            .stalled_for()
            .is_some_and(|t| t > limits.send_stall_timeout)
        {
            return "a response's client took none of its bytes for limits.send_stall_timeout_secs";
        }
        if activity.requests.load(Ordering::Relaxed) == 0
            && activity.opened.elapsed() > limits.header_read_timeout
        {
            return "no complete request within limits.header_read_timeout_secs";
        }
        if activity.in_flight.load(Ordering::Relaxed) == 0
            && activity.quiet_for() > limits.idle_timeout
        {
            return "idle for limits.idle_timeout_secs";
        }
    }
}

async fn logged(
    app: Arc<App>,
    req: http::Request<Incoming>,
    conn: Conn,
) -> http::Response<super::Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = conn.client;
    // Parsed once: the handler, the metrics label and this log line all read this route.
    let settings = app.settings();
    let routed = Routed::of(&path, &settings.metrics.path);
    let resp = dispatch::handle(&app, req, conn, &settings, &routed).await;
    let bytes = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let route = routed.route.as_ref().ok();
    let repository = route
        .and_then(Route::repository)
        .map(|r| r.to_string())
        .unwrap_or_default();
    // The digest of what was served or stored: the answer names it (a push by tag, an upload's
    // final PUT, a pull by tag), else the path does. `journalctl DIGEST=sha256:...` finds the push.
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .filter(|d| d.parse::<crate::registry::Digest>().is_ok())
        .map(str::to_string)
        .or_else(|| route.and_then(Route::digest).map(|d| d.to_string()))
        .unwrap_or_default();
    tracing::info!(
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        bytes,
        duration_ms = started.elapsed().as_millis() as u64,
        client = %client,
        repository = %repository,
        digest = %digest,
        "request"
    );
    resp
}

/// Gives memory back once a connection that held much is gone: its HTTP/2 streams run as tasks of
/// their own and let go of their chunks shortly after the connection is dropped, so this waits
/// (a few seconds at most) until nothing of it is waiting any more.
async fn give_back_after(ledger: Arc<Ledger>) {
    for _ in 0..50 {
        if ledger.pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pacing::give_back_memory();
}

/// How long a client gets to finish the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Lingering close (nginx's name for it): after a connection's last answer, what the client still
/// sends is read and thrown away for up to this long in all, ...
const LINGER_TIME: Duration = Duration::from_secs(5);
/// ... while it keeps coming (a pause this long ends it) ...
const LINGER_QUIET: Duration = Duration::from_secs(2);
/// ... and up to this many bytes.
const LINGER_BYTES: u64 = 32 * 1024 * 1024;

/// Closes a connection hyper is done with gently. When registryd answers before it has read a
/// request's body (a manifest over `limits.max_manifest_bytes`, a blob over `max_blob_bytes`, a
/// 401 on a push without login), hyper closes the connection with the rest of the body unread,
/// and a socket closed with unread bytes makes the kernel reset the connection: a client that
/// writes its whole body before it reads (Python's `http.client`, CI tools built on it) then gets
/// `EPIPE` and never sees the answer. `fd` is a second handle on the socket, taken at the first
/// request that had a body, so hyper's close did not close the socket: its write side is shut
/// (the client reads the answer and the end), and what the client still sends is drained within
/// the bounds above. Connections that never carried a body close as before.
async fn linger(fd: std::os::fd::OwnedFd) {
    let std_stream = std::net::TcpStream::from(fd);
    let _ = std_stream.shutdown(std::net::Shutdown::Write);
    let Ok(mut stream) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = [0u8; 8 * 1024];
    let mut drained = 0u64;
    while drained < LINGER_BYTES {
        let quiet = (tokio::time::Instant::now() + LINGER_QUIET).min(deadline);
        match tokio::time::timeout_at(quiet, tokio::io::AsyncReadExt::read(&mut stream, &mut buf))
            .await
        {
            Ok(Ok(n)) if n > 0 => drained += n as u64,
            _ => break,
        }
    }
}

/// Serves `listener` (over TLS when `tls` is given) until `shutdown` is signalled, then lets open
/// connections finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
    grace: Duration,
) {
    let limits = app.limits.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buf_size(MAX_SEND_BUF_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let local = listener.local_addr().ok();
    let mut last_full_warning: Option<Instant> = None;
    loop {
        // Past max_connections, stop accepting: new clients wait in the kernel's queue.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_full_warning.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(60))
                {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached (limits.max_connections): new connections wait"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = shutdown.recv() => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Conn { client: peer, listener: local.unwrap_or(peer), tls: tls.is_some() };
                let activity = Arc::new(Activity::new(std::os::fd::AsRawFd::as_raw_fd(&stream)));
                let ledger = Ledger::new();
                let app = app.clone();
                let svc = {
                    let (activity, ledger) = (activity.clone(), ledger.clone());
                    service_fn(move |req| {
                        let app = app.clone();
                        let running = InFlight::start(&activity);
                        if !hyper::body::Body::is_end_stream(req.body()) {
                            activity.keep_fd_for_linger();
                        }
                        let ledger = ledger.clone();
                        async move {
                            let resp = pacing::within(ledger, logged(app, req, conn)).await;
                            drop(running);
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    })
                };
                let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
                let limits = limits.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _open = OpenConnection::count();
                    let activity_seen = activity.clone();
                    let watch = conn_watch(activity.clone(), ledger.clone(), limits);
                    let served = async {
                        match tls {
                            None => {
                                let io = Tracked::new(stream, activity);
                                let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
                                watcher.watch(conn).await
                            }
                            Some(acceptor) => {
                                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        tracing::debug!(error = %e, client = %peer, "TLS handshake failed");
                                        return Ok(());
                                    }
                                    Err(_) => {
                                        tracing::debug!(client = %peer, "TLS handshake timed out");
                                        return Ok(());
                                    }
                                };
                                let io = Tracked::new(stream, activity);
                                let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
                                watcher.watch(conn).await
                            }
                        }
                    };
                    let ended_by_hyper = tokio::select! {
                        result = served => match result {
                            Err(_) if activity_seen.cut.get().is_some() => {
                                let why = activity_seen.cut.get().copied().unwrap_or_default();
                                tracing::info!(client = %peer, reason = why, "closing HTTP/2 connection");
                                false
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, client = %peer, "connection ended with error");
                                // hyper's header timeout: an idle keep-alive connection or a
                                // slow client, nothing left unread of a refused body.
                                !e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
                            }
                            Ok(()) => true,
                        },
                        why = watch => {
                            tracing::debug!(client = %peer, reason = why, "closing connection");
                            false
                        }
                    };
                    // Not for a connection closed for what its client did (stalled, idle, no
                    // request head in time): that one goes at once. The connection's slot is
                    // held while it lingers.
                    let kept = activity_seen.take_linger_fd();
                    if ended_by_hyper && let Some(fd) = kept {
                        linger(fd).await;
                    }
                    if ledger.was_heavy() {
                        tokio::spawn(give_back_after(ledger));
                    }
                });
            }
            _ = shutdown.recv() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over, closing remaining connections"
        );
    }
}
