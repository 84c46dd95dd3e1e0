//! The knee of a sweep point: its maximum sustainable rate, and the load
//! levels measured below it.
//!
//! A closed-loop probe (`rate = 0`) says how fast the client can push at
//! all; it is an upper bound, and its latencies are queueing in loadgen's
//! own buffer, so they are never reported as the point's latency. Then
//! open-loop runs at chosen rates decide, one at a time, whether a rate is
//! *sustained* ([`SustainRule::judge`]): the acknowledged rate is within
//! `tolerance` of the target (above it too: more acks than scheduled means
//! a backlog was caught up), the consumed rate is not below it, no scheduled message
//! was given up on, and the producer's lateness (publish delay p99) stays
//! under a bound. The rates tried follow [`Search`]: a first guess just
//! below the probe, then bisection (in log space) between the highest rate
//! sustained and the lowest one not. The knee is the highest rate
//! sustained; the latency figures of the point are open-loop runs at
//! fractions of it ([`KneeSettings::levels`]).
//!
//! Everything here is pure (no I/O): the sweep runs the workloads and
//! feeds the verdicts back, so the search is tested without a broker.

use crate::result::RunResult;
use serde::{Deserialize, Serialize};

/// When an open-loop run counts as having held its target rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SustainRule {
    /// Largest shortfall of the acknowledged (and consumed) rate below the
    /// target, as a fraction: 0.02 = within 2%.
    pub tolerance: f64,
    /// Largest publish delay p99 (actual - intended send time), in µs: a
    /// producer that falls further behind than this is not keeping up.
    pub max_delay_us: u64,
}

impl Default for SustainRule {
    fn default() -> Self {
        SustainRule {
            tolerance: 0.02,
            max_delay_us: 50_000,
        }
    }
}

/// A run's verdict. Closed-loop runs have no schedule to miss and are
/// always `sustained` (their notes say they are closed loop).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sustain {
    pub sustained: bool,
    /// Why not, one line each; empty when sustained.
    pub reasons: Vec<String>,
}

impl SustainRule {
    pub fn judge(&self, r: &RunResult) -> Sustain {
        if r.closed_loop || r.target_rate == 0 {
            return Sustain {
                sustained: true,
                reasons: Vec::new(),
            };
        }
        let target = r.target_rate as f64;
        let floor = target * (1.0 - self.tolerance);
        let mut reasons = Vec::new();
        let pct = |v: f64| v / target * 100.0;
        if r.produced.msgs_per_s < floor {
            reasons.push(format!(
                "acknowledged {:.1}% of the target rate (tolerance {:.0}%)",
                pct(r.produced.msgs_per_s),
                self.tolerance * 100.0
            ));
        }
        // More acks than scheduled: the window caught up a backlog from
        // before it (a stall in the warm-up), which is not a steady rate.
        if r.produced.msgs_per_s > target * (1.0 + self.tolerance) {
            reasons.push(format!(
                "acknowledged {:.1}% of the target rate: a backlog from before the window was caught up",
                pct(r.produced.msgs_per_s)
            ));
        }
        if r.unsent > 0 {
            reasons.push(format!(
                "{} scheduled messages never sent (producer too far behind)",
                r.unsent
            ));
        }
        if r.publish_delay.p99_us > self.max_delay_us {
            reasons.push(format!(
                "publish delay p99 {:.1} ms over the {:.1} ms bound",
                r.publish_delay.p99_us as f64 / 1e3,
                self.max_delay_us as f64 / 1e3
            ));
        }
        // A catch-up run's consumers start after the window, by design.
        if r.spec.consumers > 0 && !r.spec.catch_up && r.consumed.msgs_per_s < floor {
            reasons.push(format!(
                "consumers received {:.1}% of the target rate",
                pct(r.consumed.msgs_per_s)
            ));
        }
        if r.notes.iter().any(|n| n.starts_with("INTERRUPTED")) {
            reasons.push("interrupted".into());
        }
        Sustain {
            sustained: reasons.is_empty(),
            reasons,
        }
    }
}

/// How a sweep finds and measures each point's knee.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KneeSettings {
    /// Fractions of the knee to measure latency at, ascending, in (0, 1].
    pub levels: Vec<f64>,
    /// Open-loop runs spent looking for the knee after the probe.
    pub search_steps: u32,
    pub probe_warmup_ms: u64,
    pub probe_ms: u64,
    pub step_warmup_ms: u64,
    pub step_ms: u64,
    /// This level is measured twice; the two runs' differences are the
    /// run-to-run spread `loadgen compare` judges ratios against.
    pub repeat_level: Option<f64>,
    pub rule: SustainRule,
}

impl Default for KneeSettings {
    fn default() -> Self {
        KneeSettings {
            levels: vec![0.10, 0.50, 0.80, 0.95],
            search_steps: 4,
            probe_warmup_ms: 500,
            probe_ms: 1000,
            step_warmup_ms: 500,
            step_ms: 1000,
            repeat_level: Some(0.50),
            rule: SustainRule::default(),
        }
    }
}

impl KneeSettings {
    /// Seconds of workload per point, warm-ups included, before per-run
    /// setup (connections, topic) and drains.
    pub fn secs_per_point(&self, level_warmup_ms: u64, level_ms: u64) -> f64 {
        let levels = self.levels.len() + usize::from(self.repeat_level.is_some());
        ((self.probe_warmup_ms + self.probe_ms)
            + self.search_steps as u64 * (self.step_warmup_ms + self.step_ms)
            + levels as u64 * (level_warmup_ms + level_ms)) as f64
            / 1e3
    }

