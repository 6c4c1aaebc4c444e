//! What plugins may change in a container they are told of at
//! CreateContainer, and how podctl applies it: to the CRI request itself
//! (environment, command line, mounts, annotations, resources), so the
//! rest of the creation, the record and later events see the container as
//! adjusted; rlimits, sysctls and the pids limit go to the runtime's
//! configuration. An adjustment podctl cannot apply (OCI hooks, devices,
//! CDI, namespaces, seccomp, scheduling classes, ...) fails the creation
//! with the plugin and the field named, rather than going unnoticed. Two
//! plugins changing the same thing is an error too, unless the second
//! removed it first.

use std::collections::{BTreeMap, HashMap};

use super::api::{ContainerAdjustment, LinuxContainerAdjustment, Mount};
use crate::proto;

/// What adjustments set beyond the CRI request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RuntimeExtras {
    pub pids_limit: Option<i64>,
    pub rlimits: Vec<podctl_runtime::Rlimit>,
    pub sysctls: BTreeMap<String, String>,
}

impl RuntimeExtras {
    /// Apply to the runtime's configuration of the container.
    pub fn apply(self, rc: &mut podctl_runtime::ContainerConfig) {
        if let Some(l) = self.pids_limit {
            rc.resources.pids_limit = Some(l);
        }
        for r in self.rlimits {
            rc.rlimits.retain(|o| o.kind != r.kind);
            rc.rlimits.push(r);
        }
        rc.sysctls.extend(self.sysctls);
    }
}

/// The adjustments of every plugin so far, and who made each.
#[derive(Default)]
pub struct Adjuster {
    owners: HashMap<String, String>,
    pub extras: RuntimeExtras,
}

/// Sets one field of the CRI request's resources.
type SetResource = Box<dyn FnOnce(&mut proto::LinuxContainerResources)>;

fn removal(key: &str) -> Option<&str> {
    key.strip_prefix('-')
}

impl Adjuster {
    /// Claim `what` for `plugin`: an error if another plugin has it.
    fn claim(&mut self, plugin: &str, what: String) -> Result<(), String> {
        match self.owners.get(&what) {
            Some(o) if o != plugin => Err(format!("{what} is already adjusted by plugin {o}")),
            _ => {
                self.owners.insert(what, plugin.to_string());
                Ok(())
            }
        }
    }

    fn release(&mut self, what: &str) {
        self.owners.remove(what);
    }

