//! The running daemon, composed: shards, the [`App`] over them and the HTTPS listener
//! serving [`crate::routes`], started and stopped together (in-process in tests).
//!
//! Slow clients: axum-server's accept loop is kept and given a guarding acceptor
//! (connection caps, TLS handshake timeout) plus hyper's header read timer, since
//! that covers every phase before a handler runs; bodies get their time in `routes`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsAcceptor;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use sluice_dataplane::{Dataplane, DataplaneConfig, IoKind, ShardEvent, ShardId};

use crate::app::{plan_cores, App};
use crate::config::Config;
use crate::limits::{ConnPermit, Limits, Refusal};
use crate::negotiate::Negotiator;
use crate::tls::TlsMaterial;

/// Longest a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request's head may take to arrive, counted from the end of the
/// handshake (the first byte) or from the head's first byte (hyper's timer).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may go without a byte either way once it has spoken.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A started server.
pub struct Server {
    /// The shared state, for inspection by tests and the binary.
    pub app: Arc<App>,
    /// Where the HTTPS listener is bound.
    pub https_addr: SocketAddr,
    handle: axum_server::Handle,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Bind everything and start serving. `pin` pins shards to cores.
    pub async fn start(config: Config, pin: bool) -> anyhow::Result<Server> {
        config.validate()?;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls: TlsMaterial =
            crate::tls::load_or_generate(config.cert.as_deref(), config.key.as_deref())?;
        let (shards, cores) = plan_cores(&config);
        let dp_cfg = DataplaneConfig {
            shards,
            bind_ip: config.media_bind_ip(),
            announce_ips: config.announce_ip.clone(),
            media_port: config.media_port,
            tcp_port: config.media_tcp_base(),
            tcp_limits: config.tcp_limits(),
            cores: if pin { cores } else { Vec::new() },
            io: IoKind::parse(&config.io).unwrap_or(IoKind::Auto),
            idle_timeout: config.idle_timeout(),
            setup_timeout: config.setup_timeout(),
            keyframe_throttle: Duration::from_millis(config.keyframe_interval_ms),
            frame_hold: Duration::from_millis(config.frame_hold_ms),
            direct_send: config.direct_send,
            xdp: config.xdp_settings(),
            ..DataplaneConfig::default()
        };
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<(ShardId, ShardEvent)>();
        let dataplane = Dataplane::start(&dp_cfg, ev_tx)?;
        let mut negotiator = Negotiator::new()?;
        negotiator.viewer_bwe = (config.viewer_bwe_bps > 0).then_some(config.viewer_bwe_bps);
        let cluster = crate::cluster::Cluster::from_config(&config)?;
        let app = Arc::new(
            App::new(
                config.clone(),
                dataplane,
                negotiator,
                tls.fingerprint.clone(),
            )
            .with_cluster(cluster),
        );
        let weak = Arc::downgrade(&app);
        std::thread::Builder::new()
            .name("shard-events".into())
            .spawn(move || {
                // Ends when every shard has dropped its sender, or the app is gone.
                while let Ok((_shard, ev)) = ev_rx.recv() {
                    let Some(app) = weak.upgrade() else { break };
                    if let ShardEvent::RelayClosed { link } = ev {
                        crate::relay::link_closed(&app, link);
                        continue;
                    }
                    app.handle_shard_event(ev);
                }
            })?;

        let rustls_cfg = axum_server::tls_rustls::RustlsConfig::from_pem(
            tls.cert_pem.into_bytes(),
            tls.key_pem.into_bytes(),
        )
        .await?;
        let handle = axum_server::Handle::new();
        let router = crate::routes::router(app.clone());
        let acceptor = GuardedAcceptor {
            tls: RustlsAcceptor::new(rustls_cfg).handshake_timeout(TLS_HANDSHAKE_TIMEOUT),
            limits: app.limits.clone(),
        };
        let mut listener = axum_server::bind(config.listen)
            .acceptor(acceptor)
            .handle(handle.clone());
        listener
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        listener
            .http_builder()
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        let serve = tokio::spawn(
            listener.serve(router.into_make_service_with_connect_info::<SocketAddr>()),
        );
        let https_addr = handle
            .listening()
            .await
            .ok_or_else(|| anyhow::anyhow!("could not listen on {}", config.listen))?;
        if let Some(c) = &app.cluster {
            if config.cluster.advertise.is_empty() {
                let addr = SocketAddr::new(config.primary_announce_ip(), https_addr.port());
                c.set_advertise(format!("https://{addr}"));
            }
            let weak = Arc::downgrade(&app);
            c.spawn_agent(move || weak.upgrade().map(|app| app.cluster_local()));
            tokio::spawn(crate::relay::run(app.clone()));
        }
        for s in &app.dataplane.shards {
            tracing::info!(shard = %s.id, udp = ?s.addrs, tcp = ?s.tcp_addrs, core = ?s.core, io = s.io, "shard started");
        }
        Ok(Server {
            app,
            https_addr,
            handle,
            serve,
        })
    }

