//! Fuzz target of the Pod manifests `podctl run` reads (see
//! `podctl_tests::fuzz`; seeds in `tests/fuzz/pod_yaml/`): any YAML is
//! refused with an error or read into Pods whose conversion to CRI
//! requests fails or succeeds, never panics.

use podctl_tests::fuzz;

#[test]
fn fuzz_pod_yaml() {
    let tokens: &[&[u8]] = &[
        b"\n---\n",
        b"apiVersion: v1\nkind: Pod\n",
        b"containers:\n- name: a\n  image: busybox\n",
        b"volumeMounts: [{name: v, mountPath: /v, subPath: ../x}]",
        b"defaultMode: 0644",
        b"{",
        b"&a [*a, *a]",
        b": !!binary",
    ];
    let dir = std::env::temp_dir().join(format!("podctl-fuzz-pod-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("pod.yaml");
    fuzz::run("pod_yaml", 5_000, tokens, |b| {
        std::fs::write(&file, b).unwrap_or_else(|e| panic!("{e}"));
        let Ok((pods, _sources)) = crate::manifest::read(&file) else {
            return;
        };
        for pod in pods {
            let Ok((name, ns, uid)) = podctl_node::convert::identity(&pod) else {
                continue;
            };
            let _ = podctl_node::convert::sandbox_config(&pod, &name, &ns, &uid, &dir);
            for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                let _ = podctl_node::convert::container_config(c, "busybox");
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
