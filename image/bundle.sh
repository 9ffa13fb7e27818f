#!/bin/bash
# A signed RAUC bundle of the built root (docs/decisions/021-image.md, "A/B updates").
#
#   image/bundle.sh ARCH [--broken] [--out DIR]
#
# Needs build/image/ARCH/root.ext4 (image/build.sh ARCH --root-ext4; make bundle runs both) and
# the signing key: build/image/keys/{signing.cert.pem,signing.key.pem}, made with the dev CA by
# image/keys.sh on the first build (PBX_IMAGE_KEYS=DIR uses your own, see README).
# --broken: a test bundle whose pbx-calls.service cannot start (tests/test_image_update.py): the
# box must boot it, fail the check and come back on the old slot.
# Output: build/image/ARCH/pbx-VERSION-ARCH[-broken].raucb
set -euo pipefail
main() {
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=${1:-}
shift || true
broken=no
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --broken) broken=yes; shift ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        *) echo "bundle.sh: unknown option $1 (usage: image/bundle.sh amd64|arm64 [--broken] [--out DIR])" >&2; exit 2 ;;
    esac
done
case "$arch" in amd64|arm64) ;; *) echo "bundle.sh: first argument must be amd64 or arm64" >&2; exit 2 ;; esac
out=${out:-$repo/build/image/$arch}
keys=${PBX_IMAGE_KEYS:-$repo/build/image/keys}
t0=$(date +%s)
for f in "$out/root.ext4" "$keys/signing.cert.pem" "$keys/signing.key.pem" "$keys/ca.cert.pem"; do
    [ -e "$f" ] || { echo "bundle.sh: $f is missing: run make bundle (image/build.sh $arch --root-ext4 first)" >&2; exit 1; }
done
command -v rauc >/dev/null && command -v mksquashfs >/dev/null || {
    echo "bundle.sh: rauc and mksquashfs are needed: apt-get install rauc squashfs-tools (make image-tools)" >&2; exit 1; }
version=$(debugfs -R 'cat /opt/pbx/VERSION' "$out/root.ext4" 2>/dev/null | head -1)
[ -n "$version" ] || { echo "bundle.sh: $out/root.ext4 has no /opt/pbx/VERSION: not a PBX root" >&2; exit 1; }
suffix=
[ "$broken" = yes ] && suffix=-broken
work=$(mktemp -d "$out/bundle-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/content"
cp --sparse=always "$out/root.ext4" "$work/content/root.ext4"
if [ "$broken" = yes ]; then
    # pbx-calls cannot start in this root: a drop-in replaces its ExecStart with a command that fails
    printf '[Service]\nExecStart=\nExecStart=/bin/false\n' > "$work/broken.conf"
    debugfs -w -f - "$work/content/root.ext4" >/dev/null 2>&1 <<DEBUGFS
mkdir /etc/systemd/system/pbx-calls.service.d
write $work/broken.conf /etc/systemd/system/pbx-calls.service.d/broken.conf
DEBUGFS
    debugfs -R 'cat /etc/systemd/system/pbx-calls.service.d/broken.conf' "$work/content/root.ext4" 2>/dev/null \
        | grep -q /bin/false || { echo "bundle.sh: could not write the broken drop-in into the root" >&2; exit 1; }
fi
cat > "$work/content/manifest.raucm" <<MANIFEST
[update]
compatible=office-pbx-$arch
version=$version$suffix
description=Office PBX $version$suffix ($arch)
build=$(date -u -d "@$(git -C "$repo" log -1 --format=%ct "${IMAGE_COMMIT:-HEAD}")" +%Y%m%dT%H%M%SZ)

[bundle]
format=verity

[image.rootfs]
filename=root.ext4
MANIFEST
bundle=$out/pbx-$version-$arch$suffix.raucb
rm -f "$bundle"
echo "==> bundle $(basename "$bundle"): rauc bundle (verity, signed with $keys/signing.cert.pem)"
# zstd level 3: gzip (mksquashfs's default) took 6.7 min for the 2 GB root on the shared build box
rauc bundle --cert="$keys/signing.cert.pem" --key="$keys/signing.key.pem" --keyring="$keys/ca.cert.pem" \
    --mksquashfs-args="-comp zstd -Xcompression-level 3 -no-progress" "$work/content" "$bundle" | sed 's/^/    /'
rauc info --keyring="$keys/ca.cert.pem" "$bundle" 2>/dev/null | sed -n '1,6p;/Verified/p' | sed 's/^/    /'
echo "==> $(du -m "$bundle" | cut -f1) MB in $(( $(date +%s) - t0 )) s: $bundle"
}
main "$@"
