#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft) on 127.0.0.1, fetched from Maven Central with Maven.
#
#   deploy/kafka/kafka.sh up       fetch (cached), format storage once, start, wait until it answers
#   deploy/kafka/kafka.sh down     stop it (SIGTERM, then SIGKILL after 30 s)
#   deploy/kafka/kafka.sh status   exit 0 if this checkout's broker runs and answers
#   deploy/kafka/kafka.sh answers  exit 0 if anything listens on the client port
#   deploy/kafka/kafka.sh fetch    only download the jars
#
# Idempotent: `up` on a running broker does nothing. Settings (environment):
#   RELANCE_KAFKA_HOME  where jars, config, data and logs go   (default: <repo>/var/kafka)
#   RELANCE_KAFKA_PORT  client port                            (default: 9092; controller = port+1)
#   RELANCE_KAFKA_HEAP  JVM heap                               (default: 512m)
#   RELANCE_KAFKA_CACHE jar cache shared across checkouts      (default: ~/.cache/relance/kafka-<version>)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="${RELANCE_KAFKA_HOME:-$repo/var/kafka}"
port="${RELANCE_KAFKA_PORT:-9092}"
controller_port=$((port + 1))
heap="${RELANCE_KAFKA_HEAP:-512m}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
cache="${RELANCE_KAFKA_CACHE:-$HOME/.cache/relance/kafka-$version}"
pidfile="$home/kafka.pid"
log="$home/kafka.log"

die() { echo "kafka.sh: $*" >&2; exit 1; }

need_tools() {
  command -v java >/dev/null 2>&1 || die "Java is missing. Install a JDK 17+ (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17)."
  java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
  [ "${java_major:-0}" -ge 11 ] || die "Java $java_major is too old; Kafka $version needs 11+ (17 recommended)."
}

fetch() {
  if [ -f "$cache/.complete" ]; then return 0; fi
  command -v mvn >/dev/null 2>&1 || die "Maven is missing. Install it (Debian/Ubuntu: apt-get install maven; macOS: brew install maven) or put Kafka jars in $cache."
  echo "kafka.sh: fetching Apache Kafka $version and its runtime dependencies from Maven Central..."
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$cache.tmp" \
      || die "Maven could not fetch Kafka (is Maven Central reachable?)"
  ls "$cache.tmp"/kafka_2.13-"$version".jar >/dev/null 2>&1 || die "the Kafka jar is missing after the fetch"
  touch "$cache.tmp/.complete"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

answers() {
  # A broker answers when its client port accepts connections and the log says it started.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
  grep -q "Kafka Server started" "$log" 2>/dev/null
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

write_config() {
  mkdir -p "$home/data"
  cat > "$home/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$home/data
num.partitions=12
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
PROPS
  cat > "$home/log4j.properties" <<'PROPS'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka.server.KafkaRaftServer=INFO
PROPS
}

up() {
  need_tools
  if running && answers; then echo "kafka.sh: broker already running on 127.0.0.1:$port"; return 0; fi
  if ! running && port_open; then
    die "127.0.0.1:$port is taken by another process (a broker of another checkout, or Docker?). Stop it, use it (RELANCE_KAFKA_BOOTSTRAP), or pick RELANCE_KAFKA_PORT."
  fi
  if running; then
    echo "kafka.sh: a broker process exists but does not answer; waiting for it"
  else
    fetch
    write_config
    if [ ! -f "$home/data/meta.properties" ]; then
      cluster_id="$(java -cp "$cache/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
      java -Dlog4j.configuration="file:$home/log4j.properties" -cp "$cache/*" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$home/server.properties" >/dev/null \
        || die "could not format the storage directory $home/data"
    fi
    : > "$log"
    nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$home/log4j.properties" \
      -cp "$cache/*" kafka.Kafka "$home/server.properties" >>"$log" 2>&1 &
    echo $! > "$pidfile"
  fi
  for _ in $(seq 1 120); do
    if answers; then echo "kafka.sh: broker ready on 127.0.0.1:$port (data in $home/data)"; return 0; fi
    running || { tail -n 30 "$log" >&2; die "the broker exited during start-up (log: $log)"; }
    sleep 0.5
  done
  tail -n 30 "$log" >&2
  die "the broker did not answer within 60 s (log: $log)"
}

down() {
  if ! running; then rm -f "$pidfile"; echo "kafka.sh: no broker running"; return 0; fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "kafka.sh: broker stopped"; return 0; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "kafka.sh: broker killed after 30 s"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running && answers; then echo "running on 127.0.0.1:$port"; else echo "not running"; exit 1; fi ;;
  answers) port_open ;;
  fetch) need_tools; fetch ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
