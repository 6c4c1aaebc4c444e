//! The `RuntimeDefault` seccomp profile: an allow-list with the effect of
//! containerd's (and Docker's) default profile.
//!
//! Every syscall not named here fails with EPERM. Allowed are the ones an
//! ordinary program needs (below, by theme), a few only with certain
//! arguments, and some only when the container holds the capability that
//! makes them meaningful (`BY_CAPABILITY`): without CAP_SYS_ADMIN no
//! mount, namespace or BPF calls; without CAP_SYS_MODULE no modules; and
//! so on. Left out entirely are the syscalls that act on the whole host
//! or widen the kernel's attack surface and that no capability of a
//! container should unlock: kexec, swap, keyrings, userfaultfd, io_uring,
//! pivot_root, quotas of the old kind, the old vm86/uselib calls.
//!
//! `ptrace` is allowed, as containerd does on kernels from 4.8 on (older
//! ones let a tracer bypass seccomp): the kernel itself refuses to trace a
//! process of another user without CAP_SYS_PTRACE, and debuggers and
//! `strace` work in containers. The other cross-process calls (`kcmp`,
//! `process_vm_*`, `pidfd_getfd`) need CAP_SYS_PTRACE.
//!
//! Argument filters:
//! - `clone` is allowed only without namespace flags (unless
//!   CAP_SYS_ADMIN): a fork or a thread, not a new namespace.
//! - `clone3` fails with ENOSYS (unless CAP_SYS_ADMIN): its flags are in
//!   memory the filter cannot read, and ENOSYS makes libcs fall back to
//!   `clone`.
//! - `personality` only with the harmless values (PER_LINUX, PER_LINUX32,
//!   either with UNAME26, and the query).
//! - `socket` with any family but AF_VSOCK (the hypervisor channel).
//!
//! Privileged containers get no profile.

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// Files, directories, extended attributes, file-system notifications.
const FILES: &str = "
    access faccessat faccessat2 open openat openat2 creat close close_range
    read readv pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2
    lseek _llseek readahead fadvise64 fadvise64_64 fallocate
    truncate truncate64 ftruncate ftruncate64 fsync fdatasync sync syncfs
    sync_file_range copy_file_range sendfile sendfile64 splice tee vmsplice
    stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx
    statfs statfs64 fstatfs fstatfs64
    chdir fchdir getcwd mkdir mkdirat rmdir mknod mknodat
    link linkat symlink symlinkat unlink unlinkat rename renameat renameat2
    readlink readlinkat getdents getdents64 umask
    chmod fchmod fchmodat chown chown32 fchown fchown32 fchownat lchown lchown32
    utime utimes utimensat utimensat_time64 futimesat
    getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr
    listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr
    dup dup2 dup3 fcntl fcntl64 flock ioctl pipe pipe2
    inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
    io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents
    io_pgetevents_time64
";

/// Waiting for events, timers and clocks (reading, not setting).
const EVENTS_TIME: &str = "
    select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64
    epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old
    epoll_pwait epoll_pwait2 eventfd eventfd2 signalfd signalfd4
    timerfd_create timerfd_settime timerfd_settime64 timerfd_gettime timerfd_gettime64
    timer_create timer_delete timer_settime timer_settime64 timer_gettime
    timer_gettime64 timer_getoverrun alarm getitimer setitimer
    time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64
    clock_nanosleep clock_nanosleep_time64 nanosleep pause
    adjtimex clock_adjtime clock_adjtime64
    futex futex_time64 futex_waitv
";

/// Memory.
const MEMORY: &str = "
    brk mmap mmap2 munmap mremap mprotect madvise mincore msync remap_file_pages
    mlock mlock2 mlockall munlock munlockall membarrier memfd_create memfd_secret
    pkey_alloc pkey_free pkey_mprotect
";

