// What must happen between fork and exec, and syscalls Swift cannot call directly.
#ifndef JANK_SHIM_H
#define JANK_SHIM_H

#include <sys/types.h>

typedef struct {
  int resource;                 // RLIMIT_* value
  unsigned long long soft;      // RLIM_INFINITY for unlimited
  unsigned long long hard;
} jank_rlimit;

typedef struct {
  const char *path;             // absolute path of the executable
  int exec_fd;                  // or -1; else the executable, open (close-on-exec) by the
                                // caller, run with execveat(AT_EMPTY_PATH): what was checked
                                // is what runs, and the new uid needs no path to it
  char *const *argv;            // NULL-terminated
  char *const *envp;            // NULL-terminated
  const char *cwd;              // working directory, or NULL
  int stdin_fd, stdout_fd, stderr_fd;  // dup2'ed onto 0, 1, 2 (-1: /dev/null is the caller's job)
  int new_process_group;        // setpgid(0, 0)
  int parent_death_signal;      // PR_SET_PDEATHSIG, 0 for none
  int no_new_privileges;        // PR_SET_NO_NEW_PRIVS: no setuid binary or file capability
                                // raises what the child (or anything it runs) may do
  int change_identity;          // setgroups(0), setgid(gid), setuid(uid) after the limits and
  uid_t uid;                    // the cgroup (which need the supervisor's privileges)
  gid_t gid;
  int confine_signals;           // a Landlock domain of its own (ABI 6+, after no_new_privs):
                                // no signal, ptrace or abstract Unix socket connection to a
                                // process outside it (the supervisor, a sibling plugin)
  const jank_rlimit *rlimits;
  int rlimit_count;
  const int *cgroup_procs_fds;  // open cgroup.procs files to join before exec (one per v1
  int cgroup_procs_count;       // hierarchy, or one for v2)
} jank_spawn_request;

// Forks and execs. Returns the child's pid, or -errno if the child could not exec
// (the child's errno is reported through a close-on-exec pipe, so a bad path or a
// failed setrlimit is an error here, not a mysterious exit).
// `failed_step` (may be NULL) receives a short name of the step that failed.
pid_t jank_spawn(const jank_spawn_request *request, const char **failed_step);

// The kernel's Landlock ABI version (landlock_create_ruleset with the VERSION flag), or
// -errno when Landlock is missing or disabled.
int jank_landlock_abi(void);

// prctl(PR_SET_PDEATHSIG, sig): prctl is variadic and not importable into Swift.
int jank_set_parent_death_signal(int sig);

// prctl(PR_GET_PDEATHSIG): the current parent-death signal, 0 if none, -1 on error.
int jank_get_parent_death_signal(void);

// pidfd_open(2): a descriptor that becomes readable when the process exits.
int jank_pidfd_open(pid_t pid);

// pipe2(fds, O_CLOEXEC): pipe2 needs _GNU_SOURCE, hidden from Swift's Glibc.
int jank_pipe_cloexec(int fds[2]);

/// accept4(fd, NULL, NULL, SOCK_CLOEXEC): a connection that no child process inherits.
int jank_accept_cloexec(int fd);

// Who is at the other end of a connected Unix socket: `struct ucred`, which Swift's Glibc
// hides behind _GNU_SOURCE. The same layout, so NIO's getsockopt can fill it too.
typedef struct {
  pid_t pid;
  uid_t uid;
  gid_t gid;
} jank_peer;

// getsockopt(SO_PEERCRED): 0, or -1 with errno.
int jank_peer_credentials(int fd, jank_peer *peer);

/// posix_spawn_file_actions_addclosefrom_np(actions, from) (_GNU_SOURCE): the spawned
/// program inherits no descriptor from `from` up, close-on-exec or not.
int jank_spawn_actions_closefrom(void *actions, int from);

// Names the calling thread (15 bytes at most) for ps, top and perf: prctl(PR_SET_NAME).
void jank_name_thread(const char *name);

// A close-on-exec, non-blocking eventfd: one thread wakes another that sleeps in poll(2).
int jank_eventfd(void);
void jank_eventfd_signal(int fd);
void jank_eventfd_drain(int fd);

// An epoll set of pidfds, keyed by pid (epoll_event is packed and awkward from Swift).
int jank_epoll_create(void);
int jank_epoll_watch_pidfd(int epoll_fd, int pidfd, pid_t pid);
int jank_epoll_unwatch(int epoll_fd, int fd);
// Blocks until at least one watched process exited; fills `pids`, returns how many (or -errno).
int jank_epoll_wait_pids(int epoll_fd, pid_t *pids, int max);

#endif
