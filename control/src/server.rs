//! The running daemon, composed: shards, the [`App`] over them and the HTTPS listener
//! serving [`crate::routes`], started and stopped together (in-process in tests).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_dataplane::{Dataplane, DataplaneConfig, IoKind, ShardEvent, ShardId};

use crate::app::{plan_cores, App};
use crate::config::Config;
use crate::negotiate::Negotiator;
use crate::tls::TlsMaterial;

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
            announce_ip: config.announce_ip,
            media_port: config.media_port,
            cores: if pin { cores } else { Vec::new() },
            io: IoKind::parse(&config.io).unwrap_or(IoKind::Auto),
            idle_timeout: config.idle_timeout(),
            setup_timeout: config.setup_timeout(),
            keyframe_throttle: Duration::from_millis(config.keyframe_interval_ms),
            frame_hold: Duration::from_millis(config.frame_hold_ms),
            direct_send: config.direct_send,
            ..DataplaneConfig::default()
        };
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<(ShardId, ShardEvent)>();
        let dataplane = Dataplane::start(&dp_cfg, ev_tx)?;
        let mut negotiator = Negotiator::new()?;
        negotiator.viewer_bwe = (config.viewer_bwe_bps > 0).then_some(config.viewer_bwe_bps);
        let app = Arc::new(App::new(
            config.clone(),
            dataplane,
            negotiator,
            tls.fingerprint.clone(),
        ));
        let weak = Arc::downgrade(&app);
        std::thread::Builder::new()
            .name("shard-events".into())
            .spawn(move || {
                // Ends when every shard has dropped its sender, or the app is gone.
                while let Ok((_shard, ev)) = ev_rx.recv() {
                    let Some(app) = weak.upgrade() else { break };
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
        let serve = tokio::spawn(
            axum_server::bind_rustls(config.listen, rustls_cfg)
                .handle(handle.clone())
                .serve(router.into_make_service_with_connect_info::<SocketAddr>()),
        );
        let https_addr = handle
            .listening()
            .await
            .ok_or_else(|| anyhow::anyhow!("could not listen on {}", config.listen))?;
        for s in &app.dataplane.shards {
            tracing::info!(shard = %s.id, addr = %s.addr, core = ?s.core, io = s.io, "shard started");
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

    /// Media address of each shard.
    pub fn shard_addrs(&self) -> Vec<SocketAddr> {
        self.app.dataplane.shards.iter().map(|s| s.addr).collect()
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
