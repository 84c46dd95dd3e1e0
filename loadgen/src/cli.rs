//! Command-line flags. Every workload flag is optional so that it can
//! override a profile; the defaults live in `WorkloadSpec::default()` and
//! `sweep::default_base()` and are repeated in the help text.

use crate::profile::{
    AcksValue, Dur, KneeOverrides, MatrixOverrides, PayloadArg, Size, WorkloadOverrides,
};
use crate::transport::Protocol;
use crate::units::{parse_duration, parse_size};
use crate::workload::KeyMode;
use clap::{Args, Parser, Subcommand};
use shardlog::format::Compression;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Benchmark a shardlog broker: open-loop workloads, HdrHistogram latency, batch/compression sweeps",
    long_about = "Benchmark a shardlog broker.\n\n\
`loadgen run` runs one workload and prints throughput and latency percentiles.\n\
`loadgen sweep` runs a matrix of batch sizes x codecs (x acks). For each point it finds\n\
the max sustainable rate (a closed-loop probe, then open-loop rates until the highest\n\
one that holds within 2%), then measures latency at fractions of it (10, 50, 80, 95%),\n\
and writes a report (tables, report.json, .hgrm histograms, SVG charts, index.html).\n\
--target NAME=ADDR[,PROTOCOL] (repeated) runs the same matrix against several brokers,\n\
interleaved, on the same charts. `loadgen compare A B` prints two reports' ratios.\n\n\
Without --broker, an embedded broker is started on 127.0.0.1 with its data in a\n\
temporary directory. --cluster N starts N `shardlog serve` processes instead (a local\n\
cluster, e.g. for --replication-factor 3), runs against broker 1 and stops them at the end.\n\n\
--protocol kafka drives the broker through librdkafka instead of shardlog's native\n\
client, so the same runs and reports work against shardlog's Kafka listener or any\n\
Kafka-compatible broker (Apache Kafka, Redpanda).\n\n\
Latency is measured from each message's intended send time (open loop, corrected\n\
for coordinated omission) unless --rate 0 is given.\n\n\
Exit status: 0 all checks passed; 1 a delivery check failed (lost, duplicated,\n\
reordered or misrouted messages) or the broker returned errors; 2 bad usage;\n\
3 the benchmark could not run (among others: a broker that answers no request\n\
within the client's 30 s request timeout); 130 interrupted, 143 terminated (the first SIGINT/Ctrl-C\n\
or SIGTERM ends the current point early and still writes the report; a second one\n\
aborts at once). The embedded broker's data directory (--cluster: the brokers and their\n\
data) is removed on every exit."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run one workload.
    Run(Box<RunArgs>),
    /// Find each setting's max sustainable rate, measure latency below it, write a report.
    Sweep(Box<SweepArgs>),
    /// Print the ratios of two reports, point by point.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The baseline report (a report.json or the directory holding it).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The report compared with it.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Flag differences beyond this many percent when neither report
    /// repeated a level (with repeats, their measured spread is used).
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    pub threshold: f64,
}

#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Broker address, HOST:PORT (for --protocol kafka: bootstrap servers, comma-separated).
    /// Without it, an embedded shardlog broker is started.
    #[arg(long, value_name = "ADDR")]
    pub broker: Option<String>,
    /// Wire protocol: native (shardlog's own) or kafka (librdkafka: shardlog's Kafka
    /// listener or any Kafka-compatible broker, e.g. Apache Kafka, Redpanda).
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// PID of a broker on this host, to measure its CPU from /proc.
    #[arg(long, value_name = "PID", requires = "broker")]
    pub broker_pid: Option<u32>,
    /// Embedded broker (or --cluster): parent of its temporary data directory [default: system temp dir].
    #[arg(long, value_name = "DIR", conflicts_with = "broker")]
    pub data_dir: Option<PathBuf>,
    /// Embedded broker: number of shards [default: one per CPU]. With --cluster:
    /// shards per broker [default: 1].
    #[arg(long, value_name = "N", conflicts_with = "broker")]
    pub shards: Option<usize>,
    /// Instead of the embedded broker, start a local cluster of N `shardlog serve`
    /// processes (loopback ports, data in a temporary directory, --no-pin, one
    /// shard each unless --shards), run against broker 1, and stop them at the end.
    #[arg(long, value_name = "N", conflicts_with = "broker", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub cluster: Option<u32>,
    /// The shardlog binary --cluster starts [default: `shardlog` next to loadgen's executable].
    #[arg(long, value_name = "PATH", requires = "cluster")]
    pub shardlog_bin: Option<PathBuf>,
    /// Loadgen's own worker threads for the producers' client I/O [default: one per
    /// CPU]. Consumers get their own threads, one per consumer up to one per CPU.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Run loadgen's producer threads N nice levels below the broker and the
    /// consumers, so that closed-loop producers sharing the machine do not starve
    /// them (0: equal priority). With more than 2 producers each thread goes
    /// lower still (up to 19), so that together they weigh no more than 2 at N.
    #[arg(long, value_name = "N", default_value_t = crate::priority::PRODUCER_NICE_DEFAULT,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub producer_nice: i32,
    /// No per-second progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

