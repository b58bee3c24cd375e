#!/usr/bin/env bash
# Spread a NIC's queue interrupts over a set of CPUs, one IRQ per CPU in turn,
# and steer receive processing (RPS) to the same CPUs when the NIC has fewer
# receive queues than CPUs. Optionally (--xps) map the CPUs to transmit queues.
#
# Usage: tuning/irq-affinity.sh [--apply] [--xps] [--no-rps] <interface> <cpus>
#   <cpus>     a CPU list as the kernel writes them: 0-3,8
#   --apply    write the settings (default: print what would be written)
#   --xps      also set transmit packet steering (queues/tx-*/xps_cpus)
#   --no-rps   leave queues/rx-*/rps_cpus alone
#
# Writes only /proc/irq/<n>/smp_affinity_list and
# /sys/class/net/<interface>/queues/*/{rps_cpus,xps_cpus}; nothing persists
# across a reboot (run it from a oneshot unit or udev rule for that).
# irqbalance, if running, moves IRQs back: stop it or list these IRQs in its
# IRQBALANCE_BANNED_IRQS / --banirq.
#
# PROC_ROOT and SYS_ROOT (default /proc and /sys) point the script at another
# tree, for testing.
set -euo pipefail

PROC_ROOT=${PROC_ROOT:-/proc}
SYS_ROOT=${SYS_ROOT:-/sys}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" | sed '/^set /,$d'
    exit "${1:-2}"
}
die() {
    echo "irq-affinity: $*" >&2
    exit 2
}

apply=0 xps=0 rps=1
args=()
for a in "$@"; do
    case "$a" in
        --apply) apply=1 ;;
        --xps) xps=1 ;;
        --no-rps) rps=0 ;;
        -h | --help) usage 0 ;;
        -*) die "unknown option $a (see --help)" ;;
        *) args+=("$a") ;;
    esac
