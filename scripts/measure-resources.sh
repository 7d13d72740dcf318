#!/usr/bin/env bash
# Peak memory (VmHWM) and CPU time of ingest, transform and alert, release build, on a
# local tansu broker with one simulated org per run: the figures behind the Kubernetes
# resource requests and limits (README, "Kubernetes").
#
#   scripts/measure-resources.sh                 # orgs of 1,200, 20,000 and 100,000 users
#   scripts/measure-resources.sh 5000            # one run, 5,000 users
#
# Needs tansu (scripts/test.sh installs it; TANSU_BIN names another) and curl. tansu keeps
# its data in memory here: its sqlite engine panicked once under the 20,000-user run, and
# the broker's own footprint is not what is measured. Everything
# listens on 127.0.0.1, on ports 19092-19105. Each run waits for three successful syncs
# and for the alert service to report the org's pools, then reads /proc.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin seatwatch
bin="$PWD/target/release/seatwatch"
tansu="${TANSU_BIN:-tansu}"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1200 20000 100000)

broker=127.0.0.1:19092
sim=http://127.0.0.1:19085
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Waits up to $2 seconds for the command in $1 to succeed.
await() {
  local deadline=$((SECONDS + $2))
  until bash -c "$1" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for: $1" >&2; exit 1; }
    sleep 1
  done
}

# Peak RSS in MiB and CPU seconds (user + system) of a pid.
usage() {
  local hwm ticks
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$1/status")
  ticks=$(awk '{print $14 + $15}' "/proc/$1/stat")
  awk -v kib="$hwm" -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%6.1f MiB  %6.1f s CPU", kib / 1024, ticks / hz}' 
}

printf '%-9s %-10s %s\n' users service "peak RSS / CPU time"
for users in "${sizes[@]}"; do
  dir=$(mktemp -d)
  pids=()

  mkdir -p "$dir/tansu"
  (cd "$dir/tansu" && RUST_LOG=warn exec "$tansu" broker --listener-url "tcp://$broker" \
      --advertised-listener-url "tcp://$broker" --storage-engine memory://tansu/) \
      >"$dir/tansu.log" 2>&1 &
  pids+=($!)
  await "exec 3<>/dev/tcp/127.0.0.1/19092" 30
  "$bin" topics create --bootstrap-servers "$broker" >/dev/null

  SEATWATCH_LOG=warn "$bin" simulator --listen 127.0.0.1:19085 --users "$users" \
      >"$dir/simulator.log" 2>&1 &
  pids+=($!)
  await "curl -sf $sim/healthz" 60

  cat >"$dir/ingest.toml" <<EOF
poll_interval_secs = 10
[kafka]
bootstrap_servers = "$broker"
[[orgs]]
name = "measured"
login_url = "$sim"
consumer_key = "3MVG9SIMULATOR.seatwatch.demo.consumer.key"
username = "integration@lakeside-freight.example"
consumer_secret = { env = "MEASURE_SF_CONSUMER_SECRET" }
password = { env = "MEASURE_SF_PASSWORD" }
security_token = { env = "MEASURE_SF_SECURITY_TOKEN" }
EOF
  printf '[kafka]\nbootstrap_servers = "%s"\n' "$broker" >"$dir/kafka.toml"

  export MEASURE_SF_CONSUMER_SECRET=SIMULATOR-DEMO-CONSUMER-SECRET
  export MEASURE_SF_PASSWORD=demo-password MEASURE_SF_SECURITY_TOKEN=DEMOSECURITYTOKEN
  SEATWATCH_LOG=warn "$bin" ingest run --config "$dir/ingest.toml" --listen 127.0.0.1:19101 \
      >"$dir/ingest.log" 2>&1 &
  ingest=$!; pids+=($ingest)
  SEATWATCH_LOG=warn "$bin" transform --config "$dir/kafka.toml" --listen 127.0.0.1:19102 \
      >"$dir/transform.log" 2>&1 &
  transform=$!; pids+=($transform)
  SEATWATCH_LOG=warn "$bin" alert --config "$dir/kafka.toml" --listen 127.0.0.1:19103 \
      >"$dir/alert.log" 2>&1 &
  alert=$!; pids+=($alert)

  synced="curl -sf 127.0.0.1:19101/metrics | awk '/^seatwatch_ingest_syncs_total.*outcome=\"success\"/ {n+=\$2} END {exit !(n >= 3)}'"
  await "$synced" 600
  await "curl -sf 127.0.0.1:19103/metrics | grep -q '^seatwatch_seats_used{'" 300
  await "curl -sf 127.0.0.1:19103/metrics | grep -q '^seatwatch_alert_caught_up 1'" 300

  for service in ingest transform alert; do
    printf '%-9s %-10s %s\n' "$users" "$service" "$(usage "${!service}")"
  done
  cleanup
  rm -rf "$dir"
done
