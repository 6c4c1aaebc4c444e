//! AppArmor through the CRI, where the kernel has it (the VM of
//! `tests/vm` runs it; elsewhere it is ignored, and says it skipped when
//! run on a host without AppArmor): a
//! container runs under podctl's default profile unless it asks
//! otherwise (unconfined when privileged), under a profile the node has
//! loaded when it names one — which the kernel then enforces — and a
//! profile the node lacks is refused at CreateContainer, naming it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{
    block_on, channel, container_config, exec_sh, ok, pull, registry_and_daemon, run_container,
    run_sandbox, sandbox_config,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_runtime::apparmor::{host_supports, DEFAULT_PROFILE};

const DENY_TMP: &str = "podctl-test-deny-tmp-write";

fn load_test_profile() {
    let text = format!(
        "#include <tunables/global>\n\
         profile {DENY_TMP} flags=(attach_disconnected) {{\n\
           #include <abstractions/base>\n\
           file,\n\
           deny /tmp/** w,\n\
         }}\n"
    );
    let mut child = ok(Command::new("apparmor_parser")
        .args(["-r"])
        .stdin(Stdio::piped())
        .spawn());
    if let Some(mut i) = child.stdin.take() {
        ok(i.write_all(text.as_bytes()));
    }
    let st = ok(child.wait());
    assert!(st.success(), "apparmor_parser failed on the test profile");
}

#[test]
#[ignore = "VM only: AppArmor enabled (tests/vm)"]
fn containers_run_under_the_profile_they_ask_for() {
    if !host_supports() {
        eprintln!(
            "apparmor: SKIPPED — AppArmor is not enabled here or apparmor_parser is missing \
             (the VM of tests/vm has both)"
        );
        return;
    }
    load_test_profile();
    let (reg, pubd, daemon) = registry_and_daemon();
    block_on(async {
        let ch = channel(&daemon.socket).await;
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let mut img = ImageServiceClient::new(ch);
        let busybox = pull(&mut img, &pubd.busybox).await;
        let logs = daemon.dir.path().join("logs");
        let pod = sandbox_config("aa", 0, &logs);
        let sb = run_sandbox(&mut rt, &pod).await;

        let script = "cat /proc/self/attr/current; touch /tmp/x && echo wrote; \
                      mkdir -p /mnt/t && mount -t tmpfs none /mnt/t 2>/dev/null && echo mounted; \
                      echo done; sleep 3600";
        let profile = |t: proto::security_profile::ProfileType, r: &str| proto::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        };
        use proto::security_profile::ProfileType::*;
        let cases: Vec<(&str, Option<proto::SecurityProfile>, bool, &str)> = vec![
            ("unasked", None, false, DEFAULT_PROFILE),
            (
                "default",
                Some(profile(RuntimeDefault, "")),
                false,
                DEFAULT_PROFILE,
            ),
            ("privileged", None, true, "unconfined"),
            (
                "unconfined",
                Some(profile(Unconfined, "")),
                false,
                "unconfined",
            ),
            ("named", Some(profile(Localhost, DENY_TMP)), false, DENY_TMP),
        ];
        for (name, aa, privileged, want) in cases {
            let mut c = container_config(name, &busybox, script);
            c.linux = Some(proto::LinuxContainerConfig {
                security_context: Some(proto::LinuxContainerSecurityContext {
                    apparmor: aa,
                    privileged,
                    capabilities: Some(proto::Capability {
                        add_capabilities: vec!["SYS_ADMIN".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let id = run_container(&mut rt, &sb, &pod, c).await;
            let log = common::read_log(
                &logs.join(format!("{name}/0.log")).display().to_string(),
                "done",
            );
            assert!(log.contains("done"), "{name}: {log}");
            // The container's process and an exec'd one alike.
            let (_, out) = exec_sh(
                &mut rt,
                &id,
                "cat /proc/1/attr/current /proc/self/attr/current",
            )
            .await;
            let labels: Vec<&str> = out.lines().collect();
            assert_eq!(labels.len(), 2, "{name}: {out:?}");
            for l in labels {
                assert!(
                    l.starts_with(want),
                    "{name}: confined by {out:?}, want {want}"
                );
            }
            // What the profile allows: podctl's default refuses mounts even
            // with CAP_SYS_ADMIN; the test profile refuses writes in /tmp.
            match name {
                "named" => assert!(!log.contains("wrote"), "{name}: {log}"),
                "privileged" | "unconfined" => assert!(log.contains("mounted"), "{name}: {log}"),
                _ => assert!(
                    log.contains("wrote") && !log.contains("mounted"),
                    "{name}: {log}"
                ),
            }
        }

        // A profile the node has not loaded: refused, named.
        let mut c = container_config("missing", &busybox, "true");
        c.linux = Some(proto::LinuxContainerConfig {
            security_context: Some(proto::LinuxContainerSecurityContext {
                apparmor: Some(profile(Localhost, "localhost/podctl-no-such-profile")),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = rt
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(c),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .expect_err("a container with an unloaded profile was created");
        assert!(
            e.message()
                .contains("AppArmor profile localhost/podctl-no-such-profile"),
            "{e}"
        );
        common::stop_and_remove_sandbox(&mut rt, sb).await;
    });
    drop(daemon);
    drop(reg);
}
