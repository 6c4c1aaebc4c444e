//! The pod lifecycle engine through `podctl run`, with real containers:
//! CrashLoopBackOff with growing delays, probes flipping Ready and
//! restarting, init containers in order, a sidecar kept running, preStop
//! before SIGTERM, and the Kubernetes PodStatus of `podctl pods -o json`.

mod common;

use std::time::{Duration, Instant};

use common::podenv::{condition, container, setup, Env};
use k8s_openapi::api::core::v1::Pod;

#[test]
fn crash_loop_backs_off_with_growing_delays() {
    let (_reg, pubd) = setup();
    let env = Env::new(1);
    env.run(
        "crash",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: crash}}\nspec:\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, 'echo boom; exit 3']\n",
            pubd.busybox
        ),
    );
    // When restartCount went up (polled), and whether CrashLoopBackOff showed.
    let mut seen = vec![(0, Instant::now())];
    let mut backoff_seen = false;
    env.until("crash", 90, |p| {
        let c = container(p, "c")?;
        if c.restart_count > seen.last().map(|s| s.0).unwrap_or(0) {
            seen.push((c.restart_count, Instant::now()));
        }
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            if w.reason.as_deref() == Some("CrashLoopBackOff") {
                backoff_seen = true;
                let last = c.last_state.as_ref()?.terminated.as_ref()?;
                assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
            }
        }
        (seen.len() >= 5).then_some(())
    });
    assert!(backoff_seen, "no CrashLoopBackOff while waiting");
    // The engine's own account: no wait for the first restart, then back-off
    // 1 s, 2 s, 4 s, then capped at 4 s. The fourth back-off is recorded
    // when the fourth restart has crashed, which may be after restartCount
    // 4 was seen: wait for it.
    let events_file = env.dir.path().join("run/pods/default_crash/events.jsonl");
    let backoffs = |events: &str| -> Vec<String> {
        events
            .lines()
            .filter(|l| l.contains("\"BackOff\""))
            .filter_map(|l| {
                l.split("Back-off ")
                    .nth(1)?
                    .split('s')
                    .next()
                    .map(str::to_string)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = String::new();
    while Instant::now() < deadline {
        events = std::fs::read_to_string(&events_file).unwrap_or_default();
        if backoffs(&events).len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let delays = backoffs(&events);
    assert!(
        delays.len() >= 4 && delays[..4] == ["1", "2", "4", "4"],
        "{events}"
    );
    // And the waits as seen from outside (polling adds up to a few 100 ms):
    // the first restart is immediate, as the kubelet's; restart n+1 comes at
    // least its back-off after restart n.
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_secs_f64())
        .collect();
    assert!(
        gaps[1] >= 0.8 && gaps[2] >= 1.6 && gaps[3] >= 3.4,
        "{gaps:?}"
    );
    // Growth with a margin above a container start under load (1 s vs 4 s).
    assert!(gaps[3] > gaps[1] + 1.0, "delays did not grow: {gaps:?}");
    let p = env.pod("crash");
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));
}

#[test]
fn probes_flip_ready_and_restart_on_liveness_failure() {
    let (_reg, pubd) = setup();
    let env = Env::new(2);
    env.run(
        "probed",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  containers:
  - name: web
    image: {bb}
    command: [sh, -c, 'mkdir -p /w; sleep 3; echo ok > /w/ready; exec httpd -f -p 8080 -h /w']
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /ready, port: http}}
      periodSeconds: 1
  - name: alive
    image: {bb}
    command: [sh, -c, 'touch /tmp/alive; sleep 4; rm /tmp/alive; exec sleep 1000']
    livenessProbe:
      exec: {{command: [cat, /tmp/alive]}}
      periodSeconds: 1
      failureThreshold: 1
"#,
            bb = pubd.busybox
        ),
    );
    // Not ready until the page exists, then ready.
    let p = env.pod("probed");
    assert_eq!(
        condition(&p, "Ready").map(|c| c.status).as_deref(),
        Some("False")
    );
    assert!(!container(&p, "web").is_some_and(|c| c.ready));
    env.until("probed", 30, |p| {
        container(p, "web").filter(|c| c.ready).map(|_| ())
    });
    // The liveness probe fails once the file is gone: killed and restarted.
    let c = env.until("probed", 40, |p| {
        container(p, "alive")
            .filter(|c| c.restart_count >= 1)
            .cloned()
    });
    let last = c.last_state.and_then(|s| s.terminated).unwrap_or_default();
    assert!(last.exit_code == 137 || last.exit_code == 143, "{last:?}");
    let events =
        std::fs::read_to_string(env.dir.path().join("run/pods/default_probed/events.jsonl"))
            .unwrap_or_default();
    assert!(
        events.contains("\"Unhealthy\"") && events.contains("Liveness probe failed"),
        "{events}"
    );
}

