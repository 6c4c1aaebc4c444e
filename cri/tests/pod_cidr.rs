//! UpdateRuntimeConfig's pod CIDR renders `[cni] conf_template` into the
//! CNI configuration, as containerd's template: pods then get addresses in
//! that range; a malformed CIDR is refused and changes nothing.

mod common;

use common::{
    block_on, channel, ok, run_sandbox, sandbox_config, start_daemon_with_cni_template,
    stop_and_remove_sandbox,
};
use podctl_cri::proto;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

fn update(cidr: &str) -> proto::UpdateRuntimeConfigRequest {
    proto::UpdateRuntimeConfigRequest {
        runtime_config: Some(proto::RuntimeConfig {
            network_config: Some(proto::NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    }
}

#[test]
fn the_pod_cidr_renders_the_cni_template() {
    let reg = ok(Registry::start());
    let pubd = ok(publish(&reg, None));
    let daemon = start_daemon_with_cni_template(&pubd);
    block_on(async {
        let mut rt = RuntimeServiceClient::new(channel(&daemon.socket).await);
        // The upper half of the test's free /24.
        let cidr = format!("{}.128/25", daemon.subnet);
        ok(rt.update_runtime_config(update(&cidr)).await);
        let rendered = daemon.dir.path().join("cni/10-podctl-net.conflist");
        let text = ok(std::fs::read_to_string(&rendered));
        assert!(text.contains(&cidr), "{text}");
        let bad = rt.update_runtime_config(update("10.1.2.3")).await;
        assert_eq!(
            bad.err().map(|e| e.code()),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(ok(std::fs::read_to_string(&rendered)), text, "kept");

        let logs = daemon.dir.path().join("logs");
        let sb = run_sandbox(&mut rt, &sandbox_config("cidr", 0, &logs)).await;
        let st = ok(rt
            .pod_sandbox_status(proto::PodSandboxStatusRequest {
                pod_sandbox_id: sb.clone(),
                verbose: false,
            })
            .await)
        .into_inner();
        let ip = st.status.and_then(|s| s.network).unwrap_or_default().ip;
        let last: u32 = ip
            .strip_prefix(&format!("{}.", daemon.subnet))
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        assert!(last > 128, "pod IP {ip} outside {cidr}");
        stop_and_remove_sandbox(&mut rt, sb).await;
    });
}
