#!/bin/bash
# Build one commit's image twice and compare the two builds (make image-repro).
#
#   image/repro.sh [ARCH] [--full]        ARCH: amd64 (default) | arm64
#
# Each build goes to its own directory, build/image/repro-ARCH/{1,2}, from scratch (no reused
# root). Without --full both stop after root.ext4 (image/build.sh --root-ext4); --full also makes
# boot.vfat, data.ext4 and the .img (--no-xz). Compared: the per-file checksums of the roots
# (root-files.sha256), the whole tree with owners, modes and dates (root-tree.sha256), the
# package manifests, and the file system images byte for byte. Prints every difference; exits 1
# if there is one. IMAGE_COMMIT=REV builds another commit (default HEAD, pinned at the start so
# both builds use the same one even if HEAD moves meanwhile).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=amd64
mode=--root-ext4
for a in "$@"; do
    case "$a" in
        amd64|arm64) arch=$a ;;
        --full) mode=--no-xz ;;
        *) echo "repro.sh: unknown argument $a (usage: image/repro.sh [amd64|arm64] [--full])" >&2; exit 2 ;;
    esac
done
export IMAGE_COMMIT
IMAGE_COMMIT=$(git -C "$repo" rev-parse "${IMAGE_COMMIT:-HEAD}")
top=$repo/build/image/repro-$arch
for n in 1 2; do
    rm -rf "${top:?}/$n"
    t=$(date +%s)
    echo "==> repro build $n of $IMAGE_COMMIT ($arch $mode) -> $top/$n"
    "$here/build.sh" "$arch" "$mode" --out "$top/$n"
    echo "==> repro build $n took $(( $(date +%s) - t )) s"
done

differ=0
same() { echo "    same      $1${2:+: $2}"; }
diff_() { echo "    DIFFERENT $1${2:+: $2}"; differ=1; }
echo "==> comparing $top/1 and $top/2"
if diff -q "$top/1/root-files.sha256" "$top/2/root-files.sha256" >/dev/null; then
    same "per-file checksums of the root" "$(wc -l < "$top/1/root-files.sha256") files"
else
    diff_ "per-file checksums of the root" "files whose contents differ or exist in one build only:"
    diff <(sort -k2 "$top/1/root-files.sha256") <(sort -k2 "$top/2/root-files.sha256") \
        | sed -n 's/^[<>] [0-9a-f]*  //p' | sort -u | sed 's/^/        /'
fi
for f in root-tree.sha256 $(cd "$top/1" && ls pbx-*.manifest 2>/dev/null) root.ext4 boot.vfat data.ext4 \
        $(cd "$top/1" && ls pbx-*.img 2>/dev/null); do
    [ -e "$top/1/$f" ] || continue
    a=$(sha256sum < "$top/1/$f" | cut -d' ' -f1)
    b=$(sha256sum < "$top/2/$f" 2>/dev/null | cut -d' ' -f1)
    case "$f" in root-tree.sha256) a=$(cat "$top/1/$f"); b=$(cat "$top/2/$f") ;; esac
    if [ "$a" = "$b" ]; then same "$f" "$a"; else diff_ "$f" "$a vs $b"; fi
done
if [ "$differ" = 0 ]; then
    echo "==> the two builds are identical"
else
    echo "==> the two builds differ (see above; README \"Reproducible builds\" lists the known causes)"
fi
exit "$differ"
