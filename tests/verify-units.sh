#!/bin/sh
# systemd-analyze verify on every unit we install, with ExecStart= pointing
# at the sparrowd just built (and ExecStartPre= and ExecStopPost= at the
# vip clean-up, when built), sparrow.service with and without its timesync
# drop-in, and ntpsec's drop-in on a unit like Debian's.
# Usage: verify-units.sh SRCDIR SBINDIR [VIP_CLEANUP]
set -eu
src=$1
sbindir=$2
record=${3:+ExecStartPre=-$3 --record}
cleanup=${3:+ExecStopPost=-$3}
if ! command -v systemd-analyze >/dev/null; then
    echo "skipped: systemd-analyze is not installed"
    exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
subst() {
    sed -e "s|@sbindir@|$sbindir|" -e "s|@vip_record@|$record|" -e "s|@vip_cleanup@|$cleanup|" \
        -e "s|@libexecdir@|$src/plugins/timesync|" -e "s|@sparrowdatadir@|/usr/share/sparrow|" "$1"
}
subst "$src/units/sparrow.service.in" >"$dir/sparrow.service"
sed -e "s|@libexecdir@|$sbindir|" "$src/units/sparrow-fence.service.in" >"$dir/sparrow-fence.service"
cp "$src/units/sparrow.target" "$src/units/sparrow-leader.target" \
   "$src/units/examples/sparrow-leader-example.service" "$dir/"
cd "$dir"
systemd-analyze verify ./sparrow.service ./sparrow-fence.service ./sparrow.target \
    ./sparrow-leader.target ./sparrow-leader-example.service
mkdir timesync
subst "$src/units/sparrow.service.in" >timesync/sparrow.service
mkdir timesync/sparrow.service.d
subst "$src/units/timesync.conf.in" >timesync/sparrow.service.d/timesync.conf
SYSTEMD_UNIT_PATH="$dir/timesync:" systemd-analyze verify sparrow.service
# The exposure `systemd-analyze security` gives, at most 2.0 (20 tenths),
# the timesync drop-in's CAP_DAC_OVERRIDE included.
systemd-analyze security --offline=yes --threshold=20 --no-pager ./sparrow.service
systemd-analyze security --offline=yes --threshold=20 --no-pager ./sparrow-fence.service
SYSTEMD_UNIT_PATH="$dir/timesync:" systemd-analyze security --offline=yes --threshold=20 \
    --no-pager sparrow.service >exposure
if ! grep -Eq 'CapabilityBoundingSet=~CAP_\(DAC_.* [0-9.]+$' exposure; then
    echo "the timesync drop-in does not apply to sparrow.service:" >&2
    cat exposure >&2
    exit 1
fi
mkdir ntpsec ntpsec/ntpsec.service.d
printf '[Service]\nType=forking\nExecStart=/usr/libexec/ntpsec/ntp-systemd-wrapper\n' \
    >ntpsec/ntpsec.service
subst "$src/plugins/timesync/ntpsec-sparrow.conf.in" >ntpsec/ntpsec.service.d/sparrow.conf
SYSTEMD_UNIT_PATH="$dir/ntpsec:" systemd-analyze verify ntpsec.service
# A node that fails (its storage) exits 1 for systemd to restart it.
if ! grep -qx 'Restart=on-failure' sparrow.service; then
    echo "sparrow.service: Restart=on-failure is missing: a failed node would stay down" >&2
    exit 1
fi
echo "units: 5 verified, and the timesync and ntpsec drop-ins"
