//! What the fuzz targets share: a control-plane `App` over a one-shard
//! dataplane on loopback, built once per process, and the panic hook.

use std::sync::Arc;
use std::time::Duration;

use sluice::app::App;
use sluice::negotiate::Negotiator;
use sluice::Config;
use sluice_dataplane::{Dataplane, DataplaneConfig, IoKind, ShardEvent, ShardId};

/// The secret of [`app`]'s token mode; the seed corpora hold tokens it signs.
pub const SECRET: &str = "fuzz-secret";
/// The admin token of [`app`]'s token mode.
pub const ADMIN_TOKEN: &str = "fuzz-admin";

/// An `App` over one shard bound to an ephemeral loopback port, in open dev
/// mode or (`tokens`) with [`SECRET`] and [`ADMIN_TOKEN`]. Sessions that never
/// connect are dropped after a second, so fuzzed offers do not pile up.
pub fn app(tokens: bool) -> Arc<App> {
    let config = Config {
        shards: 1,
        media_port: 0,
        io: "std".into(),
        secret: tokens.then(|| SECRET.into()),
        admin_token: tokens.then(|| ADMIN_TOKEN.into()),
        max_sessions: 64,
        setup_timeout_secs: 1.0,
        // Every input comes from one address: without this the per-address
        // limits would answer most of them with 429 and hide the handlers.
        signal_rate: 0.0,
        max_sessions_per_ip: 0,
        ..Config::default()
    };
    let dp = DataplaneConfig {
        shards: 1,
        media_port: 0,
        io: IoKind::Std,
        setup_timeout: Duration::from_secs(1),
        ..DataplaneConfig::default()
    };
    let (tx, rx) = crossbeam_channel::unbounded::<(ShardId, ShardEvent)>();
    let dataplane = Dataplane::start(&dp, tx).expect("one-shard dataplane on loopback");
    let negotiator = Negotiator::new().expect("negotiator");
    let app = Arc::new(App::new(config, dataplane, negotiator, "fuzz".into()));
    let weak = Arc::downgrade(&app);
    // As the server does: shard events (sessions closed) update the registry.
    std::thread::spawn(move || {
        while let Ok((_, ev)) = rx.recv() {
            let Some(app) = weak.upgrade() else { break };
            app.handle_shard_event(ev);
        }
    });
    app
}

/// libFuzzer's hook aborts on every panic, also on one the code under test
/// catches. This one lets through the one panic `Negotiator::answer_with`
/// catches on purpose (str0m's "Pt locked multiple times") and aborts on the
/// rest. Call it once, before the first input runs.
pub fn abort_on_uncaught_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = info
            .location()
            .is_some_and(|l| l.file().ends_with("src/format/payload_params.rs"));
        if !caught {
            default(info);
            std::process::abort();
        }
    }));
}
