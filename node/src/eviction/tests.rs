use super::*;

fn manager(hard: &str, soft: &str, grace: &str, transition: Duration) -> EvictionManager {
    let cfg = EvictionConfig {
        thresholds: thresholds::build(Some(hard), soft, grace).unwrap_or_else(|e| panic!("{e}")),
        transition,
        ..Default::default()
    };
    EvictionManager::new(cfg, "/".into(), SharedPressure::default())
}

fn observed(pairs: &[(Signal, u64, u64)]) -> Observed {
    Observed {
        signals: pairs.iter().map(|&(s, a, c)| (s, (a, c))).collect(),
    }
}

#[test]
fn hard_thresholds_meet_at_once_and_pressure_lasts_the_transition() {
    let m = manager(
        "memory.available<100Mi,nodefs.available<10%",
        "",
        "",
        Duration::from_secs(60),
    );
    let t0 = Instant::now();
    let plenty = observed(&[
        (Signal::MemoryAvailable, 1 << 30, 4 << 30),
        (Signal::NodefsAvailable, 50, 100),
    ]);
    assert!(m.met(&plenty, t0).is_empty());
    m.update_pressure(t0);
    assert_eq!(*lock(&m.pressure), Pressure::default());
    let short = observed(&[
        (Signal::MemoryAvailable, 50 << 20, 4 << 30),
        (Signal::NodefsAvailable, 5, 100),
    ]);
    let met = m.met(&short, t0);
    assert_eq!(met.len(), 2);
    assert_eq!(met[0].signal, Signal::MemoryAvailable, "memory first");
    m.update_pressure(t0);
    let on = Pressure {
        memory: true,
        disk: true,
        pids: false,
    };
    assert_eq!(*lock(&m.pressure), on);
    // Relieved, but within the transition period: still under pressure.
    let later = t0 + Duration::from_secs(30);
    assert!(m.met(&plenty, later).is_empty());
    m.update_pressure(later);
    assert_eq!(*lock(&m.pressure), on);
    m.update_pressure(t0 + Duration::from_secs(61));
    assert_eq!(*lock(&m.pressure), Pressure::default());
}

#[test]
fn soft_thresholds_wait_for_their_grace_period_in_one_spell() {
    let m = manager(
        "",
        "memory.available<1Gi",
        "memory.available=1m",
        Duration::ZERO,
    );
    let t0 = Instant::now();
    let short = observed(&[(Signal::MemoryAvailable, 512 << 20, 4 << 30)]);
    let plenty = observed(&[(Signal::MemoryAvailable, 2 << 30, 4 << 30)]);
    assert!(m.met(&short, t0).is_empty());
    m.update_pressure(t0);
    assert!(
        lock(&m.pressure).memory,
        "the condition does not wait for the grace period"
    );
    assert!(m.met(&short, t0 + Duration::from_secs(59)).is_empty());
    // A recovery restarts the clock.
    assert!(m.met(&plenty, t0 + Duration::from_secs(59)).is_empty());
    assert!(m.met(&short, t0 + Duration::from_secs(70)).is_empty());
    let met = m.met(&short, t0 + Duration::from_secs(131));
    assert_eq!(met.len(), 1);
    assert_eq!(met[0].grace, Some(Duration::from_secs(60)));
}

#[test]
fn the_message_names_resource_threshold_and_use() {
    let th = thresholds::build(Some("allocatableMemory.available<100Mi"), "", "")
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0);
    let u = Usage {
        memory: 300 << 20,
        ..Default::default()
    };
    let msg = message(&th, 1 << 30, 50 << 20, &u, Resource::Memory);
    assert_eq!(
        msg,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
         The pod was using 300Mi, request is 0, has larger consumption of memory."
    );
}

#[test]
fn critical_and_finished_pods_are_no_candidates() {
    let pod = |v: serde_json::Value| -> Pod {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(candidate(&pod(
        serde_json::json!({"metadata": {"uid": "a"}, "spec": {"containers": []}})
    )));
    assert!(!candidate(&pod(serde_json::json!({
        "metadata": {"uid": "b"},
        "spec": {"containers": [], "priority": 2_000_001_000}
    }))));
    assert!(!candidate(&pod(serde_json::json!({
        "metadata": {"uid": "c"},
        "spec": {"containers": []},
        "status": {"phase": "Failed"}
    }))));
}
