#!/bin/bash
# mmdebstrap --customize-hook: turn the Debian root ($1) into the PBX appliance root.
# Env from build.sh: IMG_ARCH IMG_OUT IMG_HERE IMG_REPO IMG_VERSION IMG_KEYRING SOURCE_DATE_EPOCH.
set -euo pipefail
R=$1
log() { echo "    [customize $(date -u +%T)] $*"; }
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=/root \
    SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" PYTHONHASHSEED=0 "$@"; }

# DNS for pip inside the root (systemd-resolved replaced resolv.conf by a link to its stub)
rm -f "$R/etc/resolv.conf"
cp /etc/resolv.conf "$R/etc/resolv.conf"

log "PBX source (git archive of HEAD) -> /opt/pbx"
mkdir -p "$R/opt/pbx"
tar -C "$R/opt/pbx" -xf "$IMG_OUT/pbx-src.tar"
echo "$IMG_VERSION" > "$R/opt/pbx/VERSION"

log "venv /opt/pbx/.venv built in the root: $(paste -sd' ' "$IMG_OUT/requirements.txt")"
cp "$IMG_OUT/requirements.txt" "$IMG_OUT/constraints.txt" "$R/tmp/"
# the build machine's CA bundle for this one pip run (a TLS-intercepting proxy); not kept
ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
cp "$ca" "$R/tmp/build-ca.crt"
in_root python3 -m venv /opt/pbx/.venv
# CFLAGS=-g0: a package built from source here (pyalsaaudio) would otherwise carry pip's random
# build directory (/tmp/pip-install-XXXX) in its debug info, so two builds would differ
in_root env CFLAGS=-g0 /opt/pbx/.venv/bin/pip install -q --no-cache-dir --disable-pip-version-check \
    --cert /tmp/build-ca.crt -r /tmp/requirements.txt -c /tmp/constraints.txt
mkdir -p "$R/usr/share/pbx"
in_root /opt/pbx/.venv/bin/pip freeze --disable-pip-version-check | sort > "$R/usr/share/pbx/pip-freeze.txt"
# byte-code for the PBX itself: the root is read-only at run time; SOURCE_DATE_EPOCH makes
# checked-hash .pyc files (no source mtimes inside)
in_root /opt/pbx/.venv/bin/python -m compileall -q -j1 /opt/pbx/firmware /opt/pbx/services /opt/pbx/webui /opt/pbx/hw
# the spoken prompts are build output (not in git): made here by the root's own espeak-ng, as
# `make prompts` makes them for a checkout; without them every announcement of the box is silent
in_root sh -c 'cd /opt/pbx && exec .venv/bin/python -m services.media.prompts' >/dev/null
log "spoken prompts: $(ls "$R/opt/pbx/services/media/sounds" | grep -c '\.wav$') in /opt/pbx/services/media/sounds"
rm -f "$R/tmp/requirements.txt" "$R/tmp/constraints.txt" "$R/tmp/build-ca.crt"

log "purge the build-only packages: $(grep -v '^#' "$IMG_HERE/packages/build-only.txt" | paste -sd' ')"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --autoremove \
    $(grep -v '^#' "$IMG_HERE/packages/build-only.txt") >/dev/null

log "systemd units, pbx user (systemd/install.sh --root)"
"$IMG_REPO/systemd/install.sh" --prefix /opt/pbx --root "$R" | sed 's/^/      /'
install -D -m 0644 "$IMG_REPO/systemd/pbx.env.example" "$R/usr/share/pbx/pbx.env.example"
# the settings live on the data partition (the root is read-only); pbx-box-address.service
# writes the file at boot
rm -f "$R/etc/pbx/pbx.env"
ln -s /var/lib/pbx-box/pbx.env "$R/etc/pbx/pbx.env"

log "overlay files (image/overlay/common, image/overlay/$IMG_ARCH)"
for o in common "$IMG_ARCH"; do
    [ -d "$IMG_HERE/overlay/$o" ] && cp -r --no-preserve=ownership "$IMG_HERE/overlay/$o/." "$R/"
done
chmod 0755 "$R"/usr/local/sbin/*
# the CA whose signature an update bundle must carry (RAUC, /etc/rauc/system.conf)
install -m 0644 "$IMG_KEYRING" "$R/etc/rauc/keyring.pem"
mkdir -p "$R/efi" "$R/var/lib/rauc"
cp "$R/usr/share/systemd/tmp.mount" "$R/etc/systemd/system/tmp.mount"

log "enable the box's units, mask what would listen or write to the read-only root"
systemctl --root="$R" enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    data.mount var.mount tmp.mount pbx-box-layout.service pbx-firstboot.service pbx-box-address.service \
    pbx-console.service pbx-log-save.timer pbx-log-save-shutdown.service pbx-network.service pbx-network.path \
    efi.mount rauc.service pbx-update-check.service pbx-update.path pbx-data-rollback.service 2>&1 | grep -v '^Created symlink' || true
for u in keepalived.service rtpengine-daemon.service apt-daily.timer apt-daily-upgrade.timer \
        e2scrub_all.timer e2scrub_reap.service systemd-networkd-wait-online.service; do
    [ "$u" = systemd-networkd-wait-online.service ] && continue
    systemctl --root="$R" mask "$u" 2>&1 | grep -v '^Created symlink' || true
done
systemctl --root="$R" set-default multi-user.target >/dev/null 2>&1
if [ "$IMG_ARCH" = amd64 ]; then
    # a mini-PC or VM has no GPIO header: no front panel service (the Pi image keeps it)
    systemctl --root="$R" disable pbx-panel.service 2>&1 | grep -v '^Removed' || true
fi

if [ "$IMG_ARCH" = arm64 ]; then
    log "Raspberry Pi: root by PARTUUID, console on tty1 and serial, firmware files regenerated"
    sed -i -e "s|^#\?ROOTPART=.*|ROOTPART=PARTUUID=${ROOTA_PARTUUID:-6f666963-6570-4278-8000-00000000000a}|" \
        -e 's|^#\?CONSOLES=.*|CONSOLES="serial0,115200 tty1"|' "$R/etc/default/raspi-firmware"
    echo "ro rootwait" > "$R/etc/default/raspi-extra-cmdline"
    kver=$(ls "$R/lib/modules" | sort -V | tail -1)
    in_root /etc/kernel/postinst.d/z50-raspi-firmware "$kver" >/dev/null
fi

log "clean: resolv.conf link, machine-id empty, caches, logs; dates clamped to the commit"
ln -sf ../run/systemd/resolve/resolv.conf "$R/etc/resolv.conf"
echo pbx > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpbx\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" && ln -s /etc/machine-id "$R/var/lib/dbus/machine-id"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/debconf/*-old \
    "$R"/var/cache/ldconfig/aux-cache "$R"/var/log/* "$R"/tmp/* "$R"/root/.cache \
    "$R"/etc/*- "$R"/var/lib/dpkg/*-old "$R/etc/ssh/ssh_host_"* 2>/dev/null || true
mkdir -p "$R/var/lib/pbx" "$R/data" "$R/var/lib/pbx-box"
find "$R" -xdev \( -path "$R/proc" -o -path "$R/sys" -o -path "$R/dev" \) -prune -o -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
