#!/bin/busybox sh
# PID 1 of the kernel-6.1 guest that tests/kernel61/qemu.ts boots. Static busybox only, so
# init needs nothing from the host's userspace. Two stages:
#
# 1. From the initramfs: load the virtio/9p/overlay modules (listed in /modules.list, in
#    dependency order), mount the host's / (a read-only 9p export) as the lower layer of an
#    overlay on tmpfs, switch_root into it. The guest's writes stay in its own memory.
# 2. In that root: the mounts of a Debian 12 host (cgroup2 alone at /sys/fs/cgroup with
#    nsdelegate, bpffs at /sys/fs/bpf), the 6.1 modules at /lib/modules/<kver> and its config
#    in /boot, then the job the host wrote to the results export (job.sh, command.sh); its
#    output and exit code go back there (output.log, exit_code). Then power off: qemu runs
#    with -no-reboot, so `reboot -f` ends it.
#
# A step that fails prints "k61-init: ..." on the console and powers off without an
# exit_code file, which the host reports with the console's last lines.

bb=/bin/busybox
[ "${1:-}" = stage2 ] && bb=/.k61/busybox

say() { echo "k61-init: $*" > /dev/console; }
die() {
  say "FAILED: $*"
  $bb sync
  $bb reboot -f
  exit 1
}

if [ "${1:-}" != stage2 ]; then
  $bb mount -t proc proc /proc || die "mount /proc"
  $bb mount -t devtmpfs dev /dev || die "mount /dev"
  while read -r module; do
    $bb insmod "/$module" || die "insmod $module"
  done < /modules.list
  $bb mkdir -p /lower /rw /newroot
  # The virtio device may still be probing right after insmod: a few tries.
  tries=0
  until $bb mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=262144 \
    hostroot /lower 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || die "mount the host's / over 9p (mount_tag hostroot)"
    $bb usleep 100000
  done
  $bb mount -t tmpfs -o mode=0755 rw /rw || die "mount the tmpfs upper layer"
  $bb mkdir -p /rw/upper /rw/work
  $bb mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
    die "mount the overlay root"
  $bb mkdir -p /newroot/.k61/results
  $bb cp /bin/busybox /init /newroot/.k61/ || die "copy init into the new root"
  $bb mount --move /dev /newroot/dev || die "move /dev"
  $bb umount /proc
  exec $bb switch_root /newroot /.k61/init stage2
  die "switch_root"
fi

$bb mount -t proc proc /proc || die "mount /proc"
$bb mount -t sysfs sys /sys || die "mount /sys"
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
$bb mount -t tmpfs -o mode=1777 shm /dev/shm
$bb mount -t tmpfs -o mode=0755 run /run || die "mount /run"
# The guest's own /tmp hides the host's: a checkout there (a fresh clone in /tmp) is bound
# back once job.sh names it.
$bb mkdir -p /.k61/host-tmp
$bb mount --bind /tmp /.k61/host-tmp || die "keep the host's /tmp"
$bb mount -t tmpfs -o mode=1777 tmp /tmp || die "mount /tmp"
$bb mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || die "mount cgroup2"
$bb mount -t bpf -o mode=0700 bpf /sys/fs/bpf || die "mount bpffs"
$bb mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=262144 results /.k61/results ||
  die "mount the results export (mount_tag results)"

# K61_KVER, K61_MODULES, K61_CONFIG, K61_CWD
. /.k61/results/job.sh || die "read job.sh"
$bb mkdir -p "/lib/modules/$K61_KVER"
$bb mount --bind "$K61_MODULES" "/lib/modules/$K61_KVER" || die "bind the modules of $K61_KVER"
$bb mkdir -p /boot
$bb cp "$K61_CONFIG" "/boot/config-$K61_KVER" || die "copy /boot/config-$K61_KVER"
$bb hostname kernel61
$bb ip link set lo up
# A host has an interface besides lo; tests that hand the programs a crafted packet need
# one's ifindex (a packet "on lo" is never counted). A dummy one, since nothing is wired.
ip link add k61-dummy0 type dummy && ip link set k61-dummy0 up || say "no dummy interface"

case "$K61_CWD" in
/tmp/*)
  $bb mkdir -p "$K61_CWD"
  $bb mount --bind "/.k61/host-tmp/${K61_CWD#/tmp/}" "$K61_CWD" || die "bind $K61_CWD"
  ;;
esac

say "running the job on $($bb uname -r)"
cd "$K61_CWD" || die "cd $K61_CWD"
/bin/sh /.k61/results/command.sh < /dev/null > /.k61/results/output.log 2>&1
echo "$?" > /.k61/results/exit_code
$bb sync
$bb reboot -f
