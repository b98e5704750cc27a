#!/usr/bin/env bash
# Installs Jank as systemd services on this machine (run as root from the repository):
# release binaries to /usr/local/bin, the jank user, folders, config and both units.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "deploy/install.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product jank-supervisor
swift build -c release --static-swift-stdlib --product jank-api
swift build -c release --static-swift-stdlib --product jankctl
install -m 0755 .build/release/jank-supervisor .build/release/jank-api .build/release/jankctl /usr/local/bin/
# jank-api reads its OpenAPI document from the resource bundle beside the binary.
rm -rf /usr/local/bin/jank_JankHTTP.resources
cp -r .build/release/jank_JankHTTP.resources /usr/local/bin/
install -m 0644 deploy/jank.sysusers.conf /usr/lib/sysusers.d/jank.conf
install -m 0644 deploy/jank.tmpfiles.conf /usr/lib/tmpfiles.d/jank.conf
systemd-sysusers /usr/lib/sysusers.d/jank.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/jank.conf
[ -e /etc/jank/jank.env ] || install -m 0640 -g jank deploy/jank.env /etc/jank/jank.env
# The deployed API never runs open: a random token, passed to jank-api as a credential.
deploy/make-api-token.sh /etc/jank/api-token
install -m 0644 deploy/jank-supervisor.service deploy/jank-api.service /etc/systemd/system/
# Per-plugin cgroups need the memory, cpu and pids controllers delegated to the supervisor.
# systemd delegates v2 controllers to the jank user, but on a legacy or hybrid hierarchy
# only name=systemd: there plugins run with rlimits only, unless the operator chooses to run
# the supervisor (and so its plugins and builds) as root: JANK_SUPERVISOR_AS_ROOT=1.
dropin=/etc/systemd/system/jank-supervisor.service.d
controllers=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || true)
if [[ " $controllers " == *" memory "* && " $controllers " == *" cpu "* && " $controllers " == *" pids "* ]]; then
  rm -f "$dropin/cgroup-v1-root.conf"
elif [ "${JANK_SUPERVISOR_AS_ROOT:-0}" = 1 ]; then
  install -d "$dropin"
  install -m 0644 deploy/jank-supervisor.service.d/cgroup-v1-root.conf "$dropin/"
  echo "JANK_SUPERVISOR_AS_ROOT=1: jank-supervisor, its plugins and builds run as root so that" \
    "cgroup v1 limits apply ($dropin/cgroup-v1-root.conf)"
elif [ ! -e "$dropin/cgroup-v1-root.conf" ]; then
  echo "note: cgroup v2 has no memory/cpu/pids controllers here, and systemd delegates v1 ones only" \
    "to root: plugins get rlimits only (limits_enforced: rlimit-only). To enforce memory_mb," \
    "cpu_percent and pids, re-run with JANK_SUPERVISOR_AS_ROOT=1 (plugins then run as root)."
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now jank-supervisor.service jank-api.service
  echo "installed and started; try: JANK_SOCKET=/run/jank/supervisor.sock jankctl status"
else
  echo "installed; systemd is not running here, so nothing was started"
fi
