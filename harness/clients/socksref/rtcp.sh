#!/bin/sh
# socksref's client chain making an RFC 1928 BIND, as a client under test for
# `sockslab check-client --request bind`: an rtcp:// forwarder (?mbind=false: one plain BIND per
# peer) with the runner as its only hop, and a local service behind it that greets the peer with
# `ping\n` and wants it echoed back. The outcome is that service's: exit 0 once the echo arrives
# through the BIND tunnel (the runner relays it to its echo fixture), non-zero after 4 s without.
#
# usage: rtcp.sh SOCKSREF LOCAL_PORT HOP_URL
set -u
socksref=$1 port=$2 hop=$3
ready=$(mktemp -u)
python3 - "$port" "$ready" <<'PY' &
import socket, sys
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
open(sys.argv[2], "w").close()
srv.settimeout(4)
try:
    conn, _ = srv.accept()
    conn.settimeout(4)
    conn.sendall(b"ping\n")
    got = b""
    while len(got) < 5:
        part = conn.recv(64)
        if not part:
            break
        got += part
except OSError as e:
    sys.exit(f"rtcp service: {e}")
sys.exit(0 if got == b"ping\n" else f"rtcp service: got {got!r}")
PY
service=$!
# The service must listen before the forwarder can need it: wait for its ready file (bounded).
tries=0
while [ ! -e "$ready" ] && [ "$tries" -lt 200 ]; do
    sleep 0.05
    tries=$((tries + 1))
done
rm -f "$ready"
"$socksref" -L "rtcp://:0/127.0.0.1:$port?mbind=false" -F "$hop" --log-level error &
wait "$service"
# The runner ends this command's process group, forwarder included, once the script exits.
