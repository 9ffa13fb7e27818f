#!/bin/bash
# Build the appliance image from Debian 12 packages (see docs/decisions/021-image.md).
#
#   image/build.sh ARCH [--root-only | --root-ext4 | --no-xz] [--out DIR]      ARCH: amd64 | arm64
#
# Steps (each prints its time): rootfs (mmdebstrap + the PBX venv, image/scripts/customize.sh),
# manifest, root.ext4, boot.vfat, data.ext4, assemble (GPT: boot, rootA, rootB, data; no loop
# devices), compress (.img.xz + .sha256). --root-only stops after the rootfs (make image-test),
# --root-ext4 after root.ext4 (comparing two builds: make image-repro), --no-xz after the .img
# (the QEMU boot test).
# Output: build/image/ARCH/ (pbx-VERSION-ARCH.img.xz, .sha256, .manifest, rootfs/, *.ext4).
# Needs root and: mmdebstrap dosfstools mtools fdisk e2fsprogs xz-utils, for arm64 on another
# machine also qemu-user-static binfmt-support arch-test (make image installs them).
set -euo pipefail
# the whole script is read before it runs: editing it during a build cannot change that build
main() {

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=${1:-}
shift || true
root_only=no
root_ext4_only=no
compress=yes
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --root-only) root_only=yes; shift ;;
        --root-ext4) root_ext4_only=yes; shift ;;
        --no-xz) compress=no; shift ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        *) echo "build.sh: unknown option $1 (usage: image/build.sh amd64|arm64 [--root-only|--root-ext4|--no-xz] [--out DIR])" >&2; exit 2 ;;
    esac
done
case "$arch" in
    amd64|arm64) ;;
    *) echo "build.sh: first argument must be amd64 or arm64, not '${arch}'" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "build.sh: run as root (mmdebstrap --mode=root, mke2fs -d keeps owners)" >&2; exit 1
fi
out=${out:-$repo/build/image/$arch}
mkdir -p "$out"
# the update CA: its certificate becomes /etc/rauc/keyring.pem (image/keys.sh makes a development
# CA on the first build; PBX_IMAGE_KEYS=DIR uses your own)
keys=${PBX_IMAGE_KEYS:-$repo/build/image/keys}
"$here/keys.sh" "$keys"

# Everything that ends up in the image is dated by the commit, so two builds of one commit match.
# IMAGE_COMMIT=REV builds another commit (the default is HEAD; the working tree is never used).
rev=${IMAGE_COMMIT:-HEAD}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct "$rev")}
commit=$(git -C "$repo" rev-parse --short=12 "$rev")
version="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d)-$commit"
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
# one string hash seed for every Python run in the root (py3compile, pip, compileall)
export PYTHONHASHSEED=0
export LC_ALL=C.UTF-8 TZ=UTC
# The mirror apt already uses on this machine (override with MIRROR= / SECURITY_MIRROR=).
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
set -a; . "$here/layout.sh"; set +a

t_all=$(date +%s)
step_no=0
steps=7
[ "$root_only" = yes ] && steps=2
[ "$root_ext4_only" = yes ] && steps=3
[ "$compress" = no ] && steps=6
step() { step_no=$((step_no + 1)); t_step=$(date +%s); echo "==> [$arch $step_no/$steps] $*"; }
done_step() { echo "    done in $(( $(date +%s) - t_step )) s"; }

