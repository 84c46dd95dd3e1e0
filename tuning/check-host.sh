#!/usr/bin/env bash
# check-host.sh - report (and optionally apply) Linux host settings that
# matter for running and benchmarking shardlog (glommio / io_uring / O_DIRECT).
#
# Read-only unless --apply is given. Only bash, coreutils, util-linux and
# /proc + /sys are used; anything missing (no cpufreq in a VM, no /sys/block
# in a container, ...) is reported as N/A instead of failing.
#
# See tuning/README.md for the reasoning behind every recommendation.

set -u

PROG=${0##*/}

# glommio refuses to start an executor below this RLIMIT_MEMLOCK (bytes).
GLOMMIO_MIN_MEMLOCK_KIB=512
# glommio's default io_memory per executor (10 MiB), registered with each of
# its 3 io_uring rings; the charge goes to the user's locked memory.
GLOMMIO_IO_MEMORY_KIB=$((10 * 1024))
GLOMMIO_RINGS=3
NOFILE_MIN=65536
SOMAXCONN_MIN=4096
SWAPPINESS_MAX=10
SWAPPINESS_SET=1

usage() {
    cat <<EOF
Usage: $PROG [--data-dir DIR] [--apply] [--help]

Check Linux host settings relevant to running / benchmarking shardlog and
print a table: setting | current | recommended | status (OK / WARN / N/A).

Options:
  --data-dir DIR  directory that will hold shardlog data (default:
                  ./shardlog-data if it exists, else the current directory).
                  Used to find the filesystem and block device to check.
                  If DIR does not exist yet, its nearest existing parent
                  is checked.
  --apply         as root, apply the runtime-only changes that are safe:
                  CPU governor=performance (where cpufreq exists),
                  THP enabled/defrag=madvise (if currently 'always'),
                  I/O scheduler (none for NVMe/virtio/xen, mq-deadline
                  otherwise), vm.swappiness=$SWAPPINESS_SET, net.core.somaxconn=$SOMAXCONN_MIN.
                  Only settings reported as WARN are touched; each change
                  is printed. Nothing is made persistent (see README.md).
                  Resource limits, irqbalance and CPU isolation are only
                  reported with the command to fix them.
  -h, --help      show this help and exit.

Exit status: 0 on success (WARN rows do not fail), 1 if --apply is used
without root, 2 on bad usage.
EOF
}

# ---------------------------------------------------------------- arguments
DATA_DIR=""
APPLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir)
            if [ $# -lt 2 ] || [ -z "$2" ]; then
                echo "$PROG: --data-dir needs a directory argument (see --help)" >&2
                exit 2
            fi
            DATA_DIR=$2
            shift 2
            ;;
        --data-dir=*)
            DATA_DIR=${1#--data-dir=}
            if [ -z "$DATA_DIR" ]; then
                echo "$PROG: --data-dir needs a directory argument (see --help)" >&2
                exit 2
            fi
            shift
            ;;
        --apply)
            APPLY=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "$PROG: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
done

if [ "$APPLY" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
    echo "$PROG: --apply changes kernel settings in /proc/sys and /sys and must be run as root." >&2
    echo "$PROG: re-run with: sudo $0 --apply${DATA_DIR:+ --data-dir $DATA_DIR}" >&2
    echo "$PROG: (without --apply the script is read-only and needs no privileges)" >&2
    exit 1
fi

# ---------------------------------------------------------------- helpers
ROW_SETTING=()
ROW_CURRENT=()
ROW_RECOMMENDED=()
ROW_STATUS=()
NOTES=()
CHANGES=()

row() { # setting current recommended status
    ROW_SETTING+=("$1")
    ROW_CURRENT+=("$2")
    ROW_RECOMMENDED+=("$3")
    ROW_STATUS+=("$4")
}

note() { NOTES+=("$1"); }

# Print the first line of a file, or nothing (and status 1) if unreadable.
read_first() {
    local f=$1 line
    [ -r "$f" ] || return 1
    IFS= read -r line 2>/dev/null <"$f" || [ -n "${line:-}" ] || return 1
    printf '%s' "$line"
}

# Extract the [selected] word from a sysfs multiple-choice file.
bracketed() {
    local s=$1
    case "$s" in
        *\[*\]*)
            s=${s#*[}
            printf '%s' "${s%%]*}"
            ;;
        *) printf '%s' "$s" ;;
    esac
}

