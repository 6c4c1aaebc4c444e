//! `hostUsers: false` through `podctl run`: each such pod gets a block of
//! 65536 host IDs of its own (kept in its pod directory, freed with it),
//! its containers' root is the block's first ID on the host, and the
//! image's files and the pod's volumes are root's inside through
//! idmapped mounts (emptyDir, ConfigMap, Secret); a pod without it stays
//! in the host's user namespace.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::podenv::{setup, Env};

fn pod(name: &str, busybox: &str, host_users: Option<bool>) -> String {
    let host_users = host_users
        .map(|b| format!("  hostUsers: {b}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}-settings}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
{host_users}  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {busybox}
    command: [sleep, '1000']
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: settings, mountPath: /settings}}
    - {{name: creds, mountPath: /creds}}
  volumes:
  - name: data
    emptyDir: {{}}
  - name: settings
    configMap: {{name: {name}-settings}}
  - name: creds
    secret: {{secretName: {name}-creds, defaultMode: 0400}}
"#
    )
}

/// The pod's user namespace map as its container sees it.
fn uid_map(env: &Env, name: &str) -> Vec<u64> {
    let (ok, out, err) = env.podctl(&["exec", name, "--", "cat", "/proc/self/uid_map"]);
    assert!(ok, "{out}{err}");
    out.split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|e| panic!("{e}: {out}")))
        .collect()
}

#[test]
fn host_users_false_gives_each_pod_its_own_id_range() {
    let (reg, pubd) = setup();
    let env = Env::new(33);
    // The pods' root users mount their rootfs below the state directory.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711))
        .unwrap_or_else(|e| panic!("{e}"));
    env.run("mapped", &pod("mapped", &pubd.busybox, Some(false)));
    env.run("mapped2", &pod("mapped2", &pubd.busybox, Some(false)));
    env.run("plain", &pod("plain", &pubd.busybox, None));

    let a = uid_map(&env, "mapped");
    let b = uid_map(&env, "mapped2");
    for m in [&a, &b] {
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!((m[0], m[2]), (0, 65536), "{m:?}");
        assert!(m[1] >= 64 << 20 && m[1] % 65536 == 0, "{m:?}");
    }
    assert_ne!(a[1], b[1], "two pods share a range");
    assert_eq!(uid_map(&env, "plain"), vec![0, 0, 4294967295]);

    // Inside: root, owning the image's files, its /etc files, its
    // emptyDir (which it can write) and its ConfigMap and Secret (the
    // Secret's file readable by its owner only: by it).
    let (ok, out, err) = env.podctl(&[
        "exec",
        "mapped",
        "--",
        "sh",
        "-c",
        "id -u; echo hi > /data/f && stat -c '%n %u' / /bin/sh /etc/hosts /data /data/f \
         /settings/greeting /creds/password; cat /settings/greeting /creds/password",
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        out,
        "0\n/ 0\n/bin/sh 0\n/etc/hosts 0\n/data 0\n/data/f 0\n\
         /settings/greeting 0\n/creds/password 0\nhellos3cret",
        "{err}"
    );

    // Outside: the range is recorded in the pod's directory; the
    // container's processes run as its first ID.
    let records: Vec<_> = walk(&env.dir.path().join("var"))
        .into_iter()
        .filter(|p| p.ends_with("userns"))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let owners: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .any(|l| l.starts_with("Name:") && l.ends_with("sleep"))
        })
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
        })
        .collect();
    assert!(
        owners.contains(&a[1].to_string()) && owners.contains(&b[1].to_string()),
        "no sleep process runs as {} and {}: {owners:?}",
        a[1],
        b[1]
    );

    // Removed pods take their ranges and their mounts with them.
    for name in ["mapped", "mapped2", "plain"] {
        let (ok, out, err) = env.podctl(&["rm", "--timeout", "0", name]);
        assert!(ok, "{out}{err}");
    }
    let left: Vec<_> = walk(&env.dir.path().join("var"))
        .into_iter()
        .filter(|p| p.ends_with("userns"))
        .collect();
    assert_eq!(left, Vec::<std::path::PathBuf>::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !podctl_tests::mounts_under(env.dir.path()).is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        podctl_tests::mounts_under(env.dir.path()),
        Vec::<String>::new()
    );
    drop(reg);
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
