# Sourced by the role scripts: the batch cluster's daemons (munged, slurmctld, slurmd), started
# the way this machine starts services. With systemd (a VM) through their units; without it (a
# member of the local provider, a container) by hand, each daemon's pid file under this
# member's own /run saying which process is its own.

# Whether this member is the machine: with OCC_ROOT elsewhere (a local member without
# namespaces shares this machine's /etc and /run) files are written but no daemon is started.
own_machine() {
  [ "$(cd "${OCC_ROOT:-/}" && pwd -P)" = / ]
}

with_systemd() {
  [ -d /run/systemd/system ]
}

# running PIDFILE NAME: the pid file names a live NAME process of this member. (Process ids
# are the machine's: a stale file may name another member's process, which has another
# network namespace.)
running() {
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] &&
    [ "/proc/$pid/ns/net" -ef /proc/self/ns/net ]
}

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail saying what never happened.
wait_for() {
  seconds=$1 what=$2
  shift 2
  deadline=$(($(date +%s) + seconds))
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "gave up after ${seconds}s waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
}

not_running() {
  ! running "$@"
}

# stop PIDFILE NAME: stop that daemon if it runs here, and wait until it has.
stop() {
  if running "$1" "$2"; then
    kill "$(cat "$1")"
    wait_for 30 "$2 to stop" not_running "$1" "$2"
  fi
  rm -f "$1"
}

# restart UNIT PIDFILE NAME COMMAND...: (re)start a daemon; COMMAND starts it by hand (it
# detaches: its output goes to its own log, not to the agent).
restart() {
  unit=$1 pidfile=$2 name=$3
  shift 3
  if with_systemd; then
    systemctl restart "$unit"
    return
  fi
  stop "$pidfile" "$name"
  "$@" </dev/null >/dev/null 2>&1
}

# stale PIDFILE NAME CONFIG...: the daemon does not run, or a CONFIG file changed since it
# started (its pid file is as old as it is).
stale() {
  pidfile=$1 name=$2
  shift 2
  running "$pidfile" "$name" || return 0
  for config in "$@"; do
    [ "$config" -nt "$pidfile" ] && return 0
  done
  return 1
}
