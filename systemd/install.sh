#!/bin/sh
# Install the PBX systemd units (see docs/decisions/006-systemd-units.md).
#
#   systemd/install.sh [--prefix /opt/pbx] [--root DIR] [--dest DIR] [--units-only] [--with-lines]
#
# --prefix      where the checkout and its venv live (ExecStart runs PREFIX/.venv/bin/python)
# --root        install into a root file system being built (SD-card image) instead of /
# --dest        where the unit files go (default ROOT/etc/systemd/system)
# --units-only  only write the unit files (tests, or a system managed otherwise)
# --with-lines  also enable pbx-lines.service (a line board is attached)
#
# Writes ROOT/etc/systemd/system/pbx*.{service,target} with @PREFIX@ replaced; unless
# --units-only also: the system user pbx, group gpio and its udev rule, /etc/pbx/pbx.env (kept if
# present), masks the kamailio package's own kamailio.service, and enables pbx.target with its parts.
set -eu

prefix=/opt/pbx
root=/
units_only=no
with_lines=no
dest=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --dest) dest=${2:?--dest needs a directory}; shift 2 ;;
        --units-only) units_only=yes; shift ;;
        --with-lines) with_lines=yes; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$prefix" in
    /*) ;;
    *) echo "install.sh: --prefix $prefix must be an absolute path" >&2; exit 2 ;;
esac
case "$prefix" in
    *[!A-Za-z0-9/._-]*) echo "install.sh: --prefix $prefix: use only letters, digits and / . _ -" >&2; exit 2 ;;
esac
if [ ! -d "$root" ]; then
    echo "install.sh: --root $root is not a directory" >&2
    exit 2
fi
if [ "$units_only" = no ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or use --units-only)" >&2
    exit 1
fi

here=$(cd "$(dirname "$0")" && pwd)
root=${root%/}
dest=${dest:-$root/etc/systemd/system}
mkdir -p "$dest"
# pbx-web.socket listens where /etc/pbx/pbx.env says (a socket unit cannot read an environment file)
env_file="$root/etc/pbx/pbx.env"
[ -e "$env_file" ] || env_file="$here/pbx.env.example"
setting() {   # the last NAME=value of the env file, else the default
    value=$(sed -n "s/^$1=//p" "$env_file" | tail -1 | tr -d '"' | tr -d "'")
    echo "${value:-$2}"
}
listen() {    # address:port as ListenStream= wants it ([v6]:port)
    case "$1" in *:*) echo "[$1]:$2" ;; *) echo "$1:$2" ;; esac
}
web_addr=$(setting PBX_WEB_ADDR 0.0.0.0)
web_listen=$(listen "$web_addr" "$(setting PBX_WEB_PORT 443)")
web_redirect_listen=$(listen "$web_addr" "$(setting PBX_WEB_REDIRECT_PORT 80)")
for unit in "$here"/pbx.target "$here"/pbx-*.service "$here"/pbx-*.socket; do
    name=$(basename "$unit")
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@WEB_LISTEN@|$web_listen|g" \
        -e "s|@WEB_REDIRECT_LISTEN@|$web_redirect_listen|g" "$unit" > "$dest/$name.tmp"
    chmod 0644 "$dest/$name.tmp"
    mv "$dest/$name.tmp" "$dest/$name"
    echo "installed $dest/$name"
done
if [ ! -x "$root$prefix/.venv/bin/python" ]; then
    echo "install.sh: warning: $root$prefix/.venv/bin/python does not exist yet (make deps in $prefix)" >&2
fi
[ "$units_only" = yes ] && exit 0

# One static user for all parts: they share /var/lib/pbx, and the admin CLI runs as it too.
if [ "$root" = "" ]; then rootopt=""; else rootopt="--root $root"; fi
if ! grep -q '^gpio:' "$root/etc/group"; then
    groupadd $rootopt --system gpio
fi
if ! grep -q '^pbx:' "$root/etc/passwd"; then
    useradd $rootopt --system --user-group --home-dir /var/lib/pbx --no-create-home \
        --shell /usr/sbin/nologin --comment "Office PBX" pbx
fi
install -D -m 0644 "$here/60-pbx-gpio.rules" "$root/etc/udev/rules.d/60-pbx-gpio.rules"
install -D -m 0644 "$here/60-pbx.conf" "$root/etc/sysctl.d/60-pbx.conf"
if [ "$root" = "" ]; then
    sysctl -q -p /etc/sysctl.d/60-pbx.conf 2>/dev/null || echo "note: net.core.rmem_max applies at the next boot"
fi
if [ ! -e "$root/etc/pbx/pbx.env" ]; then
    install -D -m 0644 "$here/pbx.env.example" "$root/etc/pbx/pbx.env"
    echo "installed $root/etc/pbx/pbx.env: set PBX_SIP_ADDR to this box's address"
fi

# the kamailio package's own service would hold port 5060 (pbx-edge runs Kamailio itself)
if [ "$root" = "" ]; then
    systemctl disable --now kamailio.service 2>/dev/null || true
    systemctl mask kamailio.service
else
    systemctl --root="$root" mask kamailio.service
fi

parts="pbx.target pbx-edge.service pbx-calls.service pbx-web.socket pbx-web.service pbx-panel.service"
[ "$with_lines" = yes ] && parts="$parts pbx-lines.service"
if [ "$root" = "" ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        udevadm control --reload 2>/dev/null || true
    fi
    systemctl enable $parts
else
    systemctl --root="$root" enable $parts
fi
echo "enabled: $parts (start them with: systemctl start pbx.target)"
