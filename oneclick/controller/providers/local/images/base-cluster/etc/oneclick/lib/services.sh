# Sourced by the role scripts: the batch cluster's daemons (munged, slurmctld, slurmd), started
# the way this machine starts services. With systemd (a VM) through their units; without it (a
# member of the local provider, a container) by hand, each daemon's pid file under this
# member's own /run saying which process is its own.

# Whether this member is the machine: with OCC_ROOT elsewhere (a local member without
# namespaces shares this machine's /etc and /run) files are written but no daemon is started.
own_machine() {
  [ "$(cd "${OCC_ROOT:-/}" && pwd -P)" = / ]
}

STARTING=10  # seconds a daemon started by hand may take to write its pid file

# (Functions keep their variables `local`: sh has only globals, and these call each other.
# Declared apart from their values: an older dash splits the words of `local a=$1`.)

with_systemd() {
  [ -d /run/systemd/system ]
}

# alive PID NAME: process PID is a NAME that has not ended (a zombie has, and holds nothing).
alive() {
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] &&
    [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}

# running PIDFILE NAME: the pid file names a live NAME process of this member, left in $pid.
# (Process ids are the machine's: a stale file may name another member's process, which has
# another network namespace.)
running() {
  pid=$(cat "$1" 2>/dev/null) || return 1
  alive "$pid" "$2" && [ "/proc/$pid/ns/net" -ef /proc/self/ns/net ]
}

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail saying what never happened.
wait_for() {
  local seconds what deadline
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

ended() {
  ! alive "$@"
}

# stop PIDFILE NAME: stop that daemon if it runs here, and wait until its process has ended,
# not only its pid file (slurmd removes that first, and holds its port a while longer). A pid
# file that names no daemon is left alone: its daemon may be writing it this moment.
stop() {
  local stopping
  running "$1" "$2" || return 0
  stopping=$pid
  kill "$stopping" 2>/dev/null || true
  wait_for 30 "$2 to stop" ended "$stopping" "$2"
  rm -f "$1"
}

# stop_all NAME: stop every NAME process that `restart` started here, whether a pid file names
# it or not, and wait until they have ended; one that ignores the request is killed. A NAME
# process of the machine's own (no OCC_DAEMON=NAME in its environment) is left alone.
stop_all() {
  local comm named found="" stopping
  for comm in /proc/[0-9]*/comm; do
    read -r named 2>/dev/null < "$comm" && [ "$named" = "$1" ] || continue  # (no fork each)
    stopping=${comm#/proc/} && stopping=${stopping%/comm}
    if [ "/proc/$stopping/ns/net" -ef /proc/self/ns/net ] &&
        tr '\0' '\n' 2>/dev/null < "/proc/$stopping/environ" | grep -qx "OCC_DAEMON=$1"; then
      kill "$stopping" 2>/dev/null || true
      found="$found $stopping"
    fi
  done
  for stopping in $found; do  # (all asked first: the waits overlap)
    if ! wait_for 20 "$1 to stop" ended "$stopping" "$1" 2>/dev/null; then
      kill -KILL "$stopping" 2>/dev/null || true
      wait_for 5 "$1 to end" ended "$stopping" "$1"
    fi
  done
}

# stop_for_good PIDFILE NAME: what an uninstall does, so that no NAME of the launch runs on:
# stop the daemon of PIDFILE (marked or not: one started before these scripts marked theirs),
# then every other NAME process `restart` started (the ssh provider kills the agent, then
# uninstalls: one it started that moment has not named itself yet).
stop_for_good() {
  stop "$1" "$2"
  stop_all "$2"
  rm -f "$1"
}

# restart UNIT PIDFILE NAME COMMAND...: (re)start a daemon; COMMAND starts it by hand (it
# detaches: its output goes to its own log, not to the agent). Fails if COMMAND does.
restart() {
  local unit pidfile name deadline
  unit=$1 pidfile=$2 name=$3
  shift 3
  if with_systemd; then
    systemctl restart "$unit"
    return
  fi
  stop "$pidfile" "$name"
  OCC_DAEMON=$name "$@" </dev/null >/dev/null 2>&1 || return  # (stop_all knows it by that)
  # It has detached, and writes its pid file once it serves (one that ends first never does):
  # until then a check would find it not running, and start another.
  deadline=$(($(date +%s) + STARTING))
  until running "$pidfile" "$name" || [ "$(date +%s)" -ge "$deadline" ]; do sleep 0.1; done
}

# stale PIDFILE NAME CONFIG...: the daemon does not run, or a CONFIG file changed since it
# started (its pid file is as old as it is).
stale() {
  local pidfile name config
  pidfile=$1 name=$2
  shift 2
  running "$pidfile" "$name" || return 0
  for config in "$@"; do
    [ "$config" -nt "$pidfile" ] && return 0
  done
  return 1
}
