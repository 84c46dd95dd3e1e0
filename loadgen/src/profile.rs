//! Partial settings, from a TOML sweep profile or the command line, and
//! how they layer: built-in defaults < profile `[workload]` < CLI flags.
//!
//! A profile (`tuning/sweeps/*.toml`):
//!
//! ```toml
//! description = "What this sweep answers"
//! [workload]            # any run setting; sizes and durations as strings
//! message_size = "1k"
//! rate = 20000
//! duration = "4s"
//! [matrix]              # each axis is a list; omitted axes use the workload value
//! batch_bytes = ["1k", "16k", "64k", "256k", "1m"]
//! compression = ["none", "lz4", "zstd"]
//! acks = ["1", "all"]
//! linger_ms = [5]
//! [knee]                # how each point's knee is found (all optional)
//! levels = [10, 50, 80, 95]   # percent of the knee
//! search_steps = 4
//! probe_duration = "1s"
//! step_duration = "1s"
//! tolerance = 2               # percent
//! max_delay = "50ms"
//! repeat_level = 50           # percent; 0 = no repeat
//! fixed_rate = false          # true: one run per point at [workload] rate
//! ```
//!
//! and, at the top, `targets = ["native=embedded", "kafka=embedded,kafka"]`
//! (the `--target` syntax) to measure several brokers.

use crate::knee::KneeSettings;
use crate::payload::PayloadKind;
use crate::units::{parse_duration, parse_size};
use crate::workload::{KeyMode, WorkloadSpec};
use serde::{Deserialize, Deserializer};
use shardlog::format::Compression;
use shardlog::protocol::messages::Acks;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile {path} is not valid: {detail}")]
    Parse { path: PathBuf, detail: String },
}

/// "1k" or 1024.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// "4s", "500ms", or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dur(pub std::time::Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n >= 0.0 && n.is_finite() => {
                Ok(Dur(std::time::Duration::from_secs_f64(n)))
            }
            Raw::N(n) => Err(serde::de::Error::custom(format!("{n} is not a duration"))),
            Raw::S(s) => parse_duration(&s)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// "1", "all", "0" or 1, -1, 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcksValue(pub Acks);

impl<'de> Deserialize<'de> for AcksValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        let s = match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string(),
            Raw::S(s) => s,
        };
        s.parse().map(AcksValue).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PayloadArg {
    Random,
    Compressible,
}

/// Settings given explicitly; `None` keeps the value underneath.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadOverrides {
    pub topic: Option<String>,
    pub partitions: Option<u32>,
    pub replication_factor: Option<u16>,
    pub message_size: Option<Size>,
    pub payload: Option<PayloadArg>,
    pub compress_ratio: Option<f64>,
    pub keys: Option<KeyMode>,
    pub batch_bytes: Option<Size>,
    pub linger_ms: Option<u64>,
    pub compression: Option<Compression>,
    pub acks: Option<AcksValue>,
    pub producers: Option<u32>,
    pub consumers: Option<u32>,
    pub rate: Option<u64>,
    pub duration: Option<Dur>,
    pub warmup: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    pub max_inflight: Option<usize>,
    pub buffer_bytes: Option<Size>,
    pub pacing_us: Option<u64>,
}

