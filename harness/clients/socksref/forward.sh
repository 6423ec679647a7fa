#!/bin/sh
# socksref's client chain as a client under test for `sockslab check-client`: a local TCP
# forwarder (-L tcp://) whose only hop is the runner, and curl fetching through it. curl talks
# plain HTTP to the forwarder, so every SOCKS octet the runner sees is socksref's; curl's exit
# code is the outcome (a failed upstream handshake reaches curl as a closed connection).
#
# usage: forward.sh SOCKSREF LOCAL_PORT TARGET HOP_URL
#   e.g. forward.sh target/debug/socksref {port} {target} socks5://{proxy}
set -u
socksref=$1 port=$2 target=$3 hop=$4
"$socksref" -L "tcp://127.0.0.1:$port/$target" -F "$hop" --log-level error &
# Until the forwarder listens, curl fails to connect (exit 7) without reaching the runner: retry
# only that, a bounded number of times.
tries=0
while :; do
    curl -sS -m 3 "http://127.0.0.1:$port/"
    rc=$?
    [ "$rc" -ne 7 ] && break
    tries=$((tries + 1))
    [ "$tries" -ge 100 ] && break
    sleep 0.05
done
# The runner ends this command's process group, forwarder included, once the script exits.
exit "$rc"
