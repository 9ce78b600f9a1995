#!/bin/sh
# Build a root-filesystem tarball from Debian's busybox-static: the demo and test image.
# Usage: mkimage-busybox.sh OUT.tar   (needs /bin/busybox from the busybox-static package)
set -eu
out=${1:?usage: mkimage-busybox.sh OUT.tar}
bb=${BUSYBOX:-/bin/busybox}
# busybox must be the static build: the image has no libc.
"$bb" --list >/dev/null 2>&1 || { echo "mkimage-busybox: $bb is missing (apt-get install busybox-static)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/root" "$root/home" "$root/var" "$root/usr/bin" "$root/usr/sbin" "$root/sbin"
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo 'skiff demo image (busybox)' > "$root/etc/motd"
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out" .
echo "$out"
