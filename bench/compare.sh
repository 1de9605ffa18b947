#!/usr/bin/env bash
# Side-by-side submission benchmark: mailferry vs Postfix (+ OpenDKIM, Cyrus SASL) vs Haraka, one
# load generator (bench/smtpload), one machine, one run. See bench/README.md.
#
# Every server does the same work: submission with STARTTLS on a loopback port, AUTH PLAIN
# (alice@example.com / s3cret), DKIM RSA-2048 signing for example.com, every accepted message
# forwarded to one smtp-sink on a loopback port.
#
# Usage (as root, from anywhere; after `cargo build --release` in the project root):
#   bench/compare.sh [SCRATCH [ROUNDS]]     install what is missing, (re)configure, start, measure
#   bench/compare.sh stop [SCRATCH]         stop everything it started in SCRATCH
#   SCRATCH defaults to /tmp/mailferry-bench, ROUNDS to 2.
#   env: LOADS="8:1:400 8:20:2000 64:10:2000"   (conns:messages-per-connection:total, each)
#        SYSTEMS="mailferry mailferry-plain haraka postfix"
#        SINK_PORT=6526 POSTFIX_PORT=6387 HARAKA_PORT=6487 MF_PORT=6587 (and MF_LOCAL_PORT=6525,
#        MF_IMPLICIT_PORT=6465, MF_ADMIN_PORT=6580: mailferry's other listeners)
# Output: a markdown table on stdout and in SCRATCH/table.md; every run's line in SCRATCH/raw.log.
# mailferry is stopped at the end of a run; the peers (Postfix, OpenDKIM, Haraka, the sink) stay up
# for the next run, which reuses them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

MODE=run
if [ "${1:-}" = stop ]; then MODE=stop; shift; fi
S=$(realpath -m "${1:-/tmp/mailferry-bench}")
ROUNDS=${2:-2}
LOADS=${LOADS:-8:1:400 8:20:2000 64:10:2000}
SYSTEMS=${SYSTEMS:-mailferry mailferry-plain haraka postfix}

SINK_PORT=${SINK_PORT:-6526}
POSTFIX_PORT=${POSTFIX_PORT:-6387}
HARAKA_PORT=${HARAKA_PORT:-6487}
MF_PORT=${MF_PORT:-6587}
MF_LOCAL_PORT=${MF_LOCAL_PORT:-6525}
MF_IMPLICIT_PORT=${MF_IMPLICIT_PORT:-6465}
MF_ADMIN_PORT=${MF_ADMIN_PORT:-6580}

PASSWORD=s3cret
LOGIN=alice@example.com            # every system; argon2id-hashed for mailferry
LOGIN_PLAIN=plain@example.com      # mailferry only: a {PLAIN} row, the KDF-free check the peers do
HARAKA_VERSION=3.3.4

P=$S/postfix; ETC=$P/etc; RUN=$P/run
H=$S/haraka; HI=$H/inst
M=$S/mailferry; CFG=$M/config/mailferry.toml
BIN=$ROOT/target/release/mailferry
LOADGEN=$S/target/release/smtpload

say() { printf '%s\n' "compare: $*" >&2; }
die() { say "$*"; exit 1; }

# --- processes and ports ----------------------------------------------------------------------

listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# Who listens on a port, for error messages.
port_user() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*' | head -1 | sed 's/users:((//'; }

# The pid recorded in a pid file if that process is alive and its command line matches.
live_pid() {
  local f=$1 pat=$2 p
  [ -s "$f" ] || return 1
  p=$(awk 'NR==1{print $1}' "$f")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "$pat" || return 1
  echo "$p"
}

# Waits until PORT listens; fails early if PID died, showing LOG.
wait_port() {
  local port=$1 pid=$2 what=$3 log=$4
  for _ in $(seq 1 300); do
    listening "$port" && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      say "$what exited before listening on $port; end of $log:"; tail -20 "$log" >&2 || true; exit 1
    fi
    sleep 0.2
  done
  say "$what does not listen on 127.0.0.1:$port after 60 s; end of $log:"; tail -20 "$log" >&2 || true; exit 1
}

# Fails clearly when a port we are about to use is taken by someone else.
need_free() {
  local port=$1 what=$2
  if listening "$port"; then
    local who; who=$(port_user "$port")
    die "port $port (for $what) is already taken${who:+ by $who}; free it or choose another port (env variables at the top of $0)"
  fi
}

# Stops the process of a pid file (its whole process group when it leads one), then forgets it.
stop_pidfile() {
  local f=$1 pat=$2 what=$3 p
  if p=$(live_pid "$f" "$pat"); then
    local target=$p
    [ "$(ps -o pgid= -p "$p" | tr -d ' ')" = "$p" ] && target=-$p
    kill -TERM -- "$target" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL -- "$target" 2>/dev/null || true
    say "stopped $what (pid $p)"
  fi
  rm -f "$f"
}

stop_mailferry() { stop_pidfile "$M/mailferry.pid" "mailferry serve" mailferry; }

stop_all() {
  stop_mailferry
  stop_pidfile "$H/haraka.pid" haraka haraka
  if [ -f "$ETC/main.cf" ] && postfix -c "$ETC" status >/dev/null 2>&1; then
    postfix -c "$ETC" stop >/dev/null 2>&1 || true
    say "stopped postfix ($ETC)"
  fi
  stop_pidfile "$RUN/opendkim.pid" "opendkim" opendkim
  stop_pidfile "$S/sink.pid" "smtp-sink" smtp-sink
}

if [ "$MODE" = stop ]; then
  stop_all
  exit 0
fi

# --- checks ------------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts Postfix and OpenDKIM)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not '$ROUNDS'"
[ -x "$BIN" ] || die "no $BIN: run 'cargo build --release' in $ROOT first"
[ -f "$ROOT/config/mailferry.toml" ] || die "no $ROOT/config/mailferry.toml"
command -v cargo >/dev/null || die "cargo is needed to build bench/smtpload (it built mailferry)"
for sys in $SYSTEMS; do
  case $sys in mailferry|mailferry-plain|haraka|postfix) ;; *) die "unknown system '$sys' in SYSTEMS";; esac
done
for load in $LOADS; do
  [[ $load =~ ^[1-9][0-9]*:[1-9][0-9]*:[1-9][0-9]*$ ]] || die "a load is conns:per-conn:total, not '$load'"
done
mkdir -p "$S"

