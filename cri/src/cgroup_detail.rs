//! The detailed cgroup reading behind the cAdvisor-style metrics
//! (ListPodSandboxMetrics): CPU time split and throttling, the memory
//! breakdown and its failures, block I/O per device, tasks, and the open
//! files of the cgroup's processes. cgroup v1 and v2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::stats::{cgroups_of, keyed, read_u64};

const ROOT: &str = "/sys/fs/cgroup";
/// `USER_HZ`: the unit of v1 `cpuacct.stat`.
const TICK_NS: u64 = 10_000_000;

/// Block I/O of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// One detailed reading of the cgroup of a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    pub cpu_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cfs_periods: u64,
    pub cfs_throttled_periods: u64,
    pub cfs_throttled_ns: u64,
    pub memory_usage: u64,
    pub memory_max_usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    pub kernel: u64,
    pub swap: u64,
    pub failcnt: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub oom_events: u64,
    pub processes: u64,
    pub threads: u64,
    /// 0 when unlimited.
    pub threads_max: u64,
    pub file_descriptors: u64,
    pub sockets: u64,
    pub io: Vec<DeviceIo>,
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `max` (or v1's huge numbers) as 0, like cAdvisor's "unlimited".
fn limit(p: &Path) -> u64 {
    read_u64(p).filter(|v| *v < (1 << 62)).unwrap_or(0)
}

/// Read the cgroup `pid` is in; `None` if the process is gone.
pub fn detail(pid: i32) -> Option<Detail> {
    let cg = cgroups_of(pid);
    if cg.is_empty() {
        return None;
    }
    let rel = |c: &str| cg.get(c).map(|p| p.trim_start_matches('/').to_string());
    let mut d = Detail::default();
    let procs_file;
    if Path::new(ROOT).join("memory").is_dir() {
        let v1 = |ctrl: &str| rel(ctrl).map(|r| PathBuf::from(ROOT).join(ctrl).join(r));
        if let Some(acct) = v1("cpuacct") {
            d.cpu_ns = read_u64(&acct.join("cpuacct.usage")).unwrap_or(0);
            let st = keyed(&acct.join("cpuacct.stat"));
            d.cpu_user_ns = st.get("user").copied().unwrap_or(0) * TICK_NS;
            d.cpu_system_ns = st.get("system").copied().unwrap_or(0) * TICK_NS;
        }
        if let Some(cpu) = v1("cpu") {
            let st = keyed(&cpu.join("cpu.stat"));
            d.cfs_periods = st.get("nr_periods").copied().unwrap_or(0);
            d.cfs_throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
            d.cfs_throttled_ns = st.get("throttled_time").copied().unwrap_or(0);
        }
        let mem = v1("memory")?;
        let st = keyed(&mem.join("memory.stat"));
        let get = |k: &str| st.get(k).copied().unwrap_or(0);
        d.memory_usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
        d.memory_max_usage = read_u64(&mem.join("memory.max_usage_in_bytes")).unwrap_or(0);
        d.working_set = d.memory_usage.saturating_sub(get("total_inactive_file"));
        d.rss = get("total_rss");
        d.cache = get("total_cache");
        d.mapped_file = get("total_mapped_file");
        d.swap = get("total_swap");
        d.kernel = read_u64(&mem.join("memory.kmem.usage_in_bytes")).unwrap_or(0);
        d.failcnt = read_u64(&mem.join("memory.failcnt")).unwrap_or(0);
        d.page_faults = get("total_pgfault");
        d.major_page_faults = get("total_pgmajfault");
        d.oom_events = keyed(&mem.join("memory.oom_control"))
            .get("oom_kill")
            .copied()
            .unwrap_or(0);
        if let Some(pids) = v1("pids") {
            d.threads_max = limit(&pids.join("pids.max"));
        }
        d.threads = lines(&mem.join("tasks")).len() as u64;
        procs_file = mem.join("cgroup.procs");
        if let Some(blkio) = v1("blkio") {
            d.io = blkio_v1(&blkio);
        }
    } else {
        let dir = PathBuf::from(ROOT).join(rel("")?);
        let cpu = keyed(&dir.join("cpu.stat"));
        let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
        d.cpu_ns = c("usage_usec") * 1000;
        d.cpu_user_ns = c("user_usec") * 1000;
        d.cpu_system_ns = c("system_usec") * 1000;
        d.cfs_periods = c("nr_periods");
        d.cfs_throttled_periods = c("nr_throttled");
        d.cfs_throttled_ns = c("throttled_usec") * 1000;
        let st = keyed(&dir.join("memory.stat"));
        let get = |k: &str| st.get(k).copied().unwrap_or(0);
        d.memory_usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
        d.memory_max_usage = read_u64(&dir.join("memory.peak")).unwrap_or(0);
        d.working_set = d.memory_usage.saturating_sub(get("inactive_file"));
        d.rss = get("anon");
        d.cache = get("file");
        d.mapped_file = get("file_mapped");
        d.kernel = st
            .get("kernel")
            .copied()
            .unwrap_or_else(|| get("kernel_stack") + get("slab") + get("sock"));
        d.swap = read_u64(&dir.join("memory.swap.current")).unwrap_or(0);
        let ev = keyed(&dir.join("memory.events"));
        d.failcnt = ev.get("max").copied().unwrap_or(0);
        d.oom_events = ev.get("oom_kill").copied().unwrap_or(0);
        d.page_faults = get("pgfault");
        d.major_page_faults = get("pgmajfault");
        d.threads_max = limit(&dir.join("pids.max"));
        d.threads = lines(&dir.join("cgroup.threads")).len() as u64;
        procs_file = dir.join("cgroup.procs");
        d.io = io_v2(&dir.join("io.stat"));
    }
    let procs: Vec<i32> = lines(&procs_file)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    d.processes = procs.len() as u64;
    for p in procs {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            d.file_descriptors += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            {
                d.sockets += 1;
            }
        }
    }
    Some(d)
}

