//! An ordinary database under the default seccomp profile: Debian's
//! PostgreSQL (the host's binaries, copied into a busybox rootfs with the
//! libraries they load) initialises a cluster, starts, and answers a query
//! in a container running as an ordinary user with RuntimeDefault and the
//! default capabilities — no syscall it needs is refused. Skipped, saying
//! so, where PostgreSQL is not installed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use podctl_runtime::{ContainerConfig, ContainerState, Seccomp, Security};

const PG: &str = "/usr/lib/postgresql/15";

/// Copy the directory tree `src` into `root` at the same path.
fn copy_tree(root: &Path, src: &Path) {
    let dest = root.join(src.strip_prefix("/").unwrap_or(src));
    ok(std::fs::create_dir_all(&dest), "mkdir");
    for e in ok(std::fs::read_dir(src), "read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(root, &p);
        } else if p.is_file() {
            ok(std::fs::copy(&p, dest.join(e.file_name())), "copy");
        }
    }
}

#[test]
fn postgres_runs_under_the_default_profile() {
    if !Path::new(PG).join("bin/postgres").exists() {
        eprintln!("skipped: no {PG}/bin/postgres (Debian's postgresql-15)");
        return;
    }
    let dir = ok(tempfile::tempdir(), "tempdir");
    let root = busybox_rootfs(dir.path());
    for b in ["initdb", "postgres", "psql"] {
        host_binary(&root, &format!("{PG}/bin/{b}"));
    }
    for l in ["plpgsql.so", "dict_snowball.so"] {
        host_binary(&root, &format!("{PG}/lib/{l}"));
    }
    copy_tree(&root, Path::new("/usr/share/postgresql/15"));
    ok(
        std::fs::create_dir_all(root.join("usr/share/zoneinfo")),
        "tz",
    );
    ok(
        std::fs::copy(
            "/usr/share/zoneinfo/UTC",
            root.join("usr/share/zoneinfo/UTC"),
        ),
        "UTC",
    );
    use std::os::unix::fs::PermissionsExt;
    ok(
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)),
        "chmod /tmp",
    );
    let passwd = root.join("etc/passwd");
    let mut text = ok(std::fs::read_to_string(&passwd), "passwd");
    text.push_str("postgres:x:999:999::/var/lib/postgresql:/bin/sh\n");
    ok(std::fs::write(&passwd, text), "passwd");
    let group = root.join("etc/group");
    let mut text = ok(std::fs::read_to_string(&group), "group");
    text.push_str("postgres:x:999:\n");
    ok(std::fs::write(&group, text), "group");

    let script = "set -e; cd /tmp; \
        initdb -D /tmp/db -U pg --auth=trust --locale=C -E UTF8 > /tmp/initdb.log 2>&1 \
          || { cat /tmp/initdb.log; exit 1; }; \
        postgres -D /tmp/db -k /tmp -c listen_addresses= > /tmp/pg.log 2>&1 & \
        for i in $(seq 100); do \
          psql -h /tmp -U pg -d postgres -Atc 'select 1' > /dev/null 2>&1 && break; sleep 0.2; \
        done; \
        psql -h /tmp -U pg -d postgres -Atc \
          'create table t (x int); insert into t values (21); select x * 2 from t' \
          || { cat /tmp/pg.log; exit 1; }; \
        kill -INT %1; wait";
    let logs = dir.path().join("logs");
    let cg = cgroup_parent("seccomp-postgres");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    let cfg = ContainerConfig {
        name: "postgres".into(),
        image: "postgres".into(),
        lower_dirs: vec![root.clone()],
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            format!("PATH={PG}/bin:/bin:/usr/bin:/sbin:/usr/sbin"),
            "TZ=UTC".into(),
        ],
        user: "postgres".into(),
        hostname: "db".into(),
        log_path: logs.join("postgres.log"),
        security: Security {
            seccomp: Seccomp::RuntimeDefault,
            ..Default::default()
        },
        ..Default::default()
    };
    let log = cfg.log_path.clone();
    let id = ok(rt.create(cfg), "create");
    ok(rt.start_container(&id), "start");
    let st = ok(rt.wait_container(&id, Duration::from_secs(120)), "wait");
    let lines: Vec<String> = parse_log(&log).into_iter().map(|l| l.3).collect();
    assert_eq!(st.state, ContainerState::Exited, "{lines:?}");
    assert_eq!(st.exit_code, Some(0), "{lines:?}");
    assert!(lines.iter().any(|l| l == "42"), "{lines:?}");
    ok(rt.remove_container(&id), "remove");
}
