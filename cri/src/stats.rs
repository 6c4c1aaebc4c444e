//! Resource usage read from the kernel: a process's cgroup (v1 or v2)
//! for CPU, memory and process counts, `/proc/<pid>/net/dev` for a pod's
//! network, and directory walks for writable-layer usage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// One reading of a cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupSample {
    pub cpu_ns: u64,
    pub memory_usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub processes: u64,
}

pub(crate) fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

pub(crate) fn keyed(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Controller name → cgroup path of `pid` (`""` holds the v2 path).
pub(crate) fn cgroups_of(pid: i32) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        for c in ctrls.split(',') {
            out.insert(c.to_string(), path.to_string());
        }
    }
    out
}

fn v1() -> bool {
    Path::new(ROOT).join("memory").is_dir()
}

/// Read the cgroup `pid` is in. `None` if the process is gone.
pub fn sample_pid(pid: i32) -> Option<CgroupSample> {
    let cg = cgroups_of(pid);
    if cg.is_empty() {
        return None;
    }
    let rel = |c: &str| cg.get(c).map(|p| p.trim_start_matches('/').to_string());
    Some(if v1() {
        let mem = PathBuf::from(ROOT).join("memory").join(rel("memory")?);
        let st = keyed(&mem.join("memory.stat"));
        let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive = st.get("total_inactive_file").copied().unwrap_or(0);
        let limit = read_u64(&mem.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
        let cpu = rel("cpuacct")
            .and_then(|r| {
                read_u64(
                    &PathBuf::from(ROOT)
                        .join("cpuacct")
                        .join(r)
                        .join("cpuacct.usage"),
                )
            })
            .unwrap_or(0);
        let procs = rel("pids")
            .and_then(|r| {
                read_u64(
                    &PathBuf::from(ROOT)
                        .join("pids")
                        .join(r)
                        .join("pids.current"),
                )
            })
            .unwrap_or(0);
        CgroupSample {
            cpu_ns: cpu,
            memory_usage: usage,
            working_set: usage.saturating_sub(inactive),
            rss: st.get("total_rss").copied().unwrap_or(0),
            page_faults: st.get("total_pgfault").copied().unwrap_or(0),
            major_page_faults: st.get("total_pgmajfault").copied().unwrap_or(0),
            memory_limit: limit,
            processes: procs,
        }
    } else {
        let dir = PathBuf::from(ROOT).join(rel("")?);
        let st = keyed(&dir.join("memory.stat"));
        let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
        let inactive = st.get("inactive_file").copied().unwrap_or(0);
        let cpu = keyed(&dir.join("cpu.stat"))
            .get("usage_usec")
            .copied()
            .unwrap_or(0)
            * 1000;
        CgroupSample {
            cpu_ns: cpu,
            memory_usage: usage,
            working_set: usage.saturating_sub(inactive),
            rss: st.get("anon").copied().unwrap_or(0),
            page_faults: st.get("pgfault").copied().unwrap_or(0),
            major_page_faults: st.get("pgmajfault").copied().unwrap_or(0),
            memory_limit: read_u64(&dir.join("memory.max")),
            processes: read_u64(&dir.join("pids.current")).unwrap_or(0),
        }
    })
}

/// Every interface's counters in the network namespace of `pid`
/// (`/proc/<pid>/net/dev`): rx bytes, packets, errors, drops, then the
/// same for tx.
pub(crate) fn net_dev_all(pid: i32) -> Vec<(String, [u64; 8])> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() >= 12).then(|| {
                (
                    name.trim().to_string(),
                    [v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]],
                )
            })
        })
        .collect()
}

/// Per-interface (rx bytes, rx errors, tx bytes, tx errors) in the
/// network namespace of `pid`, loopback excluded.
pub fn net_dev(pid: i32) -> Vec<(String, [u64; 4])> {
    net_dev_all(pid)
        .into_iter()
        .filter(|(name, _)| name != "lo")
        .map(|(name, v)| (name, [v[0], v[2], v[4], v[6]]))
        .collect()
}

/// Bytes and inodes under `dir` (not following symlinks, not crossing
/// into other mounts' contents beyond what `read_dir` shows).
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            inodes += 1;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                bytes += md.len();
            }
        }
    }
    (bytes, inodes)
}
