#!/usr/bin/env bash
# Test host: a fresh Debian 12 box that looks like a VPS from outside (an IP
# address, port 22, root login by SSH key), built from a chroot, a network
# namespace and a PID namespace. All root-level work lives here; testhost.ts
# wraps it.
#
#   testhost.sh rootfs                 build the cached rootfs tarball if missing
#   testhost.sh up NAME INDEX PUBKEY   (re)create test host NAME at 10.213.INDEX.2
#                                      (INDEX "auto": the first free one)
#   testhost.sh down NAME              tear NAME down: processes, mounts, netns, run dir
#   testhost.sh status NAME            print the state file of NAME
#
# `up` prints KEY=VALUE lines (the same as RUN_DIR/state) on stdout; progress
# and errors go to stderr.
set -euo pipefail

readonly CACHE_DIR=/var/cache/clj-zero-downtime
readonly ROOTFS_TARBALL=$CACHE_DIR/rootfs-bookworm.tar.gz
readonly RUNS_DIR=/var/tmp/czd-testhost
readonly MIRROR=http://deb.debian.org/debian
readonly SUITE=bookworm
readonly PACKAGES=openssh-server,iproute2,iptables,ca-certificates,procps,curl,less
readonly PROXY_PORT=3142
# Link alias put on the host-side veth, so leftovers can be found by name even
# when the run directory is gone.
readonly ALIAS_PREFIX=czd-testhost:

log() { printf '[testhost.sh] %s\n' "$*" >&2; }
die() { printf '[testhost.sh] error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
}

check_name() {
    local name=$1
    [[ $name =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] ||
        die "bad test host name '$name' (use a-z, 0-9 and '-', at most 31 characters)"
}

check_index() {
    local index=$1
    if ! [[ $index =~ ^[0-9]+$ ]] || ((index < 1 || index > 254)); then
        die "bad index '$index' (must be 1..254; it picks the subnet 10.213.INDEX.0/30)"
    fi
}

run_dir() { printf '%s/%s' "$RUNS_DIR" "$1"; }
netns_name() { printf 'czd-%s' "$1"; }
netns_exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }
veth_host() { printf 'czdv%sh' "$1"; }
veth_guest() { printf 'czdv%sg' "$1"; }

# ---------------------------------------------------------------------------
# rootfs

build_rootfs() {
    if [[ -f $ROOTFS_TARBALL ]]; then
        return 0
    fi
    mkdir -p "$CACHE_DIR"
    # One builder at a time; a second `up` waits for the first build.
    exec 9>"$CACHE_DIR/.build.lock"
    flock 9
    if [[ -f $ROOTFS_TARBALL ]]; then
        exec 9>&-
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    local work
    work=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    log "building rootfs with debootstrap in $work (takes a few minutes)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/root" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2 || true
        umount_under "$work"
        die "debootstrap failed; log kept in $work/debootstrap.log"
    fi
    umount_under "$work"
    prepare_rootfs "$work/root"
    tar -C "$work/root" --numeric-owner -czf "$work/rootfs.tar.gz" .
    # Rename is atomic: readers see either no tarball or a complete one.
    mv "$work/rootfs.tar.gz" "$ROOTFS_TARBALL.tmp.$$"
    mv "$ROOTFS_TARBALL.tmp.$$" "$ROOTFS_TARBALL"
    rm -rf "$work"
    exec 9>&-
    log "rootfs cached at $ROOTFS_TARBALL"
}

