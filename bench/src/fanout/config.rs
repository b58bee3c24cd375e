//! What a fan-out run is given: the server under test and how to reach it,
//! the run's settings, and a ramp's stepping, with the checks that refuse
//! settings that contradict themselves or are out of range.

use std::net::IpAddr;
use std::time::Duration;

use super::FanoutError;
use crate::client::{Endpoint, MediaSpec, Transport};
use crate::units::{expand_template, url_host_port};

/// Default WHIP URL template.
pub const DEFAULT_WHIP: &str = "{base}/whip/{stream}";
/// Default WHEP URL template.
pub const DEFAULT_WHEP: &str = "{base}/whep/{stream}";

/// Most viewers one run may create.
pub const MAX_VIEWERS: usize = 100_000;

/// The server under test and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, `{base}` in the templates, e.g. `https://127.0.0.1:8443`.
    pub base: String,
    /// Stream name, `{stream}` in the templates.
    pub stream: String,
    /// WHIP URL template, e.g. [`DEFAULT_WHIP`].
    pub whip_template: String,
    /// WHEP URL template, e.g. [`DEFAULT_WHEP`].
    pub whep_template: String,
    /// Bearer token sent with every WHIP/WHEP request.
    pub token: Option<String>,
    /// Accept self-signed certificates.
    pub insecure: bool,
    /// Local IP for media sockets; chosen from the route to the target when `None`.
    pub bind_ip: Option<IpAddr>,
    /// Media addresses accepted besides the target host's own.
    pub extra_media_ips: Vec<IpAddr>,
}

impl Target {
    /// WHIP URL of the configured stream.
    pub fn whip_url(&self) -> String {
        self.whip_url_for(&self.stream)
    }

    /// WHEP URL of the configured stream.
    pub fn whep_url(&self) -> String {
        self.whep_url_for(&self.stream)
    }

    /// WHIP URL of `stream`.
    pub fn whip_url_for(&self, stream: &str) -> String {
        expand_template(&self.whip_template, &self.base, stream)
    }

    /// WHEP URL of `stream`.
    pub fn whep_url_for(&self, stream: &str) -> String {
        expand_template(&self.whep_template, &self.base, stream)
    }

    /// Name of stream `index` of `streams`: the configured name itself when
    /// there is one stream, `{stream}-{index}` when there are several.
    pub fn stream_name(&self, index: usize, streams: usize) -> String {
        if streams <= 1 {
            self.stream.clone()
        } else {
            format!("{}-{index}", self.stream)
        }
    }

    /// The name for the record: the stream's, or `{stream}-{0..K-1}` for K.
    pub(super) fn streams_label(&self, streams: usize) -> String {
        if streams <= 1 {
            self.stream.clone()
        } else {
            format!("{}-{{0..{}}}", self.stream, streams - 1)
        }
    }

    pub(super) fn endpoint(&self, url: String) -> Endpoint {
        Endpoint {
            url,
            token: self.token.clone(),
            insecure: self.insecure,
        }
    }
}

