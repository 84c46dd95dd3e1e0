//! One cross-shard hop between two glommio executors pinned to CPU 0 and
//! CPU 1 (unbound on a 1-CPU machine).
//!
//! Run: `cargo bench --bench router`.
//!
//! Three transports, each measured for round-trip latency (`rtt/*`) and for
//! one-way message throughput (`throughput/*`):
//! - `router`: the real thing. `shardlog::router::Router` (flume, unbounded)
//!   carrying `ShardMsg::Task` to a receiving loop that does what
//!   `shard::run` does (`rx.recv_async()`, run the closure). For the RTT the
//!   closure spawns a local task that answers on a `router::reply_channel`
//!   (a bounded(1) flume), exactly like `Shard::call_on`. (Driving real
//!   `Produce` messages would need a whole `Shard`; `Task` is the same
//!   channel and the same message type, so it measures the same hop.)
//! - `flume`: a bare flume channel pair carrying `u64` (RTT) or `Bytes`
//!   (throughput): the floor under the router.
//! - `shared_channel`: glommio's own `shared_channel` (bounded, 1024) for
//!   comparison.
//!
//! Throughput messages carry a 64 KiB `Bytes` payload that moves without a
//! copy (a refcount increment on the sender, the drop on the receiver, taken
//! round-robin from a pool of 256 distinct buffers). The sender keeps at most
//! 2 x 1024 messages in flight (it waits for an ack every 1024), standing in
//! for the broker's in-flight byte budgets. Throughput is messages/s.
//!
//! After each `rtt/*` bench the distribution of single round trips (p50,
//! p90, p99, max over every iteration criterion ran) is printed: criterion's
//! figure is the mean, which scheduler hiccups inflate on a busy machine.
//!
//! `rtt/*` run twice: `park` (the broker's default, `spin_before_park_us` 0:
//! an idle executor sleeps in the kernel and is woken by an eventfd) and
//! `spin100us` (`spin_before_park(100 µs)`: the idle executor spins first).
//!
//! Criterion's thread only sends commands to executor 0 and waits for the
//! measured duration (`iter_custom`), so it does not compete for the CPUs.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};
use glommio::{LocalExecutorBuilder, Placement};
use shardlog::router::{reply_channel, Router, ShardMsg};
use std::cell::Cell;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 64 << 10;
const POOL: usize = 256;
const WINDOW: u64 = 1024;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Router,
    Flume,
    Shared,
}

/// Cap on the per-message round trips kept for the percentile summary.
const RTT_SAMPLES_MAX: u64 = 1 << 20;