# Count CPUs in a cpulist such as "0-3,8,10-11".
count_cpulist() {
    local list=$1 n=0 part lo hi
    [ -z "$list" ] && { echo 0; return; }
    local IFS=,
    for part in $list; do
        case "$part" in
            *-*)
                lo=${part%-*}
                hi=${part#*-}
                n=$((n + hi - lo + 1))
                ;;
            '') ;;
            *) n=$((n + 1)) ;;
        esac
    done
    echo "$n"
}

# Write a value to a /proc or /sys file, record the change.
apply_write() { # file value description old
    local f=$1 v=$2 what=$3 old=$4
    if printf '%s\n' "$v" 2>/dev/null >"$f"; then
        CHANGES+=("$what: $old -> $v")
        return 0
    fi
    CHANGES+=("$what: FAILED to write '$v' to $f (read-only /sys or /proc in a container?)")
    return 1
}

kib_human() { # KiB -> human readable
    local k=$1
    if [ "$k" -ge 1048576 ] && [ $((k % 1048576)) -eq 0 ]; then
        echo "$((k / 1048576)) GiB"
    elif [ "$k" -ge 1024 ] && [ $((k % 1024)) -eq 0 ]; then
        echo "$((k / 1024)) MiB"
    else
        echo "$k KiB"
    fi
}

ONLINE_CPUS=$(count_cpulist "$(read_first /sys/devices/system/cpu/online || true)")
if [ "$ONLINE_CPUS" -eq 0 ]; then
    ONLINE_CPUS=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
fi

# ---------------------------------------------------------------- CPU governor
GOV_TOTAL=0
GOV_PERF=0
GOV_SUMMARY=""
governor_scan() {
    local f g
    local -A count=()
    GOV_TOTAL=0
    GOV_PERF=0
    GOV_SUMMARY=""
    for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
        g=$(read_first "$f") || continue
        count[$g]=$((${count[$g]:-0} + 1))
        GOV_TOTAL=$((GOV_TOTAL + 1))
        [ "$g" = performance ] && GOV_PERF=$((GOV_PERF + 1))
    done
    for g in "${!count[@]}"; do
        GOV_SUMMARY+="${GOV_SUMMARY:+, }$g x${count[$g]}"
    done
}

