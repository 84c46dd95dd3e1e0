//! Facts about the host and the build, recorded with every report: a
//! latency figure without them cannot be compared with anything.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub hostname: String,
    pub cpu_model: String,
    pub online_cpus: usize,
    pub kernel: String,
    pub memory_total_mib: Option<u64>,
    /// /sys/kernel/mm/transparent_hugepage/enabled (the bracketed choice).
    pub transparent_hugepages: Option<String>,
    /// cpu0's cpufreq governor; None in most VMs.
    pub cpu_governor: Option<String>,
    pub os: &'static str,
    pub arch: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub loadgen: &'static str,
    pub shardlog: &'static str,
    /// "release" or "debug": debug figures are not representative.
    pub build: &'static str,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn bracketed(s: &str) -> String {
    match (s.find('['), s.find(']')) {
        (Some(a), Some(b)) if b > a => s[a + 1..b].to_string(),
        _ => s.to_string(),
    }
}

impl MachineInfo {
    pub fn collect() -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_total_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb / 1024);
        MachineInfo {
            hostname: read_trim("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
            cpu_model,
            online_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            memory_total_mib,
            transparent_hugepages: read_trim("/sys/kernel/mm/transparent_hugepage/enabled")
                .map(|s| bracketed(&s)),
            cpu_governor: read_trim("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

impl Versions {
    pub fn current() -> Versions {
        Versions {
            loadgen: env!("CARGO_PKG_VERSION"),
            // One workspace version for both crates.
            shardlog: env!("CARGO_PKG_VERSION"),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_something() {
        let m = MachineInfo::collect();
        assert!(m.online_cpus >= 1);
        assert_ne!(m.kernel, "");
        assert_eq!(bracketed("always [madvise] never"), "madvise");
    }
}
