//! What a run measures: one window at the configured viewer count, or a
//! ramp that adds viewers step by step and measures each step (again, up to
//! the retries, while it is over the loss limit) until a limit stops it.

use super::accounting::{over_loss_limit, shortfall_percent};
use super::{FanoutError, Run};
use crate::report::{group_digits, RampReport, StepReport};

impl Run<'_> {
    pub(super) async fn measure_all(
        &mut self,
    ) -> Result<(Option<StepReport>, Option<RampReport>), FanoutError> {
        let Some(ramp) = self.cfg.ramp.clone() else {
            self.add_viewers(self.cfg.viewers).await;
            if self.viewers.is_empty() {
                return Err(self.no_viewers());
            }
            self.settle().await;
            let m = self.measure(self.cfg.duration, None).await?;
            return Ok((Some(m), None));
        };
        let mut steps: Vec<StepReport> = Vec::new();
        let mut held = 0;
        let mut held_step = None;
        let mut retried = Vec::new();
        let stop_reason = loop {
            if self.cancelled() {
                break "cancelled".to_string();
            }
            let target = (self.viewers.len() + ramp.step).min(self.cfg.viewers);
            let before = self.setup.connected;
            self.add_viewers(target - self.viewers.len()).await;
            if self.viewers.is_empty() {
                return Err(self.no_viewers());
            }
            let failed_now = target - self.viewers.len();
            let label = format!("{}/{}", self.viewers.len(), self.cfg.viewers);
            self.settle().await;
            let mut step = self.measure(ramp.step_duration, Some(&label)).await?;
            for _ in 0..ramp.retries {
                if !over_loss_limit(&step, ramp.max_loss_percent) || self.cancelled() {
                    break;
                }
                self.progress.say(&format!(
                    "step {:>6} viewers: loss {:.3}%, delivery shortfall {:.2}%; measuring again",
                    step.viewers,
                    step.loss_percent,
                    shortfall_percent(&step)
                ));
                retried.push(step.viewers);
                self.settle().await;
                step = self.measure(ramp.step_duration, Some(&label)).await?;
            }
            let load = step.server.as_ref().map(|s| s.load);
            self.progress.say(&format!(
                "step {:>6} viewers: {} pkt/s, loss {:.3}%, latency p99 {}, server {}, bench {:.2} cores",
                step.viewers,
                group_digits(step.delivered_pps.round() as u64),
                step.loss_percent,
                step.latency_ms
                    .as_ref()
                    .map_or("-".into(), |l| format!("{:.2} ms", l.p99)),
                load.map_or("-".into(), |l| format!("{:.0}% busy", l * 100.0)),
                step.bench.cores
            ));
            let shortfall = shortfall_percent(&step);
            let lossy = over_loss_limit(&step, ramp.max_loss_percent);
            if !lossy {
                held = step.viewers;
                held_step = Some(steps.len());
            }
            let bench_saturated = step.bench.saturated;
            steps.push(step);
            if lossy {
                let s = steps.last().expect("just pushed");
                break format!(
                    "at {} viewers loss {:.3}% and delivery shortfall {shortfall:.2}%, above {}%",
                    s.viewers, s.loss_percent, ramp.max_loss_percent
                );
            }
            if let Some(l) = load.filter(|&l| l >= ramp.max_server_load) {
                break format!(
                    "server load {:.0}% reached the {:.0}% limit",
                    l * 100.0,
                    ramp.max_server_load * 100.0
                );
            }
            if bench_saturated {
                break "the load generator saturated its CPU: more viewers would measure it, not the server".into();
            }
            if failed_now > 0 && self.setup.connected == before {
                break "no viewer of the last step could be set up".into();
            }
            if self.viewers.len() >= self.cfg.viewers || target >= self.cfg.viewers {
                break format!("reached --viewers {}", self.cfg.viewers);
            }
        };
        self.progress.say(&format!("ramp stopped: {stop_reason}"));
        let measurement = held_step.map(|i| steps[i].clone());
        Ok((
            measurement,
            Some(RampReport {
                steps,
                held_viewers: held,
                stop_reason,
                max_loss_percent: ramp.max_loss_percent,
                max_server_load: ramp.max_server_load,
                retried_steps: retried,
            }),
        ))
    }
}