# One-time changes to the cached rootfs (things no run needs to redo).
prepare_rootfs() {
    local root=$1
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/*
    # Host keys are generated fresh by each run.
    rm -f "$root"/etc/ssh/ssh_host_*
    rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id"
}

unpack_rootfs() {
    local root=$1
    mkdir -p "$root"
    tar -C "$root" --numeric-owner -xzf "$ROOTFS_TARBALL"
}

# Per-run files inside the fresh rootfs.
configure_rootfs() {
    local root=$1 name=$2 index=$3 pubkey=$4
    local host_ip=10.213.$index.1 guest_ip=10.213.$index.2

    printf '%s\n' "$name" >"$root/etc/hostname"
    cat >"$root/etc/hosts" <<EOF
127.0.0.1 localhost
$guest_ip $name
::1 localhost ip6-localhost ip6-loopback
EOF
    # No DNS server is reachable: apt's names are resolved by the proxy.
    # localhost-only resolv.conf makes lookups fail fast instead of hanging.
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$root/etc/resolv.conf"

    cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
    printf 'Acquire::http::Proxy "http://%s:%s";\n' "$host_ip" "$PROXY_PORT" \
        >"$root/etc/apt/apt.conf.d/00-test-host-proxy"

    install -d -m 0700 "$root/root/.ssh"
    printf '%s\n' "$pubkey" >"$root/root/.ssh/authorized_keys"
    chmod 0600 "$root/root/.ssh/authorized_keys"

    mkdir -p "$root/etc/ssh/sshd_config.d"
    printf 'PermitRootLogin prohibit-password\nUseDNS no\n' \
        >"$root/etc/ssh/sshd_config.d/00-test-host.conf"
    # Like Ubuntu's cloud images: password login on until the setup turns it off.
    printf 'PasswordAuthentication yes\n' >"$root/etc/ssh/sshd_config.d/50-cloud-init.conf"
    generate_host_keys "$root"
}

# Fresh host keys, the three types Debian generates, in parallel (RSA is slow).
generate_host_keys() {
    local root=$1 type pid
    local -a pids=()
    rm -f "$root"/etc/ssh/ssh_host_*
    for type in ed25519 ecdsa rsa; do
        chroot "$root" ssh-keygen -q -t "$type" -N '' -f "/etc/ssh/ssh_host_${type}_key" &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || die "ssh-keygen for host keys failed"
    done
}

# ---------------------------------------------------------------------------
# network

setup_network() {
    local name=$1 index=$2
    local ns vh vg
    ns=$(netns_name "$name")
    vh=$(veth_host "$index")
    vg=$(veth_guest "$index")
    ip netns add "$ns"
    ip link add "$vh" type veth peer name "$vg"
    ip link set "$vh" alias "$ALIAS_PREFIX$name"
    ip link set "$vg" netns "$ns"
    ip addr add "10.213.$index.1/30" dev "$vh"
    ip link set "$vh" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$vg" name eth0
    ip -n "$ns" addr add "10.213.$index.2/30" dev eth0
    ip -n "$ns" link set eth0 up
    add_host_firewall "$name" "$index"
}

index_is_free() {
    local index=$1
    ! ip link show "$(veth_host "$index")" >/dev/null 2>&1 &&
        ! ip -o addr show | grep -q " inet 10\.213\.$index\.[0-3]/"
}

# The subnet of INDEX must be free: another test host (or anything else)
# holding veth czdvINDEXh or an address in 10.213.INDEX.0/30 would clash.
check_index_free() {
    local name=$1 index=$2 vh owner
    vh=$(veth_host "$index")
    if ip link show "$vh" >/dev/null 2>&1; then
        owner=$(link_alias "$vh")
        die "index $index is in use by another test host (${owner:-$vh}); pick another index or run: testhost.sh down ${owner#"$ALIAS_PREFIX"}"
    fi
    if ip -o addr show | grep -q " inet 10\.213\.$index\.[0-3]/"; then
        die "index $index: subnet 10.213.$index.0/30 is already in use on this machine ($(ip -o addr show | grep " inet 10\.213\.$index\." | awk '{print $2}' | head -n 1))"
    fi
}

# The box may reach the host side of its veth only at the apt proxy: it must
# not see services of the machine running the tests, nor be routed onwards.
add_host_firewall() {
    local name=$1 index=$2 vh tag
    vh=$(veth_host "$index")
    tag=$ALIAS_PREFIX$name
    command -v iptables >/dev/null || die "iptables is not installed on this machine"
    # -I inserts at the top, so these end up in the reverse order.
    iptables -w -I INPUT -i "$vh" -m comment --comment "$tag" -j DROP
    iptables -w -I INPUT -i "$vh" -p tcp --dport "$PROXY_PORT" -m comment --comment "$tag" -j ACCEPT
    iptables -w -I INPUT -i "$vh" -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment "$tag" -j ACCEPT
    iptables -w -I FORWARD -i "$vh" -m comment --comment "$tag" -j DROP
}

remove_host_firewall() {
    local name=$1 chain rule
    local -a args
    for chain in INPUT FORWARD; do
        while read -r rule; do
            # `iptables -S` prints "-A CHAIN spec"; "-D CHAIN spec" deletes it.
            # The tag has no spaces, so dropping the quotes around it is safe.
            rule=${rule//\"/}
            read -r -a args <<<"${rule#-A }"
            iptables -w -D "${args[@]}" 2>/dev/null || log "warning: could not delete iptables rule: $rule"
        done < <(iptables -w -S "$chain" 2>/dev/null | grep -E -- " --comment \"?$ALIAS_PREFIX$name\"? " || true)
    done
}

link_alias() {
    ip -o link show "$1" 2>/dev/null | sed -n 's/.* alias \(.*\)$/\1/p'
}

# ---------------------------------------------------------------------------
# processes

# PID 1 of the test host. It starts sshd the Debian way (a daemon that writes
# /run/sshd.pid, so `service ssh reload|restart` behave as on a real server),
# then only reaps orphans. On TERM it takes every process of the box down.
# shellcheck disable=SC2016 # expanded by the inner shell, not here
readonly GUEST_INIT='
trap "kill -TERM -1 2>/dev/null; sleep 0.2; kill -KILL -1 2>/dev/null; exit 0" TERM INT
mkdir -p /run/sshd /run/lock && chmod 0755 /run/sshd && chmod 1777 /run/lock
/usr/sbin/sshd -E /var/log/sshd.log || { echo "sshd failed to start" >&2; exit 1; }
echo "[test-host init] sshd started" >&2
while :; do sleep 3600 & wait $!; done
'

# Runs in the new mount namespace (private propagation), before chroot: the
# mounts vanish with the namespace, so a killed run leaves none behind.
# shellcheck disable=SC2016 # expanded by the inner shell, not here
readonly GUEST_MOUNTS='
set -eu
root=$1 name=$2
mount -t tmpfs -o mode=0755,nosuid,size=64m tmpfs "$root/dev"
for n in null zero full random urandom tty; do
  touch "$root/dev/$n"; mount --bind "/dev/$n" "$root/dev/$n"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid,nodev,size=128m tmpfs "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
hostname "$name"
exec chroot "$root" /bin/sh -c "$3"
'

start_guest() {
    local name=$1 dir=$2
    local ns root
    ns=$(netns_name "$name")
    root=$dir/root
    # setsid: the box must not share a session or process group with the caller.
    setsid ip netns exec "$ns" \
        unshare --pid --fork --mount --uts --ipc --propagation private --mount-proc="$root/proc" \
        /bin/sh -c "$GUEST_MOUNTS" guest-mounts "$root" "$name" "$GUEST_INIT" \
        </dev/null >>"$dir/guest.log" 2>&1 &
    local unshare_pid=$!
    printf '%s\n' "$unshare_pid" >"$dir/unshare.pid"
    # setsid and `ip netns exec` exec in place, so $! is unshare; its only
    # child (from --fork) is PID 1 of the box.
    local init_pid="" i
    for ((i = 0; i < 100; i++)); do
        init_pid=$(pgrep -P "$unshare_pid" 2>/dev/null | head -n 1 || true)
        [[ -n $init_pid ]] && break
        kill -0 "$unshare_pid" 2>/dev/null || break
        sleep 0.05
    done
    [[ -n $init_pid ]] || { tail -n 20 "$dir/guest.log" >&2 || true; die "test host init did not start (see $dir/guest.log)"; }
    printf '%s\n' "$init_pid" >"$dir/init.pid"
}

wait_for_sshd() {
    local name=$1 index=$2 dir=$3 i
    local ns
    ns=$(netns_name "$name")
    for ((i = 0; i < 200; i++)); do
        if ip netns exec "$ns" ss -Hltn 'sport = :22' 2>/dev/null | grep -q .; then
            return 0
        fi
        if ! kill -0 "$(cat "$dir/init.pid")" 2>/dev/null; then
            tail -n 20 "$dir/guest.log" >&2 || true
            die "test host init exited before sshd listened (see $dir/guest.log)"
        fi
        sleep 0.05
    done
    tail -n 20 "$dir/guest.log" >&2 || true
    die "sshd did not listen on 10.213.$index.2:22 within 10s"
}

# Kills the PID recorded in PIDFILE, but only if it still is a process of
# this test host: inside its netns (guards against PID reuse).
kill_recorded_in_netns() {
    local pidfile=$1 ns=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if [[ $(ip netns identify "$pid" 2>/dev/null || true) == "$ns" ]]; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# The apt proxy runs on the host side (started by testhost.ts) and carries
# "--tag czd-testhost-proxy:NAME" on its command line.
kill_proxy() {
    local name=$1 dir=$2 pid
    local tag="czd-testhost-proxy:$name"
    {
        [[ -f $dir/proxy.pid ]] && cat "$dir/proxy.pid"
        pgrep -f -- "--tag $tag( |\$)" || true
    } | sort -u | while read -r pid; do
        [[ $pid =~ ^[0-9]+$ ]] || continue
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--tag $tag "; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# Every process whose root directory is inside DIR (the chroot), by /proc.
pids_rooted_in() {
    local dir=$1 p root
    for p in /proc/[0-9]*; do
        root=$(readlink "$p/root" 2>/dev/null || true)
        [[ $root == "$dir"/* || $root == "$dir" ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

kill_guest_processes() {
    local name=$1 dir=$2 ns pids i
    ns=$(netns_name "$name")
    # Killing PID 1 of the box makes the kernel kill everything else in it.
    kill_recorded_in_netns "$dir/init.pid" "$ns"
    kill_proxy "$name" "$dir"
    for ((i = 0; i < 50; i++)); do
        pids=$( { ip netns pids "$ns" 2>/dev/null || true; pids_rooted_in "$dir/root"; } | sort -u)
        [[ -z $pids ]] && return 0
        # shellcheck disable=SC2086 # word splitting wanted: one pid per word
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    die "processes still alive in test host $name: $pids"
}

# ---------------------------------------------------------------------------
# teardown

# Unmounts everything mounted at or under DIR, deepest first, lazily if busy.
umount_under() {
    local dir=$1 mp
    local -a mounts=()
    dir=$(realpath -m "$dir")
    mapfile -t mounts < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r)
    for mp in "${mounts[@]}"; do
        mp=$(printf '%b' "$mp") # /proc/mounts escapes spaces as \040
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "warning: could not unmount $mp"
    done
}

remove_network() {
    local name=$1 ns link
    ns=$(netns_name "$name")
    # Host-side veths carrying our alias (the run dir may be gone).
    while read -r link; do
        if [[ -n $link ]]; then ip link del "$link" 2>/dev/null || true; fi
    done < <(ip -o link show type veth 2>/dev/null |
        awk -v a="$ALIAS_PREFIX$name" '$0 ~ (" alias " a "$") { sub(/@.*/, "", $2); sub(/:$/, "", $2); print $2 }')
    remove_host_firewall "$name"
    if netns_exists "$ns"; then
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete netns $ns"
    fi
}