/// Stepping for `--ramp`.
#[derive(Debug, Clone)]
pub struct RampConfig {
    /// Viewers added per step.
    pub step: usize,
    /// Measurement window of each step.
    pub step_duration: Duration,
    /// Stop once a step's overall loss, or its delivery shortfall (see
    /// [`shortfall_percent`](super::shortfall_percent)), exceeds this, in percent.
    pub max_loss_percent: f64,
    /// Stop once the server is this busy (cores used / cores allowed).
    pub max_server_load: f64,
    /// A step over the loss limit is measured again this many times (with the
    /// same viewers) before the ramp stops: on a shared machine a moment of
    /// CPU contention should not end it.
    pub retries: u32,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The server and how to reach it.
    pub target: Target,
    /// Viewers (for a ramp: the most it goes to).
    pub viewers: usize,
    /// Publishers, each of its own stream (see [`Target::stream_name`]), all
    /// sending `media`; viewers are dealt to them round-robin ([`stream_of`](super::stream_of)).
    pub streams: usize,
    /// Viewers (and publishers) receive with UDP GRO; see [`crate::gro`].
    pub udp_gro: bool,
    /// How viewers reach the server (publishers always use UDP).
    pub viewer_transport: Transport,
    /// What each publisher sends.
    pub media: MediaSpec,
    /// Measurement window.
    pub duration: Duration,
    /// Settling time between setup and measurement.
    pub warmup: Duration,
    /// Share of viewers that decrypt and check payloads, in percent: of each
    /// stream's viewers, so at least one per stream (see
    /// [`is_sample_of`](super::is_sample_of)).
    pub sample_percent: f64,
    /// Viewers set up at once.
    pub setup_concurrency: usize,
    /// Longest a viewer may take from POST to connected.
    pub setup_timeout: Duration,
    /// Server process on this host to read CPU and memory of.
    pub server_pid: Option<u32>,
    /// Add viewers step by step instead of all at once; see [`RampConfig`].
    pub ramp: Option<RampConfig>,
    /// Worker threads of the runtime the run is on, for the report.
    pub worker_threads: usize,
    /// Keep `worker_threads` runtime threads busy for the run instead of
    /// letting them sleep in epoll (see `sluice-bench fanout --spin`).
    pub spin: bool,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl FanoutConfig {
    pub(super) fn validate(&self) -> Result<(), FanoutError> {
        let bad = |m: String| Err(FanoutError::Config(m));
        if self.viewers == 0 || self.viewers > MAX_VIEWERS {
            return bad(format!(
                "--viewers {} is outside 1..={MAX_VIEWERS}",
                self.viewers
            ));
        }
        if self.streams == 0 || self.streams > self.viewers {
            return bad(format!(
                "--streams {} is outside 1..={} (--viewers): every stream needs a viewer",
                self.streams, self.viewers
            ));
        }
        if self.duration.is_zero() {
            return bad("--duration must be above zero".into());
        }
        if !(self.sample_percent > 0.0 && self.sample_percent <= 100.0) {
            return bad(format!(
                "--sample-percent {} is outside (0, 100]",
                self.sample_percent
            ));
        }
        if self.setup_concurrency == 0 {
            return bad("--setup-concurrency must be at least 1".into());
        }
        if self.media.fps == 0 || self.media.bitrate == 0 {
            return bad("--fps and --bitrate must be above zero".into());
        }
        let pf = self.media.pacing_factor;
        if !pf.is_finite() || (pf != 0.0 && !(1.0..=100.0).contains(&pf)) {
            // Below 1 the queue would grow without end.
            return bad(format!(
                "--pacing-factor {pf} must be 0 (off) or within [1, 100]"
            ));
        }
        if let Some(r) = &self.ramp {
            if r.step == 0 || r.step_duration.is_zero() {
                return bad("--ramp-step and --step-duration must be above zero".into());
            }
        }
        if url_host_port(&self.target.whip_url()).is_none()
            || url_host_port(&self.target.whep_url()).is_none()
        {
            return bad(format!(
                "WHIP/WHEP URLs must be http:// or https:// URLs, got {} and {}",
                self.target.whip_url(),
                self.target.whep_url()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::fanout) fn config(viewers: usize) -> FanoutConfig {
        FanoutConfig {
            target: Target {
                base: "https://127.0.0.1:8443".into(),
                stream: "s".into(),
                whip_template: DEFAULT_WHIP.into(),
                whep_template: DEFAULT_WHEP.into(),
                token: None,
                insecure: true,
                bind_ip: None,
                extra_media_ips: Vec::new(),
            },
            viewers,
            streams: 1,
            udp_gro: true,
            viewer_transport: Transport::Udp,
            media: MediaSpec::default(),
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            sample_percent: 1.0,
            setup_concurrency: 32,
            setup_timeout: Duration::from_secs(5),
            server_pid: None,
            ramp: None,
            worker_threads: 1,
            spin: false,
            progress: false,
        }
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(config(10).validate().is_ok());
        assert!(config(0).validate().is_err());
        assert!(config(MAX_VIEWERS + 1).validate().is_err());
        let mut c = config(10);
        c.sample_percent = 0.0;
        assert!(c.validate().is_err());
        let mut c = config(10);
        c.target.whep_template = "udp://{base}".into();
        assert!(c.validate().is_err());
        let mut c = config(10);
        c.ramp = Some(RampConfig {
            step: 0,
            step_duration: Duration::from_secs(1),
            max_loss_percent: 1.0,
            max_server_load: 0.95,
            retries: 1,
        });
        assert!(c.validate().is_err());
    }

    #[test]
    fn stream_count_must_be_between_one_and_the_viewers() {
        let with = |viewers, streams| {
            let mut c = config(viewers);
            c.streams = streams;
            c.validate()
        };
        assert!(with(10, 1).is_ok());
        assert!(with(10, 10).is_ok());
        let e = with(10, 0).unwrap_err().to_string();
        assert!(e.contains("--streams 0"), "{e}");
        let e = with(10, 11).unwrap_err().to_string();
        assert!(e.contains("--streams 11 is outside 1..=10"), "{e}");
    }

    #[test]
    fn streams_are_named_after_the_base_only_when_there_are_several() {
        let t = config(4).target;
        assert_eq!(t.stream_name(0, 1), "s");
        assert_eq!(t.stream_name(2, 3), "s-2");
        assert_eq!(
            t.whep_url_for(&t.stream_name(1, 2)),
            "https://127.0.0.1:8443/whep/s-1"
        );
        assert_eq!(t.whip_url_for(&t.streams_label(1)), t.whip_url());
        assert_eq!(
            t.whip_url_for(&t.streams_label(4)),
            "https://127.0.0.1:8443/whip/s-{0..3}"
        );
    }
}