fn size_arg(s: &str) -> Result<Size, String> {
    parse_size(s).map(Size).map_err(|e| e.to_string())
}

fn dur_arg(s: &str) -> Result<Dur, String> {
    parse_duration(s).map(Dur).map_err(|e| e.to_string())
}

fn codec_arg(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>().map_err(|e| e.to_string())
}

fn acks_arg(s: &str) -> Result<AcksValue, String> {
    s.parse().map(AcksValue)
}

/// Workload flags shared by `run` and `sweep`.
#[derive(Args, Debug, Clone, Default)]
pub struct WorkloadArgs {
    /// Topic, created if missing [default: loadgen; sweep: loadgen-sweep-N per point].
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of a created topic [default: 4].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Replicas per partition of a created topic (more than 1 needs a cluster:
    /// --cluster N or --broker of one) [default: the broker's default, 1 unless configured].
    #[arg(long, value_name = "N")]
    pub replication_factor: Option<u16>,
    /// Message value size incl. loadgen's 32-byte header, e.g. 512, 1k [default: 1k].
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub message_size: Option<Size>,
    /// Payload after the header [default: compressible].
    #[arg(long, value_enum)]
    pub payload: Option<PayloadArg>,
    /// Target compression ratio of a compressible payload [default: 2].
    #[arg(long, value_name = "RATIO")]
    pub compress_ratio: Option<f64>,
    /// Record keys; keyed records are partitioned by murmur2 [default: none].
    #[arg(long, value_enum)]
    pub keys: Option<KeyMode>,
    /// Producers, each with its own connection [default: 1].
    #[arg(long)]
    pub producers: Option<u32>,
    /// Consumers sharing the partitions [default: 1].
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Messages per second over all producers; 0 = as fast as possible (closed loop)
    /// [default: 20000; a sweep finds its own rates unless --fixed-rate].
    #[arg(long, value_name = "MSG/S")]
    pub rate: Option<u64>,
    /// Measured duration (a sweep: per load level), e.g. 30s, 2m [default: run 10s, sweep 1500ms].
    #[arg(long, value_parser = dur_arg, value_name = "DURATION")]
    pub duration: Option<Dur>,
    /// Warm-up excluded from the figures [default: run 1s, sweep 500ms].
    #[arg(long, value_parser = dur_arg, value_name = "DURATION")]
    pub warmup: Option<Dur>,
    /// How long consumers may take to catch up after the producers stop [default: run 10s, sweep 5s].
    #[arg(long, value_parser = dur_arg, value_name = "DURATION")]
    pub drain_timeout: Option<Dur>,
    /// Produce requests in flight per producer [default: 5].
    #[arg(long, value_name = "N")]
    pub max_inflight: Option<usize>,
    /// Producer buffer for unacknowledged records, per producer [default: 64m,
    /// at most 512m among all producers, at least 8m].
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub buffer_bytes: Option<Size>,
    /// Open loop: producer wake-up period in µs; messages due within one period
    /// go out together, and the added delay counts as publish delay. 0 = wake per
    /// message (precise, but costs a context switch per message) [default: 100].
    #[arg(long, value_name = "US")]
    pub pacing_us: Option<u64>,
    /// Testing aid: consumers drop every Nth message; the run must fail its loss check.
    #[arg(long, hide = true, value_name = "N")]
    pub fault_drop_every: Option<u64>,
}

impl WorkloadArgs {
    pub fn overrides(&self) -> WorkloadOverrides {
        WorkloadOverrides {
            topic: self.topic.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            message_size: self.message_size,
            payload: self.payload,
            compress_ratio: self.compress_ratio,
            keys: self.keys,
            producers: self.producers,
            consumers: self.consumers,
            rate: self.rate,
            duration: self.duration,
            warmup: self.warmup,
            drain_timeout: self.drain_timeout,
            max_inflight: self.max_inflight,
            buffer_bytes: self.buffer_bytes,
            pacing_us: self.pacing_us,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Producer batch size (uncompressed record bytes) [default: 64k].
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub batch_bytes: Option<Size>,
    /// Producer linger in ms [default: 5].
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// none, gzip, snappy, lz4 or zstd [default: none].
    #[arg(long, value_parser = codec_arg)]
    pub compression: Option<Compression>,
    /// 0 (no response), 1 (appended) or all (fsynced) [default: 1].
    #[arg(long, value_parser = acks_arg)]
    pub acks: Option<AcksValue>,
    /// Also write a full report (json, hgrm, svg, html) into DIR.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Catch-up read: the consumers start only when the producers have
    /// finished, then read the whole backlog as fast as they can (from disk
    /// once it outgrows the broker's cache). Reports the catch-up read rate,
    /// CPU per GB read and, for a broker on this host, the bytes it read
    /// from disk. Give --drain-timeout room for the backlog.
    #[arg(long)]
    pub catch_up: bool,
}

impl RunArgs {
    pub fn overrides(&self) -> WorkloadOverrides {
        WorkloadOverrides {
            batch_bytes: self.batch_bytes,
            linger_ms: self.linger_ms,
            compression: self.compression,
            acks: self.acks,
            ..self.workload.overrides()
        }
    }
}

fn pct_arg(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is not between 0 and 100"));
    }
    Ok(v / 100.0)
}

/// How a sweep finds each point's knee (all optional: profile `[knee]`
/// and the defaults in `KneeSettings::default()` fill the rest).
#[derive(Args, Debug, Clone, Default)]
pub struct KneeArgs {
    /// Run each point once at --rate instead of finding its knee.
    #[arg(long)]
    pub fixed_rate: bool,
    /// Load levels, in percent of each point's max sustainable rate [default: 10,50,80,95].
    #[arg(long, value_parser = pct_arg, value_delimiter = ',', value_name = "PCTS")]
    pub levels: Option<Vec<f64>>,
    /// Open-loop rates tried per point after the closed-loop probe [default: 4].
    #[arg(long, value_name = "N")]
    pub search_steps: Option<u32>,
    /// Measured time of the closed-loop probe [default: 1s, after 500ms warm-up].
    #[arg(long, value_parser = dur_arg, value_name = "DURATION")]
    pub probe_duration: Option<Dur>,
    /// Measured time of each search step [default: 1s, after 500ms warm-up].
    #[arg(long, value_parser = dur_arg, value_name = "DURATION")]
    pub step_duration: Option<Dur>,
    /// A rate holds if acknowledged and consumed within this percentage of it [default: 2].
    #[arg(long, value_parser = pct_arg, value_name = "PCT")]
    pub tolerance: Option<f64>,
    /// A rate holds only if publish delay p99 stays under this [default: 50ms].
    #[arg(long, value_parser = dur_arg, value_name = "DURATION")]
    pub max_delay: Option<Dur>,
    /// Measure this level twice per point, for the run-to-run spread `compare` uses; 0 = no repeat [default: 50].
    #[arg(long, value_parser = pct_arg, value_name = "PCT")]
    pub repeat_level: Option<f64>,
}

impl KneeArgs {
    pub fn overrides(&self) -> KneeOverrides {
        KneeOverrides {
            fixed_rate: self.fixed_rate.then_some(true),
            levels: self.levels.clone(),
            search_steps: self.search_steps,
            probe_duration: self.probe_duration,
            step_duration: self.step_duration,
            tolerance: self.tolerance,
            max_delay: self.max_delay,
            repeat_level: self.repeat_level,
        }
    }
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// A broker to measure, NAME=ADDR[,native|kafka][,pid=PID]; repeat for several
    /// (run interleaved, drawn on the same charts). ADDR `embedded` is loadgen's own
    /// broker; several Kafka bootstrap servers are separated by ';'.
    /// Example: --target native=embedded --target kafka=embedded,kafka
    #[arg(long = "target", value_name = "NAME=ADDR[,PROTOCOL]", conflicts_with_all = ["broker", "broker_pid"])]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub knee: KneeArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// TOML profile with workload settings and matrix axes (flags override it),
    /// e.g. tuning/sweeps/batch-latency.toml.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Batch sizes to sweep [default: 1k,16k,64k,1m].
    #[arg(long, value_parser = size_arg, value_delimiter = ',', value_name = "LIST")]
    pub batch_bytes: Option<Vec<Size>>,
    /// Codecs to sweep [default: none,zstd].
    #[arg(long, value_parser = codec_arg, value_delimiter = ',', value_name = "LIST")]
    pub compression: Option<Vec<Compression>>,
    /// Acks levels to sweep, e.g. 1,all [default: 1].
    #[arg(long, value_parser = acks_arg, value_delimiter = ',', value_name = "LIST")]
    pub acks: Option<Vec<AcksValue>>,
    /// Linger values (ms) to sweep [default: 5].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub linger_ms: Option<Vec<u64>>,
    /// Where the report goes.
    #[arg(long, value_name = "DIR", default_value = "loadgen-report")]
    pub report_dir: PathBuf,
}

impl SweepArgs {
    pub fn matrix_overrides(&self) -> MatrixOverrides {
        MatrixOverrides {
            batch_bytes: self.batch_bytes.clone(),
            compression: self.compression.clone(),
            acks: self.acks.clone(),
            linger_ms: self.linger_ms.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_sweep_lists() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "sweep",
            "--batch-bytes",
            "1k,16k",
            "--compression",
            "none,zstd",
            "--acks",
            "1,all",
            "--duration",
            "2s",
        ])
        .unwrap();
        let Cmd::Sweep(s) = cli.cmd else {
            panic!("expected sweep")
        };
        assert_eq!(s.batch_bytes.unwrap(), vec![Size(1024), Size(16384)]);
        assert_eq!(s.compression.unwrap().len(), 2);
        assert_eq!(s.acks.unwrap().len(), 2);
        assert_eq!(s.workload.duration.unwrap().0.as_secs(), 2);
    }

