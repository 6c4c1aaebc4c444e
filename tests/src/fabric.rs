//! A network of test hosts on one machine: each node gets its own network
//! namespace with one interface (`eth0`) on a shared segment, a bridge in
//! a namespace of its own (so that the host's firewall and bridges never
//! see the traffic), and the host joins the segment through a veth with
//! the first address. The segment is a `/24` no route of this host uses;
//! every name is made per run. Removed on drop.
//!
//! ```text
//!  host netns ── <host veth> 10.a.b.1 ──┐
//!                                       br0 (fabric netns)
//!  node 0 netns ── eth0 10.a.b.10 ──────┤
//!  node 1 netns ── eth0 10.a.b.11 ──────┘ ...
//! ```

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// The segment and its namespaces.
pub struct Fabric {
    fabric: String,
    host_link: String,
    base: Ipv4Addr,
    nodes: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Fabric {
    /// The segment with `nodes` node namespaces, forwarding on in each.
    pub fn new(nodes: usize) -> Result<Fabric, String> {
        let subnet = crate::free_subnet(std::process::id()).map_err(|e| e.to_string())?;
        let base: Ipv4Addr = subnet
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("free subnet {subnet}: not an address"))?;
        let mut f = Fabric {
            fabric: crate::unique_name("pfab"),
            host_link: crate::unique_name("pfh"),
            base,
            nodes: Vec::new(),
        };
        let fab = f.fabric.clone();
        ip(&["netns", "add", &fab])?;
        ip(&["-n", &fab, "link", "set", "lo", "up"])?;
        ip(&["-n", &fab, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &fab, "link", "set", "br0", "up"])?;
        let h = f.host_link.clone();
        ip(&[
            "link", "add", &h, "type", "veth", "peer", "name", "up0", "netns", &fab,
        ])?;
        ip(&["-n", &fab, "link", "set", "up0", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{}/24", f.host_ip()), "dev", &h])?;
        ip(&["link", "set", &h, "up"])?;
        for i in 0..nodes {
            let ns = crate::unique_name("pnode");
            ip(&["netns", "add", &ns])?;
            f.nodes.push(ns.clone());
            let port = format!("n{i}");
            ip(&[
                "-n", &fab, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &fab, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", f.node_ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let out = f
                .command(i, "sysctl")
                .args(["-qw", "net.ipv4.ip_forward=1"])
                .output()
                .map_err(|e| format!("sysctl in {ns}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "sysctl in {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(f)
    }

    /// The host's address on the segment (`.1`).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// Node `i`'s address (`.10 + i`).
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 10 + i as u32)
    }

    /// Node `i`'s namespace, as a path `setns` takes.
    pub fn netns_path(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.nodes[i])
    }

    /// `program` run in node `i`'s network namespace only (the host's
    /// mounts and cgroups stay visible, unlike `ip netns exec`, which
    /// remounts /sys); `nsenter` execs it, so the PID is the program's.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns_path(i).display()))
            .arg("--")
            .arg(program);
        c
    }

    /// In every node but `i`: traffic for `cidr` goes by node `i`.
    pub fn route_to(&self, i: usize, cidr: &str) -> Result<(), String> {
        let via = self.node_ip(i).to_string();
        for (j, ns) in self.nodes.iter().enumerate() {
            if j != i {
                ip(&["-n", ns, "route", "replace", cidr, "via", &via])?;
            }
        }
        Ok(())
    }
}

impl Fabric {
    /// Node `i`'s addresses, routes and forwarding, for a failure message.
    pub fn describe(&self, i: usize) -> String {
        let mut out = format!("node {i} ({}):\n", self.nodes[i]);
        for args in [
            &["ip", "-br", "addr"][..],
            &["ip", "route"],
            &["sysctl", "net.ipv4.ip_forward"],
            &["iptables", "-S", "FORWARD"],
        ] {
            let o = self.command(i, args[0]).args(&args[1..]).output();
            if let Ok(o) = o {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
        }
        out
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.fabric)) {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.host_link]);
    }
}