impl WorkloadOverrides {
    /// Apply onto `spec`.
    pub fn apply(&self, spec: &mut WorkloadSpec) {
        if let Some(v) = &self.topic {
            spec.topic = v.clone();
        }
        if let Some(v) = self.partitions {
            spec.partitions = v;
        }
        if let Some(v) = self.replication_factor {
            spec.replication_factor = Some(v);
        }
        if let Some(v) = self.message_size {
            spec.message_size = v.0 as usize;
        }
        let ratio = self.compress_ratio.or(match spec.payload {
            PayloadKind::Compressible { ratio } => Some(ratio),
            PayloadKind::Random => None,
        });
        match (self.payload, self.compress_ratio) {
            (Some(PayloadArg::Random), _) => spec.payload = PayloadKind::Random,
            (Some(PayloadArg::Compressible), _) | (None, Some(_)) => {
                spec.payload = PayloadKind::Compressible {
                    ratio: ratio.unwrap_or(2.0),
                }
            }
            (None, None) => {}
        }
        if let Some(v) = self.keys {
            spec.keys = v;
        }
        if let Some(v) = self.batch_bytes {
            spec.batch_bytes = v.0 as usize;
        }
        if let Some(v) = self.linger_ms {
            spec.linger_ms = v;
        }
        if let Some(v) = self.compression {
            spec.compression = v;
        }
        if let Some(v) = self.acks {
            spec.acks = v.0;
        }
        if let Some(v) = self.producers {
            spec.producers = v;
        }
        if let Some(v) = self.consumers {
            spec.consumers = v;
        }
        if let Some(v) = self.rate {
            spec.rate = v;
        }
        if let Some(v) = self.duration {
            spec.duration_ms = v.0.as_millis() as u64;
        }
        if let Some(v) = self.warmup {
            spec.warmup_ms = v.0.as_millis() as u64;
        }
        if let Some(v) = self.drain_timeout {
            spec.drain_timeout_ms = v.0.as_millis() as u64;
        }
        if let Some(v) = self.max_inflight {
            spec.max_inflight = v;
        }
        if let Some(v) = self.buffer_bytes {
            spec.buffer_bytes = Some(v.0 as usize);
        }
        if let Some(v) = self.pacing_us {
            spec.pacing_us = v;
        }
    }
}

/// Matrix axes given explicitly.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixOverrides {
    pub batch_bytes: Option<Vec<Size>>,
    pub compression: Option<Vec<Compression>>,
    pub acks: Option<Vec<AcksValue>>,
    pub linger_ms: Option<Vec<u64>>,
}

/// Percent in a profile: 2 or "2%".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pct(pub f64);

impl<'de> Deserialize<'de> for Pct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        let v = match Raw::deserialize(d)? {
            Raw::N(n) => n,
            Raw::S(s) => s
                .trim_end_matches('%')
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("'{s}' is not a percentage")))?,
        };
        if !(0.0..=100.0).contains(&v) {
            return Err(serde::de::Error::custom(format!(
                "{v} is not between 0 and 100"
            )));
        }
        Ok(Pct(v / 100.0))
    }
}

/// Knee settings given explicitly (fractions, not percent, once parsed).
#[derive(Debug, Clone, Default)]
pub struct KneeOverrides {
    pub fixed_rate: Option<bool>,
    pub levels: Option<Vec<f64>>,
    pub search_steps: Option<u32>,
    pub probe_duration: Option<Dur>,
    pub step_duration: Option<Dur>,
    pub tolerance: Option<f64>,
    pub max_delay: Option<Dur>,
    /// 0 = no repeat.
    pub repeat_level: Option<f64>,
}

/// The `[knee]` table of a profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KneeTable {
    pub fixed_rate: Option<bool>,
    pub levels: Option<Vec<Pct>>,
    pub search_steps: Option<u32>,
    pub probe_duration: Option<Dur>,
    pub step_duration: Option<Dur>,
    pub tolerance: Option<Pct>,
    pub max_delay: Option<Dur>,
    pub repeat_level: Option<Pct>,
}

impl KneeTable {
    pub fn overrides(&self) -> KneeOverrides {
        KneeOverrides {
            fixed_rate: self.fixed_rate,
            levels: self
                .levels
                .as_ref()
                .map(|v| v.iter().map(|p| p.0).collect()),
            search_steps: self.search_steps,
            probe_duration: self.probe_duration,
            step_duration: self.step_duration,
            tolerance: self.tolerance.map(|p| p.0),
            max_delay: self.max_delay,
            repeat_level: self.repeat_level.map(|p| p.0),
        }
    }
}

