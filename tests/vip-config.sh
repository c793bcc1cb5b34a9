#!/bin/sh
# [vip] as sparrowd --check-config reads it (the plugin module loaded from
# the build, under its sanitizers), and sparrow-vip-cleanup on a node
# without [vip].  Touches no interface and no NetworkManager.
# Usage: vip-config.sh SPARROWD PLUGIN_DIR CLEANUP
set -u
sparrowd=$1
export SPARROW_PLUGIN_DIR=$2
cleanup=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0

# expect NAME STATUS TEXT [VIP LINES...]: --check-config on a config with
# those [vip] lines exits STATUS and prints TEXT.
expect() {
    name=$1 status=$2 text=$3
    shift 3
    conf="$dir/$name.conf"
    printf '[node]\nname = a\nlisten = 127.0.0.1:7400\n[tls]\ninsecure = true\n[vip]\n' >"$conf"
    for line in "$@"; do
        printf '%s\n' "$line" >>"$conf"
    done
    out=$("$sparrowd" --check-config --config "$conf" 2>&1)
    got=$?
    if [ "$got" != "$status" ] || ! printf '%s' "$out" | grep -qF -- "$text"; then
        printf '%s: exit %s (expected %s), output:\n%s\nexpected: %s\n' \
            "$name" "$got" "$status" "$out" "$text" >&2
        fail=1
    fi
}

expect valid 0 "plugins: vip" "addresses = 10.0.0.1/24@eth0;fd00::1/64@eth0" "probe-ms = 20"
expect prefix 1 "$dir/prefix.conf: [vip] addresses: \"10.0.0.1/33@eth0\": expected ADDRESS/PREFIX@INTERFACE with a prefix of 0..32 for IPv4" \
    "addresses = 10.0.0.1/33@eth0"
expect no-interface 1 "[vip] addresses: \"fd00::1/64\": expected ADDRESS/PREFIX@INTERFACE" \
    "addresses = fd00::1/64"
expect not-an-address 1 "\"10.0.0.256/24@eth0\": expected ADDRESS/PREFIX@INTERFACE with an IPv4 or IPv6 address" \
    "addresses = 10.0.0.256/24@eth0"
expect twice 1 "\"10.0.0.1/16@eth1\": 10.0.0.1 is listed twice" \
    "addresses = 10.0.0.1/24@eth0;10.0.0.1/16@eth1"
expect none 1 "[vip] addresses: expected at least one ADDRESS/PREFIX@INTERFACE" "probe-ms = 20"
expect comment 1 "[vip] probe-ms:" "addresses = 10.0.0.1/24@eth0" "probe-ms = 50 # ms"
expect on-failure 1 "[vip] on-failure: \"sometimes\": expected transfer or stay" \
    "addresses = 10.0.0.1/24@eth0" "on-failure = sometimes"
expect unknown-key 0 "[vip] foo: unknown key" "addresses = 10.0.0.1/24@eth0" "foo = 1"

# Without [vip] the clean-up has nothing to do and says nothing.
printf '[node]\nname = a\nlisten = 127.0.0.1:7400\n[tls]\ninsecure = true\n' >"$dir/plain.conf"
out=$("$cleanup" --config "$dir/plain.conf" 2>&1)
got=$?
if [ $got != 0 ] || [ -n "$out" ]; then
    printf 'sparrow-vip-cleanup without [vip]: exit %s, output: %s\n' "$got" "$out" >&2
    fail=1
fi
# --record: the configured addresses, in a file only its writer can write.
record="$dir/record/vip-addresses"
printf '[node]\nname = a\nlisten = 127.0.0.1:7400\n[tls]\ninsecure = true\n[vip]\naddresses = 10.0.0.1/24@sptest0\n' \
    >"$dir/vip.conf"
out=$("$cleanup" --record --config "$dir/vip.conf" --record-file "$record" 2>&1)
got=$?
if [ $got != 0 ] || [ "$(cat "$record" 2>&1)" != "10.0.0.1/24@sptest0" ] ||
    [ "$(stat -c %a "$record")" != 600 ] || [ "$(stat -c %a "$dir/record")" != 700 ]; then
    printf 'sparrow-vip-cleanup --record: exit %s, output: %s, record: %s\n' "$got" "$out" \
        "$(ls -la "$dir/record" 2>&1; cat "$record" 2>&1)" >&2
    fail=1
fi

# expect_untrusted NAME TEXT ARGS...: the clean-up (as root, sparrowd not)
# refuses a file others than its owner could have written, and says so.
expect_untrusted() {
    name=$1 text=$2
    shift 2
    out=$("$cleanup" "$@" 2>&1)
    got=$?
    if [ $got != 1 ] || ! printf '%s' "$out" | grep -qF -- "$text"; then
        printf '%s: exit %s (expected 1), output:\n%s\nexpected: %s\n' "$name" "$got" "$out" \
            "$text" >&2
        fail=1
    fi
}

# A configuration others may write records nothing (the old record goes).
chmod 664 "$dir/vip.conf"
expect_untrusted record-from-writable-config \
    "$dir/vip.conf: writable by group or others (mode 0664): not trusted; nothing recorded" \
    --record --config "$dir/vip.conf" --record-file "$record"
if [ -e "$record" ]; then
    echo "record-from-writable-config: the old record was left" >&2
    fail=1
fi
# A record others may write is not used (its addresses are not removed).
printf '10.0.0.1/24@sptest0\n' >"$record"
chmod 620 "$record"
expect_untrusted writable-record "$record: writable by group or others (mode 0620): not trusted" \
    --config "$dir/plain.conf" --record-file "$record"
checks=13
if [ "$(id -u)" = 0 ]; then
    chmod 600 "$record"
    chown 65534 "$record"
    expect_untrusted foreign-record "$record: owned by uid 65534, not root: not trusted" \
        --config "$dir/plain.conf" --record-file "$record"
    chown 65534 "$dir/record"
    chown 0 "$record"
    expect_untrusted foreign-directory "$dir/record: owned by uid 65534, not root: not trusted" \
        --config "$dir/plain.conf" --record-file "$record"
    checks=15
fi
[ $fail = 0 ] && echo "vip-config: $checks checks passed"
exit $fail