#[test]
fn init_in_order_sidecar_kept_and_prestop_before_sigterm() {
    let (_reg, pubd) = setup();
    let env = Env::new(3);
    env.run(
        "ordered",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: ordered}}
spec:
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: first
    image: {bb}
    command: [sh, -c, 'sleep 1; echo first']
  - name: second
    image: {bb}
    command: [sh, -c, 'echo second']
  - name: helper
    image: {bb}
    restartPolicy: Always
    command: [sh, -c, 'exec sleep 1000']
  containers:
  - name: app
    image: {bb}
    command: [sh, -c, 'trap "echo got-TERM; exit 0" TERM; echo started; while :; do sleep 0.2; done']
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, 'echo in-prestop > /proc/1/fd/1']}}
"#,
            bb = pubd.busybox
        ),
    );
    let p = env.until("ordered", 40, |p| {
        container(p, "app")?.state.as_ref()?.running.as_ref()?;
        Some(p.clone())
    });
    let term = |n: &str| {
        container(&p, n)
            .and_then(|c| c.state.clone())
            .and_then(|s| s.terminated)
            .unwrap_or_else(|| panic!("{n} not terminated"))
    };
    let (first, second) = (term("first"), term("second"));
    assert_eq!((first.exit_code, second.exit_code), (0, 0));
    assert!(
        second.started_at.as_ref().map(|t| t.0) >= first.finished_at.as_ref().map(|t| t.0),
        "second started before first finished: {first:?} {second:?}"
    );
    let started = |n: &str| {
        container(&p, n)
            .and_then(|c| c.state.clone())
            .and_then(|s| s.running)
            .and_then(|r| r.started_at)
            .map(|t| t.0)
    };
    assert!(
        started("helper").is_some() && started("helper") <= started("app"),
        "sidecar after app"
    );
    assert_eq!(
        condition(&p, "Initialized").map(|c| c.status).as_deref(),
        Some("True")
    );
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.clone()).as_deref(),
        Some("Running")
    );
    // Still there a while after the app started.
    std::thread::sleep(Duration::from_secs(2));
    assert!(container(&env.pod("ordered"), "helper")
        .and_then(|c| c.state.clone())
        .and_then(|s| s.running)
        .is_some());

    let (ok, _, err) = env.podctl(&["stop", "ordered"]);
    assert!(ok, "{err}");
    let (_, logs, _) = env.podctl(&["logs", "ordered", "-c", "app"]);
    let pre = logs.find("in-prestop");
    let term_at = logs.find("got-TERM");
    assert!(
        pre.is_some() && term_at.is_some() && pre < term_at,
        "{logs}"
    );
    let p = env.pod("ordered");
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.clone()).as_deref(),
        Some("Succeeded")
    );
    let app = term_app(&p);
    assert_eq!(app, 0);
}

fn term_app(p: &Pod) -> i32 {
    container(p, "app")
        .and_then(|c| c.state.clone())
        .and_then(|s| s.terminated)
        .map(|t| t.exit_code)
        .unwrap_or(-1)
}

#[test]
fn termination_messages_from_the_file_or_the_log() {
    let (_reg, pubd) = setup();
    let env = Env::new(4);
    env.run(
        "msgs",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: msgs}}
spec:
  restartPolicy: Never
  containers:
  - name: file
    image: {bb}
    command: [sh, -c, 'printf done-msg > /dev/termination-log']
  - name: logs
    image: {bb}
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, 'echo last words; echo -n DONE; exit 2']
"#,
            bb = pubd.busybox
        ),
    );
    let p = env.until("msgs", 40, |p| {
        let ph = p.status.as_ref()?.phase.clone()?;
        (ph == "Failed").then(|| p.clone())
    });
    let term = |n: &str| {
        container(&p, n)
            .and_then(|c| c.state.clone())
            .and_then(|s| s.terminated)
            .unwrap_or_default()
    };
    // The first status that shows the exit already carries the message.
    assert_eq!(
        (term("file").exit_code, term("file").message.as_deref()),
        (0, Some("done-msg")),
        "{}",
        serde_json::to_string_pretty(&p).unwrap_or_default()
    );
    let logs = term("logs");
    assert_eq!(logs.exit_code, 2);
    // As the kubelet renders the log: output without a final newline
    // (a partial record) stays without one.
    assert_eq!(logs.message.as_deref(), Some("last words\nDONE"));
    let (ok, out, err) = env.podctl(&["logs", "msgs", "-c", "logs"]);
    assert!(ok, "{err}");
    assert_eq!(out, "last words\nDONE");
    assert_eq!(logs.reason.as_deref(), Some("Error"));
}