# The guest shares this machine's kernel, and the setup's scheduler step turns
# its autogroup scheduling off. The machine's own setting is recorded when the
# first of the running hosts comes up and put back when the last one goes down:
# hosts can overlap, and one that goes down must neither undo the setting under
# another nor leave behind the value another one set.
readonly AUTOGROUP_SETTING=/proc/sys/kernel/sched_autogroup_enabled
readonly KERNEL_SETTINGS_DIR=$RUNS_DIR/.kernel-settings

# Hosts that recorded the setting and are still up (their network namespace
# exists); a host that crashed without `down` no longer counts.
hosts_holding_kernel_settings() {
    local entry
    for entry in "$KERNEL_SETTINGS_DIR"/hosts/*; do
        [[ -e $entry ]] || continue
        if netns_exists "$(netns_name "${entry##*/}")"; then
            printf '%s\n' "${entry##*/}"
        else
            rm -f "$entry"
        fi
    done
}

# Both under one lock, so that hosts coming up and going down at once agree.
lock_kernel_settings() {
    mkdir -p "$KERNEL_SETTINGS_DIR/hosts"
    exec 7>"$KERNEL_SETTINGS_DIR/.lock"
    flock 7
}

record_kernel_settings() {
    local name=$1
    lock_kernel_settings
    # The saved value stays when it is there: it is the machine's own, from
    # before hosts that crashed without putting it back.
    if [[ -e $AUTOGROUP_SETTING && ! -s $KERNEL_SETTINGS_DIR/autogroup ]]; then
        cat "$AUTOGROUP_SETTING" >"$KERNEL_SETTINGS_DIR/autogroup"
    fi
    : >"$KERNEL_SETTINGS_DIR/hosts/$name"
    exec 7>&-
}