struct Measured {
    elapsed: Duration,
    /// Each round trip, in ns (RTT jobs only).
    rtts_ns: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
enum Job {
    Rtt(Transport, u64),
    Throughput(Transport, u64),
}

/// Messages on the bare flume / shared_channel throughput paths.
enum Data {
    Payload(Bytes),
    /// Ask for an ack carrying the receiver's byte count.
    Ack,
}

thread_local! {
    /// Bytes received on the serving executor (keeps the payload "used").
    static RECEIVED: Cell<usize> = const { Cell::new(0) };
}

/// Everything the driving executor (shard 0) holds.
struct Driver {
    router: Router,
    ping: flume::Sender<u64>,
    pong: flume::Receiver<u64>,
    data: flume::Sender<Data>,
    data_ack: flume::Receiver<usize>,
    sc_ping: ConnectedSender<u64>,
    sc_pong: ConnectedReceiver<u64>,
    sc_data: ConnectedSender<Data>,
    sc_ack: ConnectedReceiver<usize>,
    pool: Vec<Bytes>,
}

impl Driver {
    async fn run(&self, job: Job) -> Measured {
        match job {
            Job::Rtt(t, iters) => {
                let mut rtts_ns = Vec::with_capacity(iters.min(RTT_SAMPLES_MAX) as usize);
                let start = Instant::now();
                for i in 0..iters {
                    let sent = Instant::now();
                    let got = match t {
                        Transport::Router => self.router_call(i).await,
                        Transport::Flume => {
                            self.ping.send(i).unwrap();
                            self.pong.recv_async().await.unwrap()
                        }
                        Transport::Shared => {
                            self.sc_ping.send(i).await.unwrap();
                            self.sc_pong.recv().await.unwrap()
                        }
                    };
                    if rtts_ns.len() < rtts_ns.capacity() {
                        rtts_ns.push(sent.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                    }
                    debug_assert_eq!(got, i);
                }
                Measured {
                    elapsed: start.elapsed(),
                    rtts_ns,
                }
            }
            Job::Throughput(t, iters) => {
                let start = Instant::now();
                let mut outstanding: Option<flume::Receiver<usize>> = None;
                let mut acks_pending = 0u64;
                for i in 0..iters {
                    let payload = self.pool[i as usize % POOL].clone();
                    match t {
                        Transport::Router => {
                            let msg = ShardMsg::Task(Box::new(move || {
                                RECEIVED.with(|r| r.set(r.get() + payload.len()));
                                drop(payload);
                            }));
                            self.router.send(1, msg).unwrap();
                        }
                        Transport::Flume => {
                            let _ = self.data.send(Data::Payload(payload));
                        }
                        Transport::Shared => {
                            let _ = self.sc_data.send(Data::Payload(payload)).await;
                        }
                    }
                    if (i + 1) % WINDOW == 0 || i + 1 == iters {
                        // Window: wait for the previous ack, then ask for a new one.
                        match t {
                            Transport::Router => {
                                if let Some(rx) = outstanding.take() {
                                    rx.recv_async().await.unwrap();
                                }
                                let (tx, rx) = reply_channel::<usize>();
                                self.router
                                    .send(
                                        1,
                                        ShardMsg::Task(Box::new(move || {
                                            let _ = tx.send(RECEIVED.with(|r| r.get()));
                                        })),
                                    )
                                    .unwrap();
                                outstanding = Some(rx);
                            }
                            Transport::Flume => {
                                if acks_pending > 0 {
                                    self.data_ack.recv_async().await.unwrap();
                                    acks_pending -= 1;
                                }
                                let _ = self.data.send(Data::Ack);
                                acks_pending += 1;
                            }
                            Transport::Shared => {
                                if acks_pending > 0 {
                                    self.sc_ack.recv().await.unwrap();
                                    acks_pending -= 1;
                                }
                                let _ = self.sc_data.send(Data::Ack).await;
                                acks_pending += 1;
                            }
                        }
                    }
                }
                // Drain: the last ack means every message was received.
                if let Some(rx) = outstanding.take() {
                    rx.recv_async().await.unwrap();
                }
                while acks_pending > 0 {
                    match t {
                        Transport::Flume => self.data_ack.recv_async().await.unwrap(),
                        _ => self.sc_ack.recv().await.unwrap(),
                    };
                    acks_pending -= 1;
                }
                Measured {
                    elapsed: start.elapsed(),
                    rtts_ns: Vec::new(),
                }
            }
        }
    }

    /// `Shard::call_on` without the `Shard`: a task to shard 1 that answers
    /// from a local task there.
    async fn router_call(&self, i: u64) -> u64 {
        let (tx, rx) = reply_channel::<u64>();
        let msg = ShardMsg::Task(Box::new(move || {
            glommio::spawn_local(async move {
                let _ = tx.send(i);
            })
            .detach();
        }));
        self.router.send(1, msg).unwrap();
        rx.recv_async().await.unwrap()
    }
}

/// Two executors and the command channel to the driver.
struct Pair {
    jobs: Option<flume::Sender<(Job, flume::Sender<Measured>)>>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Pair {
    fn start(spin: Option<Duration>) -> Pair {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let placement = |id: usize| {
            if cpus >= 2 {
                Placement::Fixed(id)
            } else {
                Placement::Unbound
            }
        };
        let builder = |id: usize| {
            let b = LocalExecutorBuilder::new(placement(id))
                .name(&format!("bench-shard-{id}"))
                .io_memory(1 << 20);
            match spin {
                Some(d) => b.spin_before_park(d),
                None => b,
            }
        };
        let (router, mut receivers) = Router::new(2);
        let shard1_rx = receivers.pop().unwrap();
        drop(receivers); // shard 0 never receives routed messages here
        let (ping_tx, ping_rx) = flume::unbounded::<u64>();
        let (pong_tx, pong_rx) = flume::unbounded::<u64>();
        let (data_tx, data_rx) = flume::unbounded::<Data>();
        let (ack_tx, ack_rx) = flume::unbounded::<usize>();
        let (sc_ping_tx, sc_ping_rx) = shared_channel::new_bounded::<u64>(1024);
        let (sc_pong_tx, sc_pong_rx) = shared_channel::new_bounded::<u64>(1024);
        let (sc_data_tx, sc_data_rx) = shared_channel::new_bounded::<Data>(1024);
        let (sc_ack_tx, sc_ack_rx) = shared_channel::new_bounded::<usize>(1024);

        let server = builder(1)
            .spawn(move || async move {
                let (sc_ping_rx, sc_pong_tx) =
                    (sc_ping_rx.connect().await, sc_pong_tx.connect().await);
                let (sc_data_rx, sc_ack_tx) =
                    (sc_data_rx.connect().await, sc_ack_tx.connect().await);
                let tasks = vec![
                    // What shard::run does with every routed message.
                    glommio::spawn_local(async move {
                        while let Ok(msg) = shard1_rx.recv_async().await {
                            if let ShardMsg::Task(f) = msg {
                                f();
                            }
                        }
                    }),
                    glommio::spawn_local(async move {
                        while let Ok(x) = ping_rx.recv_async().await {
                            let _ = pong_tx.send(x);
                        }
                    }),
                    glommio::spawn_local(async move {
                        while let Ok(d) = data_rx.recv_async().await {
                            if let Some(n) = consume(d) {
                                let _ = ack_tx.send(n);
                            }
                        }
                    }),
                    glommio::spawn_local(async move {
                        while let Some(x) = sc_ping_rx.recv().await {
                            let _ = sc_pong_tx.send(x).await;
                        }
                    }),
                    glommio::spawn_local(async move {
                        while let Some(d) = sc_data_rx.recv().await {
                            if let Some(n) = consume(d) {
                                let _ = sc_ack_tx.send(n).await;
                            }
                        }
                    }),
                ];
                futures::future::join_all(tasks).await;
            })
            .expect("start executor 1");

        let (jobs_tx, jobs_rx) = flume::unbounded::<(Job, flume::Sender<Measured>)>();
        let driver = builder(0)
            .spawn(move || async move {
                let d = Driver {
                    router,
                    ping: ping_tx,
                    pong: pong_rx,
                    data: data_tx,
                    data_ack: ack_rx,
                    sc_ping: sc_ping_tx.connect().await,
                    sc_pong: sc_pong_rx.connect().await,
                    sc_data: sc_data_tx.connect().await,
                    sc_ack: sc_ack_rx.connect().await,
                    pool: (0..POOL)
                        .map(|i| Bytes::from(vec![i as u8; PAYLOAD]))
                        .collect(),
                };
                while let Ok((job, reply)) = jobs_rx.recv_async().await {
                    let _ = reply.send(d.run(job).await);
                }
                // Dropping `d` closes every channel, which ends executor 1.
            })
            .expect("start executor 0");
        Pair {
            jobs: Some(jobs_tx),
            handles: vec![driver, server],
        }
    }

    fn run(&self, job: Job) -> Measured {
        let (tx, rx) = flume::bounded(1);
        self.jobs.as_ref().unwrap().send((job, tx)).unwrap();
        rx.recv().expect("driver answered")
    }
}

fn consume(d: Data) -> Option<usize> {
    match d {
        Data::Payload(b) => {
            RECEIVED.with(|r| r.set(r.get() + b.len()));
            None
        }
        Data::Ack => Some(RECEIVED.with(|r| r.get())),
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.jobs.take();
        for h in self.handles.drain(..) {
            h.join().expect("executor thread");
        }
    }
}

/// Criterion reports the mean; scheduler hiccups on a busy machine inflate
/// it, so print the distribution of single round trips too.
fn print_percentiles(name: &str, ns: &mut [u32]) {
    if ns.is_empty() {
        return;
    }
    ns.sort_unstable();
    let q = |p: f64| ns[((ns.len() - 1) as f64 * p) as usize] as f64 / 1e3;
    println!(
        "{name}: {} round trips, p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs\n",
        ns.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
}

const TRANSPORTS: [(Transport, &str); 3] = [
    (Transport::Router, "router"),
    (Transport::Flume, "flume"),
    (Transport::Shared, "shared_channel"),
];

fn benches(c: &mut Criterion) {
    for (spin, mode) in [
        (None, "park"),
        (Some(Duration::from_micros(100)), "spin100us"),
    ] {
        let pair = Pair::start(spin);
        let mut g = c.benchmark_group(format!("rtt/{mode}"));
        g.throughput(Throughput::Elements(1));
        for (t, name) in TRANSPORTS {
            let mut all = Vec::new();
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let m = pair.run(Job::Rtt(t, iters));
                    if (all.len() as u64) < RTT_SAMPLES_MAX {
                        all.extend_from_slice(&m.rtts_ns);
                    }
                    m.elapsed
                })
            });
            print_percentiles(&format!("rtt/{mode}/{name}"), &mut all);
        }
        g.finish();
        if spin.is_none() {
            let mut g = c.benchmark_group("throughput");
            g.throughput(Throughput::Elements(1));
            for (t, name) in TRANSPORTS {
                g.bench_function(BenchmarkId::new(name, "64KiB_bytes"), |b| {
                    b.iter_custom(|iters| pair.run(Job::Throughput(t, iters)).elapsed)
                });
            }
            g.finish();
        }
        drop(pair);
    }
}

criterion_group! {
    name = router;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(router);