check_governor() {
    local f g avail cpu status
    governor_scan
    if [ "$GOV_TOTAL" -eq 0 ]; then
        row "cpu governor" "no cpufreq" "performance" "N/A"
        note "cpu governor: /sys/devices/system/cpu/cpu*/cpufreq is absent (typical in VMs/containers); the host or hypervisor controls frequency."
        return
    fi
    if [ "$GOV_PERF" -lt "$GOV_TOTAL" ] && [ "$APPLY" -eq 1 ]; then
        for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
            g=$(read_first "$f") || continue
            [ "$g" = performance ] && continue
            cpu=${f#/sys/devices/system/cpu/}
            cpu=${cpu%%/*}
            avail=$(read_first "${f%/*}/scaling_available_governors" || true)
            case " $avail " in
                *" performance "*) apply_write "$f" performance "$cpu scaling_governor" "$g" ;;
                *) CHANGES+=("$cpu scaling_governor: 'performance' not offered ($avail), left as $g") ;;
            esac
        done
        governor_scan
    fi
    if [ "$GOV_PERF" -eq "$GOV_TOTAL" ]; then
        status=OK
    else
        status=WARN
    fi
    row "cpu governor" "$GOV_SUMMARY" "performance (all CPUs)" "$status"
}

# ---------------------------------------------------------------- THP
check_thp() {
    local base=/sys/kernel/mm/transparent_hugepage key raw cur status
    for key in enabled defrag; do
        raw=$(read_first "$base/$key") || {
            row "THP $key" "unavailable" "madvise" "N/A"
            continue
        }
        cur=$(bracketed "$raw")
        case "$key:$cur" in
            enabled:madvise | enabled:never) status=OK ;;
            defrag:madvise | defrag:never | defrag:defer | defrag:defer+madvise) status=OK ;;
            *) status=WARN ;;
        esac
        if [ "$status" = WARN ] && [ "$APPLY" -eq 1 ]; then
            if apply_write "$base/$key" madvise "THP $key" "$cur"; then
                cur=$(bracketed "$(read_first "$base/$key" || echo "$cur")")
                [ "$cur" = madvise ] && status=OK
            fi
        fi
        if [ "$key" = enabled ]; then
            row "THP enabled" "$cur" "madvise (or never)" "$status"
        else
            row "THP defrag" "$cur" "madvise (or never/defer)" "$status"
        fi
    done
}

# ---------------------------------------------------------------- irqbalance
check_irqbalance() {
    local running=no c banned="" cfg=/etc/default/irqbalance isolated
    for c in /proc/[0-9]*/comm; do
        if [ "$(read_first "$c" 2>/dev/null || true)" = irqbalance ]; then
            running=yes
            break
        fi
    done
    if [ -r "$cfg" ]; then
        banned=$(grep -E '^[[:space:]]*IRQBALANCE_BANNED_CPU(S|LIST)=' "$cfg" 2>/dev/null | tail -n1 || true)
    fi
    isolated=$(read_first /sys/devices/system/cpu/isolated || true)
    if [ "$running" = no ]; then
        row "irqbalance" "not running" "off+manual pinning, or banned shard CPUs" "OK"
    elif [ -n "$banned" ]; then
        row "irqbalance" "running ($banned)" "off+manual pinning, or banned shard CPUs" "OK"
    elif [ -n "$isolated" ]; then
        row "irqbalance" "running (isolcpus=$isolated)" "off+manual pinning, or banned shard CPUs" "OK"
        note "irqbalance: recent versions skip isolcpus/nohz_full CPUs automatically; verify with /proc/interrupts."
    else
        row "irqbalance" "running, no banned CPUs" "off+manual pinning, or banned shard CPUs" "WARN"
        note "irqbalance: may move NIC IRQs onto shard cores. Set IRQBALANCE_BANNED_CPULIST in $cfg or 'systemctl disable --now irqbalance' and pin IRQs (README: IRQ affinity). Not changed by --apply."
    fi
}

# ---------------------------------------------------------------- data dir
RESOLVED_DIR=""
resolve_data_dir() {
    local d
    if [ -n "$DATA_DIR" ]; then
        d=$DATA_DIR
    elif [ -d ./shardlog-data ]; then
        d=./shardlog-data
    else
        d=.
    fi
    local orig=$d
    while [ ! -e "$d" ]; do
        case "$d" in
            */*) d=${d%/*}; [ -z "$d" ] && d=/ ;;
            *) d=. ;;
        esac
    done
    RESOLVED_DIR=$(cd "$d" 2>/dev/null && pwd -P || printf '%s' "$d")
    if [ "$orig" != "$d" ]; then
        note "data dir: '$orig' does not exist; checked its nearest existing parent $RESOLVED_DIR."
    fi
}

# sysfs directory (under /sys/dev/block) for a "MAJ:MIN" pair, partition
# resolved to its whole disk.
sysfs_disk_for() {
    local mm=$1 p
    p=$(cd "/sys/dev/block/$mm" 2>/dev/null && pwd -P) || return 1
    if [ -e "$p/partition" ]; then
        p=${p%/*}
    fi
    printf '%s' "$p"
}

# Underlying whole disks for a block device: follows dm/md "slaves".
leaf_disks() { # sysfs dir; prints one sysfs dir per line
    local p=$1 s found=0
    if [ -d "$p/slaves" ]; then
        for s in "$p"/slaves/*; do
            [ -e "$s" ] || continue
            found=1
            local sp
            sp=$(cd "$s" 2>/dev/null && pwd -P) || continue
            [ -e "$sp/partition" ] && sp=${sp%/*}
            leaf_disks "$sp"
        done
    fi
    [ "$found" -eq 0 ] && printf '%s\n' "$p"
}

recommended_scheduler() { # disk name, sysfs dir
    local name=$1 dir=$2 avail
    avail=$(read_first "$dir/queue/scheduler" || true)
    case "$name" in
        nvme* | vd* | xvd*) echo none ;;
        *)
            # Anything else (SATA/SAS SSD, HDD, iSCSI, ...): mq-deadline if
            # the kernel offers it, otherwise none.
            case " $avail " in
                *mq-deadline*) echo mq-deadline ;;
                *) echo none ;;
            esac
            ;;
    esac
}

check_data_dir() {
    local src="" fstype="" target="" majmin="" line
    resolve_data_dir
    if command -v findmnt >/dev/null 2>&1; then
        line=$(findmnt -n -r -o SOURCE,FSTYPE,TARGET,MAJ:MIN --target "$RESOLVED_DIR" 2>/dev/null | tail -n1)
        if [ -n "$line" ]; then
            read -r src fstype target majmin <<<"$line"
        fi
    fi
    if [ -z "$fstype" ] && command -v df >/dev/null 2>&1; then
        line=$(df -P -T "$RESOLVED_DIR" 2>/dev/null | awk 'NR==2 {print $1, $2, $NF}')
        [ -n "$line" ] && read -r src fstype target <<<"$line"
    fi
    if [ -z "$fstype" ]; then
        fstype=$(stat -f -c %T "$RESOLVED_DIR" 2>/dev/null || true)
    fi

    row "data dir" "$RESOLVED_DIR" "dedicated NVMe/SSD volume" "OK"

    # --- filesystem type
    case "$fstype" in
        xfs) row "data dir filesystem" "xfs ($target)" "xfs (ext4 ok)" "OK" ;;
        ext4) row "data dir filesystem" "ext4 ($target)" "xfs (ext4 ok)" "OK" ;;
        tmpfs | ramfs)
            row "data dir filesystem" "$fstype - BAD: no O_DIRECT" "xfs (ext4 ok)" "WARN"
            note "filesystem: $RESOLVED_DIR is on $fstype. glommio disables direct I/O there and data lives in RAM: benchmark numbers are meaningless and nothing is durable. Use --data-dir on a real disk."
            ;;
        overlay | fuse* | nfs* | cifs | 9p | virtiofs | squashfs)
            row "data dir filesystem" "$fstype ($target)" "xfs (ext4 ok)" "WARN"
            note "filesystem: $fstype may not support O_DIRECT/io_uring well; put the data dir on a host-mounted XFS/ext4 volume."
            ;;
        '') row "data dir filesystem" "unknown" "xfs (ext4 ok)" "N/A" ;;
        *) row "data dir filesystem" "$fstype ($target)" "xfs (ext4 ok)" "WARN" ;;
    esac

    # --- block device / scheduler
    local dev_dir=""
    if [ -n "$majmin" ] && [ "${majmin%%:*}" != 0 ]; then
        dev_dir=$(sysfs_disk_for "$majmin" || true)
    fi
    if [ -z "$dev_dir" ] && [ -b "$src" ]; then
        local hex maj min
        hex=$(stat -L -c '%t:%T' "$src" 2>/dev/null || true)
        if [ -n "$hex" ]; then
            maj=$((16#${hex%%:*}))
            min=$((16#${hex#*:}))
            dev_dir=$(sysfs_disk_for "$maj:$min" || true)
        fi
    fi
    if [ -z "$dev_dir" ]; then
        row "I/O scheduler" "no block device (${src:-?})" "none (NVMe/virtio)" "N/A"
        row "logical block size" "unknown" "O_DIRECT alignment" "N/A"
        return
    fi

    local top_name=${dev_dir##*/} disk name sched_raw sched rec status any=0
    while IFS= read -r disk; do
        [ -n "$disk" ] || continue
        any=1
        name=${disk##*/}
        sched_raw=$(read_first "$disk/queue/scheduler") || {
            row "I/O scheduler ($name)" "unreadable" "none (NVMe/virtio)" "N/A"
            continue
        }
        sched=$(bracketed "$sched_raw")
        rec=$(recommended_scheduler "$name" "$disk")
        if [ "$sched" = "$rec" ]; then
            status=OK
        elif [ "$rec" = mq-deadline ] && [ "$sched" = none ]; then
            status=OK   # none is fine on SSDs too
        else
            status=WARN
        fi
        if [ "$status" = WARN ] && [ "$APPLY" -eq 1 ]; then
            case " $sched_raw " in
                *"$rec"*)
                    if apply_write "$disk/queue/scheduler" "$rec" "$name scheduler" "$sched"; then
                        sched=$(bracketed "$(read_first "$disk/queue/scheduler" || echo "$sched")")
                        [ "$sched" = "$rec" ] && status=OK
                    fi
                    ;;
                *) CHANGES+=("$name scheduler: '$rec' not available ($sched_raw), left as $sched") ;;
            esac
        fi
        if [ "$status" = WARN ] && [ "$APPLY" -eq 0 ]; then
            local sfile=$disk/queue/scheduler
            [ -e "/sys/block/$name/queue/scheduler" ] && sfile=/sys/block/$name/queue/scheduler
            note "I/O scheduler: $name uses '$sched'; to switch to '$rec': echo $rec > $sfile (persist with a udev rule, see README.md)."
        fi
        local label="I/O scheduler ($name)"
        [ "$name" != "$top_name" ] && label="I/O scheduler ($top_name->$name)"
        row "$label" "$sched" "$rec" "$status"
    done < <(leaf_disks "$dev_dir")
    [ "$any" -eq 0 ] && row "I/O scheduler" "unknown (${src:-?})" "none (NVMe/virtio)" "N/A"

    local lbs pbs
    lbs=$(read_first "$dev_dir/queue/logical_block_size" || true)
    pbs=$(read_first "$dev_dir/queue/physical_block_size" || true)
    if [ -n "$lbs" ]; then
        row "logical block size ($top_name)" "$lbs B${pbs:+ (physical $pbs B)}" "O_DIRECT alignment >= this" "OK"
    else
        row "logical block size" "unknown" "O_DIRECT alignment" "N/A"
    fi
}

