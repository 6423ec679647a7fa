#!/bin/sh
# socksref's client chain making a UDP ASSOCIATE, as a client under test for
# `sockslab check-client --request udp`: a udp:// forwarder whose only hop is the runner with
# relay=udp (RFC 1928 UDP ASSOCIATE, not gost's UDP-over-TCP), and a local UDP client that sends
# `ping` to the forwarder and wants `echo:ping` back, exactly, as its first answer. The outcome
# is that client's: exit 0 on `echo:ping`, non-zero on anything else or after 4 s without.
#
# usage: udp.sh SOCKSREF LOCAL_PORT TARGET HOP_URL
#   e.g. udp.sh target/debug/socksref {port} {target} 'socks5://{proxy}?relay=udp'
set -u
socksref=$1 port=$2 target=$3 hop=$4
"$socksref" -L "udp://127.0.0.1:$port/$target" -F "$hop" --log-level error &
exec python3 - "$port" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.settimeout(0.5)
deadline = time.monotonic() + 4
# Until the forwarder listens, datagrams bounce (ECONNREFUSED): resend, a bounded number of times.
while time.monotonic() < deadline:
    try:
        s.send(b"ping")
        got = s.recv(65535)
    except (socket.timeout, ConnectionRefusedError):
        continue
    sys.exit(0 if got == b"echo:ping" else f"udp client: got {got!r}")
sys.exit("udp client: no answer within 4 s")
PY
