//! What each thread of a hung child process waits in: shared by the
//! broker's and loadgen's test harnesses (loadgen's includes this file).

/// Each thread of a hung process: name, state, kernel wait channel and
/// kernel stack from /proc, and every thread's backtrace when gdb is
/// installed (it is not on CI's machine): a hang seen once under load must
/// explain itself.
pub fn thread_report(pid: u32) -> String {
    let mut out = String::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let p = t.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            let state = read("status")
                .lines()
                .find(|l| l.starts_with("State:"))
                .unwrap_or_default()
                .to_string();
            out.push_str(&format!(
                "{} {} {} wchan={}\n{}",
                t.file_name().to_string_lossy(),
                read("comm").trim(),
                state,
                read("wchan"),
                read("stack")
            ));
        }
    }
    if let Ok(o) = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .output()
    {
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}
