#define _GNU_SOURCE
#include "jank_shim.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <grp.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

// A process started with stdin, stdout or stderr closed (`jank-supervisor <&- >&-`, some
// service managers) would hand those numbers to the first descriptors it opens (libdispatch's
// epoll, before main even runs), and its log lines would then go into them, or a child's
// pipe dup2'ed onto 1 could be overwritten by the one meant for 0. Each closed one is opened
// on /dev/null before main, in every program linking this shim (supervisor, tools, plugins).
__attribute__((constructor)) static void jank_open_missing_standard_descriptors(void) {
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      int opened = open("/dev/null", O_RDWR);
      if (opened >= 0 && opened != fd) close(opened);
    }
  }
}

// Landlock's syscalls and the one struct they take, as the kernel (6.12+) defines them: the
// build machine's headers may predate `scoped`.
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif
#define JANK_LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#define JANK_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define JANK_LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
typedef struct {
  unsigned long long handled_access_fs;
  unsigned long long handled_access_net;
  unsigned long long scoped;
} jank_landlock_ruleset_attr;

int jank_landlock_abi(void) {
  long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, JANK_LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? -errno : (int)abi;
}

// Reported by the child over the error pipe when a step fails.
typedef struct { int step; int err; } child_failure;

static const char *step_names[] = {
  "ok", "setpgid", "prctl(PR_SET_PDEATHSIG)", "parent exited before exec", "dup2",
  "chdir", "setrlimit", "join cgroup", "execve", "prctl(PR_SET_NO_NEW_PRIVS)",
  "setgroups", "setgid", "setuid", "fcntl(F_SETFD)", "landlock_create_ruleset", "landlock_restrict_self",
};

// Only async-signal-safe calls below: the parent is multi-threaded.
static void child_fail(int pipe_fd, int step) {
  child_failure f = { step, errno };
  ssize_t ignored = write(pipe_fd, &f, sizeof f);
  (void)ignored;
  _exit(127);
}

static void child(const jank_spawn_request *r, pid_t parent, int pipe_fd) {
  // Signal state is inherited across exec: start the plugin with defaults.
  sigset_t all;
  sigemptyset(&all);
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
  }
  sigprocmask(SIG_SETMASK, &all, NULL);

  if (r->new_process_group && setpgid(0, 0) != 0) child_fail(pipe_fd, 1);
  // A source may itself be 0, 1 or 2 (a parent started with those closed): each is first
  // moved above 2, so that no dup2 overwrites a source still to be copied, and every copy
  // is a dup2 onto a different number, which clears the source's close-on-exec flag.
  int fds[3] = { r->stdin_fd, r->stdout_fd, r->stderr_fd };
  for (int i = 0; i < 3; i++) {
    if (fds[i] >= 0 && fds[i] < 3 && (fds[i] = fcntl(fds[i], F_DUPFD, 3)) < 0) child_fail(pipe_fd, 4);
  }
  for (int i = 0; i < 3; i++) {
    if (fds[i] >= 0 && dup2(fds[i], i) < 0) child_fail(pipe_fd, 4);
  }
  if (r->cwd && chdir(r->cwd) != 0) child_fail(pipe_fd, 5);
  // The Landlock ruleset (scopes only, no file system rules: the child and all it starts can
  // signal and reach by abstract socket only processes of its own domain) is made before
  // RLIMIT_NOFILE applies, as the supervisor's descriptors are all still open here; it is
  // enforced after no_new_privs.
  long ruleset = -1;
  if (r->confine_signals) {
    jank_landlock_ruleset_attr attr = { 0, 0, JANK_LANDLOCK_SCOPE_SIGNAL | JANK_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET };
    ruleset = syscall(__NR_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (ruleset < 0) child_fail(pipe_fd, 14);
  }
  for (int i = 0; i < r->rlimit_count; i++) {
    struct rlimit lim = { (rlim_t)r->rlimits[i].soft, (rlim_t)r->rlimits[i].hard };
    if (setrlimit(r->rlimits[i].resource, &lim) != 0) child_fail(pipe_fd, 6);
  }
  for (int i = 0; i < r->cgroup_procs_count; i++) {
    if (write(r->cgroup_procs_fds[i], "0", 1) != 1) child_fail(pipe_fd, 7);
  }
  if (r->change_identity) {
    // Groups first: once the uid changed, the privilege to change them is gone.
    if (setgroups(0, NULL) != 0) child_fail(pipe_fd, 10);
    if (setgid(r->gid) != 0) child_fail(pipe_fd, 11);
    if (setuid(r->uid) != 0) child_fail(pipe_fd, 12);
    // Sockets and files it makes are the supervisor's group's too (its socket folder is
    // set-group-ID), so a supervisor that is not root can still connect.
    umask(0007);
  }
  // After the identity change, which clears the parent-death signal.
  if (r->parent_death_signal) {
    if (prctl(PR_SET_PDEATHSIG, r->parent_death_signal) != 0) child_fail(pipe_fd, 2);
    // The parent may have died between fork and prctl: then nobody would signal us.
    if (getppid() != parent) { errno = ESRCH; child_fail(pipe_fd, 3); }
  }
  if (r->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(pipe_fd, 9);
  if (ruleset >= 0) {
    if (syscall(__NR_landlock_restrict_self, (int)ruleset, 0) != 0) child_fail(pipe_fd, 15);
    close((int)ruleset);
  }
  // Nothing of the supervisor's (sockets, other plugins' pipes) may leak into the plugin.
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  if (r->exec_fd >= 0) {
    // A script stays open across exec, as its interpreter reads it from /dev/fd/N; a
    // binary is closed by the exec, so the plugin inherits nothing.
    char magic[2] = { 0, 0 };
    if (pread(r->exec_fd, magic, 2, 0) == 2 && magic[0] == '#' && magic[1] == '!' && fcntl(r->exec_fd, F_SETFD, 0) != 0) {
      child_fail(pipe_fd, 13);
    }
    syscall(SYS_execveat, r->exec_fd, "", r->argv, r->envp, AT_EMPTY_PATH);
  } else {
    execve(r->path, r->argv, r->envp);
  }
  child_fail(pipe_fd, 8);
}

pid_t jank_spawn(const jank_spawn_request *r, const char **failed_step) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    if (failed_step) *failed_step = "pipe2";
    return -errno;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(p[0]);
    close(p[1]);
    if (failed_step) *failed_step = "fork";
    return -err;
  }
  if (pid == 0) {
    close(p[0]);
    child(r, parent, p[1]);
  }
  close(p[1]);
  child_failure f;
  ssize_t n;
  do { n = read(p[0], &f, sizeof f); } while (n < 0 && errno == EINTR);
  close(p[0]);
  if (n == (ssize_t)sizeof f) {
    // The child failed before exec and exits 127; reap it here so it never lingers.
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (failed_step) *failed_step = step_names[f.step];
    return -f.err;
  }
  return pid;
}

