//! Eviction thresholds, written as the kubelet's flags take them:
//! `--eviction-hard=memory.available<100Mi,nodefs.available<10%`,
//! `--eviction-soft=memory.available<300Mi` with
//! `--eviction-soft-grace-period=memory.available=1m30s`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{NodeError, Result};

/// What a threshold watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// The machine's available memory.
    MemoryAvailable,
    /// Node allocatable memory minus what the pods use.
    AllocatableMemoryAvailable,
    /// Free space of the filesystem holding the root dir.
    NodefsAvailable,
    /// Free inodes of that filesystem.
    NodefsInodesFree,
    /// Free space of the image filesystem (the same one here).
    ImagefsAvailable,
    /// PIDs left before `kernel.pid_max`.
    PidAvailable,
}

/// The resource a signal measures: what ranks pods, which condition it raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Memory,
    Disk,
    Pids,
}

impl Signal {
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::AllocatableMemoryAvailable,
        Signal::NodefsAvailable,
        Signal::NodefsInodesFree,
        Signal::ImagefsAvailable,
        Signal::PidAvailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::PidAvailable => "pid.available",
        }
    }

    fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => Resource::Memory,
            Signal::NodefsAvailable | Signal::NodefsInodesFree | Signal::ImagefsAvailable => {
                Resource::Disk
            }
            Signal::PidAvailable => Resource::Pids,
        }
    }

    /// Bytes (or counts) rather than a plain number.
    fn in_bytes(self) -> bool {
        !matches!(self, Signal::NodefsInodesFree | Signal::PidAvailable)
    }
}

/// A threshold's level: absolute, or a share of the capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Level {
    Absolute(u64),
    Percent(f64),
}

/// "Evict when `signal` falls below `level`", at once (hard) or after it
/// stayed there for `grace` (soft).
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub level: Level,
    pub grace: Option<Duration>,
}

impl Threshold {
    /// The level in the signal's unit, given the resource's capacity.
    pub fn limit(&self, capacity: u64) -> u64 {
        match self.level {
            Level::Absolute(v) => v,
            Level::Percent(p) => (capacity as f64 * p / 100.0).ceil() as u64,
        }
    }

    /// As the flag spells it (`memory.available<100Mi`), for messages.
    pub fn describe(&self) -> String {
        match self.level {
            Level::Absolute(v) if self.signal.in_bytes() => {
                format!("{}<{}", self.signal.name(), bytes(v))
            }
            Level::Absolute(v) => format!("{}<{v}", self.signal.name()),
            Level::Percent(p) => format!("{}<{p}%", self.signal.name()),
        }
    }
}

/// A byte count as a quantity (`100Mi`, `1536Ki`, `12345`).
pub fn bytes(v: u64) -> String {
    for (unit, size) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if v >= size && v.is_multiple_of(size) {
            return format!("{}{unit}", v / size);
        }
    }
    if v >= 1 << 10 {
        return format!("{}Ki", v.div_ceil(1 << 10));
    }
    v.to_string()
}

/// The kubelet's default hard thresholds.
pub const DEFAULT_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%";

/// `signal<level` pairs, comma-separated.
fn parse_list(flag: &'static str, spec: &str) -> Result<Vec<(Signal, Level)>> {
    let bad = |reason: String| NodeError::Flag { flag, reason };
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, level) = item
            .split_once('<')
            .ok_or_else(|| bad(format!("{item:?}: want signal<quantity")))?;
        let signal = Signal::parse(name.trim()).ok_or_else(|| {
            bad(format!(
                "{item:?}: unknown signal {name:?} (known: {})",
                Signal::ALL.map(Signal::name).join(", ")
            ))
        })?;
        let level = level.trim();
        let level = if let Some(p) = level.strip_suffix('%') {
            match p.parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Level::Percent(p),
                _ => return Err(bad(format!("{item:?}: a percentage is 0-100%"))),
            }
        } else {
            let v = crate::quantity::parse(level, 1.0)
                .ok_or_else(|| bad(format!("{item:?}: {level:?} is not a quantity")))?;
            Level::Absolute(v.max(0) as u64)
        };
        if out.iter().any(|(s, _)| *s == signal) {
            return Err(bad(format!("{} given twice", signal.name())));
        }
        out.push((signal, level));
    }
    Ok(out)
}

/// `90s`, `1m30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return None,
            }
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// The thresholds from the three flags (`hard` None: the defaults). A
/// soft threshold needs its grace period.
pub fn build(hard: Option<&str>, soft: &str, soft_grace: &str) -> Result<Vec<Threshold>> {
    let mut out: Vec<Threshold> = parse_list("--eviction-hard", hard.unwrap_or(DEFAULT_HARD))?
        .into_iter()
        .map(|(signal, level)| Threshold {
            signal,
            level,
            grace: None,
        })
        .collect();
    let mut graces: BTreeMap<Signal, Duration> = BTreeMap::new();
    for item in soft_grace
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let bad = |reason: String| NodeError::Flag {
            flag: "--eviction-soft-grace-period",
            reason,
        };
        let (name, d) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?}: want signal=duration")))?;
        let signal =
            Signal::parse(name.trim()).ok_or_else(|| bad(format!("{item:?}: unknown signal")))?;
        let d = parse_duration(d).ok_or_else(|| bad(format!("{item:?}: {d:?} is no duration")))?;
        graces.insert(signal, d);
    }
    for (signal, level) in parse_list("--eviction-soft", soft)? {
        let grace = graces.remove(&signal).ok_or_else(|| NodeError::Flag {
            flag: "--eviction-soft-grace-period",
            reason: format!("soft threshold {} has no grace period", signal.name()),
        })?;
        out.push(Threshold {
            signal,
            level,
            grace: Some(grace),
        });
    }
    if let Some(s) = graces.keys().next() {
        return Err(NodeError::Flag {
            flag: "--eviction-soft-grace-period",
            reason: format!("{} has no soft threshold", s.name()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_the_kubelet_takes_them() {
        let t = build(
            Some("memory.available<100Mi, nodefs.available<10%"),
            "memory.available<1.5Gi",
            "memory.available=1m30s",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].level, Level::Absolute(100 << 20));
        assert_eq!(t[0].grace, None);
        assert_eq!(t[1].level, Level::Percent(10.0));
        assert_eq!(t[1].limit(1000), 100);
        assert_eq!(t[2].grace, Some(Duration::from_secs(90)));
        assert_eq!(t[2].describe(), "memory.available<1536Mi");
        assert_eq!(build(None, "", "").map(|t| t.len()).ok(), Some(4));
        assert_eq!(
            build(Some(""), "", "").map(|t| t.len()).ok(),
            Some(0),
            "an empty --eviction-hard turns hard eviction off"
        );
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_item() {
        for (hard, soft, grace, want) in [
            (
                "memory.free<1Gi",
                "",
                "",
                "--eviction-hard: \"memory.free<1Gi\": unknown signal",
            ),
            ("memory.available>1Gi", "", "", "want signal<quantity"),
            ("memory.available<lots", "", "", "is not a quantity"),
            ("nodefs.available<120%", "", "", "0-100%"),
            ("", "memory.available<1Gi", "", "has no grace period"),
            ("", "", "memory.available=1m", "has no soft threshold"),
            (
                "",
                "memory.available<1Gi",
                "memory.available=soon",
                "is no duration",
            ),
        ] {
            let err = build(Some(hard), soft, grace)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(want), "{hard:?} {soft:?} {grace:?}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
    }
}