    #[test]
    fn parses_targets_and_knee_flags() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "sweep",
            "--target",
            "native=embedded",
            "--target",
            "kafka=embedded,kafka",
            "--levels",
            "20,90",
            "--tolerance",
            "3",
            "--repeat-level",
            "0",
        ])
        .unwrap();
        let Cmd::Sweep(s) = cli.cmd else {
            panic!("expected sweep")
        };
        assert_eq!(s.targets.len(), 2);
        let k = s.knee.overrides();
        assert_eq!(k.levels.unwrap(), vec![0.2, 0.9]);
        assert_eq!(k.tolerance, Some(0.03));
        assert_eq!(k.repeat_level, Some(0.0));
        // --target and --broker name the broker twice.
        assert!(Cli::try_parse_from([
            "loadgen",
            "sweep",
            "--target",
            "a=embedded",
            "--broker",
            "x:1"
        ])
        .is_err());
    }

    #[test]
    fn bad_values_are_refused_with_a_hint() {
        let e = Cli::try_parse_from(["loadgen", "run", "--message-size", "12x"]).unwrap_err();
        assert!(e.to_string().contains("not a size"), "{e}");
        let e = Cli::try_parse_from(["loadgen", "run", "--compression", "brotli"]).unwrap_err();
        assert!(e.to_string().contains("brotli"), "{e}");
    }
}