# mke2fs 1.47.0 (Debian 12) copies each file's atime and ctime from the tree (1.47.1 clamps them
# to SOURCE_DATE_EPOCH); a ctime cannot be set on the tree, so set both to the commit time in
# every used inode of the new file system (inode numbers from the groups' free-inode lists)
clamp_ext4_times() {
    local ipg
    ipg=$(dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Inodes per group/ {print $2 + 0}')
    dumpe2fs "$1" 2>/dev/null | awk -v ipg="$ipg" -v t="$SOURCE_DATE_EPOCH" '
        function flush(  i) {
            if (g < 0) return
            for (i = g * ipg + 1; i <= (g + 1) * ipg; i++)
                if (!(i in free) && (i == 2 || i >= 11))
                    printf "sif <%d> atime @%s\nsif <%d> ctime @%s\n", i, t, i, t
            delete free
        }
        BEGIN { g = -1 }
        /^Group [0-9]+:/ { flush(); g = $2 + 0 }
        /^  Free inodes: / {
            n = split(substr($0, index($0, ":") + 2), r, ", ")
            for (k = 1; k <= n; k++) {
                if (r[k] == "") continue
                m = split(r[k], ab, "-"); hi = (m > 1 ? ab[2] : ab[1])
                for (j = ab[1] + 0; j <= hi + 0; j++) free[j] = 1
            }
        }
        END { flush() }' > "$1.times"
    local errs
    errs=$(debugfs -w -f "$1.times" "$1" 2>&1 >/dev/null | grep -v '^debugfs [0-9]' | head -3 || true)
    if [ -n "$errs" ]; then
        echo "build.sh: debugfs could not set the inode times in $1: $errs" >&2; exit 1
    fi
    echo "    atime/ctime of $(( $(wc -l < "$1.times") / 2 )) inodes set to the commit time"
    rm -f "$1.times"
}

pkglist() { grep -hv '^\s*#' "$@" | grep -v '^\s*$' | sort -u | paste -sd, -; }

# ---- 1. rootfs -------------------------------------------------------------------------------
rootfs=$out/rootfs
stamp=$out/rootfs.stamp
want_stamp="$commit $(cat "$here"/packages/*.txt "$here"/scripts/* "$here"/layout.sh "$repo"/systemd/* "$keys/ca.cert.pem" \
    $(find "$here/overlay" -type f | sort) | sha256sum | cut -c1-16)"
step "rootfs: mmdebstrap bookworm $arch from $MIRROR, PBX venv, units, overlay"
if [ -d "$rootfs" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want_stamp" ]; then
    echo "    reusing $rootfs (same commit and recipe)"
else
    rm -rf "$rootfs" "$stamp"
    if [ "$arch" != "$(dpkg --print-architecture)" ]; then
        mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        update-binfmts --enable "qemu-$( [ "$arch" = arm64 ] && echo aarch64 || echo x86_64)" 2>/dev/null || true
        arch-test "$arch" >/dev/null || { echo "build.sh: this machine cannot run $arch binaries:" \
            "install qemu-user-static binfmt-support and load binfmt_misc" >&2; exit 1; }
    fi
    # the PBX source as committed (not the working tree): git archive of the runtime parts
    git -C "$repo" archive --format=tar "$commit" firmware services webui hw pyproject.toml README.md \
        docs/decisions systemd > "$out/pbx-src.tar"
    # the Python packages pinned to what the test suite ran with (the dev venv), when present
    if [ -x "$repo/.venv/bin/pip" ]; then
        "$repo/.venv/bin/pip" freeze --exclude-editable --disable-pip-version-check 2>/dev/null \
            | grep -v -e '^-e ' -e ' @ ' > "$out/constraints.txt"
    else
        : > "$out/constraints.txt"
    fi
    python3 -c 'import tomllib,sys; print("\n".join(tomllib.load(open(sys.argv[1],"rb"))["project"]["dependencies"]))' \
        "$repo/pyproject.toml" > "$out/requirements.txt"
    pkgs=$(pkglist "$here/packages/common.txt" "$here/packages/$arch.txt" "$here/packages/build-only.txt")
    IMG_ARCH=$arch IMG_OUT=$out IMG_HERE=$here IMG_REPO=$repo IMG_VERSION=$version IMG_KEYRING=$keys/ca.cert.pem \
    mmdebstrap --mode=root --variant=minbase --architectures="$arch" \
        --components="main non-free-firmware" \
        --include="$pkgs" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --setup-hook='mkdir -p "$1/boot/firmware"' \
        --customize-hook='"$IMG_HERE/scripts/customize.sh" "$1"' \
        bookworm "$rootfs" \
        "deb $MIRROR bookworm main non-free-firmware" \
        "deb $MIRROR bookworm-updates main non-free-firmware" \
        "deb $SECURITY_MIRROR bookworm-security main non-free-firmware"
    # mmdebstrap's own work after the customize hook (device nodes in /dev, the mount points it
    # used, removing its apt.conf.d file and policy-rc.d, emptying /run) has the build's time:
    # clamp every date in the tree to the commit again
    find "$rootfs" -xdev -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
    echo "$want_stamp" > "$stamp"
fi
echo "    root tree: $(du -sm --exclude=proc "$rootfs" | cut -f1) MB"
done_step

# ---- 2. manifest -----------------------------------------------------------------------------
step "manifest: package versions (dpkg-query in the root, pip freeze of the venv)"
base=$out/pbx-$version-$arch
# images of other commits from earlier builds go (they are large)
find "$out" -maxdepth 1 -name 'pbx-*' ! -name "pbx-$version-$arch*" -delete
{
    echo "# pbx image $version $arch, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
    echo "# Debian packages (dpkg-query in the root)"
    chroot "$rootfs" dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' | sort
    echo "# Python packages in /opt/pbx/.venv"
    sed 's/==/\t/' "$rootfs/usr/share/pbx/pip-freeze.txt"
} > "$base.manifest"
# per file, to see what differs between two builds (diff two root-files.sha256)
(cd "$rootfs" && find . -xdev -type f -print0 | sort -z | xargs -0 sha256sum) > "$out/root-files.sha256"
# one checksum for the whole root tree: names sorted, numeric owners, modes, contents
(cd "$rootfs" && tar --sort=name --numeric-owner --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime -cf - --exclude=./proc --exclude=./sys --exclude=./dev . | sha256sum | cut -d' ' -f1) \
    > "$out/root-tree.sha256"
echo "    $(grep -vc '^#' "$base.manifest") packages; root tree sha256 $(cat "$out/root-tree.sha256")"
done_step
if [ "$root_only" = yes ]; then
    echo "==> $arch root ready in $(( $(date +%s) - t_all )) s: $rootfs"
    exit 0
fi

# ---- 3. root.ext4 ----------------------------------------------------------------------------
step "root.ext4: mke2fs -d (fixed UUID and hash seed, dates from the commit), ${ROOT_MB} MB"
used=$(du -sm --exclude=proc "$rootfs" | cut -f1)
if [ $((used * 115 / 100)) -gt "$ROOT_MB" ]; then
    echo "build.sh: root tree is $used MB, too big for a ${ROOT_MB} MB slot: raise ROOT_MB in image/layout.sh" >&2
    exit 1
fi
rm -f "$out/root.ext4"
mke2fs -q -t ext4 -L rootA -U "$ROOTFS_UUID" -E "hash_seed=$HASH_SEED,root_owner=0:0" \
    -O ^has_journal -m 0 -d "$rootfs" "$out/root.ext4" "${ROOT_MB}M"
clamp_ext4_times "$out/root.ext4"
# no journal: the slot is mounted read-only and written only whole (by an update)
e2fsck -fn "$out/root.ext4" >/dev/null
sha256sum "$out/root.ext4" | sed "s|  .*|  root.ext4|" > "$out/root.ext4.sha256"
echo "    root.ext4 sha256 $(cut -d' ' -f1 "$out/root.ext4.sha256")"
done_step
if [ "$root_ext4_only" = yes ]; then
    echo "==> $arch root.ext4 ready in $(( $(date +%s) - t_all )) s: $out/root.ext4"
    exit 0
fi

# ---- 4. boot.vfat ----------------------------------------------------------------------------
step "boot.vfat: FAT32 ${BOOT_MB} MB, filled with mtools"
bootdir=$out/boot
rm -rf "$bootdir" "$out/boot.vfat"
mkdir -p "$bootdir"
if [ "$arch" = amd64 ]; then
    kver=$(ls "$rootfs/lib/modules" | sort -V | tail -1)
    mkdir -p "$bootdir/EFI/BOOT" "$bootdir/loader/entries" "$bootdir/a"
    cp "$rootfs/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$bootdir/EFI/BOOT/BOOTX64.EFI"
    cp "$rootfs/boot/vmlinuz-$kver" "$bootdir/a/vmlinuz"
    cp "$rootfs/boot/initrd.img-$kver" "$bootdir/a/initrd.img"
    # panic=10: a kernel that panics (a broken update) restarts and the boot counter runs down.
    # no default: systemd-boot boots the first entry in its order - entries with no tries left
    # last, then the highest version (an update writes pbx-b+3-0.conf with version 2, services/update.py)
    printf 'timeout 0\nconsole-mode keep\neditor no\n' > "$bootdir/loader/loader.conf"
    printf 'title Office PBX (slot A)\nsort-key pbx\nversion 1\nlinux /a/vmlinuz\ninitrd /a/initrd.img\noptions root=PARTUUID=%s ro rootwait console=tty0 console=ttyS0,115200 quiet panic=10 rauc.slot=A\n' \
        "$ROOTA_PARTUUID" > "$bootdir/loader/entries/pbx-a.conf"
else
    cp -r "$rootfs/boot/firmware/." "$bootdir/"
    # the root by PARTUUID, read-only, consoles on the serial header and the screen (raspi-firmware's
    # own cmdline.txt names /dev/mmcblk0p2 rw, which is neither slot-aware nor read-only)
    printf 'console=serial0,115200 console=tty1 root=PARTUUID=%s ro rootwait fsck.repair=yes net.ifnames=0 cma=64M\n' \
        "$ROOTA_PARTUUID" > "$bootdir/cmdline.txt"
    if [ ! -e "$bootdir/config.txt" ] || [ ! -e "$bootdir/cmdline.txt" ]; then
        echo "build.sh: raspi-firmware did not write config.txt/cmdline.txt into /boot/firmware" >&2; exit 1
    fi
fi
find "$bootdir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkfs.vfat -C -F 32 -n BOOT -i "$VFAT_ID" --invariant "$out/boot.vfat" $((BOOT_MB * 1024)) >/dev/null
(cd "$bootdir" && find . -mindepth 1 -type d | sort | sed 's|^\./||' | while read -r d; do
    mmd -i "$out/boot.vfat" "::$d"; done
 find . -type f | sort | sed 's|^\./||' | while read -r f; do
    mcopy -m -i "$out/boot.vfat" "$f" "::$f"; done)
echo "    $(du -sm "$bootdir" | cut -f1) MB of boot files"
done_step

# ---- 5. data.ext4 ----------------------------------------------------------------------------
step "data.ext4: ${DATA_MB} MB (grown to the card's size at first boot)"
rm -rf "$out/data-skel" "$out/data.ext4"
mkdir -p "$out/data-skel"
mke2fs -q -t ext4 -L data -U "$DATA_UUID" -E "hash_seed=$HASH_SEED,root_owner=0:0" \
    -d "$out/data-skel" "$out/data.ext4" "${DATA_MB}M"
clamp_ext4_times "$out/data.ext4"
done_step

# ---- 6. assemble -----------------------------------------------------------------------------
img=$base.img
step "assemble: GPT boot + rootA + rootB + data in $(basename "$img") (sfdisk on the file, dd conv=notrunc)"
rm -f "$img"
total_mb=$((1 + BOOT_MB + ROOT_MB + ROOT_MB + DATA_MB + 1))
truncate -s "${total_mb}M" "$img"
if [ "$arch" = amd64 ]; then boot_type=$ESP_TYPE; else boot_type=$BASIC_DATA_TYPE; fi
sfdisk -q --no-reread --no-tell-kernel "$img" <<SFDISK
label: gpt
label-id: $DISK_GUID
first-lba: 2048
start=1MiB, size=${BOOT_MB}MiB, type=$boot_type, uuid=$BOOT_PARTUUID, name=boot
size=${ROOT_MB}MiB, type=$LINUX_TYPE, uuid=$ROOTA_PARTUUID, name=rootA
size=${ROOT_MB}MiB, type=$LINUX_TYPE, uuid=$ROOTB_PARTUUID, name=rootB
size=${DATA_MB}MiB, type=$LINUX_TYPE, uuid=$DATA_PARTUUID, name=data
SFDISK
off=1
for part in boot.vfat:$BOOT_MB root.ext4:$ROOT_MB skip:$ROOT_MB data.ext4:$DATA_MB; do
    f=${part%%:*}; mb=${part##*:}
    [ "$f" != skip ] && dd if="$out/$f" of="$img" bs=1M seek="$off" conv=notrunc,sparse status=none
    off=$((off + mb))
done
sfdisk -l "$img" | sed 's/^/    /'
done_step

if [ "$compress" = no ]; then
    echo "==> $arch image (not compressed) ready in $(( $(date +%s) - t_all )) s: $img"
    exit 0
fi

# ---- 7. compress -----------------------------------------------------------------------------
step "compress: xz -T2 -${XZ_LEVEL:-3}, sha256"
rm -f "$img.xz"
xz -T2 "-${XZ_LEVEL:-3}" -k "$img"
(cd "$out" && sha256sum "$(basename "$img").xz" > "$(basename "$img").xz.sha256")
echo "    $(du -m "$img.xz" | cut -f1) MB compressed, $(du -m --apparent-size "$img" | cut -f1) MB raw"
done_step
echo "==> $arch image ready in $(( $(date +%s) - t_all )) s: $img.xz"
}
main "$@"