# ---------------------------------------------------------------- limits
check_limits() {
    local l n need_kib status="" capeff="" has_ipc_lock=0
    capeff=$(grep -E '^CapEff:' /proc/self/status 2>/dev/null | awk '{print $2}')
    if [ -n "$capeff" ] && [ $(( (16#$capeff >> 14) & 1 )) -eq 1 ]; then
        has_ipc_lock=1   # CAP_IPC_LOCK = 14: io_uring skips memlock accounting
    fi
    need_kib=$((ONLINE_CPUS * GLOMMIO_RINGS * GLOMMIO_IO_MEMORY_KIB))

    l=$(ulimit -l 2>/dev/null || echo "?")
    local rec_l
    rec_l="unlimited (>= $(kib_human "$need_kib") for $ONLINE_CPUS shards)"
    if [ "$l" = unlimited ]; then
        status=OK
        row "RLIMIT_MEMLOCK (ulimit -l)" "unlimited" "$rec_l" "$status"
    elif [ "$l" = "?" ]; then
        row "RLIMIT_MEMLOCK (ulimit -l)" "unknown" "$rec_l" "N/A"
    else
        if [ "$l" -lt "$GLOMMIO_MIN_MEMLOCK_KIB" ]; then
            status=WARN
            note "memlock: $(kib_human "$l") is below glommio's hard minimum of 512 KiB; executors will fail to start."
        elif [ "$has_ipc_lock" -eq 1 ]; then
            status=OK
            note "memlock: this shell has CAP_IPC_LOCK, so io_uring does not charge registered buffers to the limit. A broker started as a non-root user / systemd unit without it needs LimitMEMLOCK=infinity."
        elif [ "$l" -lt "$need_kib" ]; then
            status=WARN
            note "memlock: $(kib_human "$l") < ~$(kib_human "$need_kib") (shards x 3 rings x 10 MiB io_memory). Buffer registration may fail and glommio then falls back to unregistered buffers (slower)."
        else
            status=OK
        fi
        row "RLIMIT_MEMLOCK (ulimit -l)" "$(kib_human "$l")" "$rec_l" "$status"
    fi
    if [ "$status" = WARN ] && [ "$APPLY" -eq 1 ]; then
        CHANGES+=("memlock: not changed (limits are per process). Run 'ulimit -l unlimited' in the broker's shell as root, or set LimitMEMLOCK=infinity (systemd) / '<user> - memlock unlimited' in /etc/security/limits.d/")
    fi

    n=$(ulimit -n 2>/dev/null || echo "?")
    local nh
    nh=$(ulimit -Hn 2>/dev/null || echo "?")
    if [ "$n" = unlimited ] || { [ "$n" != "?" ] && [ "$n" -ge "$NOFILE_MIN" ]; }; then
        status=OK
    elif [ "$n" = "?" ]; then
        status=N/A
    else
        status=WARN
        note "nofile: $n open files is tight for segment + index files + client sockets + io_uring fds; raise with 'ulimit -n' / LimitNOFILE= (README.md)."
        if [ "$APPLY" -eq 1 ]; then
            CHANGES+=("nofile: not changed. Run 'ulimit -n $NOFILE_MIN' (hard limit here: $nh) before starting the broker, or set LimitNOFILE=1048576 (systemd) / '<user> - nofile 1048576' in /etc/security/limits.d/")
        fi
    fi
    row "RLIMIT_NOFILE (ulimit -n)" "$n (hard $nh)" ">= $NOFILE_MIN (1048576 for many partitions)" "$status"
}

# ---------------------------------------------------------------- sysctls
check_swappiness() {
    local f=/proc/sys/vm/swappiness cur swap_active=0 status cur_disp
    cur=$(read_first "$f") || {
        row "vm.swappiness" "unavailable" "$SWAPPINESS_SET" "N/A"
        return
    }
    if [ -r /proc/swaps ] && [ "$(wc -l </proc/swaps)" -gt 1 ]; then
        swap_active=1
    fi
    cur_disp=$cur
    [ "$swap_active" -eq 0 ] && cur_disp="$cur (no swap active)"
    if [ "$cur" -le "$SWAPPINESS_MAX" ] || [ "$swap_active" -eq 0 ]; then
        status=OK
    else
        status=WARN
        if [ "$APPLY" -eq 1 ] && apply_write "$f" "$SWAPPINESS_SET" "vm.swappiness" "$cur"; then
            cur=$(read_first "$f" || echo "$cur")
            cur_disp=$cur
            [ "$cur" -le "$SWAPPINESS_MAX" ] && status=OK
        fi
    fi
    row "vm.swappiness" "$cur_disp" "$SWAPPINESS_SET (<= $SWAPPINESS_MAX)" "$status"
}

check_somaxconn() {
    local f=/proc/sys/net/core/somaxconn cur status
    cur=$(read_first "$f") || {
        row "net.core.somaxconn" "unavailable" ">= $SOMAXCONN_MIN" "N/A"
        return
    }
    if [ "$cur" -ge "$SOMAXCONN_MIN" ]; then
        status=OK
    else
        status=WARN
        if [ "$APPLY" -eq 1 ] && apply_write "$f" "$SOMAXCONN_MIN" "net.core.somaxconn" "$cur"; then
            cur=$(read_first "$f" || echo "$cur")
            [ "$cur" -ge "$SOMAXCONN_MIN" ] && status=OK
        fi
    fi
    row "net.core.somaxconn" "$cur" ">= $SOMAXCONN_MIN" "$status"
}

# ---------------------------------------------------------------- CPUs
check_cpus() {
    local iso nohz aff
    iso=$(read_first /sys/devices/system/cpu/isolated || true)
    nohz=$(read_first /sys/devices/system/cpu/nohz_full || true)
    [ "$nohz" = "(null)" ] && nohz=""
    if [ -n "$iso" ]; then
        row "isolated CPUs" "$iso${nohz:+ (nohz_full $nohz)}" "broker shard cores (optional)" "OK"
        note "isolated CPUs: the scheduler never places unpinned threads on $iso; pin shards there and run load generators elsewhere (taskset -c)."
    elif [ ! -e /sys/devices/system/cpu/isolated ]; then
        row "isolated CPUs" "unknown" "broker shard cores (optional)" "N/A"
    elif [ "$ONLINE_CPUS" -lt 4 ]; then
        row "isolated CPUs" "none" "broker shard cores (optional)" "N/A"
        note "isolated CPUs: only $ONLINE_CPUS online CPUs; too few to partition between broker shards and housekeeping/load generator."
    else
        row "isolated CPUs" "none${nohz:+ (nohz_full $nohz)}" "broker shard cores (optional)" "WARN"
        note "isolated CPUs: none. For benchmarks, isolate the shard cores (isolcpus=/nohz_full= or a cpuset) and pin the load generator to other cores. Not changed by --apply (needs reboot / cgroup setup)."
    fi

    aff=$(nproc 2>/dev/null || echo "?")
    if [ "$aff" != "?" ] && [ "$aff" != "$ONLINE_CPUS" ]; then
        row "online CPUs" "$ONLINE_CPUS (this shell may use $aff)" "one shard per core" "OK"
        note "online CPUs: this shell is restricted to $aff CPUs (taskset/cpuset); a broker started from it inherits that."
    else
        row "online CPUs" "$ONLINE_CPUS" "one shard per core" "OK"
    fi
}

# ---------------------------------------------------------------- memory backing
# A virtual machine whose balloon device reports free pages to its host
# (virtio-balloon free page reporting) has that memory taken back; the
# next first touch waits for the host to back it again. Measured on a
# Firecracker VM (page_reporting_order=9): touching 2 GiB of fresh huge
# pages took 4.7 s after 20 s idle and 0.22 s right after another process
# had freed the same amount. A fresh broker's first seconds, and memory an
# allocator gives back and takes again, pay for it (tuning/README.md §3).
check_memory_backing() {
    local order balloon=no d
    for d in /sys/bus/virtio/drivers/virtio_balloon/virtio*; do
        [ -e "$d" ] && balloon=yes
    done
    order=$(read_first /sys/module/page_reporting/parameters/page_reporting_order || true)
    if [ "$balloon" = yes ] && [ -n "$order" ]; then
        row "free page reporting" "on (virtio-balloon, order $order)" "off for benchmarks" "WARN"
        note "free page reporting: this VM hands freed memory back to its host, and the first touch of it afterwards waits for the host (here: 2 GiB of fresh huge pages took 4.7 s after 20 s idle, 0.22 s when just freed). Expect a fresh broker's first seconds to run slow: use loadgen --warmup 5s or more, or a short warm-up run first. Fix on the host (Firecracker: the balloon's free_page_reporting=false; QEMU: virtio-balloon free-page-reporting=off); not changed by --apply."
    elif [ "$balloon" = yes ]; then
        row "free page reporting" "balloon, no reporting seen" "off for benchmarks" "OK"
    else
        row "free page reporting" "no balloon device" "off for benchmarks" "OK"
    fi
}

# ---------------------------------------------------------------- output
print_table() {
    local i w1=7 w2=7 w3=11 w4=6
    for i in "${!ROW_SETTING[@]}"; do
        (( ${#ROW_SETTING[i]} > w1 )) && w1=${#ROW_SETTING[i]}
        (( ${#ROW_CURRENT[i]} > w2 )) && w2=${#ROW_CURRENT[i]}
        (( ${#ROW_RECOMMENDED[i]} > w3 )) && w3=${#ROW_RECOMMENDED[i]}
    done
    local sep
    sep=$(printf '%*s' $((w1 + w2 + w3 + w4 + 9)) '' | tr ' ' '-')
    printf "%-${w1}s | %-${w2}s | %-${w3}s | %s\n" setting current recommended status
    printf '%s\n' "$sep"
    for i in "${!ROW_SETTING[@]}"; do
        printf "%-${w1}s | %-${w2}s | %-${w3}s | %s\n" \
            "${ROW_SETTING[i]}" "${ROW_CURRENT[i]}" "${ROW_RECOMMENDED[i]}" "${ROW_STATUS[i]}"
    done
}

main() {
    check_governor
    check_thp
    check_memory_backing
    check_irqbalance
    check_data_dir
    check_limits
    check_swappiness
    check_somaxconn
    check_cpus

    echo "shardlog host check: $(uname -srm 2>/dev/null || echo unknown kernel), $(date '+%Y-%m-%d %H:%M:%S %Z')"
    if [ "$APPLY" -eq 1 ]; then
        echo
        echo "Changes made (runtime only, lost on reboot; see README.md to persist):"
        if [ ${#CHANGES[@]} -eq 0 ]; then
            echo "  (nothing to change)"
        else
            local c
            for c in "${CHANGES[@]}"; do echo "  - $c"; done
        fi
    fi
    echo
    print_table

    local i warn=0 na=0
    for i in "${!ROW_STATUS[@]}"; do
        case "${ROW_STATUS[i]}" in
            WARN) warn=$((warn + 1)) ;;
            N/A) na=$((na + 1)) ;;
        esac
    done
    if [ ${#NOTES[@]} -gt 0 ]; then
        echo
        echo "Notes:"
        local n
        for n in "${NOTES[@]}"; do echo "  - $n"; done
    fi
    echo
    echo "Summary: ${#ROW_STATUS[@]} checks, $warn WARN, $na N/A."
    if [ "$warn" -gt 0 ] && [ "$APPLY" -eq 0 ]; then
        echo "Run as root with --apply to fix the runtime-adjustable ones; see tuning/README.md."
    fi
    return 0
}

main
exit 0
