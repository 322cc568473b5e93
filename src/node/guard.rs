//! The agent's HTTP listener, guarded against clients that connect and then say nothing,
//! or say it slowly.
//!
//! - **Connection cap.** At most [`Limits::max_connections`] connections are open at
//!   once. A connection accepted beyond it closes the least recently active one at once
//!   (a silent or slow client before a prober that just sent its request), so a flood
//!   neither queues nor grows memory, and a kubelet probe still gets its answer.
//! - **Header-read timeout.** Once the first byte of a request has arrived, the whole
//!   request must be in (the response started) within [`Limits::header_timeout`], and
//!   it may not exceed [`MAX_REQUEST_BYTES`]: the endpoints take small GETs only.
//! - **Idle timeout.** A connection with no byte in either direction for
//!   [`Limits::idle_timeout`] — just opened and silent, kept alive between requests, or
//!   not reading its response — is closed.
//!
//! The rules act on the byte stream under the HTTP server, so they hold whatever the
//! server does between requests.

use std::collections::BTreeMap;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// The largest request accepted (line and headers); a probe or a scrape sends a few
/// hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The listener's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    /// 256 connections (Prometheus and the kubelet use one or two), a request within
    /// 5 s of its first byte (the probes' own timeout), 15 s of silence.
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// What the listener and its connections share about one connection.
struct ConnState {
    /// When it last moved a byte, in milliseconds since the listener started.
    last_active_ms: AtomicU64,
    /// Set when a newer connection pushed it out.
    evicted: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    live: BTreeMap<u64, Arc<ConnState>>,
}

/// A TCP listener that applies [`Limits`] to every connection it hands out.
pub struct GuardedListener {
    inner: TcpListener,
    limits: Limits,
    started: Instant,
    registry: Arc<Mutex<Registry>>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, limits: Limits) -> Self {
        GuardedListener {
            inner,
            limits,
            started: Instant::now(),
            registry: Arc::default(),
        }
    }

    /// Registers a new connection, pushing out the least recently active one when the
    /// cap is reached.
    fn admit(&self, io: TcpStream) -> GuardedIo {
        let now = Instant::now();
        let state = Arc::new(ConnState {
            last_active_ms: AtomicU64::new(ms_since(self.started, now)),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let id = {
            let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            while reg.live.len() >= self.limits.max_connections.max(1) {
                let oldest = reg
                    .live
                    .iter()
                    .min_by_key(|(_, s)| s.last_active_ms.load(Ordering::Relaxed))
                    .map(|(id, _)| *id);
                let Some(oldest) = oldest else { break };
                if let Some(s) = reg.live.remove(&oldest) {
                    s.evicted.store(true, Ordering::Relaxed);
                    s.waker.wake();
                }
                tracing::debug!(
                    cap = self.limits.max_connections,
                    "HTTP connection cap reached: the least recently active connection is closed"
                );
            }
            let id = reg.next_id;
            reg.next_id += 1;
            reg.live.insert(id, state.clone());
            id
        };
        GuardedIo {
            io,
            id,
            state,
            registry: self.registry.clone(),
            limits: self.limits,
            started: self.started,
            reading: None,
            request_bytes: 0,
            deadline: now + self.limits.idle_timeout,
            sleep: Box::pin(tokio::time::sleep_until(now + self.limits.idle_timeout)),
        }
    }

    /// Connections open now (for tests).
    pub fn open_connections(&self) -> usize {
        self.registry
            .lock()
            .map(|r| r.live.len())
            .unwrap_or_default()
    }
}

fn ms_since(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((io, addr)) => return (self.admit(io), addr),
                // Out of descriptors or memory, or an aborted handshake: pause rather
                // than spin, as axum's own listener does.
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One connection with its deadlines.
pub struct GuardedIo {
    io: TcpStream,
    id: u64,
    state: Arc<ConnState>,
    registry: Arc<Mutex<Registry>>,
    limits: Limits,
    started: Instant,
    /// When the first byte of the request being read arrived.
    reading: Option<Instant>,
    request_bytes: usize,
    deadline: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        if let Ok(mut reg) = self.registry.lock() {
            reg.live.remove(&self.id);
        }
    }
}

impl GuardedIo {
    fn touch(&self, now: Instant) {
        self.state
            .last_active_ms
            .store(ms_since(self.started, now), Ordering::Relaxed);
    }

    fn on_read(&mut self, n: usize) -> io::Result<()> {
        let now = Instant::now();
        self.touch(now);
        if self.reading.is_none() {
            self.reading = Some(now);
            self.request_bytes = 0;
            self.deadline = now + self.limits.header_timeout;
        }
        self.request_bytes += n;
        if self.request_bytes > MAX_REQUEST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request larger than {MAX_REQUEST_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    fn on_write(&mut self) {
        let now = Instant::now();
        self.touch(now);
        self.reading = None;
        self.deadline = now + self.limits.idle_timeout;
    }

    /// The reason to close now, if any.
    fn expired(&self) -> Option<io::Error> {
        if self.state.evicted.load(Ordering::Relaxed) {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed for a newer connection: the connection cap was reached",
            ));
        }
        if Instant::now() >= self.deadline {
            let what = if self.reading.is_some() {
                "the request did not arrive in time"
            } else {
                "idle for too long"
            };
            return Some(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        None
    }

    /// Arms the wake-ups of a pending read or write: the deadline and eviction.
    fn wait(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.state.waker.register(cx.waker());
        if self.sleep.deadline() != self.deadline {
            self.sleep.as_mut().reset(self.deadline);
        }
        let _ = self.sleep.as_mut().poll(cx);
        self.expired()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.expired() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.on_read(n)?;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.wait(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl GuardedIo {
    /// The error to end with when the connection was evicted and its time is up.
    fn evicted_error(&self) -> Option<io::Error> {
        if self.state.evicted.load(Ordering::Relaxed) {
            self.expired()
        } else {
            None
        }
    }

    /// Records a write's progress; a write that cannot go on (a client that does not
    /// read its response) waits under the idle deadline.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.on_write();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.reading.is_some() {
                    self.reading = None;
                    self.deadline = Instant::now() + self.limits.idle_timeout;
                }
                match self.wait(cx) {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.evicted_error() {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut this.io).poll_write(cx, data);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.evicted_error() {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn server(limits: Limits) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = axum::Router::new().route("/healthz", get(|| async { "ok\n" }));
        tokio::spawn(async move {
            axum::serve(GuardedListener::new(l, limits), app)
                .await
                .unwrap()
        });
        addr
    }

    /// Reads until the server closes; `true` when it did within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn get_healthz(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn silent_and_slow_clients_are_closed_and_the_cap_holds() {
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
        };
        let addr = server(limits).await;
        let t0 = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert!(closed_within(&mut half, Duration::from_secs(3)).await);
        let half_after = t0.elapsed();
        assert!(half_after >= Duration::from_millis(250), "{half_after:?}");
        assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
        assert!(
            t0.elapsed() >= Duration::from_millis(550),
            "{:?}",
            t0.elapsed()
        );

        // Over the cap: the oldest silent connections go at once, a probe is answered.
        let mut flood = Vec::new();
        for _ in 0..10 {
            flood.push(TcpStream::connect(addr).await.unwrap());
        }
        let answer = get_healthz(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut closed_early = 0;
        for s in &mut flood {
            if closed_within(s, Duration::from_millis(100)).await {
                closed_early += 1;
            }
        }
        assert!(closed_early >= 7, "{closed_early} of 10 closed at once");
    }

    #[tokio::test]
    async fn keep_alive_requests_are_served() {
        let addr = server(Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        }
    }
}
