#!/usr/bin/env bash
# make run: start vigil-server with its store under ./var/server, enroll and
# start an agent that protects this host, apply examples/policy.yaml and show
# the live access log. Ctrl-C stops everything; the agent's pinned programs
# and maps are then removed unless KEEP=1.
#
# Environment: POLICY (default examples/policy.yaml), KEEP=1 to leave
# enforcement in place after exit, CGROUP to protect one cgroup v2 directory
# instead of the whole host. Needs root (the agent loads BPF programs)
# and the binaries `make build` puts in ./bin.
set -euo pipefail

cd "$(dirname "$0")/.."

readonly BIN=./bin
readonly VAR=./var
readonly LISTEN=127.0.0.1:7443
readonly POLICY=${POLICY:-examples/policy.yaml}
readonly KEEP=${KEEP:-0}
readonly CGROUP=${CGROUP:-}

export VIGIL_SERVER=$LISTEN
export VIGIL_CREDENTIALS=$VAR/server/admin

server_pid=
agent_pid=
scope=()
[[ -z $CGROUP ]] || scope=(--cgroup "$CGROUP")

log() { printf 'run: %s\n' "$*" >&2; }

die() {
	log "$*"
	exit 1
}

# start runs a binary in its own session, so the terminal's Ctrl-C reaches
# only the foreground event viewer and shutdown happens in order below.
start() {
	local logfile=$1
	shift
	if command -v setsid >/dev/null; then
		setsid "$@" >"$logfile" 2>&1 &
	else
		"$@" >"$logfile" 2>&1 &
	fi
}

# stop sends SIGTERM to pid and waits up to 10 s before SIGKILL.
stop() {
	local pid=$1 name=$2
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	log "stopping $name"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	log "$name did not stop in 10s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	stop "$agent_pid" vigil-agent
	if [[ -n $agent_pid ]]; then
		if [[ $KEEP == 1 ]]; then
			log "KEEP=1: enforcement stays pinned; remove it with $BIN/vigil-agent --cleanup ${scope[*]}"
		else
			log "removing the agent's pinned programs and maps"
			"$BIN/vigil-agent" --cleanup "${scope[@]}" || log "vigil-agent --cleanup failed; run it again by hand"
		fi
	fi
	stop "$server_pid" vigil-server
	exit "$status"
}

# wait_until runs its arguments every 0.2 s until they succeed or secs pass;
# it fails early when the process pid has exited.
wait_until() {
	local secs=$1 pid=$2 what=$3
	shift 3
	for _ in $(seq $((secs * 5))); do
		"$@" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.2
	done
	log "timed out after ${secs}s waiting for $what"
	return 1
}

agent_online() {
	local out
	out=$("$BIN/vigilctl" agents list -o json) && grep -q '"online": *true' <<<"$out"
}

[[ $(id -u) == 0 ]] || die "make run needs root: the agent loads BPF programs (try: sudo make run)"
for b in vigil-server vigil-agent vigilctl; do
	[[ -x $BIN/$b ]] || die "$BIN/$b is missing; run make build"
done
[[ -r $POLICY ]] || die "policy $POLICY not readable"
mkdir -p "$VAR"
trap cleanup EXIT
trap 'exit 0' INT
trap 'exit 143' TERM

# 1. The server; its first start creates the CA and the admin credentials.
log "starting vigil-server on $LISTEN (store $VAR/server, log $VAR/server.log)"
start "$VAR/server.log" "$BIN/vigil-server" --data-dir "$VAR/server" --listen "$LISTEN"
server_pid=$!
wait_until 30 "$server_pid" "vigil-server" "$BIN/vigilctl" agents list ||
	die "vigil-server did not come up; last lines of $VAR/server.log:
$(tail -n 20 "$VAR/server.log")"

# 2. An agent for this host, enrolled with a one-time token.
token=$("$BIN/vigilctl" token create --ttl 10m)
log "starting vigil-agent for ${CGROUP:-this host} (state $VAR/agent, log $VAR/agent.log)"
start "$VAR/agent.log" "$BIN/vigil-agent" --server "$LISTEN" --token "$token" --data-dir "$VAR/agent" "${scope[@]}"
agent_pid=$!
wait_until 30 "$agent_pid" "the agent to come online" agent_online ||
	die "vigil-agent did not come online; last lines of $VAR/agent.log:
$(tail -n 20 "$VAR/agent.log")"

# 3. The example policy.
"$BIN/vigilctl" policy apply -f "$POLICY"
"$BIN/vigilctl" agents list

# 4. The live access log, until Ctrl-C.
log "live events follow; Ctrl-C stops the agent and the server"
"$BIN/vigilctl" events --follow
