//! `podctl node --rotate-certificates` against a stock control plane whose
//! signer issues 2-minute node certificates: the node renews its client
//! certificate by a CSR approved as `selfnodeclient`, rewrites its
//! kubeconfig to the new pair, and stays Ready — its Lease renewed — after
//! the first certificate has expired.
//!
//! Skipped (with a message) unless the Kubernetes binaries are found, as
//! the node agent test.

use std::time::{Duration, Instant};

use podctl_tests::cluster::{
    cleanup_for, free_port, node_command, node_config, skip_without_binaries, Cluster,
    AUTORENEW_RBAC, BOOTSTRAP_RBAC, BOOTSTRAP_TOKEN,
};
use podctl_tests::fixtures::publish;
use podctl_tests::pki::{client_cert_of as cert_of, serial_and_end};
use podctl_tests::registry::Registry;

const NODE: &str = "podctl-rotate-node";

#[test]
fn the_node_renews_its_client_certificate_before_it_expires() {
    if skip_without_binaries("rotation") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let cleanup = cleanup_for(d);
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::start_with(d, &["--cluster-signing-duration=2m"]);
    // Bootstrap tokens may ask for node client certificates, nodes may
    // renew their own (kubeadm's bindings).
    c.apply(BOOTSTRAP_RBAC);
    c.apply(AUTORENEW_RBAC);
    let boot = c
        .pki
        .token_kubeconfig("bootstrap-rotate", &c.server, BOOTSTRAP_TOKEN);
    let kubeconfig = d.join("node.kubeconfig");
    let (scrt, skey) = c.pki.cert("rotate-serving", &format!("/CN={NODE}"), true);
    let (config, _) = node_config(d, &pubd.host, &cleanup);
    let mut cmd = node_command(&config, &kubeconfig, NODE, free_port(), (&scrt, &skey));
    cmd.arg("--bootstrap-kubeconfig")
        .arg(&boot)
        .arg("--cert-dir")
        .arg(d.join("pki"))
        .arg("--rotate-certificates")
        .args(["--node-status-update-frequency", "2"])
        .arg(podctl_tests::cluster::TEST_EVICTION_HARD);
    c.procs.spawn("podctl-node", d, &mut cmd);
    c.wait("Node Ready", 120, || c.node_ready(NODE));
    let first = cert_of(&kubeconfig);
    let (serial1, end1) = serial_and_end(&first);
    assert!(!serial1.is_empty(), "no certificate at {}", first.display());
    let started = Instant::now();
    println!(
        "check: bootstrapped with a 2-minute certificate (serial {serial1}, until {end1}): ok"
    );

    let (serial2, end2) = c.wait_renewed(NODE, &kubeconfig, (&first, &serial1), 150);
    assert!(
        !first.exists(),
        "the old certificate file stays: {}",
        first.display()
    );
    println!(
        "check: renewed after {:?} by its own CSR (serial {serial2}, until {end2}), old files removed: ok",
        started.elapsed()
    );

    // Past the first certificate's end, the node still talks to the API
    // server: its Lease keeps being renewed.
    c.check_alive_past(NODE, started, Duration::from_secs(125));
    println!("check: Lease renewed and Node Ready after the first certificate expired: ok");
    drop(c);
    drop(cleanup);
}
