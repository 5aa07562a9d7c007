# shellcheck shell=bash
# What every component of scripts/cluster uses: messages, pid files, free ports, starting a
# process so that `scripts/cluster start NAME` can start it again exactly as it was, and waiting
# for readiness. Sourced by scripts/cluster; $state is the state folder.

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# pid_of NAME: the pid recorded for NAME if that process is still the one we started.
pid_of() {
  local f="$state/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # A recycled pid belongs to another program: check it still runs our binary (the match is
  # recorded at launch: the binary's name, or the state path for helpers like the namespace).
  local match=$1
  [ -f "$state/$1.match" ] && match=$(cat "$state/$1.match")
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$match" || return 1
  echo "$pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [WANTED]: WANTED if given (failing if taken), else a free port in 20000-32000.
free_port() {
  if [ -n "${1:-}" ]; then
    port_free "$1" || die "port $1 is already in use on 127.0.0.1 (choose another or unset the variable)"
    echo "$1"; return
  fi
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if port_free "$p" && ! grep -qx "$p" "$state/ports.used" 2>/dev/null; then
      echo "$p" >>"$state/ports.used"; echo "$p"; return
    fi
  done
  die "no free port found on 127.0.0.1"
}

# launch NAME COMMAND...: starts COMMAND in a session of its own, logging to NAME.log. The whole
# command line is kept in NAME.args so that `scripts/cluster start NAME` brings it back as it was.
launch() {
  local name=$1; shift
  printf '%s\0' "$@" >"$state/$name.args"
  setsid "$@" >>"$state/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
}

# relaunch NAME: starts NAME again from its NAME.args.
relaunch() {
  local name=$1 cmd=()
  mapfile -d '' cmd <"$state/$name.args"
  setsid "${cmd[@]}" >>"$state/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
}

# wait_for NAME CHECK...: polls CHECK for up to 120 s while NAME's process lives. (The chaos
# suite runs several control planes at once on two cores; with 60 s, a kube-apiserver restarted
# among them once failed to come back in CI, its reason not recorded then: 60 s is the likely
# one, and a failure now quotes this script's message.)
wait_for() {
  local name=$1; shift
  local pid
  pid=$(cat "$state/$name.pid")
  for _ in $(seq 480); do
    "$@" >/dev/null 2>&1 && return 0
    # alive, not pid_of: right after the fork the child may not have exec'd its binary yet.
    alive "$pid" || { say "$name exited during start-up; the end of $state/$name.log:"; tail -n 20 "$state/$name.log" >&2; return 1; }
    sleep 0.25
  done
  say "$name did not become ready within 120 s; the end of $state/$name.log:"
  tail -n 20 "$state/$name.log" >&2
  return 1
}

# alive PID: the process exists and is not a zombie waiting for a parent that never reaps it.
alive() {
  local st
  st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$st" != Z ]
}

# stop NAME [GRACE]: SIGTERM, up to GRACE seconds (default 10), then SIGKILL; says so.
stop() {
  local name=$1 grace=${2:-10} pid
  pid=$(pid_of "$name") || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq $((grace * 4))); do alive "$pid" || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
  say "stopped $name (pid $pid)"
}