done
[ ${#args[@]} -eq 2 ] || usage
IFACE=${args[0]}
CPUSPEC=${args[1]}

NETDIR=$SYS_ROOT/class/net/$IFACE
[ -d "$NETDIR" ] || die "no interface $IFACE under $SYS_ROOT/class/net"
[ "$IFACE" != lo ] || die "lo has no interrupts"

# "0-3,8" -> "0 1 2 3 8"
expand_cpus() {
    local part a b c out=() parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        part=${part//[[:space:]]/}
        [ -n "$part" ] || continue
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]}
            [ "$a" -le "$b" ] || return 1
            for ((c = a; c <= b; c++)); do out+=("$c"); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            out+=("$part")
        else
            return 1
        fi
    done
    echo "${out[@]}"
}

# CPU numbers -> the kernel's hex mask, 32-bit groups, most significant first.
cpus_to_mask() {
    local c max=0 words i mask=""
    for c in "$@"; do ((c > max)) && max=$c; done
    words=$((max / 32 + 1))
    local -a w
    for ((i = 0; i < words; i++)); do w[i]=0; done
    for c in "$@"; do w[c / 32]=$((w[c / 32] | (1 << (c % 32)))); done
    for ((i = words - 1; i >= 0; i--)); do
        mask+=$(printf '%08x' "${w[i]}")
        ((i > 0)) && mask+=,
    done
    echo "$mask"
}

cpu_words=$(expand_cpus "$CPUSPEC") || die "bad CPU list '$CPUSPEC' (want e.g. 0-3,8)"
read -ra CPUS <<<"$cpu_words"
[ ${#CPUS[@]} -gt 0 ] || die "empty CPU list"
if [ -r "$SYS_ROOT/devices/system/cpu/online" ]; then
    ONLINE=" $(expand_cpus "$(cat "$SYS_ROOT/devices/system/cpu/online")") "
    for c in "${CPUS[@]}"; do
        [[ $ONLINE == *" $c "* ]] || die "CPU $c is not online (online: $(cat "$SYS_ROOT/devices/system/cpu/online"))"
    done
fi

# Names the NIC's interrupts are registered under: the interface, and the
# device behind it (a PCI address such as 0000:3b:00.0, or virtio2).
NAMES=("$IFACE")
if [ -e "$NETDIR/device" ]; then
    NAMES+=("$(basename "$(readlink -f "$NETDIR/device")")")
fi

# Queue IRQs: lines of /proc/interrupts naming the NIC, without the link,
# config and async vectors (and the bare-interface-name vector drivers use
# for link events).
queue_irqs() {
    local ncpu line irq desc action n found
    ncpu=$(head -1 "$PROC_ROOT/interrupts" | wc -w)
    while read -r line; do
        irq=${line%%:*}
        [[ $irq =~ ^[0-9]+$ ]] || continue
        # Drop "N:" and the per-CPU counts; what is left is chip, hwirq, trigger, action.
        desc=$(echo "${line#*:}" | awk -v n="$ncpu" '{ for (i = n + 1; i <= NF; i++) printf "%s ", $i }')
        action=$(echo "$desc" | awk '{ print $NF }')
        found=0
        for n in "${NAMES[@]}"; do
            if echo " $desc " | grep -qE "(^|[^[:alnum:]])${n//./\\.}([^[:alnum:]]|$)"; then
                found=1
            fi
            [ "$action" != "$n" ] || continue 2
        done
        [ $found -eq 1 ] || continue
        echo "$action" | grep -qiE 'config|async|misc|event|lsc' && continue
        echo "$irq $action"
    done < <(tail -n +2 "$PROC_ROOT/interrupts")
}

failures=0
# write <file> <value> <what>
write() {
    local file=$1 value=$2 what=$3 cur
    cur=$(cat "$file" 2>/dev/null || echo '?')
    if [ "$cur" = "$value" ] || { [[ $cur =~ ^[0-9a-f,]+$ ]] && [[ $value =~ ^[0-9a-f,]+$ ]] &&
        [ "$(echo "$cur" | tr -d , | sed 's/^0*//')" = "$(echo "$value" | tr -d , | sed 's/^0*//')" ]; }; then
        printf '  %-40s %s (unchanged)\n' "$what" "$cur"
        return
    fi
    if [ $apply -eq 1 ]; then
        if echo "$value" >"$file" 2>/dev/null; then
            printf '  %-40s %s -> %s\n' "$what" "$cur" "$value"
        else
            printf '  %-40s %s -> %s FAILED (kernel-managed IRQ, or not root?)\n' "$what" "$cur" "$value"
            failures=$((failures + 1))
        fi
    else
        printf '  %-40s %s -> %s\n' "$what" "$cur" "$value"
    fi
}

if pgrep -x irqbalance >/dev/null 2>&1; then
    echo "note: irqbalance is running and will move these IRQs again; stop it or ban them"
fi

echo "$IFACE (${NAMES[*]}) -> CPUs ${CPUS[*]}"

mapfile -t IRQS < <(queue_irqs)
echo "interrupts: ${#IRQS[@]} queue IRQs"
i=0
for entry in "${IRQS[@]}"; do
    irq=${entry%% *}
    action=${entry#* }
    cpu=${CPUS[i % ${#CPUS[@]}]}
    write "$PROC_ROOT/irq/$irq/smp_affinity_list" "$cpu" "irq $irq ($action)"
    i=$((i + 1))
done
[ ${#IRQS[@]} -gt 0 ] || echo "  none found (virtual device?): relying on RPS"

RXQ=("$NETDIR"/queues/rx-*)
TXQ=("$NETDIR"/queues/tx-*)
[ -e "${RXQ[0]}" ] || RXQ=()
[ -e "${TXQ[0]}" ] || TXQ=()

if [ $rps -eq 1 ] && [ ${#RXQ[@]} -gt 0 ]; then
    # With a receive queue per CPU, RSS already spreads the work; RPS would only
    # add an inter-processor interrupt per packet.
    if [ ${#RXQ[@]} -ge ${#CPUS[@]} ]; then
        mask=0
        echo "rps: ${#RXQ[@]} rx queue(s) for ${#CPUS[@]} CPU(s), no steering needed: RPS off"
    else
        mask=$(cpus_to_mask "${CPUS[@]}")
        echo "rps: ${#RXQ[@]} rx queue(s) for ${#CPUS[@]} CPUs: steer to all of them"
    fi
    for q in "${RXQ[@]}"; do
        write "$q/rps_cpus" "$mask" "$(basename "$q") rps_cpus"
    done
fi

if [ $xps -eq 1 ] && [ ${#TXQ[@]} -eq 1 ]; then
    echo "xps: one tx queue, nothing to map"
elif [ $xps -eq 1 ] && [ ${#TXQ[@]} -gt 1 ]; then
    echo "xps: ${#CPUS[@]} CPUs over ${#TXQ[@]} tx queue(s)"
    for ((t = 0; t < ${#TXQ[@]}; t++)); do
        mine=()
        for ((j = t; j < ${#CPUS[@]}; j += ${#TXQ[@]})); do mine+=("${CPUS[j]}"); done
        [ ${#mine[@]} -gt 0 ] || continue
        write "$NETDIR/queues/tx-$t/xps_cpus" "$(cpus_to_mask "${mine[@]}")" "tx-$t xps_cpus"
    done
fi

if [ $apply -eq 0 ]; then
    echo "dry run: nothing written; rerun with --apply (as root) to write"
elif [ $failures -gt 0 ]; then
    echo "$failures write(s) failed"
    exit 1
fi
