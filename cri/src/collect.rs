//! Reconciling CRI records with the runtime's state after a crash. The
//! runtime makes a sandbox before CRI records it, and CRI forgets it only
//! after the runtime removed it; a crash between the two leaves:
//! - a runtime sandbox with no record (pause running, network namespace
//!   pinned, an address allocated): no client can see it, so it is
//!   removed here, with its CNI DEL — unless its creator, perhaps in
//!   another process, still claims it;
//! - a record whose runtime sandbox is gone (a removal cut short): the
//!   record and those of its containers are removed;
//! - image volume directories nothing is mounted on (a reboot unmounts
//!   them all and empties the records);
//! - temporary files of record writes whose writer died.
//!
//! Runs whenever a [`crate::CriService`] opens the state (a restarted
//! daemon, the next CLI command), after the runtime's own collection of
//! half-created objects, and in a daemon every `gc_interval_secs` (a CLI
//! or standalone supervisor sharing the state may crash while the daemon
//! lives on).

use std::path::Path;
use std::time::Duration;

use podctl_runtime::Runtime;

use crate::image_volume;
use crate::records::Records;
use crate::service::CriService;

impl CriService {
    /// Collect, every `gc_interval_secs` of the configuration, what
    /// crashed processes sharing the state left; for a daemon's life.
    /// Nothing when the interval is 0.
    pub fn collect_periodically(&self) {
        let secs = self.config().gc_interval_secs;
        if secs == 0 {
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(secs));
            tick.tick().await; // the first pass ran when the service opened
            loop {
                tick.tick().await;
                let pass = svc
                    .blocking(|i| {
                        let containers = i.runtime.collect_half_created();
                        Ok((containers, collect(&i.runtime, &i.records, &i.cfg.root)))
                    })
                    .await;
                match pass {
                    Ok((0, c)) if c == Collected::default() => {}
                    Ok((half_created, collected)) => {
                        tracing::info!(half_created, ?collected, "collected what a crash left")
                    }
                    Err(e) => tracing::warn!(error = %e, "periodic collection"),
                }
            }
        });
    }
}

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Collected {
    pub unrecorded_sandboxes: usize,
    pub orphan_records: usize,
    pub image_volumes: usize,
    pub abandoned_writes: usize,
}

pub(crate) fn collect(runtime: &Runtime, records: &Records, root: &Path) -> Collected {
    let mut out = Collected {
        image_volumes: image_volume::collect_unmounted(root),
        abandoned_writes: records.remove_abandoned_writes(),
        ..Default::default()
    };
    let sandboxes = records.sandboxes();
    let known: std::collections::HashSet<&str> = sandboxes.iter().map(|r| r.id.as_str()).collect();
    for sb in runtime.list_sandboxes().unwrap_or_default() {
        if known.contains(sb.id.as_str()) {
            continue;
        }
        let recorded = || records.sandbox(&sb.id).is_ok();
        match runtime.remove_sandbox_unclaimed(&sb.id, recorded) {
            Ok(true) => {
                tracing::warn!(id = %sb.id, "removed a sandbox a crash left unrecorded");
                out.unrecorded_sandboxes += 1;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(id = %sb.id, error = %e, "removing an unrecorded sandbox"),
        }
    }
    let gone: Vec<&str> = sandboxes
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !runtime.sandbox_exists(id))
        .collect();
    if gone.is_empty() {
        return out;
    }
    for c in records
        .containers()
        .into_iter()
        .filter(|c| gone.contains(&c.sandbox_id.as_str()))
    {
        if runtime.container_status(&c.id).is_ok() {
            continue;
        }
        image_volume::release(&c.image_volumes);
        if records.remove_container(&c.id).is_ok() {
            out.orphan_records += 1;
        }
    }
    for id in gone {
        tracing::warn!(%id, "forgetting a sandbox whose removal was cut short");
        if records.remove_sandbox(id).is_ok() {
            out.orphan_records += 1;
        }
    }
    out
}
