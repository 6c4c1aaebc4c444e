//! The eviction signals, measured: what is available of each resource and
//! out of how much.

use std::collections::BTreeMap;

use super::thresholds::Signal;
use crate::agent::node_status::Machine;

/// Available and capacity per signal (bytes, inodes or PIDs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub signals: BTreeMap<Signal, (u64, u64)>,
}

impl Observed {
    pub fn available(&self, s: Signal) -> Option<u64> {
        self.signals.get(&s).map(|v| v.0)
    }
}

/// The signals of the machine `m` (read for the root dir's filesystem),
/// given the pods' memory use and the node's allocatable memory (0: unknown).
pub fn observe(m: &Machine, pods_memory: u64, allocatable_memory: u64) -> Observed {
    let mut signals = BTreeMap::new();
    if m.memory_bytes > 0 {
        signals.insert(
            Signal::MemoryAvailable,
            (m.memory_available, m.memory_bytes),
        );
    }
    if allocatable_memory > 0 {
        signals.insert(
            Signal::AllocatableMemoryAvailable,
            (
                allocatable_memory.saturating_sub(pods_memory),
                allocatable_memory,
            ),
        );
    }
    if m.disk_bytes > 0 {
        signals.insert(Signal::NodefsAvailable, (m.disk_available, m.disk_bytes));
        // Images live under the root dir too: one filesystem.
        signals.insert(Signal::ImagefsAvailable, (m.disk_available, m.disk_bytes));
    }
    if m.inodes > 0 {
        signals.insert(Signal::NodefsInodesFree, (m.inodes_free, m.inodes));
    }
    if m.pid_max > 0 {
        signals.insert(
            Signal::PidAvailable,
            (m.pid_max.saturating_sub(m.pids), m.pid_max),
        );
    }
    Observed { signals }
}
