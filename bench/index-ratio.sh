#!/usr/bin/env bash
# Filtered /index/static through the gateway vs the same upstream served
# directly, in one run on loopback: wrk, 16 connections, plain HTTP both ways.
# Usage: bench/index-ratio.sh [repos] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=${1:-2000}
SECS=${2:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p container-gateway --bin container-gateway --example bench_upstream
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/state" "$work/plugins"
./target/release/examples/bench_upstream "$REPOS" "$work/state" > "$work/upstream.out" &
for _ in $(seq 50); do grep -q listening "$work/upstream.out" 2>/dev/null && break; sleep 0.1; done
upstream=$(awk '/listening/{print $2}' "$work/upstream.out")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/gateway.toml" <<TOML
[server]
listen = []
listen_plain = ["127.0.0.1:$port"]
client_ca = "/dev/null"
public_url = "https://gateway.example.com"
[pulp]
endpoint = "http://$upstream"
index_ttl_secs = 3600
[central]
url = "http://127.0.0.1:9"
[state]
dir = "$work/state"
[plugins]
dir = "$work/plugins"
chain = []
[admin]
listen = ""
[log]
filter = "warn"
TOML
./target/release/container-gateway serve --config "$work/gateway.toml" 2>"$work/gateway.log" &
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/index/static?label:org.flatpak.ref:exists=1" && break; sleep 0.1; done
q='index/static?label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest'
bytes=$(curl -s "http://127.0.0.1:$port/$q" | wc -c)
rps() { wrk -t2 -c16 -d"${SECS}s" "$1" | awk '/Requests\/sec/{print $2}'; }
direct=$(rps "http://$upstream/pulpcore_registry/$q")
gateway=$(rps "http://127.0.0.1:$port/$q")
printf 'repos %s, filtered body %s bytes\n' "$REPOS" "$bytes"
printf 'direct upstream: %s req/s\ngateway:         %s req/s\nratio:           %s\n' "$direct" "$gateway" \
    "$(python3 -c "print(round($gateway/$direct, 2))")"
