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
install -m 0644 deploy/jank-supervisor.service deploy/jank-api.service /etc/systemd/system/
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now jank-supervisor.service jank-api.service
  echo "installed and started; try: JANK_SOCKET=/run/jank/supervisor.sock jankctl status"
else
  echo "installed; systemd is not running here, so nothing was started"
fi