restore_kernel_settings() {
    local name=$1 saved=$KERNEL_SETTINGS_DIR/autogroup
    lock_kernel_settings
    rm -f "$KERNEL_SETTINGS_DIR/hosts/$name"
    if [[ -z $(hosts_holding_kernel_settings) && -s $saved && -e $AUTOGROUP_SETTING ]]; then
        if cat "$saved" >"$AUTOGROUP_SETTING"; then
            rm -f "$saved"
        else
            log "warning: could not restore $AUTOGROUP_SETTING to $(cat "$saved")"
        fi
    fi
    exec 7>&-
}

down() {
    local name=$1 dir
    dir=$(run_dir "$name")
    kill_guest_processes "$name" "$dir"
    restore_kernel_settings "$name"
    umount_under "$dir"
    remove_network "$name"
    if [[ -d $dir ]]; then
        # --one-file-system: never follow a mount we failed to remove.
        rm -rf --one-file-system "$dir"
    fi
}

# ---------------------------------------------------------------------------
# up

write_state() {
    local name=$1 index=$2 dir=$3
    cat >"$dir/state" <<EOF
NAME=$name
INDEX=$index
ADDRESS=10.213.$index.2
HOST_ADDRESS=10.213.$index.1
PROXY_PORT=$PROXY_PORT
NAMESPACE=$(netns_name "$name")
RUN_DIR=$dir
ROOT_DIR=$dir/root
INIT_PID=$(cat "$dir/init.pid")
EOF
    cat "$dir/state"
}

