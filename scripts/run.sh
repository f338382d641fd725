#!/usr/bin/env bash
# run.sh (make run): the whole thing on loopback, for trying it out.
#
# Builds the sandbox, broker and proxy into $RUN_DIR/bin, generates fresh
# random keys (mode 0600) and starts:
#   - the sandbox (a fake GitHub and Copilot API), unless a GitHub token is
#     configured: GITHUB_TOKEN, BROKER_GITHUB_TOKEN_FILE, or the file that
#     `broker login` writes;
#   - the broker, with the proxy's broker key and an admin key, keeping its
#     state (managed client keys) in $RUN_DIR/state;
#   - one proxy, following the client keys managed at the broker.
# It waits until both are ready, creates a client API key through the broker
# (`broker keys create`), prints the proxy's base URL, that key, ready-to-paste
# curl commands and the `broker keys` commands that manage more keys, and runs
# until Ctrl-C (or SIGTERM), which stops every process it started. A failed
# start stops them too.
#
# Environment (all optional):
#   RUN_UPSTREAM          auto (default), sandbox, or github
#   RUN_DIR               where binaries, keys and logs go (default .run)
#   RUN_SANDBOX_PORT      8787
#   RUN_GRPC_PORT         50051  broker gRPC
#   RUN_HTTP_PORT         8080   broker REST gateway
#   RUN_ADMIN_PORT        8081   broker /healthz, /readyz, /metrics
#   RUN_PROXY_PORT        4141   proxy (OpenAI and Anthropic APIs)
#   RUN_PROXY_ADMIN_PORT  4142   proxy /healthz, /readyz, /metrics
#   RUN_READY_TIMEOUT     seconds to wait for readiness (default 60)
#   GO                    the go command (default go)
# BROKER_* and PROXY_* variables reach the binaries as usual (see README);
# the flags this script passes (addresses, key files) take precedence.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Keys, the sandbox's token and logs are for this user only.
umask 077

HOST=127.0.0.1
RUN_DIR=${RUN_DIR:-.run}
GO=${GO:-go}
UPSTREAM=${RUN_UPSTREAM:-auto}
READY_TIMEOUT=${RUN_READY_TIMEOUT:-60}
SANDBOX_PORT=${RUN_SANDBOX_PORT:-8787}
GRPC_PORT=${RUN_GRPC_PORT:-50051}
HTTP_PORT=${RUN_HTTP_PORT:-8080}
ADMIN_PORT=${RUN_ADMIN_PORT:-8081}
PROXY_PORT=${RUN_PROXY_PORT:-4141}
PROXY_ADMIN_PORT=${RUN_PROXY_ADMIN_PORT:-4142}

say() { printf '%s\n' "$*" >&2; }
die() {
	say "run: $*"
	exit 1
}

# ---- stopping everything we started ----------------------------------------

pids=()
names=()