    /// Base URL of the HTTPS listener.
    pub fn url(&self) -> String {
        format!("https://{}", self.https_addr)
    }

    /// Primary (UDP) media address of each shard.
    pub fn shard_addrs(&self) -> Vec<SocketAddr> {
        self.app.dataplane.shards.iter().map(|s| s.addr).collect()
    }

    /// ICE-TCP addresses of each shard (empty when ICE-TCP is off).
    pub fn shard_tcp_addrs(&self) -> Vec<Vec<SocketAddr>> {
        self.app
            .dataplane
            .shards
            .iter()
            .map(|s| s.tcp_addrs.clone())
            .collect()
    }

    /// Stop placing sessions, wait up to `deadline` for existing ones to end.
    pub async fn drain(&self, deadline: Duration) {
        self.app.draining.store(true, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        while Instant::now() < until && self.app.registry().session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resolves when the admin API has asked the process to drain and exit.
    pub async fn drain_requested(&self) {
        self.app.drain_requested.notified().await
    }

    /// Stop HTTP and the shards.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        let _ = tokio::time::timeout(Duration::from_secs(3), self.serve).await;
        if let Some(c) = &self.app.cluster {
            // Others may take this node's streams and rooms now rather than after the lease.
            let _ = tokio::time::timeout(Duration::from_secs(2), c.leave()).await;
        }
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || app.dataplane.shutdown()).await;
    }

    /// Resolves when the HTTP server has stopped for any reason.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.serve).await??;
        Ok(())
    }

    /// Begin a graceful HTTP shutdown.
    pub fn stop_http(&self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(2)));
    }
}

/// TLS behind the connection caps: a connection over `max_conns_per_ip` or
/// `max_conns` is closed before its handshake, a handshake that fails or takes
/// longer than [`TLS_HANDSHAKE_TIMEOUT`] is counted.
#[derive(Clone)]
struct GuardedAcceptor {
    tls: RustlsAcceptor,
    limits: Arc<Limits>,
}

impl<S> Accept<TcpStream, S> for GuardedAcceptor
where
    S: Send + 'static,
    RustlsAcceptor: Accept<TcpStream, S, Service = S>,
    <RustlsAcceptor as Accept<TcpStream, S>>::Future: Send + 'static,
{
    type Stream = Guarded<<RustlsAcceptor as Accept<TcpStream, S>>::Stream>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let permit = match stream.peer_addr() {
            Ok(peer) => self.limits.admit_conn(peer.ip()),
            Err(_) => Err(Refusal::ConnsTotal),
        };
        let permit = match permit {
            Ok(p) => p,
            Err(why) => {
                self.limits.refuse(why);
                // Dropping the stream closes it.
                return Box::pin(async move { Err(io::Error::other(why.as_str())) });
            }
        };
        let handshake = self.tls.accept(stream, service);
        let limits = self.limits.clone();
        Box::pin(async move {
            match handshake.await {
                Ok((stream, service)) => Ok((
                    Guarded {
                        inner: stream,
                        _permit: permit,
                        deadline: Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT)),
                        spoke: false,
                        limits,
                    },
                    service,
                )),
                Err(e) => {
                    limits.refuse(Refusal::TlsHandshake);
                    Err(e)
                }
            }
        })
    }
}

/// A connection holding its place among the connections until it closes, and
/// closed when it sends nothing within [`HEADER_READ_TIMEOUT`] of the handshake
/// (hyper's own timer starts only at a request's first byte, after HTTP/2
/// detection) or moves no byte for [`IDLE_TIMEOUT`].
struct Guarded<T> {
    inner: T,
    _permit: ConnPermit,
    deadline: Pin<Box<Sleep>>,
    spoke: bool,
    limits: Arc<Limits>,
}

impl<T> Guarded<T> {
    fn active(&mut self) {
        self.spoke = true;
        let next = tokio::time::Instant::now() + IDLE_TIMEOUT;
        self.deadline.as_mut().reset(next);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.limits.refuse(Refusal::HttpTimeout);
                    let what = if this.spoke { "idle" } else { "no request" };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) && self.spoke {
            self.active();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