impl KneeOverrides {
    /// Apply onto `k`; returns whether the sweep runs at a fixed rate.
    pub fn apply(&self, k: &mut KneeSettings, fixed: &mut bool) {
        if let Some(v) = self.fixed_rate {
            *fixed = v;
        }
        if let Some(v) = &self.levels {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            v.dedup();
            k.levels = v;
        }
        if let Some(v) = self.search_steps {
            k.search_steps = v;
        }
        if let Some(v) = self.probe_duration {
            k.probe_ms = v.0.as_millis() as u64;
        }
        if let Some(v) = self.step_duration {
            k.step_ms = v.0.as_millis() as u64;
        }
        if let Some(v) = self.tolerance {
            k.rule.tolerance = v;
        }
        if let Some(v) = self.max_delay {
            k.rule.max_delay_us = v.0.as_micros() as u64;
        }
        if let Some(v) = self.repeat_level {
            k.repeat_level = (v > 0.0).then_some(v);
        }
    }
}

/// A sweep profile file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub description: Option<String>,
    /// `--target` values: several brokers in one report.
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub knee: KneeTable,
    #[serde(default)]
    pub workload: WorkloadOverrides,
    #[serde(default)]
    pub matrix: MatrixOverrides,
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|detail| ProfileError::Parse {
            path: path.to_path_buf(),
            detail,
        })
    }

    pub fn parse(text: &str) -> Result<Profile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_profile_and_layers_it() {
        let p = Profile::parse(
            r#"
description = "x"
[workload]
message_size = "512"
rate = 5000
duration = "3s"
warmup = 1
compress_ratio = 3.0
acks = "all"
replication_factor = 3
[knee]
levels = [20, "90%"]
tolerance = 3
repeat_level = 0
[matrix]
batch_bytes = ["1k", 65536]
compression = ["none", "zstd"]
acks = ["1", -1]
"#,
        )
        .unwrap();
        let mut s = WorkloadSpec::default();
        p.workload.apply(&mut s);
        assert_eq!(s.message_size, 512);
        assert_eq!(s.rate, 5000);
        assert_eq!(s.duration_ms, 3000);
        assert_eq!(s.warmup_ms, 1000);
        assert_eq!(s.acks, Acks::All);
        assert_eq!(s.replication_factor, Some(3));
        assert_eq!(s.payload, PayloadKind::Compressible { ratio: 3.0 });
        let m = p.matrix;
        assert_eq!(m.batch_bytes.unwrap(), vec![Size(1024), Size(65536)]);
        assert_eq!(
            m.acks.unwrap(),
            vec![AcksValue(Acks::Leader), AcksValue(Acks::All)]
        );
        assert_eq!(
            m.compression.unwrap(),
            vec![Compression::None, Compression::Zstd]
        );
        let mut k = KneeSettings::default();
        let mut fixed = false;
        p.knee.overrides().apply(&mut k, &mut fixed);
        assert_eq!(k.levels, vec![0.2, 0.9]);
        assert!((k.rule.tolerance - 0.03).abs() < 1e-12);
        assert_eq!(k.repeat_level, None);
        assert!(!fixed);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Profile::parse("[workload]\nbatchsize = 5\n").unwrap_err();
        assert!(e.contains("batchsize"), "{e}");
    }

    #[test]
    fn random_payload_override() {
        let mut s = WorkloadSpec::default();
        WorkloadOverrides {
            payload: Some(PayloadArg::Random),
            ..Default::default()
        }
        .apply(&mut s);
        assert_eq!(s.payload, PayloadKind::Random);
    }

    #[test]
    fn shipped_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/sweeps");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let prof = Profile::load(&p).unwrap();
                let mut s = WorkloadSpec::default();
                prof.workload.apply(&mut s);
                s.validate().unwrap();
                let mut k = KneeSettings::default();
                prof.knee.overrides().apply(&mut k, &mut false);
                k.validate().unwrap();
                crate::target::TargetSpec::parse_all(&prof.targets).unwrap();
                n += 1;
            }
        }
        assert!(n >= 3, "expected the shipped profiles in {}", dir.display());
    }
}
