//! Network namespaces for tests that cut brokers off from each other.
//!
//! Each broker gets its own namespace with one address on a private /24,
//! joined by a veth pair to a bridge in the test's own namespace, which
//! holds `.254` on that subnet: the test (its clients) reaches every broker
//! at all times. [`Net::isolate`] cuts one broker off from the other
//! brokers only (blackhole routes on both sides), as a failed switch port
//! between racks would, so a leader that is cut off still hears its
//! clients; [`Net::heal`] restores the links. Everything is removed on
//! drop (the namespaces, and with them the veth pairs; then the bridge).
//!
//! Needs root (CAP_NET_ADMIN) and iproute2, both present on our machines
//! and CI. Names carry the test process id and a per-process count so
//! parallel tests do not clash.

use std::process::Command;

pub struct Net {
    /// Namespace names, one per broker.
    pub namespaces: Vec<String>,
    bridge: String,
    /// The /24's first three octets, "10.A.B".
    subnet: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all);
}

impl Net {
    /// `n` brokers' namespaces on a fresh bridge.
    pub fn new(n: usize) -> Net {
        // Distinct per test process and per Net within it (two tests of
        // one binary run in parallel).
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        // 10.A.B.0/24 from the pid and k.
        let subnet = format!(
            "10.{}.{}",
            100 + ((pid >> 8) + k) % 100,
            (pid + 61 * k) % 256
        );
        let tag = format!("{:x}", (pid * 16 + k) % 0xfffff);
        let bridge = format!("slb{tag}");
        let mut net = Net {
            namespaces: Vec::new(),
            bridge: bridge.clone(),
            subnet: subnet.clone(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 1..=n {
            let ns = format!("sl{tag}-{i}");
            ip(&["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let (host, inner) = (format!("sl{tag}h{i}"), format!("sl{tag}n{i}"));
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &host, "master", &bridge]);
            ip(&["link", "set", &host, "up"]);
            ip_in(
                &ns,
                &["addr", "add", &format!("{subnet}.{i}/24"), "dev", &inner],
            );
            ip_in(&ns, &["link", "set", &inner, "up"]);
            ip_in(&ns, &["link", "set", "lo", "up"]);
        }
        net
    }

    /// Broker `i`'s (1-based) address on the private subnet.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// `ip netns exec NS`: the wrapper that runs a broker in namespace `i`.
    pub fn exec(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespaces[i - 1].clone(),
        ]
    }

    fn routes(&self, i: usize, op: &str) {
        for j in 1..=self.namespaces.len() {
            if j == i {
                continue;
            }
            let (to_j, to_i) = (
                format!("{}/32", self.addr(j)),
                format!("{}/32", self.addr(i)),
            );
            ip_in(&self.namespaces[i - 1], &["route", op, "blackhole", &to_j]);
            ip_in(&self.namespaces[j - 1], &["route", op, "blackhole", &to_i]);
        }
    }

    /// Cut broker `i` off from every other broker (the test still reaches it).
    pub fn isolate(&self, i: usize) {
        self.routes(i, "add");
    }

    /// Undo [`Self::isolate`].
    pub fn heal(&self, i: usize) {
        self.routes(i, "del");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