/// Processes, threads, signals, identity, scheduling, limits.
const PROCESSES: &str = "
    execve execveat fork vfork exit exit_group wait4 waitid waitpid
    restart_syscall set_tid_address set_robust_list get_robust_list rseq
    set_thread_area get_thread_area prctl seccomp
    kill tkill tgkill rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending
    rt_sigsuspend rt_sigqueueinfo rt_tgsigqueueinfo rt_sigtimedwait
    rt_sigtimedwait_time64 sigaltstack sigprocmask sigreturn
    pidfd_open pidfd_send_signal process_mrelease ptrace
    getpid getppid gettid getpgid setpgid getpgrp getsid setsid
    getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32
    getresuid getresuid32 getresgid getresgid32 getgroups getgroups32
    setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32
    setresuid setresuid32 setresgid setresgid32 setfsuid setfsuid32
    setfsgid setfsgid32 setgroups setgroups32 capget capset
    getpriority setpriority ioprio_get ioprio_set getcpu
    sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr
    sched_getparam sched_setparam sched_getscheduler sched_setscheduler
    sched_get_priority_max sched_get_priority_min sched_rr_get_interval
    sched_rr_get_interval_time64
    getrlimit ugetrlimit setrlimit prlimit64 getrusage times
    uname sysinfo getrandom
    landlock_create_ruleset landlock_add_rule landlock_restrict_self
";

/// Sockets (`socket` itself is filtered, see `rules`) and System V / POSIX IPC.
const NETWORK_IPC: &str = "
    socketpair socketcall bind listen accept accept4 connect shutdown
    getsockname getpeername getsockopt setsockopt
    send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64
    ipc msgget msgsnd msgrcv msgctl semget semop semtimedop semtimedop_time64
    semctl shmget shmat shmdt shmctl
    mq_open mq_unlink mq_notify mq_getsetattr mq_timedsend mq_timedsend_time64
    mq_timedreceive mq_timedreceive_time64
";

/// Calls only one architecture has.
#[cfg(target_arch = "x86_64")]
const ARCH_SPECIFIC: &str = "arch_prctl modify_ldt";
#[cfg(target_arch = "aarch64")]
const ARCH_SPECIFIC: &str =
    "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_SPECIFIC: &str = "";

/// The ABIs filtered: the native one and the compat ones its kernel runs.
#[cfg(target_arch = "x86_64")]
const ARCHES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
#[cfg(target_arch = "aarch64")]
const ARCHES: &[&str] = &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: &[&str] = &[];

/// Calls a capability unlocks (the kernel still checks the capability).
const BY_CAPABILITY: &[(&str, &str)] = &[
    (
        "CAP_SYS_ADMIN",
        "clone clone3 unshare setns mount umount umount2 mount_setattr move_mount
         open_tree fsopen fsconfig fsmount fspick name_to_handle_at fanotify_init
         bpf perf_event_open lookup_dcookie quotactl quotactl_fd syslog
         sethostname setdomainname",
    ),
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "init_module finit_module delete_module"),
    ("CAP_SYS_PACCT", "acct"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev",
    ),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    (
        "CAP_SYS_TIME",
        "settimeofday stime clock_settime clock_settime64",
    ),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    (
        "CAP_SYS_NICE",
        "get_mempolicy set_mempolicy set_mempolicy_home_node mbind",
    ),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// The namespace flags `clone` may not carry without CAP_SYS_ADMIN.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `personality` values allowed: PER_LINUX, PER_LINUX32, PER_LINUX with
/// UNAME26, PER_LINUX32 with UNAME26, and 0xffffffff (query only).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The syscalls allowed without condition for a container holding `caps`
/// (names as `CAP_X`), sorted.
pub fn allowed(caps: &[String]) -> BTreeSet<&'static str> {
    let mut names: BTreeSet<&'static str> = [
        FILES,
        EVENTS_TIME,
        MEMORY,
        PROCESSES,
        NETWORK_IPC,
        ARCH_SPECIFIC,
    ]
    .iter()
    .flat_map(|s| s.split_whitespace())
    .collect();
    for (cap, calls) in BY_CAPABILITY {
        if caps.iter().any(|c| c == cap) {
            names.extend(calls.split_whitespace());
        }
    }
    names
}

fn arg(index: u32, value: u64, op: &str) -> Value {
    json!({"index": index, "value": value, "op": op})
}