/// `MAJ:MIN key=value …` lines of v2 `io.stat`.
fn io_v2(p: &Path) -> Vec<DeviceIo> {
    let mut out = Vec::new();
    for l in lines(p) {
        let mut it = l.split_whitespace();
        let Some((major, minor)) = it.next().and_then(dev) else {
            continue;
        };
        let kv: HashMap<&str, u64> = it
            .filter_map(|f| {
                let (k, v) = f.split_once('=')?;
                Some((k, v.parse().ok()?))
            })
            .collect();
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        out.push(DeviceIo {
            major,
            minor,
            read_bytes: g("rbytes"),
            write_bytes: g("wbytes"),
            reads: g("rios"),
            writes: g("wios"),
        });
    }
    out
}

fn dev(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// v1 blkio: `MAJ:MIN Read|Write|… N` in the bytes and the ops files.
fn blkio_v1(dir: &Path) -> Vec<DeviceIo> {
    let mut by_dev: HashMap<(u64, u64), DeviceIo> = HashMap::new();
    for (file, bytes) in [
        ("blkio.throttle.io_service_bytes_recursive", true),
        ("blkio.throttle.io_serviced_recursive", false),
    ] {
        for l in lines(&dir.join(file)) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [d, op, n] = f.as_slice() else {
                continue;
            };
            let (Some((major, minor)), Ok(n)) = (dev(d), n.parse::<u64>()) else {
                continue;
            };
            let e = by_dev.entry((major, minor)).or_insert(DeviceIo {
                major,
                minor,
                ..Default::default()
            });
            match (*op, bytes) {
                ("Read", true) => e.read_bytes = n,
                ("Write", true) => e.write_bytes = n,
                ("Read", false) => e.reads = n,
                ("Write", false) => e.writes = n,
                _ => {}
            }
        }
    }
    let mut v: Vec<_> = by_dev.into_values().collect();
    v.sort_by_key(|d| (d.major, d.minor));
    v
}

/// Per-interface counters in the network namespace of `pid`: rx bytes,
/// packets, errors, drops, then the same for tx. Loopback only when the
/// namespace has nothing else.
pub fn net_counters(pid: i32) -> Vec<(String, [u64; 8])> {
    let all = crate::stats::net_dev_all(pid);
    if all.iter().any(|(n, _)| n != "lo") {
        all.into_iter().filter(|(n, _)| n != "lo").collect()
    } else {
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_lines_parse() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("io.stat");
        std::fs::write(
            &p,
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\nbogus\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            io_v2(&p),
            vec![DeviceIo {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2
            }]
        );
    }

    #[test]
    fn own_cgroup_reads() {
        let d = detail(std::process::id() as i32).unwrap_or_else(|| panic!("no cgroup"));
        assert!(d.cpu_ns > 0, "{d:?}");
        assert!(d.memory_usage > 0, "{d:?}");
        assert!(d.processes >= 1 && d.threads >= 1, "{d:?}");
        assert!(d.file_descriptors >= 3, "{d:?}");
    }
}