up() {
    local name=$1 index=$2 pubkey=$3 dir
    dir=$(run_dir "$name")
    down "$name"
    build_rootfs
    # From here on a failure must not leave half a test host behind.
    trap 'cleanup_failed_up "$name"' EXIT
    claim_network "$name" "$index"
    index=$CLAIMED_INDEX
    mkdir -p "$dir"
    record_kernel_settings "$name"
    unpack_rootfs "$dir/root"
    configure_rootfs "$dir/root" "$name" "$index" "$pubkey"
    start_guest "$name" "$dir"
    wait_for_sshd "$name" "$index" "$dir"
    write_state "$name" "$index" "$dir"
    trap - EXIT
}

# Checks (or, for "auto", picks) the index and creates the network, under a
# lock so that concurrent `up`s cannot take the same subnet.
CLAIMED_INDEX=
claim_network() {
    local name=$1 index=$2 i
    mkdir -p "$RUNS_DIR"
    exec 8>"$RUNS_DIR/.network.lock"
    flock 8
    if [[ $index == auto ]]; then
        index=
        for ((i = 1; i <= 254; i++)); do
            if index_is_free "$i"; then index=$i; break; fi
        done
        [[ -n $index ]] || die "no free index: all of 10.213.1-254.0/30 are in use"
    else
        check_index_free "$name" "$index"
    fi
    setup_network "$name" "$index"
    exec 8>&-
    CLAIMED_INDEX=$index
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup_failed_up() {
    local rc=$? name=$1
    trap - EXIT
    if ((rc != 0)); then
        log "up $name failed; removing what it created"
        down "$name" || log "warning: cleanup after failed up of $name failed; run: testhost.sh down $name"
    fi
    exit "$rc"
}

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd=$1
    shift
    require_root
    case $cmd in
        rootfs)
            build_rootfs
            ;;
        up)
            [[ $# -eq 3 ]] || usage
            check_name "$1"
            [[ $2 == auto ]] || check_index "$2"
            [[ $3 == ssh-* ]] || die "third argument must be an SSH public key (ssh-ed25519 ...)"
            up "$1" "$2" "$3"
            ;;
        down)
            [[ $# -eq 1 ]] || usage
            check_name "$1"
            down "$1"
            ;;
        status)
            [[ $# -eq 1 ]] || usage
            check_name "$1"
            cat "$(run_dir "$1")/state"
            ;;
        *)
            usage
            ;;
    esac
}

main "$@"; exit  # one line: bash must not read past it if the file changes meanwhile