# --- packages ----------------------------------------------------------------------------------

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have postconf || need+=(postfix)
have smtp-sink || need+=(postfix)
have opendkim || need+=(opendkim)
have opendkim-genkey || need+=(opendkim-tools)
have saslpasswd2 || need+=(sasl2-bin)
ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || need+=(libsasl2-modules)
ls /usr/lib/*/sasl2/libsasldb.so* >/dev/null 2>&1 || need+=(libsasl2-modules-db)
have openssl || need+=(openssl)
have ss || need+=(iproute2)
have ps || need+=(procps)
have npm || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  say "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No system-wide Postfix instance: this script runs its own, with its own config folder.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "$(node -p 'require(process.argv[1]).version' "$H/node_modules/Haraka/package.json" 2>/dev/null)" != "$HARAKA_VERSION" ]; then
  say "installing Haraka $HARAKA_VERSION from npm into $H"
  mkdir -p "$H"
  (cd "$H" && npm install --no-audit --no-fund --no-save --loglevel=error "Haraka@$HARAKA_VERSION" >"$H/npm.log" 2>&1) \
    || { tail -20 "$H/npm.log" >&2; die "npm install Haraka@$HARAKA_VERSION failed"; }
fi

say "building bench/smtpload"
cargo build -q --release --manifest-path "$ROOT/bench/smtpload/Cargo.toml" --target-dir "$S/target"

# --- a certificate for all three ------------------------------------------------------------------

mkdir -p "$S/tls"
if [ ! -s "$S/tls/key.pem" ] || [ ! -s "$S/tls/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$S/tls/key.pem" -out "$S/tls/cert.pem" 2>/dev/null
fi
chmod 600 "$S/tls/key.pem"

# Writes stdin to FILE if it differs; sets CHANGED=1 then.
put() {
  local f=$1 t
  t=$(mktemp "$f.XXXXXX")
  cat >"$t"
  if cmp -s "$t" "$f"; then rm -f "$t"; else chmod "${2:-644}" "$t"; mv "$t" "$f"; CHANGED=1; fi
}

# --- the sink -------------------------------------------------------------------------------------

if live_pid "$S/sink.pid" smtp-sink >/dev/null; then
  wait_port "$SINK_PORT" "$(live_pid "$S/sink.pid" smtp-sink)" smtp-sink "$S/sink.log"
else
  need_free "$SINK_PORT" smtp-sink
  setsid smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$S/sink.log" 2>&1 &
  echo $! >"$S/sink.pid"
  wait_port "$SINK_PORT" "$!" smtp-sink "$S/sink.log"
  say "smtp-sink on 127.0.0.1:$SINK_PORT"
fi

# --- Postfix + OpenDKIM + Cyrus SASL ------------------------------------------------------------------

if [[ " $SYSTEMS " == *" postfix "* ]]; then
  mkdir -p "$ETC/sasl" "$P/queue" "$P/data" "$P/log" "$P/dkim" "$RUN/milter"
  chown postfix:postfix "$P/data"; chmod 700 "$P/data"
  # OpenDKIM (user opendkim) owns its run folder; Postfix (group postfix) reaches the socket in
  # milter/, which no one else can enter.
  chown opendkim:opendkim "$RUN"; chown opendkim:postfix "$RUN/milter"; chmod 750 "$RUN/milter"
  PF_CHANGED=0; DK_CHANGED=0

  CHANGED=0
  put "$ETC/main.cf" <<EOF
# mailferry bench: a private Postfix instance, run as 'postfix -c $ETC';
# /etc/postfix/main.cf is not read. Submission only (master.cf), relaying to the sink.
compatibility_level = 3.6
syslog_name = mfbench-postfix
queue_directory = $P/queue
data_directory = $P/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = $P/log
maillog_file = $P/log/maillog

myhostname = localhost
mydomain = example.com
myorigin = \$mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
readme_directory = no

# Nothing is delivered here: every message goes to the sink.
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$SINK_PORT
smtp_tls_security_level = none

smtpd_tls_cert_file = $S/tls/cert.pem
smtpd_tls_key_file = $S/tls/key.pem
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_session_cache_database = btree:\${data_directory}/smtpd_scache

# AUTH: Cyrus SASL in smtpd, users in a sasldb (auxprop).
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $ETC/sasl
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_sender_login_maps = texthash:$ETC/sender_login
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination

# DKIM: OpenDKIM as a milter over a unix socket; a failing milter defers (nothing unsigned).
milter_protocol = 6
milter_default_action = tempfail
smtpd_milters = unix:$RUN/milter/opendkim.sock
non_smtpd_milters =

message_size_limit = 26214400
EOF
  [ $CHANGED = 1 ] && PF_CHANGED=1

  CHANGED=0
  put "$ETC/master.cf" <<EOF
# mailferry bench: the private Postfix instance's services. No port 25: submission only.
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
  -o syslog_name=mfbench-postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_restrictions=reject_sender_login_mismatch
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=
  -o milter_macro_daemon_name=ORIGINATING
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
  [ $CHANGED = 1 ] && PF_CHANGED=1

  CHANGED=0
  put "$ETC/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: $ETC/sasldb2
EOF
  [ $CHANGED = 1 ] && PF_CHANGED=1
  put "$ETC/sender_login" <<<"$LOGIN	$LOGIN"
  if ! sasldblistusers2 -f "$ETC/sasldb2" 2>/dev/null | grep -q "^$LOGIN:"; then
    printf '%s' "$PASSWORD" | saslpasswd2 -p -f "$ETC/sasldb2" -c -u "${LOGIN#*@}" "${LOGIN%@*}"
  fi
  chown root:postfix "$ETC/sasldb2"; chmod 640 "$ETC/sasldb2"

  [ -s "$P/dkim/bench.private" ] || opendkim-genkey -b 2048 -d example.com -s bench -D "$P/dkim"
  chown -R opendkim:opendkim "$P/dkim"; chmod 700 "$P/dkim"; chmod 600 "$P/dkim/bench.private"
  CHANGED=0
  put "$P/opendkim.conf" <<EOF
# mailferry bench: OpenDKIM signing for the private Postfix instance.
Syslog                  no
UserID                  opendkim:opendkim
PidFile                 $RUN/opendkim.pid
# The socket is 0777; the folder it is in (opendkim:postfix 0750) limits who reaches it.
UMask                   000
Socket                  local:$RUN/milter/opendkim.sock
Mode                    s
Domain                  example.com
Selector                bench
KeyFile                 $P/dkim/bench.private
Canonicalization        relaxed/relaxed
SignatureAlgorithm      rsa-sha256
# The same fields as the others sign (OpenDKIM's default leaves out Message-ID and MIME fields).
SignHeaders             From,Sender,Reply-To,Subject,Date,Message-ID,To,Cc,MIME-Version,Content-Type,Content-Transfer-Encoding
OversignHeaders         From
InternalHosts           127.0.0.1
# The key is under the scratch folder (in /tmp by default), whose parents others may write.
RequireSafeKeys         no
EOF
  [ $CHANGED = 1 ] && DK_CHANGED=1

  if live_pid "$RUN/opendkim.pid" opendkim >/dev/null && [ $DK_CHANGED = 1 ]; then
    stop_pidfile "$RUN/opendkim.pid" opendkim opendkim
  fi
  if ! live_pid "$RUN/opendkim.pid" opendkim >/dev/null; then
    rm -f "$RUN/milter/opendkim.sock"
    opendkim -x "$P/opendkim.conf" >"$P/log/opendkim.log" 2>&1 || { cat "$P/log/opendkim.log" >&2; die "opendkim did not start"; }
    for _ in $(seq 1 100); do [ -S "$RUN/milter/opendkim.sock" ] && break; sleep 0.1; done
    [ -S "$RUN/milter/opendkim.sock" ] || die "opendkim made no socket; see $P/log/opendkim.log"
    say "opendkim up ($RUN/milter/opendkim.sock)"
  fi

  if postfix -c "$ETC" status >/dev/null 2>&1; then
    if [ $PF_CHANGED = 1 ]; then postfix -c "$ETC" reload >>"$P/log/start.log" 2>&1; say "postfix reloaded"; fi
    wait_port "$POSTFIX_PORT" "" postfix "$P/log/maillog"
  else
    need_free "$POSTFIX_PORT" postfix
    { postfix -c "$ETC" check && postfix -c "$ETC" start; } >>"$P/log/start.log" 2>&1 \
      || { tail -20 "$P/log/start.log" >&2; die "postfix -c $ETC did not start"; }
    wait_port "$POSTFIX_PORT" "" postfix "$P/log/maillog"
    say "postfix up on 127.0.0.1:$POSTFIX_PORT (postfix -c $ETC)"
  fi
  # Nothing left over from an earlier run is delivered while this one measures.
  postsuper -c "$ETC" -d ALL >/dev/null 2>&1 || true
fi

# --- Haraka -------------------------------------------------------------------------------------------

if [[ " $SYSTEMS " == *" haraka "* ]]; then
  [ -d "$HI/config" ] || "$H/node_modules/.bin/haraka" -i "$HI" >/dev/null
  C=$HI/config; HK_CHANGED=0; CHANGED=0
  put "$C/smtp.ini" <<EOF
listen=127.0.0.1:$HARAKA_PORT
; a cluster of two workers, to use both cores as Postfix and mailferry do
nodes=2
EOF
  put "$C/plugins" <<EOF
tls
auth/flat_file
dkim
queue/smtp_forward
EOF
  put "$C/me" <<<localhost
  put "$C/tls.ini" <<EOF
key=tls_key.pem
cert=tls_cert.pem
EOF
  put "$C/tls_key.pem" 600 <"$S/tls/key.pem"
  put "$C/tls_cert.pem" <"$S/tls/cert.pem"
  put "$C/auth_flat_file.ini" <<EOF
[core]
methods=PLAIN,LOGIN

[users]
$LOGIN=$PASSWORD
EOF
  put "$C/dkim.ini" <<EOF
[sign]
enabled=true
headers=From, Sender, Reply-To, Subject, Date, Message-ID, To, Cc, MIME-Version, Content-Type, Content-Transfer-Encoding

[canon]
body=relaxed

[verify]
enabled=false
EOF
  mkdir -p "$C/dkim/example.com"
  [ -s "$C/dkim/example.com/private" ] || openssl genrsa -out "$C/dkim/example.com/private" 2048 2>/dev/null
  put "$C/dkim/example.com/selector" <<<bench
  # queue_outbound (authenticated mail) goes to the sink too, after dkim has signed it.
  put "$C/smtp_forward.ini" <<EOF
host=127.0.0.1
port=$SINK_PORT
enable_outbound=true
EOF
  [ $CHANGED = 1 ] && HK_CHANGED=1
  if live_pid "$H/haraka.pid" haraka >/dev/null && [ $HK_CHANGED = 1 ]; then
    stop_pidfile "$H/haraka.pid" haraka haraka
  fi
  if hp=$(live_pid "$H/haraka.pid" haraka); then
    wait_port "$HARAKA_PORT" "$hp" haraka "$H/haraka.log"
  else
    need_free "$HARAKA_PORT" haraka
    setsid "$H/node_modules/.bin/haraka" -c "$HI" >>"$H/haraka.log" 2>&1 &
    echo $! >"$H/haraka.pid"
    wait_port "$HARAKA_PORT" "$!" haraka "$H/haraka.log"
    sleep 1   # both workers listening
    say "haraka $HARAKA_VERSION up on 127.0.0.1:$HARAKA_PORT (haraka -c $HI)"
  fi
fi

# --- memory ------------------------------------------------------------------------------------------

# Summed PSS in kB (shared pages divided among the processes sharing them) of the given pids and
# all their descendants: one ps and one awk per sample, whatever the number of processes.
pss_kb() {
  ps -e -o pid=,ppid= | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do { more = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; more = 1 } } while (more)
      t = 0
      for (p in keep) {
        f = "/proc/" p "/smaps_rollup"
        while ((getline line < f) > 0) if (line ~ /^Pss:/) { split(line, a, " "); t += a[2]; break }
        close(f)
      }
      print t
    }'
}

roots_of() {
  case $1 in
    mailferry|mailferry-plain) echo "$MF_PID" ;;
    haraka) live_pid "$H/haraka.pid" haraka || true ;;
    postfix) awk '{ print $1 }' "$P/queue/pid/master.pid" 2>/dev/null || true; live_pid "$RUN/opendkim.pid" opendkim || true ;;
  esac
}

# Samples the summed PSS of ROOTS' process trees every 0.2 s; the largest value goes to OUT (kB).
sample_peak() {
  local out=$1 max=0 kb; shift
  while :; do
    kb=$(pss_kb "$@")
    if [ "$kb" -gt "$max" ]; then max=$kb; echo "$max" >"$out"; fi
    sleep 0.2
  done
}

# --- mailferry -------------------------------------------------------------------------------------

# A fresh copy of the shipped configuration, edited: the shipped pipeline minus rate-limit (the
# peers have none), listeners on free ports, many connections from 127.0.0.1 allowed, our
# certificate, smtp-forward to the sink; an argon2id user, a {PLAIN} user, a DKIM key.
configure_mailferry() {
  local t must
  rm -rf "$M/config" "$M/var/queue" "$M/var/outbox"   # var/plugin-cache (compiled plugins) is kept
  mkdir -p "$M"
  cp -r "$ROOT/config" "$M/config"
  t=$(cat "$CFG")
  for must in 'address = "127.0.0.1:2525"' 'address = "127.0.0.1:2587"' 'address = "127.0.0.1:2465"' \
              'address = "127.0.0.1:2580"' 'route = "outbox"' 'name = "rate-limit"'; do
    [[ $t == *"$must"* ]] || die "the shipped config/mailferry.toml no longer has '$must': update bench/compare.sh"
  done
  grep -q '^\[limits\]$' "$CFG" || die "the shipped config has no [limits] table: update bench/compare.sh"
  ! grep -q '^\[tls\]' "$CFG" || die "the shipped config has a [tls] table: update bench/compare.sh"
  # Drop the [[plugins]] table named rate-limit, with its [plugins.config].
  awk '
    function flush() { if (blk != "" && blk !~ /\nname = "rate-limit"\n/) printf "%s", blk; blk = ""; inb = 0 }
    /^\[\[plugins\]\]/ { flush(); inb = 1; blk = $0 "\n"; next }
    /^\[/ && !/^\[plugins\./ { flush() }
    inb { blk = blk $0 "\n"; next }
    { print }
    END { flush() }' "$CFG" |
  sed -e "s/address = \"127.0.0.1:2525\"/address = \"127.0.0.1:$MF_LOCAL_PORT\"/" \
      -e "s/address = \"127.0.0.1:2587\"/address = \"127.0.0.1:$MF_PORT\"/" \
      -e "s/address = \"127.0.0.1:2465\"/address = \"127.0.0.1:$MF_IMPLICIT_PORT\"/" \
      -e "s/address = \"127.0.0.1:2580\"/address = \"127.0.0.1:$MF_ADMIN_PORT\"/" \
      -e 's/^route = "outbox"/route = "sink"/' \
      -e '/^max_connections_per_ip *=/d' \
      -e 's/^\[limits\]$/[limits]\nmax_connections_per_ip = 1000/' >"$CFG.new"
  printf '%s\n' "" "# --- added by bench/compare.sh ---" "[tls]" "cert = \"$S/tls/cert.pem\"" "key = \"$S/tls/key.pem\"" \
    "" "[relays.sink]" 'host = "127.0.0.1"' "port = $SINK_PORT" 'tls = "none"' >>"$CFG.new"
  mv "$CFG.new" "$CFG"
  ! grep -q 'name = "rate-limit"' "$CFG" || die "could not remove rate-limit from $CFG"
  printf '%s' "$PASSWORD" | "$BIN" user add "$LOGIN" --password-stdin --config "$CFG" >/dev/null
  printf '%s:{PLAIN}%s\n' "$LOGIN_PLAIN" "$PASSWORD" >>"$M/config/auth/users"
  "$BIN" dkim keygen --domain example.com --selector bench --config "$CFG" >"$M/dkim.txt" 2>&1 \
    || { cat "$M/dkim.txt" >&2; die "mailferry dkim keygen failed"; }
  "$BIN" check --config "$CFG" >"$M/check.log" 2>&1 || { cat "$M/check.log" >&2; die "mailferry check --config $CFG failed"; }
}

MF_PID=
MF_IDLE_MB=
cleanup() {
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
  stop_mailferry
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ " $SYSTEMS " == *" mailferry"* ]]; then
  stop_mailferry   # one left over from an interrupted run
  for pp in "$MF_PORT:submission" "$MF_LOCAL_PORT:local" "$MF_IMPLICIT_PORT:submissions" "$MF_ADMIN_PORT:admin"; do
    need_free "${pp%%:*}" "mailferry ${pp#*:}"
  done
  configure_mailferry
  setsid "$BIN" serve --config "$CFG" >"$M/serve.log" 2>&1 &
  MF_PID=$!
  echo "$MF_PID" >"$M/mailferry.pid"
  wait_port "$MF_PORT" "$MF_PID" mailferry "$M/serve.log"
  say "mailferry up on 127.0.0.1:$MF_PORT (pid $MF_PID, $CFG)"
  sleep 2
  MF_IDLE_MB=$(( $(pss_kb "$MF_PID") / 1024 ))
  say "mailferry idle PSS after start-up: $MF_IDLE_MB MB"
fi

# --- waiting for the queues to empty between runs ---------------------------------------------------

queued() {
  case $1 in
    postfix) find "$P/queue/incoming" "$P/queue/active" "$P/queue/deferred" "$P/queue/maildrop" -type f 2>/dev/null | wc -l ;;
    mailferry*) find "$M/var/queue" -name '*.eml' 2>/dev/null | wc -l ;;
    *) echo 0 ;;
  esac
}

# Delivery to the sink goes on after the client's 250: let it finish before the next system runs,
# so that no system is measured while another one still works.
drain() {
  local sys n
  for sys in $SYSTEMS; do
    for _ in $(seq 1 300); do n=$(queued "$sys"); [ "$n" -eq 0 ] && break; sleep 0.2; done
    [ "$n" -eq 0 ] || say "warning: $n messages still queued in $sys after 60 s"
  done
}

# --- the runs -------------------------------------------------------------------------------------------

addr_of() { case $1 in mailferry*) echo "127.0.0.1:$MF_PORT";; haraka) echo "127.0.0.1:$HARAKA_PORT";; postfix) echo "127.0.0.1:$POSTFIX_PORT";; esac; }
login_of() { case $1 in mailferry-plain) echo "$LOGIN_PLAIN";; *) echo "$LOGIN";; esac; }

# Logs of the peers start afresh with each run (they append, so truncating is safe).
if [ -f "$P/log/maillog" ]; then : >"$P/log/maillog"; fi
if [ -f "$H/haraka.log" ]; then : >"$H/haraka.log"; fi

RES=$S/results.tsv
: >"$RES"
{
  echo "=== $(date -u '+%Y-%m-%d %H:%M:%S UTC') rounds=$ROUNDS loads='$LOADS' systems='$SYSTEMS'"
  echo "mailferry $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') idle_pss_mb=$MF_IDLE_MB"
} >>"$S/raw.log"

for load in $LOADS; do
  IFS=: read -r conns per total <<<"$load"
  for r in $(seq 1 "$ROUNDS"); do
    for sys in $SYSTEMS; do
      drain
      roots=$(roots_of "$sys" | tr '\n' ' ')
      [ -n "${roots// /}" ] || die "$sys is not running"
      rm -f "$S/peak.kb"
      sample_peak "$S/peak.kb" $roots &
      SAMPLER=$!
      login=$(login_of "$sys")
      out=$("$LOADGEN" --addr "$(addr_of "$sys")" --tls starttls --auth "$login:$PASSWORD" --from "$login" \
              --conns "$conns" --per-conn "$per" --total "$total" --timeout-s 30 --max-secs 600 2>"$S/errors.txt" | tail -1) || true
      kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
      peak_kb=$(cat "$S/peak.kb" 2>/dev/null || echo 0)
      last_kb=$(pss_kb $roots)   # and once more at the end, for runs shorter than a sample
      [ "$last_kb" -gt "$peak_kb" ] && peak_kb=$last_kb
      {
        echo "$sys ${conns}x${per} total=$total round=$r: $out peak_pss_kb=$peak_kb"
        sed 's/^/    /' "$S/errors.txt"
      } >>"$S/raw.log"
      # ok=N fail=N secs=S msg_per_s=R p50_ms=X p99_ms=Y
      ok=; fail=; secs=; mps=; p50=; p99=
      for kv in $out; do
        case $kv in ok=*) ok=${kv#*=};; fail=*) fail=${kv#*=};; secs=*) secs=${kv#*=};; msg_per_s=*) mps=${kv#*=};; p50_ms=*) p50=${kv#*=};; p99_ms=*) p99=${kv#*=};; esac
      done
      if [ -z "$ok" ]; then
        say "$sys ${conns}x${per}: smtpload printed no result:"; cat "$S/errors.txt" >&2
        ok=0; fail=$total; secs=0; mps=0; p50=0; p99=0
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${conns}x${per} (${total})" "$r" "$sys" "$ok" "$fail" "$secs" "$mps" "$p50" "$p99" "$peak_kb" >>"$RES"
      say "$(printf '%-16s %-14s round %s: %8s msg/s  p50 %7s ms  p99 %7s ms  fail %s  peak PSS %s MB' \
        "$sys" "${conns}x${per} (${total})" "$r" "$mps" "$p50" "$p99" "$fail" "$((peak_kb / 1024))")"
      [ -s "$S/errors.txt" ] && sed 's/^/    /' "$S/errors.txt" | head -5 >&2
    done
  done
done
drain

# --- the table -------------------------------------------------------------------------------------------

versions="mailferry $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
[[ " $SYSTEMS " == *" postfix "* ]] && versions+=", Postfix $(postconf -h -d mail_version 2>/dev/null), $(opendkim -V 2>/dev/null | head -1 | sed 's/.*OpenDKIM Filter v/OpenDKIM /')"
[[ " $SYSTEMS " == *" haraka "* ]] && versions+=", Haraka $HARAKA_VERSION (node $(node --version 2>/dev/null))"
{
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $ROUNDS round(s); $versions"
echo
awk -F'\t' -v rounds="$ROUNDS" -v idle="$MF_IDLE_MB" '
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  {
    load = $1; r = $2; sys = $3
    if (!(load in seen_load)) { seen_load[load] = 1; loads[++nl] = load }
    if (!(sys in seen_sys)) { seen_sys[sys] = 1; systems[++ns] = sys }
    k = load SUBSEP sys
    mps[k] = mps[k] " " $7; p50[k] = p50[k] " " $8; p99[k] = p99[k] " " $9
    fail[k] += $5; if ($10 + 0 > peak[k] + 0) peak[k] = $10
    rmps[load, r, sys] = $7; rp99[load, r, sys] = $9; got[load, r, sys] = 1
  }
  END {
    printf "| system | load: conns x msgs/conn (total) | msg/s | p50 ms | p99 ms | errors | peak PSS MB |\n"
    printf "|---|---|---:|---:|---:|---:|---:|\n"
    for (i = 1; i <= nl; i++) for (j = 1; j <= ns; j++) {
      k = loads[i] SUBSEP systems[j]
      if (!(k in mps)) continue
      printf "| %s | %s | %.0f | %.1f | %.1f | %d | %.0f |\n", systems[j], loads[i], median(mps[k]), median(p50[k]), median(p99[k]), fail[k], peak[k] / 1024
    }
    printf "\nmsg/s, p50, p99: median of %d round(s); errors: failed messages over all rounds; peak PSS: highest over the rounds.\n", rounds
    if (idle != "") printf "mailferry idle PSS after start-up: %d MB\n", idle
    # Ratios within each round (the systems of a round ran back to back), then their median.
    hdr = 0
    for (i = 1; i <= nl; i++) for (a = 1; a <= 2; a++) {
      num = (a == 1) ? "mailferry" : "mailferry-plain"
      line = ""; any = 0
      for (b = 1; b <= 2; b++) {
        den = (b == 1) ? "postfix" : "haraka"
        lm = ""; lp = ""
        for (r = 1; r <= rounds; r++) {
          if (!got[loads[i], r, num] || !got[loads[i], r, den]) continue
          if (rmps[loads[i], r, den] + 0 > 0) lm = lm " " rmps[loads[i], r, num] / rmps[loads[i], r, den]
          if (rp99[loads[i], r, den] + 0 > 0) lp = lp " " rp99[loads[i], r, num] / rp99[loads[i], r, den]
        }
        vm[b] = (lm == "") ? "-" : sprintf("%.2f", median(lm)); vp[b] = (lp == "") ? "-" : sprintf("%.2f", median(lp))
        if (lm != "" || lp != "") any = 1
      }
      if (!any) continue
      if (!hdr) {
        printf "\n| load | numerator | msg/s ÷ postfix | msg/s ÷ haraka | p99 ÷ postfix | p99 ÷ haraka |\n|---|---|---:|---:|---:|---:|\n"
        hdr = 1
      }
      printf "| %s | %s | %s | %s | %s | %s |\n", loads[i], num, vm[1], vm[2], vp[1], vp[2]
    }
    if (hdr) printf "\nRatios: per round, then the median over the rounds. msg/s above 1 and p99 below 1 favour mailferry.\n"
  }' "$RES"
} | tee "$S/table.md"
echo >>"$S/raw.log"
say "table in $S/table.md, every run in $S/raw.log; peers left running (stop: $0 stop $S)"