    /// Apply `plugin`'s adjustment `a` to the request `cfg`.
    pub fn apply(
        &mut self,
        plugin: &str,
        a: ContainerAdjustment,
        cfg: &mut proto::ContainerConfig,
    ) -> Result<(), String> {
        unsupported(&a)?;
        let mut keys: Vec<_> = a.annotations.into_iter().collect();
        keys.sort_by_key(|(k, _)| removal(k).is_none());
        for (k, v) in keys {
            if let Some(k) = removal(&k) {
                cfg.annotations.remove(k);
                self.release(&format!("annotation {k}"));
            } else {
                self.claim(plugin, format!("annotation {k}"))?;
                cfg.annotations.insert(k, v);
            }
        }
        for m in a.mounts {
            if let Some(dest) = removal(&m.destination) {
                cfg.mounts.retain(|o| o.container_path != dest);
                self.release(&format!("mount {dest}"));
                continue;
            }
            self.claim(plugin, format!("mount {}", m.destination))?;
            let cri = cri_mount(&m)?;
            cfg.mounts
                .retain(|o| o.container_path != cri.container_path);
            cfg.mounts.push(cri);
        }
        for kv in a.env {
            if let Some(k) = removal(&kv.key) {
                cfg.envs.retain(|e| e.key != k);
                self.release(&format!("env {k}"));
                continue;
            }
            self.claim(plugin, format!("env {}", kv.key))?;
            match cfg.envs.iter_mut().find(|e| e.key == kv.key) {
                Some(e) => e.value = kv.value.into_bytes(),
                None => cfg.envs.push(proto::KeyValue {
                    key: kv.key,
                    value: kv.value.into_bytes(),
                }),
            }
        }
        if let Some(first) = a.args.first() {
            let args = if first.is_empty() {
                a.args[1..].to_vec()
            } else {
                self.claim(plugin, "args".into())?;
                a.args
            };
            cfg.command = args;
            cfg.args.clear();
        }
        for r in a.rlimits {
            self.claim(plugin, format!("rlimit {}", r.r#type))?;
            self.extras.rlimits.retain(|o| o.kind != r.r#type);
            self.extras.rlimits.push(podctl_runtime::Rlimit {
                kind: r.r#type,
                soft: r.soft,
                hard: r.hard,
            });
        }
        if let Some(l) = a.linux {
            self.linux(plugin, l, cfg)?;
        }
        Ok(())
    }

    fn linux(
        &mut self,
        plugin: &str,
        l: LinuxContainerAdjustment,
        cfg: &mut proto::ContainerConfig,
    ) -> Result<(), String> {
        for (k, v) in l.sysctl {
            self.claim(plugin, format!("sysctl {k}"))?;
            self.extras.sysctls.insert(k, v);
        }
        let mut set: Vec<(&str, SetResource)> = vec![];
        if let Some(v) = l.oom_score_adj {
            set.push((
                "oom_score_adj",
                Box::new(move |r| r.oom_score_adj = v.value),
            ));
        }
        let r = l.resources.unwrap_or_default();
        if let Some(m) = r.memory {
            if let Some(v) = m.limit {
                set.push((
                    "memory.limit",
                    Box::new(move |r| r.memory_limit_in_bytes = v.value),
                ));
            }
            if let Some(v) = m.swap {
                set.push((
                    "memory.swap",
                    Box::new(move |r| r.memory_swap_limit_in_bytes = v.value),
                ));
            }
        }
        if let Some(c) = r.cpu {
            if let Some(v) = c.shares {
                let v = i64::try_from(v.value).map_err(|_| "cpu.shares out of range")?;
                set.push(("cpu.shares", Box::new(move |r| r.cpu_shares = v)));
            }
            if let Some(v) = c.quota {
                set.push(("cpu.quota", Box::new(move |r| r.cpu_quota = v.value)));
            }
            if let Some(v) = c.period {
                let v = i64::try_from(v.value).map_err(|_| "cpu.period out of range")?;
                set.push(("cpu.period", Box::new(move |r| r.cpu_period = v)));
            }
            if !c.cpus.is_empty() {
                set.push(("cpu.cpus", Box::new(move |r| r.cpuset_cpus = c.cpus)));
            }
            if !c.mems.is_empty() {
                set.push(("cpu.mems", Box::new(move |r| r.cpuset_mems = c.mems)));
            }
        }
        for k in r.unified.keys() {
            self.claim(plugin, format!("unified {k}"))?;
        }
        for (what, _) in &set {
            self.claim(plugin, what.to_string())?;
        }
        if !set.is_empty() || !r.unified.is_empty() {
            let res = cfg
                .linux
                .get_or_insert_with(Default::default)
                .resources
                .get_or_insert_with(Default::default);
            res.unified.extend(r.unified);
            for (_, f) in set {
                f(res);
            }
        }
        if let Some(p) = r.pids {
            self.claim(plugin, "pids.limit".into())?;
            self.extras.pids_limit = Some(p.limit);
        }
        Ok(())
    }
}

/// The first part of `a` podctl does not apply.
fn unsupported(a: &ContainerAdjustment) -> Result<(), String> {
    let mut found = vec![];
    if a.hooks.is_some() {
        found.push("hooks");
    }
    if !a.cdi_devices.is_empty() {
        found.push("CDI devices");
    }
    if let Some(l) = &a.linux {
        for (what, there) in [
            ("linux.devices", !l.devices.is_empty()),
            ("linux.cgroups_path", !l.cgroups_path.is_empty()),
            ("linux.io_priority", l.io_priority.is_some()),
            ("linux.seccomp_policy", l.seccomp_policy.is_some()),
            ("linux.namespaces", !l.namespaces.is_empty()),
            ("linux.net_devices", !l.net_devices.is_empty()),
            ("linux.scheduler", l.scheduler.is_some()),
            ("linux.rdt", l.rdt.is_some()),
            ("linux.memory_policy", l.memory_policy.is_some()),
        ] {
            if there {
                found.push(what);
            }
        }
        if let Some(r) = &l.resources {
            for (what, there) in [
                ("hugepage limits", !r.hugepage_limits.is_empty()),
                ("blockio class", r.blockio_class.is_some()),
                ("RDT class", r.rdt_class.is_some()),
                ("device cgroup rules", !r.devices.is_empty()),
            ] {
                if there {
                    found.push(what);
                }
            }
            if let Some(m) = &r.memory {
                for (what, there) in [
                    ("memory.reservation", m.reservation.is_some()),
                    ("memory.kernel", m.kernel.is_some()),
                    ("memory.kernel_tcp", m.kernel_tcp.is_some()),
                    ("memory.swappiness", m.swappiness.is_some()),
                    ("memory.disable_oom_killer", m.disable_oom_killer.is_some()),
                    ("memory.use_hierarchy", m.use_hierarchy.is_some()),
                ] {
                    if there {
                        found.push(what);
                    }
                }
            }
            if let Some(c) = &r.cpu {
                if c.realtime_runtime.is_some() || c.realtime_period.is_some() {
                    found.push("realtime CPU");
                }
            }
        }
    }
    match found.as_slice() {
        [] => Ok(()),
        f => Err(format!(
            "adjusts {}, which podctl does not apply",
            f.join(", ")
        )),
    }
}

/// An NRI bind mount as a CRI mount.
fn cri_mount(m: &Mount) -> Result<proto::Mount, String> {
    let bind = m.r#type == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if !bind {
        return Err(format!(
            "mount {}: type {:?} (podctl applies bind mounts only)",
            m.destination, m.r#type
        ));
    }
    if !m.destination.starts_with('/') || !m.source.starts_with('/') {
        return Err(format!(
            "mount {} from {}: both paths must be absolute",
            m.destination, m.source
        ));
    }
    let has = |o: &str| m.options.iter().any(|x| x == o);
    let propagation = if has("rshared") || has("shared") {
        proto::MountPropagation::PropagationBidirectional
    } else if has("rslave") || has("slave") {
        proto::MountPropagation::PropagationHostToContainer
    } else {
        proto::MountPropagation::PropagationPrivate
    };
    Ok(proto::Mount {
        container_path: m.destination.clone(),
        host_path: m.source.clone(),
        readonly: has("ro"),
        propagation: propagation as i32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::api::{KeyValue, LinuxMemory, LinuxPids, LinuxResources, OptionalInt64};
    use super::*;

    fn cfg() -> proto::ContainerConfig {
        proto::ContainerConfig {
            command: vec!["sh".into()],
            args: vec!["-c".into(), "sleep 1".into()],
            envs: vec![proto::KeyValue {
                key: "A".into(),
                value: b"1".to_vec(),
            }],
            annotations: [("keep".to_string(), "x".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn adjustments_rewrite_the_request() {
        let mut c = cfg();
        let mut adj = Adjuster::default();
        let a = ContainerAdjustment {
            annotations: [
                ("-keep".to_string(), String::new()),
                ("new".into(), "y".into()),
            ]
            .into(),
            env: vec![
                KeyValue {
                    key: "-A".into(),
                    value: String::new(),
                },
                KeyValue {
                    key: "B".into(),
                    value: "2".into(),
                },
            ],
            args: vec!["".into(), "echo".into(), "hi".into()],
            mounts: vec![super::Mount {
                destination: "/data".into(),
                r#type: "bind".into(),
                source: "/srv/data".into(),
                options: vec!["rbind".into(), "ro".into()],
            }],
            linux: Some(LinuxContainerAdjustment {
                resources: Some(LinuxResources {
                    memory: Some(LinuxMemory {
                        limit: Some(OptionalInt64 { value: 1 << 26 }),
                        ..Default::default()
                    }),
                    pids: Some(LinuxPids { limit: 64 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        adj.apply("10-a", a, &mut c).unwrap();
        assert_eq!(c.annotations, [("new".to_string(), "y".to_string())].into());
        assert_eq!(c.envs.len(), 1);
        assert_eq!(
            (c.envs[0].key.as_str(), &c.envs[0].value[..]),
            ("B", &b"2"[..])
        );
        assert_eq!(
            (c.command.clone(), c.args.len()),
            (vec!["echo".to_string(), "hi".into()], 0)
        );
        assert_eq!(
            (c.mounts[0].container_path.as_str(), c.mounts[0].readonly),
            ("/data", true)
        );
        let r = c.linux.and_then(|l| l.resources).unwrap_or_default();
        assert_eq!(r.memory_limit_in_bytes, 1 << 26);
        assert_eq!(adj.extras.pids_limit, Some(64));
    }

    #[test]
    fn two_plugins_may_not_change_the_same_thing() {
        let mut c = cfg();
        let mut adj = Adjuster::default();
        let env = |k: &str| ContainerAdjustment {
            env: vec![KeyValue {
                key: k.into(),
                value: "v".into(),
            }],
            ..Default::default()
        };
        adj.apply("00-a", env("X"), &mut c).unwrap();
        let e = adj.apply("10-b", env("X"), &mut c).unwrap_err();
        assert!(
            e.contains("env X is already adjusted by plugin 00-a"),
            "{e}"
        );
        // Removing it first makes it the second plugin's to set.
        let mut both = env("-X");
        both.env.extend(env("X").env);
        adj.apply("10-b", both, &mut c).unwrap();
    }

    #[test]
    fn what_podctl_cannot_apply_is_named() {
        let a = ContainerAdjustment {
            hooks: Some(vec![]),
            linux: Some(LinuxContainerAdjustment {
                devices: vec![vec![]],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = Adjuster::default()
            .apply("00-a", a, &mut cfg())
            .unwrap_err();
        assert_eq!(
            e,
            "adjusts hooks, linux.devices, which podctl does not apply"
        );
        let tmpfs = ContainerAdjustment {
            mounts: vec![super::Mount {
                destination: "/t".into(),
                r#type: "tmpfs".into(),
                source: "tmpfs".into(),
                options: vec![],
            }],
            ..Default::default()
        };
        let e = Adjuster::default()
            .apply("00-a", tmpfs, &mut cfg())
            .unwrap_err();
        assert!(e.contains("bind mounts only"), "{e}");
    }
}
