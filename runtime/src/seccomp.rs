//! The default seccomp profile.
//!
//! A deny-list, not Docker's full allow-list: everything is allowed except
//! the syscalls below, which fail with EPERM. They are the ones a default
//! (non-privileged) container never needs and that either act on the whole
//! host (kernel modules, kexec, reboot, swap, clock, accounting, quotas),
//! widen the kernel attack surface (bpf, userfaultfd, perf, keyrings,
//! io_uring) or escape the container's view (open_by_handle_at, mount
//! APIs, namespace creation, ptrace of other processes). Most also need
//! capabilities the default set does not grant; the profile is the second
//! line of defence. Privileged containers get no profile.

use serde_json::{json, Value};

const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// `linux.seccomp` of the default profile.
pub fn default_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                          "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [{
            "names": DENIED,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
        }],
    })
}