int jank_set_parent_death_signal(int sig) {
  return prctl(PR_SET_PDEATHSIG, sig);
}

int jank_get_parent_death_signal(void) {
  int sig = 0;
  if (prctl(PR_GET_PDEATHSIG, &sig) != 0) return -1;
  return sig;
}

int jank_pidfd_open(pid_t pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}

int jank_epoll_create(void) {
  return epoll_create1(EPOLL_CLOEXEC);
}

int jank_epoll_watch_pidfd(int epoll_fd, int pidfd, pid_t pid) {
  struct epoll_event event;
  memset(&event, 0, sizeof event);
  event.events = EPOLLIN;
  event.data.u64 = (unsigned long long)(unsigned int)pid;
  return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, pidfd, &event);
}

int jank_epoll_unwatch(int epoll_fd, int fd) {
  return epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
}

int jank_epoll_wait_pids(int epoll_fd, pid_t *pids, int max) {
  struct epoll_event events[64];
  if (max > 64) max = 64;
  int n;
  do { n = epoll_wait(epoll_fd, events, max, -1); } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (int i = 0; i < n; i++) pids[i] = (pid_t)(unsigned int)events[i].data.u64;
  return n;
}

int jank_pipe_cloexec(int fds[2]) {
  return pipe2(fds, O_CLOEXEC);
}

int jank_accept_cloexec(int fd) {
  return accept4(fd, NULL, NULL, SOCK_CLOEXEC);
}

_Static_assert(sizeof(jank_peer) == sizeof(struct ucred), "jank_peer must be struct ucred's layout");

int jank_peer_credentials(int fd, jank_peer *peer) {
  socklen_t length = sizeof(*peer);
  return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, peer, &length);
}

void jank_name_thread(const char *name) {
  (void)prctl(PR_SET_NAME, name, 0, 0, 0);
}

int jank_eventfd(void) {
  return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void jank_eventfd_signal(int fd) {
  eventfd_write(fd, 1);
}

void jank_eventfd_drain(int fd) {
  eventfd_t count;
  (void)eventfd_read(fd, &count);
}

int jank_spawn_actions_closefrom(void *actions, int from) {
  return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}
