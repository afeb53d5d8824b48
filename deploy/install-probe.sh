#!/usr/bin/env bash
# Installs or upgrades the courierwatch probe on a Raspberry Pi (Raspberry Pi OS bookworm or
# another Debian 12+; 64-bit recommended), from a clone of the repository:
#
#   sudo deploy/install-probe.sh BUNDLE [SOURCE]
#   deploy/install-probe.sh --check BUNDLE      # only checks the bundle; changes nothing
#
# BUNDLE is the .tar.gz made at the NOC by `courierwatch pki probe`: ca.pem, probe.pem,
# probe.key and probe.yaml. SOURCE is what pip installs (default: this clone; or a wheel).
# It sets up the venv /opt/courierwatch/venv, the system user courierwatch, the config and
# certificate in /etc/courierwatch (the key readable by that user only), and the systemd unit;
# then (re)starts the probe. Running it again upgrades in place.
set -euo pipefail

PREFIX=/opt/courierwatch
CONFIG_DIR=/etc/courierwatch
SERVICE_USER=courierwatch
UNIT=courierwatch-probe.service
FILES=(ca.pem probe.pem probe.key probe.yaml)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
  echo "install-probe: $*" >&2
  exit 1
}

# Unpacks BUNDLE into DIR and checks that it holds what the probe needs, as plain files.
unpack() {
  local bundle=$1 dir=$2 name
  [ -f "$bundle" ] || die "$bundle: no such file"
  tar -xf "$bundle" -C "$dir" --no-same-owner 2>/dev/null || die "$bundle: not a tar bundle"
  for name in "${FILES[@]}"; do
    if [ ! -f "$dir/$name" ] || [ -L "$dir/$name" ]; then
      die "$bundle: no $name in it (make bundles with: courierwatch pki probe)"
    fi
  done
  grep -q "BEGIN CERTIFICATE" "$dir/ca.pem" || die "$bundle: ca.pem is not a PEM certificate"
  grep -q "BEGIN CERTIFICATE" "$dir/probe.pem" || die "$bundle: probe.pem is not a PEM certificate"
  grep -q "PRIVATE KEY" "$dir/probe.key" || die "$bundle: probe.key is not a PEM private key"
  grep -q "^site:" "$dir/probe.yaml" || die "$bundle: probe.yaml names no site"
}

workdir=$(mktemp -d)  # mode 0700: the key passes through here
trap 'rm -rf "$workdir"' EXIT

if [ "${1:-}" = "--check" ]; then
  [ $# -eq 2 ] || die "usage: $0 --check BUNDLE"
  unpack "$2" "$workdir"
  echo "install-probe: $2 is a probe bundle for $(grep '^site:' "$workdir/probe.yaml")"
  exit 0
fi

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  die "usage: sudo $0 BUNDLE [SOURCE]"
fi
bundle=$1
source=${2:-$(dirname "$here")}
[ "$(id -u)" -eq 0 ] || die "run it as root (sudo)"
unpack "$bundle" "$workdir"
if [ -d "$source" ] && [ ! -f "$source/pyproject.toml" ]; then
  die "$source: not a courierwatch source tree; give SOURCE (a clone or a wheel)"
fi

echo "install-probe: Python and its venv module"
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  die "Python 3.11 or newer is needed (Raspberry Pi OS bookworm has it)"
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

echo "install-probe: user $SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  useradd --system --home-dir "/var/lib/$SERVICE_USER" --no-create-home \
    --shell /usr/sbin/nologin "$SERVICE_USER"
fi

echo "install-probe: courierwatch into $PREFIX/venv (from $source)"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade "$source"

echo "install-probe: configuration and certificate into $CONFIG_DIR"
install -d -m 0755 "$CONFIG_DIR"
# An upgrade or a renewed certificate must not undo the site's own settings (proxy,
# trust.site, resolver, targets): an existing probe.yaml stays, the bundle's goes beside it.
if [ -f "$CONFIG_DIR/probe.yaml" ] && ! cmp -s "$workdir/probe.yaml" "$CONFIG_DIR/probe.yaml"; then
  install -m 0644 "$workdir/probe.yaml" "$CONFIG_DIR/probe.yaml.bundle"
  echo "install-probe: kept your $CONFIG_DIR/probe.yaml; the bundle's is probe.yaml.bundle"
else
  install -m 0644 "$workdir/probe.yaml" "$CONFIG_DIR/"
fi
install -m 0644 "$workdir/ca.pem" "$workdir/probe.pem" "$CONFIG_DIR/"
install -m 0640 -o root -g "$SERVICE_USER" "$workdir/probe.key" "$CONFIG_DIR/probe.key"

# Read the config as the service will: as its user, so a key it cannot read shows up here.
if ! runuser -u "$SERVICE_USER" -- "$PREFIX/venv/bin/python" -c '
import sys
from courierwatch.common.configfile import ConfigError
from courierwatch.probe.config import load_probe_config
try:
    load_probe_config(sys.argv[1])
except ConfigError as error:
    sys.exit(f"courierwatch: {error}")
' "$CONFIG_DIR/probe.yaml"; then
  die "the configuration does not load (above); the probe was not started"
fi

echo "install-probe: systemd unit $UNIT"
install -m 0644 "$here/systemd/$UNIT" "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable --quiet "$UNIT"
systemctl restart "$UNIT"
systemctl is-active --quiet "$UNIT" || die "$UNIT did not start: journalctl -u $UNIT"
echo "install-probe: the probe runs. Follow it with: journalctl -u $UNIT -f"