    /// Open-loop runs per point (besides the probe).
    pub fn runs_per_point(&self) -> usize {
        self.search_steps as usize + self.levels.len() + usize::from(self.repeat_level.is_some())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.levels.is_empty() {
            return Err("--levels needs at least one fraction of the knee".into());
        }
        if self.levels.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err("--levels are percentages of the knee in (0, 100]".into());
        }
        if self.search_steps == 0 {
            return Err("--search-steps must be at least 1".into());
        }
        if self.probe_ms == 0 || self.step_ms == 0 {
            return Err("probe and step durations must be positive".into());
        }
        if !(self.rule.tolerance > 0.0 && self.rule.tolerance < 0.5) {
            return Err("the sustain tolerance must be in (0, 0.5)".into());
        }
        Ok(())
    }
}

/// The first open-loop guess, as a fraction of the probe's rate: open-loop
/// rates a client sustains are usually a little below its closed-loop
/// maximum.
pub const FIRST_GUESS: f64 = 0.85;
/// Before any rate failed, the search assumes nothing above this multiple
/// of the probe is sustainable.
pub const CEILING: f64 = 1.05;
/// Before any rate held, each failed rate is followed by this fraction of
/// it: a knee far below the probe is reached in a few steps.
pub const STEP_DOWN: f64 = 0.55;

/// The search state: the highest sustained rate and the lowest unsustained
/// one seen so far. Owned by the sweep for one point.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    pub probe_msgs_per_s: f64,
    pub sustained_max: Option<f64>,
    pub unsustained_min: Option<f64>,
    pub tried: u32,
}

impl Search {
    pub fn new(probe_msgs_per_s: f64) -> Search {
        assert!(probe_msgs_per_s.is_finite() && probe_msgs_per_s >= 0.0);
        Search {
            probe_msgs_per_s,
            sustained_max: None,
            unsustained_min: None,
            tried: 0,
        }
    }

    /// The next rate to try, in msg/s (at least 1).
    pub fn next_rate(&self) -> u64 {
        let p = self.probe_msgs_per_s.max(1.0);
        let r = if self.tried == 0 {
            p * FIRST_GUESS
        } else {
            match (self.sustained_max, self.unsustained_min) {
                // Bracketed: bisect in log space (rates span decades).
                (Some(lo), Some(hi)) => (lo * hi).sqrt(),
                // Nothing failed yet: between the best so far and the
                // ceiling, or twice the best if the probe came out low (a
                // stall during the probe must not cap the search).
                (Some(lo), None) => (lo * (p * CEILING).max(lo * 2.0)).sqrt(),
                // Nothing held yet: step down by a constant factor.
                (None, Some(hi)) => hi * STEP_DOWN,
                (None, None) => p * FIRST_GUESS,
            }
        };
        r.round().max(1.0) as u64
    }

    pub fn record(&mut self, rate: u64, sustained: bool) {
        let r = rate as f64;
        self.tried += 1;
        if sustained {
            self.sustained_max = Some(self.sustained_max.map_or(r, |m| m.max(r)));
        } else {
            self.unsustained_min = Some(self.unsustained_min.map_or(r, |m| m.min(r)));
        }
    }

    /// The knee: the highest rate that held, if any did.
    pub fn knee(&self) -> Option<f64> {
        self.sustained_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive the search against a broker whose true knee is `k` msg/s.
    fn search(probe: f64, k: f64, steps: u32) -> Search {
        let mut s = Search::new(probe);
        for _ in 0..steps {
            let r = s.next_rate();
            s.record(r, r as f64 <= k);
        }
        s
    }

    #[test]
    fn converges_on_the_knee_from_above_and_below() {
        for &(probe, k) in &[
            (100_000.0, 90_000.0),
            (100_000.0, 70_000.0),
            (100_000.0, 40_000.0),
            (100_000.0, 99_000.0),
        ] {
            let s = search(probe, k, 6);
            let knee = s.knee().expect("some rate held");
            assert!(knee <= k, "{probe} {k}: {knee}");
            let hi = s.unsustained_min.unwrap_or(probe * CEILING);
            // The knee is bracketed, and six steps bracket it within 10%.
            assert!(hi > k && hi / knee < 1.10, "{probe} {k}: [{knee}, {hi})");
        }
    }

    #[test]
    fn a_knee_far_below_the_probe_is_still_found() {
        let s = search(100_000.0, 5_000.0, 7);
        let knee = s.knee().expect("found");
        assert!(knee <= 5_000.0 && knee > 2_000.0, "{knee}");
    }

    #[test]
    fn a_probe_that_came_out_low_does_not_cap_the_search() {
        // The probe saw 1,000 msg/s (a stall); the broker holds 50,000.
        let s = search(1_000.0, 50_000.0, 12);
        assert!(s.knee().unwrap() > 25_000.0, "{:?}", s);
    }

    #[test]
    fn nothing_sustained_means_no_knee() {
        let s = search(100_000.0, 0.5, 3);
        assert_eq!(s.knee(), None);
        assert!(s.unsustained_min.unwrap() < 100_000.0 * FIRST_GUESS * STEP_DOWN);
    }

    #[test]
    fn settings_are_checked() {
        let mut k = KneeSettings::default();
        assert!(k.validate().is_ok());
        k.levels = vec![0.5, 1.5];
        assert!(k.validate().is_err());
        k.levels = vec![];
        assert!(k.validate().is_err());
    }
}
