/* Seccomp probe for runtime/tests/seccomp.rs, built with `gcc -static`.
 *
 * Each argument names a probe; each runs in a child process of its own
 * (so one that succeeds, e.g. unshare, cannot change the next) and prints
 * "<name> <errno>", 0 when the call succeeded. Arguments are chosen so
 * that an allowed call does not harm the container. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sched.h>

/* A raw clone with `flags` (no new stack: the child returns like fork). */
static long raw_clone(unsigned long flags)
{
	long r = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	return r;
}

/* PTRACE_ATTACH to a child that switched to another user. */
static long ptrace_other(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (setresuid(65534, 65534, 65534) != 0)
			_exit(1);
		pause();
		_exit(0);
	}
	usleep(200000);
	long r = ptrace(PTRACE_ATTACH, pid, 0, 0);
	int saved = errno;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	errno = saved;
	return r;
}

static long probe(const char *n)
{
	int fds[2];
	if (!strcmp(n, "getpid"))
		return syscall(SYS_getpid);
	if (!strcmp(n, "read"))
		return syscall(SYS_read, -1, NULL, 0);
	if (!strcmp(n, "write"))
		return syscall(SYS_write, 1, "", 0);
	if (!strcmp(n, "futex"))
		return syscall(SYS_futex, &fds[0], 1 /* FUTEX_WAKE */, 1, NULL, NULL, 0);
	if (!strcmp(n, "pipe2"))
		return syscall(SYS_pipe2, fds, 0);
	if (!strcmp(n, "fork"))
		return raw_clone(0);
	if (!strcmp(n, "clone_newns"))
		return raw_clone(CLONE_NEWNS);
	if (!strcmp(n, "clone_newuser"))
		return raw_clone(CLONE_NEWUSER);
	if (!strcmp(n, "clone3"))
		return syscall(SYS_clone3, NULL, 0);
	if (!strcmp(n, "unshare_user"))
		return syscall(SYS_unshare, CLONE_NEWUSER);
	if (!strcmp(n, "unshare_ns"))
		return syscall(SYS_unshare, CLONE_NEWNS);
	if (!strcmp(n, "setns"))
		return syscall(SYS_setns, -1, 0);
	if (!strcmp(n, "mount"))
		return syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL);
	if (!strcmp(n, "umount2"))
		return syscall(SYS_umount2, "/nonexistent", 0);
	if (!strcmp(n, "pivot_root"))
		return syscall(SYS_pivot_root, "/nonexistent", "/nonexistent");
	if (!strcmp(n, "open_by_handle_at"))
		return syscall(SYS_open_by_handle_at, -1, NULL, 0);
	if (!strcmp(n, "keyctl"))
		return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0);
	if (!strcmp(n, "add_key"))
		return syscall(SYS_add_key, "user", "probe", "x", 1, -2);
	if (!strcmp(n, "request_key"))
		return syscall(SYS_request_key, "user", "probe-none", NULL, 0);
	if (!strcmp(n, "ptrace_other"))
		return ptrace_other();
	if (!strcmp(n, "bpf"))
		return syscall(SYS_bpf, 0, NULL, 0);
	if (!strcmp(n, "perf_event_open"))
		return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
	if (!strcmp(n, "kexec_load"))
		return syscall(SYS_kexec_load, 0, 0, NULL, 0);
	if (!strcmp(n, "init_module"))
		return syscall(SYS_init_module, NULL, 0, "");
	if (!strcmp(n, "delete_module"))
		return syscall(SYS_delete_module, "probe_none", 0);
	if (!strcmp(n, "reboot"))
		return syscall(SYS_reboot, 0, 0, 0, NULL); /* bad magic: EINVAL */
	if (!strcmp(n, "settimeofday"))
		return syscall(SYS_settimeofday, NULL, NULL);
	if (!strcmp(n, "clock_settime"))
		return syscall(SYS_clock_settime, 0, NULL);
	if (!strcmp(n, "swapon"))
		return syscall(SYS_swapon, "/nonexistent", 0);
	if (!strcmp(n, "acct"))
		return syscall(SYS_acct, "/nonexistent/acct");
	if (!strcmp(n, "userfaultfd"))
		return syscall(SYS_userfaultfd, 0);
	if (!strcmp(n, "lookup_dcookie"))
		return syscall(SYS_lookup_dcookie, 0, NULL, 0);
	if (!strcmp(n, "syslog"))
		return syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0);
	if (!strcmp(n, "io_uring_setup"))
		return syscall(SYS_io_uring_setup, 1, NULL);
	if (!strcmp(n, "personality_bad"))
		return syscall(SYS_personality, 0x0040000);
	if (!strcmp(n, "personality_linux"))
		return syscall(SYS_personality, 0);
	if (!strcmp(n, "personality_query"))
		return syscall(SYS_personality, 0xffffffff);
	if (!strcmp(n, "socket_vsock"))
		return syscall(SYS_socket, 40 /* AF_VSOCK */, SOCK_STREAM, 0);
	if (!strcmp(n, "socket_inet"))
		return syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
	if (!strcmp(n, "sethostname"))
		return syscall(SYS_sethostname, "probe", 5);
	if (!strcmp(n, "chroot"))
		return syscall(SYS_chroot, "/");
	if (!strcmp(n, "kcmp"))
		return syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 0, 0);
	if (!strcmp(n, "mbind"))
		return syscall(SYS_mbind, NULL, 0, 0, NULL, 0, 0);
	errno = ENOTSUP;
	return -2;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		int p[2];
		if (pipe(p) != 0)
			return 2;
		pid_t pid = fork();
		if (pid < 0)
			return 3;
		if (pid == 0) {
			close(p[0]);
			errno = 0;
			long r = probe(argv[i]);
			int e = r == -2 ? -1 : (r < 0 ? errno : 0);
			if (write(p[1], &e, sizeof e) != sizeof e)
				_exit(4);
			_exit(0);
		}
		close(p[1]);
		int e = -2;
		ssize_t got = read(p[0], &e, sizeof e);
		close(p[0]);
		waitpid(pid, NULL, 0);
		printf("%s %d\n", argv[i], got == sizeof e ? e : -3);
	}
	return 0;
}
