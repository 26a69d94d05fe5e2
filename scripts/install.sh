#!/bin/sh
# Installs phonebridge as a system service: the binary, the systemd unit,
# a starting config, and the user it runs as. Run it as root from the
# repository (make install). DESTDIR=/tmp/root installs into a tree
# instead (for packages and the test): no user, no systemctl.
set -eu

cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
BIN=${BIN:-bin/phonebridge}
PREFIX=${PREFIX:-/usr/local}

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
	echo "install.sh: run it as root (sudo make install), or set DESTDIR to install into a tree" >&2
	exit 1
fi
if [ ! -x "$BIN" ]; then
	echo "install.sh: $BIN is missing; run make build first (make install does)" >&2
	exit 1
fi

install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/systemd/system"
install -m 0755 "$BIN" "$DESTDIR$PREFIX/bin/phonebridge"
sed "s|/usr/local/bin/phonebridge|$PREFIX/bin/phonebridge|" dist/phonebridge.service >"$DESTDIR/etc/systemd/system/phonebridge.service"
chmod 0644 "$DESTDIR/etc/systemd/system/phonebridge.service"

if [ -z "$DESTDIR" ] && ! getent passwd phonebridge >/dev/null; then
	useradd --system --home-dir /var/lib/phonebridge --no-create-home --shell /usr/sbin/nologin phonebridge
	echo "install.sh: created the system user phonebridge"
fi

# A starting config, never over an existing one: the example with the
# state in /var/lib/phonebridge, readable by the service only.
config="$DESTDIR/etc/phonebridge/config.yaml"
install -d -m 0750 "$DESTDIR/etc/phonebridge"
if [ -e "$config" ]; then
	echo "install.sh: kept the existing $config"
else
	sed 's|^state_dir: ./state$|state_dir: /var/lib/phonebridge|' example.yaml >"$config"
	chmod 0640 "$config"
	echo "install.sh: wrote $config from example.yaml; edit it, then: systemctl enable --now phonebridge"
fi
if [ -z "$DESTDIR" ]; then
	chown root:phonebridge "$DESTDIR/etc/phonebridge" "$config"
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
	fi
fi
echo "install.sh: installed $PREFIX/bin/phonebridge and the phonebridge.service unit"