/// `linux.seccomp` of the default profile for a container holding `caps`.
/// Written in the OCI form (for a masked comparison `value` is the mask,
/// `valueTwo` what the masked argument must equal); see [`for_libcontainer`].
pub fn default_profile(caps: &[String]) -> Value {
    let admin = caps.iter().any(|c| c == "CAP_SYS_ADMIN");
    let mut rules = vec![json!({
        "names": allowed(caps).into_iter().collect::<Vec<_>>(),
        "action": "SCMP_ACT_ALLOW",
    })];
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [arg(0, libc::AF_VSOCK as u64, "SCMP_CMP_NE")],
    }));
    for p in PERSONALITIES {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [arg(0, *p, "SCMP_CMP_EQ")],
        }));
    }
    if !admin {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0,
                      "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        rules.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ARCHES,
        "syscalls": rules,
    })
}

/// Rewrite an OCI profile for libcontainer 0.7, which reads a masked
/// comparison the other way round from the runtime spec (and runc): it
/// takes `valueTwo` as the mask and `value` as the expected result. The
/// two are swapped in every `SCMP_CMP_MASKED_EQ` argument so that a
/// profile means what the spec says. Without this the `clone` rule above
/// would let every flag through (libseccomp masks the expected value with
/// the mask, 0 here): the seccomp integration test sees
/// `clone(CLONE_NEWUSER)` succeed.
pub fn for_libcontainer(profile: &mut Value) {
    let Some(rules) = profile.get_mut("syscalls").and_then(Value::as_array_mut) else {
        return;
    };
    for rule in rules {
        let Some(args) = rule.get_mut("args").and_then(Value::as_array_mut) else {
            continue;
        };
        for a in args {
            if a.get("op").and_then(Value::as_str) != Some("SCMP_CMP_MASKED_EQ") {
                continue;
            }
            if let Some(o) = a.as_object_mut() {
                let value = o.remove("value").unwrap_or(json!(0));
                let two = o.remove("valueTwo").unwrap_or(json!(0));
                o.insert("value".into(), two);
                o.insert("valueTwo".into(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    fn rules_for<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
        p["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == name))
            })
            .collect()
    }

    #[test]
    fn default_caps_allow_ordinary_calls_only() {
        let a = allowed(&caps(crate::spec::DEFAULT_CAPS));
        for n in ["read", "write", "futex", "getpid", "execve", "chroot"] {
            assert!(a.contains(n), "{n}");
        }
        for n in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "keyctl",
            "add_key",
            "kexec_load",
            "reboot",
            "init_module",
            "acct",
            "swapon",
            "pivot_root",
            "userfaultfd",
            "io_uring_setup",
            "settimeofday",
            "syslog",
            "socket",
            "personality",
            "clone",
            "clone3",
        ] {
            assert!(!a.contains(n), "{n}");
        }
    }

    #[test]
    fn capabilities_unlock_their_calls() {
        let a = allowed(&caps(&["CAP_SYS_ADMIN", "CAP_SYS_TIME", "CAP_SYS_MODULE"]));
        for n in [
            "mount",
            "umount2",
            "unshare",
            "clone",
            "clone3",
            "settimeofday",
        ] {
            assert!(a.contains(n), "{n}");
        }
        assert!(a.contains("init_module") && !a.contains("reboot"));
    }

    #[test]
    fn clone_filters_depend_on_sys_admin() {
        let p = default_profile(&caps(&["CAP_CHOWN"]));
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["value"], 0x7E02_0000u64);
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3[0]["errnoRet"], libc::ENOSYS);
        assert_eq!(rules_for(&p, "personality").len(), 5);

        let p = default_profile(&caps(&["CAP_SYS_ADMIN"]));
        for n in ["clone", "clone3"] {
            let r = rules_for(&p, n);
            assert_eq!(r.len(), 1, "{n}");
            assert!(r[0].get("args").is_none() && r[0]["action"] == "SCMP_ACT_ALLOW");
        }
    }

    #[test]
    fn profile_is_a_valid_oci_section() {
        let mut p = default_profile(&caps(&["CAP_KILL"]));
        for_libcontainer(&mut p);
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p.clone()).unwrap();
        assert!(s.syscalls().as_ref().is_some_and(|r| r.len() > 5));
        let clone = rules_for(&p, "clone");
        assert_eq!(clone[0]["args"][0]["value"], 0);
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0x7E02_0000u64);
    }
}