cleanup() {
	local status=$?
	trap - EXIT INT TERM HUP
	if ((${#pids[@]} > 0)); then
		say "run: stopping ${names[*]}"
		local i pid
		# Newest first: the proxy drains its streams before the broker goes.
		for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
			kill -TERM "${pids[i]}" 2>/dev/null || true
		done
		local deadline=$((SECONDS + 20))
		for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
			pid=${pids[i]}
			while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
				sleep 0.1
			done
			if kill -0 "$pid" 2>/dev/null; then
				say "run: ${names[i]} (pid $pid) did not stop in time; killing it"
				kill -KILL "$pid" 2>/dev/null || true
			fi
			wait "$pid" 2>/dev/null || true
		done
		say "run: stopped"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start NAME LOG CMD...: runs CMD in the background, its output in LOG.
start() {
	local name=$1 log=$2
	shift 2
	"$@" >"$log" 2>&1 &
	pids+=("$!")
	names+=("$name")
	printf '%s\n' "$!" >"$RUN_DIR/$name.pid"
}

# ---- checks ---------------------------------------------------------------

for var in SANDBOX_PORT GRPC_PORT HTTP_PORT ADMIN_PORT PROXY_PORT PROXY_ADMIN_PORT; do
	val=${!var}
	[[ $val =~ ^[0-9]+$ ]] && ((val > 0 && val < 65536)) || die "RUN_$var=$val is not a port number"
done

# port_taken PORT: something accepts connections on HOST:PORT.
port_taken() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# http_ok URL-PATH PORT: GET returns 200 (no curl needed).
http_ok() {
	(
		exec 3<>"/dev/tcp/$HOST/$2" || exit 1
		printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$1" "$HOST" "$2" >&3
		IFS= read -r -t 5 line <&3 || exit 1
		[[ $line == "HTTP/1."?" 200"* ]]
	) 2>/dev/null
}

# broker_rejected: the broker's REST API says GitHub refused the credential
# (FAILED_PRECONDITION, HTTP 400): no point waiting for it to become ready.
broker_rejected() {
	local resp
	resp=$(
		exec 3<>"/dev/tcp/$HOST/$HTTP_PORT" || exit 1
		printf 'GET /v1/token HTTP/1.0\r\nHost: %s:%s\r\nAuthorization: Bearer %s\r\n\r\n' "$HOST" "$HTTP_PORT" "$broker_key" >&3
		IFS= read -r -d '' -t 5 r <&3 # to EOF: HTTP/1.0 closes the connection
		printf '%s' "$r"
	) 2>/dev/null || return 1
	[[ $resp == "HTTP/1."?" 400"* && $resp == *[Rr]ejected* ]]
}

command -v "$GO" >/dev/null || die "'$GO' not found: install Go 1.26 (https://go.dev/dl/) or set GO"

# The file `broker login` writes by default: os.UserConfigDir()/copilot-broker/github-token.
if [[ -n ${BROKER_LOGIN_OUT:-} ]]; then
	login_file=$BROKER_LOGIN_OUT
elif [[ $(uname -s) == Darwin ]]; then
	login_file="$HOME/Library/Application Support/copilot-broker/github-token"
else
	login_file="${XDG_CONFIG_HOME:-$HOME/.config}/copilot-broker/github-token"
fi

token_source=
case $UPSTREAM in
auto | github)
	if [[ -n ${GITHUB_TOKEN:-} ]]; then
		token_source="the GITHUB_TOKEN environment variable"
	elif [[ -n ${BROKER_GITHUB_TOKEN_FILE:-} ]]; then
		token_source="BROKER_GITHUB_TOKEN_FILE ($BROKER_GITHUB_TOKEN_FILE)"
	elif [[ -f $login_file ]]; then
		token_source="$login_file (from broker login)"
	elif [[ $UPSTREAM == github ]]; then
		die "RUN_UPSTREAM=github but no GitHub token: set GITHUB_TOKEN or run '$RUN_DIR/bin/broker login' (writes $login_file)"
	fi
	;;
sandbox) ;;
*) die "RUN_UPSTREAM=$UPSTREAM: want auto, sandbox or github" ;;
esac

ports=("$GRPC_PORT" "$HTTP_PORT" "$ADMIN_PORT" "$PROXY_PORT" "$PROXY_ADMIN_PORT")
vars=(RUN_GRPC_PORT RUN_HTTP_PORT RUN_ADMIN_PORT RUN_PROXY_PORT RUN_PROXY_ADMIN_PORT)
if [[ -z $token_source ]]; then
	ports+=("$SANDBOX_PORT")
	vars+=(RUN_SANDBOX_PORT)
fi
for i in "${!ports[@]}"; do
	for ((j = 0; j < i; j++)); do
		[[ ${ports[i]} != "${ports[j]}" ]] || die "${vars[i]} and ${vars[j]} are both ${ports[i]}"
	done
	if port_taken "${ports[i]}"; then
		die "port ${ports[i]} on $HOST is already in use (is another 'make run' running?); stop that process or choose another port with ${vars[i]}=..."
	fi
done

# ---- build and keys -------------------------------------------------------

mkdir -p "$RUN_DIR/bin"
say "run: building sandbox, broker and proxy into $RUN_DIR/bin"
"$GO" build -o "$RUN_DIR/bin/" ./cmd/sandbox ./cmd/broker ./cmd/proxy

# new_key: 32 random bytes, hex.
new_key() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# write_secret FILE CONTENT: a file only its owner can read.
write_secret() {
	rm -f "$1"
	(
		umask 077
		printf '%s\n' "$2" >"$1"
	)
	chmod 600 "$1"
}

broker_key=$(new_key)
admin_key=$(new_key)
# The proxy's broker key, and an admin key for the console (/ui/) and the CLI.
write_secret "$RUN_DIR/broker-keys" "proxy:$broker_key
admin:$admin_key:*:admin"
write_secret "$RUN_DIR/broker-key" "$broker_key"
write_secret "$RUN_DIR/admin-key" "$admin_key"
rm -f "$RUN_DIR/api-key" "$RUN_DIR/api-keys"

# ---- start ----------------------------------------------------------------

broker_args=(serve
	--grpc-addr "$HOST:$GRPC_PORT" --http-addr "$HOST:$HTTP_PORT" --admin-addr "$HOST:$ADMIN_PORT"
	--keys-file "$RUN_DIR/broker-keys" --state-dir "$RUN_DIR/state" --console-proxy-url "http://$HOST:$PROXY_PORT" --log-format text)
proxy_args=(serve
	--addr "$HOST:$PROXY_PORT" --admin-addr "$HOST:$PROXY_ADMIN_PORT" --broker-addr "$HOST:$GRPC_PORT"
	--broker-key-file "$RUN_DIR/broker-key" --keys-from-broker --log-format text
	--shutdown-grace 10s)
broker_env=()

if [[ -z $token_source ]]; then
	sandbox_url="http://$HOST:$SANDBOX_PORT"
	upstream="the sandbox at $sandbox_url (a fake GitHub and Copilot API)"
	rm -f "$RUN_DIR/github-token"
	start sandbox "$RUN_DIR/sandbox.log" "$RUN_DIR/bin/sandbox" \
		--addr "$HOST:$SANDBOX_PORT" --github-token-file "$RUN_DIR/github-token"
	for ((n = 0; n < READY_TIMEOUT * 10; n++)); do
		[[ -s $RUN_DIR/github-token ]] && http_ok /_sandbox/stats "$SANDBOX_PORT" && break
		kill -0 "${pids[0]}" 2>/dev/null || break
		sleep 0.1
	done
	http_ok /_sandbox/stats "$SANDBOX_PORT" || {
		tail -n 20 "$RUN_DIR/sandbox.log" >&2 || true
		die "the sandbox did not start (log: $RUN_DIR/sandbox.log)"
	}
	broker_args+=(--github-api-url "$sandbox_url" --github-token-file "$RUN_DIR/github-token")
	proxy_args+=(--copilot-api-url "$sandbox_url")
	# Nothing of a real credential in the environment may reach this broker.
	broker_env=(-u GITHUB_TOKEN -u BROKER_GITHUB_TOKEN_FILE)
else
	upstream="GitHub, with the token from $token_source"
	if [[ -z ${GITHUB_TOKEN:-} && -z ${BROKER_GITHUB_TOKEN_FILE:-} ]]; then
		broker_args+=(--github-token-file "$login_file")
	fi
fi

start broker "$RUN_DIR/broker.log" env ${broker_env[@]+"${broker_env[@]}"} "$RUN_DIR/bin/broker" "${broker_args[@]}"
start proxy "$RUN_DIR/proxy.log" "$RUN_DIR/bin/proxy" "${proxy_args[@]}"

# wait_ready NAME PORT: /readyz on PORT answers 200 while every process runs.
wait_ready() {
	local name=$1 port=$2 n i
	for ((n = 0; n < READY_TIMEOUT * 10; n++)); do
		http_ok /readyz "$port" && return 0
		if [[ $name == broker ]] && ((n % 10 == 9)) && broker_rejected; then
			say "run: GitHub refused the token from $token_source; last lines of $RUN_DIR/broker.log:"
			tail -n 5 "$RUN_DIR/broker.log" >&2 || true
			say "run: get a new one with '$RUN_DIR/bin/broker login --force' (classic personal access tokens do not work), or use the sandbox: RUN_UPSTREAM=sandbox make run"
			exit 1
		fi
		for i in "${!pids[@]}"; do
			if ! kill -0 "${pids[i]}" 2>/dev/null; then
				say "run: ${names[i]} exited during start; last lines of $RUN_DIR/${names[i]}.log:"
				tail -n 20 "$RUN_DIR/${names[i]}.log" >&2 || true
				exit 1
			fi
		done
		sleep 0.1
	done
	say "run: $name not ready after ${READY_TIMEOUT}s; last lines of $RUN_DIR/$name.log:"
	tail -n 20 "$RUN_DIR/$name.log" >&2 || true
	exit 1
}
wait_ready broker "$ADMIN_PORT"
wait_ready proxy "$PROXY_ADMIN_PORT"

# The client key is a managed key: made at the broker, followed by the proxy.
keys_flags="--broker-addr $HOST:$GRPC_PORT --admin-key-file $RUN_DIR/admin-key"
key_name="local-$(date -u +%Y%m%dT%H%M%SZ)"
api_key=$(env -u BROKER_ADMIN_KEY "$RUN_DIR/bin/broker" keys create "$key_name" --broker-addr "$HOST:$GRPC_PORT" --admin-key-file "$RUN_DIR/admin-key" 2>"$RUN_DIR/keys.log") || {
	cat "$RUN_DIR/keys.log" >&2
	die "could not create a client key at the broker"
}
write_secret "$RUN_DIR/api-key" "$api_key"

# key_works: the proxy accepts the new key (GET /v1/models answers 200).
key_works() {
	(
		exec 3<>"/dev/tcp/$HOST/$PROXY_PORT" || exit 1
		printf 'GET /v1/models HTTP/1.0\r\nHost: %s:%s\r\nAuthorization: Bearer %s\r\n\r\n' "$HOST" "$PROXY_PORT" "$api_key" >&3
		IFS= read -r -t 5 line <&3 || exit 1
		[[ $line == "HTTP/1."?" 200"* ]]
	) 2>/dev/null
}
for ((n = 0; n < READY_TIMEOUT * 10; n++)); do
	key_works && break
	sleep 0.1
done
key_works || die "the proxy does not accept the key created at the broker (logs: $RUN_DIR/proxy.log, $RUN_DIR/broker.log)"

base="http://$HOST:$PROXY_PORT"
cat <<EOF

copilot-broker is running on $upstream.

  OpenAI base URL     $base/v1
  Anthropic base URL  $base
  API key             $api_key   (also in $RUN_DIR/api-key; managed key "$key_name")
  broker REST         http://$HOST:$HTTP_PORT/v1/token   (broker key in $RUN_DIR/broker-key)
  team console        http://$HOST:$HTTP_PORT/ui/   (sign in with the admin key in $RUN_DIR/admin-key)
  state               $RUN_DIR/state   (the broker's keys; kept across runs)
  logs                $RUN_DIR/*.log

A streamed chat completion:

curl -N $base/v1/chat/completions \\
  -H "Authorization: Bearer $api_key" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "gpt-4.1", "stream": true, "messages": [{"role": "user", "content": "Say hello"}]}'

A streamed Anthropic message:

curl -N $base/v1/messages \\
  -H "x-api-key: $api_key" \\
  -H "anthropic-version: 2023-06-01" \\
  -H "content-type: application/json" \\
  -d '{"model": "claude-sonnet-4", "max_tokens": 256, "stream": true, "messages": [{"role": "user", "content": "Say hello"}]}'

Client keys for your team, managed at the broker (every proxy follows within a second):

  $RUN_DIR/bin/broker keys create alice --models 'gpt-*,claude-sonnet-*' --expires 90d $keys_flags
  $RUN_DIR/bin/broker keys list $keys_flags
  $RUN_DIR/bin/broker keys update alice --disable $keys_flags
  $RUN_DIR/bin/broker keys revoke alice $keys_flags
  $RUN_DIR/bin/broker keys import FILE $keys_flags   (a proxy keys file: same names and secrets)

Press Ctrl-C to stop.
EOF

# Run until a signal, or until one of the processes dies on its own.
while true; do
	for i in "${!pids[@]}"; do
		if ! kill -0 "${pids[i]}" 2>/dev/null; then
			say "run: ${names[i]} exited unexpectedly; last lines of $RUN_DIR/${names[i]}.log:"
			tail -n 20 "$RUN_DIR/${names[i]}.log" >&2 || true
			exit 1
		fi
	done
	sleep 0.5
done
