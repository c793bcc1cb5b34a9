#!/bin/sh
# systemd-analyze verify on every unit we install, with ExecStart= pointing
# at the sparrowd just built (and ExecStartPre= and ExecStopPost= at the
# vip clean-up, when built).  Usage: verify-units.sh SRCDIR SBINDIR [VIP_CLEANUP]
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
sed -e "s|@sbindir@|$sbindir|" -e "s|@vip_record@|$record|" -e "s|@vip_cleanup@|$cleanup|" \
    -e "s|@libexecdir@|$src/plugins/timesync|" \
    "$src/units/sparrow.service.in" \
    >"$dir/sparrow.service"
cp "$src/units/sparrow.target" "$src/units/sparrow-leader.target" \
   "$src/units/examples/sparrow-leader-example.service" "$dir/"
cd "$dir"
systemd-analyze verify ./sparrow.service ./sparrow.target ./sparrow-leader.target \
    ./sparrow-leader-example.service
# A node that fails (its storage) exits 1 for systemd to restart it.
if ! grep -qx 'Restart=on-failure' sparrow.service; then
    echo "sparrow.service: Restart=on-failure is missing: a failed node would stay down" >&2
    exit 1
fi
echo "units: 4 verified"
