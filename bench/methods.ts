// The deploy methods the benchmark compares, all on one test host with the same
// app, the same releases and the same Supervisor programs. The project's
// rotation runs its own deploy script; the others are done by a script the
// benchmark installs on the test host (`czd-bench`, below), with their own
// nginx site (a different server_name, so each method has its own Host header).
// The benchmark never changes the project's templates or files, except that it
// starts and stops the environment's Supervisor programs and points their slot
// links at releases, the way the rotation does.
import { DEFAULTS, RAMP_STEPS_PERCENT, WARMUP_REQUESTS_MAX } from "../infra/config";
import { layout, RELEASE_JAR, SUPERVISOR_SOCKET } from "../infra/names";
import { ROLLBACK_WARMUP_REQUESTS } from "../infra/rotation";
import { MethodName, Phases, zeroPhases } from "./report";

export const APP = "sample-app";
export const ENV = "live";
/** The project's site (the rotation); the other methods get their own names. */
export const DOMAIN = "app.test";
export const LAYOUT = layout(APP, ENV, { proxy: 3000, slot1: 3001, slot2: 3002, nrepl1: 7001, nrepl2: 7002 });
/**
 * The sample app's `warmupPath`: its main route, the one the load's fast GET hits, as the
 * README recommends. A warm-up of the health path alone left the new JVM's request path cold:
 * in interleaved runs, a quarter of the fast GETs of the first 0.5 s after the switch took over
 * 10 ms, against about a tenth after a warm-up of `/`.
 */
export const WARMUP_PATH = "/";
/**
 * The sample app's `warmupRequests`: the most the config allows, as the README recommends for a
 * cheap main route. Against 500, the deploy window's fast-GET p99 fell by about a sixth in three
 * runs (docs/benchmarks.md), for about 2 s more per deploy; rollbacks send at most
 * ROLLBACK_WARMUP_REQUESTS.
 */
export const WARMUP_REQUESTS = WARMUP_REQUESTS_MAX;
export const BENCH_SCRIPT = "/usr/local/sbin/czd-bench";

export interface MethodSpec {
    name: MethodName;
    /** The Host header the load client sends. */
    host: string;
    description: string;
}

export const METHODS: Record<MethodName, MethodSpec> = {
    rotation: {
        name: "rotation",
        host: DOMAIN,
        description: `this project's rotation: deploy --revision <sha> as the deploy user (boot at idle CPU priority, gate on /health, ${WARMUP_REQUESTS} warm-up GETs of ${WARMUP_PATH} (a rollback: ${ROLLBACK_WARMUP_REQUESTS}), a ${DEFAULTS.rampSeconds} s ramp of ${RAMP_STEPS_PERCENT.join("/")} % of new requests, NAT switch of all, drain, stop)`,
    },
    "rotation-no-ramp": {
        name: "rotation-no-ramp",
        host: DOMAIN,
        description: "the rotation with --ramp-seconds 0: all new requests move to the new slot at once after its warm-up",
    },
    "rotation-normal-boot": {
        name: "rotation-normal-boot",
        host: DOMAIN,
        description: "the rotation with --boot-priority normal: the new slot boots at the live slot's CPU priority instead of SCHED_IDLE",
    },
    "rotation-cold": {
        name: "rotation-cold",
        host: DOMAIN,
        description: "the rotation with --warmup-requests 0 --ramp-seconds 0: all traffic moves to the new slot as soon as its health check passes",
    },
    seed: {
        name: "seed",
        host: "seed.test",
        description: "the seed article: both slots in one upstream (default max_fails), supervisorctl start, poll `curl -s localhost:$port` every 0.1 s, stop the old slot",
    },
    "seed-max-fails-0": {
        name: "seed-max-fails-0",
        host: "seed0.test",
        description: "the seed procedure with max_fails=0 on both upstream servers",
    },
    "nginx-reload": {
        name: "nginx-reload",
        host: "reload.test",
        description: "start the new slot, gate on /health, rewrite the upstream to its port and nginx -s reload, wait for the old workers and connections to drain, stop the old slot",
    },
    restart: {
        name: "restart",
        host: "restart.test",
        description: "one instance restarted in place (supervisorctl stop + start of slot 1 on the new release, then /health answers)",
    },
};

/**
 * The default run: the five methods of the issue, plus the rotation without its ramp. The
 * other variants (normal-priority boot, no warm-up) run with --methods; the default run
 * has to stay under 15 minutes.
 */
export const DEFAULT_METHODS: MethodName[] = ["rotation", "rotation-no-ramp", "seed", "seed-max-fails-0", "nginx-reload", "restart"];

const p1 = LAYOUT.programs[0];
const p2 = LAYOUT.programs[1];

/**
 * The benchmark's own script on the test host (root). Subcommands:
 *   reset                        stop both slots, clear the NAT rule, remove the bench site
 *   prepare <method> <rev>       reset, then bring the method's first state up on <rev>
 *   deploy <method> <rev>        one deploy of <rev> by the method
 *   rollback <method> <rev>      the method's rollback to <rev> (the rotation: deploy --rollback, which goes there)
 * Output lines the benchmark parses:
 *   MARK start|end <epoch µs>    the window of the deploy
 *   PHASE <name> <µs>            a phase's duration
 *   LINE <epoch µs> <text>       the rotation's own output, time-stamped
 *   HISTORY <line>               the rotation's history line for this deploy
 */
export function benchScript(): string {
    return `#!/bin/bash
# czd-bench: installed by the clj-zero-downtime benchmark (bench/methods.ts) on a
# test host. Not part of the project; the project's files are only used, never changed.
set -uo pipefail
export LC_ALL=C

readonly ID=${LAYOUT.id}
readonly PROG=("" "${LAYOUT.id}:${p1.name}" "${LAYOUT.id}:${p2.name}")
readonly PORT=(0 ${p1.port} ${p2.port})
readonly RELEASES=${LAYOUT.releasesDir}
readonly SLOTS=${LAYOUT.slotsDir}
readonly JAR=${RELEASE_JAR}
readonly DEPLOY=${LAYOUT.deployScript}
readonly SWITCH=${LAYOUT.switchHelper}
readonly HISTORY=${LAYOUT.historyFile}
readonly DEPLOY_USER=${LAYOUT.deployUser}
readonly STATE=/var/lib/czd-bench
readonly SITE=/etc/nginx/sites-enabled/czd-bench
readonly SITE_TMP=/etc/nginx/.czd-bench.site.tmp
mkdir -p "$STATE"

now_us() { local t=$EPOCHREALTIME; printf '%s' "\${t/./}"; }
mark() { echo "MARK $1 $(now_us)"; }
phase() { echo "PHASE $1 $(($(now_us) - $2))"; }
die() { echo "czd-bench: $*" >&2; exit 1; }
sv() { supervisorctl -s unix://${SUPERVISOR_SOCKET} "$@"; }
other() { if [ "$1" = 1 ]; then echo 2; else echo 1; fi; }
live_slot() { cat "$STATE/live-slot" 2>/dev/null || echo 1; }

point_slot() {
    local tmp="$SLOTS/.$1.bench.$$"
    [ -f "$RELEASES/$2/$JAR" ] || die "release $2 is not built"
    ln -sfn "$RELEASES/$2" "$tmp"
    chown -h "$DEPLOY_USER:" "$tmp"
    mv -T "$tmp" "$SLOTS/$1"
}

wait_health() {
    local i=0
    until curl -fsS -o /dev/null --connect-timeout 1 --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -lt 1200 ] || die "port $1 did not answer /health within 120 s"
        sleep 0.1
    done
}

# Until no established connection is left on the port (at most 30 s), like the rotation's drain.
drain_port() {
    local deadline=$(($(now_us) + 30000000))
    while [ -n "$(ss -Htn state established "( sport = :$1 )" 2>/dev/null)" ]; do
        [ "$(now_us)" -lt "$deadline" ] || { echo "czd-bench: port $1 still busy after 30 s" >&2; break; }
        sleep 0.1
    done
}

# Until the nginx workers of the previous configuration have exited (at most 30 s).
drain_old_workers() {
    local deadline=$(($(now_us) + 30000000))
    while pgrep -f 'nginx: worker process is shutting down' >/dev/null; do
        [ "$(now_us)" -lt "$deadline" ] || { echo "czd-bench: old nginx workers still up after 30 s" >&2; break; }
        sleep 0.1
    done
}

write_site() {
    local name=$1 upstream=$2
    cat >"$SITE_TMP" <<EOF
# czd-bench: a method's own site, written by the benchmark
upstream czd_bench {
$upstream
}
server {
    listen 80;
    server_name $name;
    location / {
        proxy_pass http://czd_bench;
        proxy_set_header Host \\$host;
        proxy_read_timeout 60s;
    }
}
EOF
    mv -f "$SITE_TMP" "$SITE"
}

reload_nginx() {
    nginx -t -q || die "nginx -t failed"
    nginx -s reload || die "nginx -s reload failed"
}

site_for() {
    local method=$1 slot=$2
    case "$method" in
        seed) write_site seed.test "    server 127.0.0.1:\${PORT[1]};
    server 127.0.0.1:\${PORT[2]};" ;;
        seed-max-fails-0) write_site seed0.test "    server 127.0.0.1:\${PORT[1]} max_fails=0;
    server 127.0.0.1:\${PORT[2]} max_fails=0;" ;;
        nginx-reload) write_site reload.test "    server 127.0.0.1:\${PORT[$slot]};" ;;
        restart) write_site restart.test "    server 127.0.0.1:\${PORT[1]};" ;;
        *) die "no site for $method" ;;
    esac
}

reset() {
    sv stop "$ID:*" >/dev/null 2>&1 || true
    "$SWITCH" clear "$ID" >/dev/null 2>&1 || true
    if [ -e "$SITE" ]; then
        rm -f "$SITE"
        reload_nginx
        sleep 0.5
    fi
    rm -f "$STATE/live-slot"
}

as_deploy() { runuser -u "$DEPLOY_USER" -- env HOME=/home/$DEPLOY_USER "$@"; }

# rotation <deploy arguments...>: the project's deploy script, its output time-stamped.
rotation() {
    local rc
    mark start
    as_deploy "$DEPLOY" "$@" 2>&1 | while IFS= read -r line; do
        echo "LINE $(now_us) $line"
    done
    rc=\${PIPESTATUS[0]}
    mark end
    echo "HISTORY $(tail -n 1 "$HISTORY")"
    return "$rc"
}

# The seed article's procedure, as written (the curl loop gets a 120 s bound so a broken run ends).
seed_deploy() {
    local rev=$1 old new t i=0
    old=$(live_slot)
    new=$(other "$old")
    mark start
    point_slot "$new" "$rev"
    t=$(now_us); sv start "\${PROG[$new]}" >/dev/null || die "supervisorctl start failed"; phase boot "$t"
    t=$(now_us)
    until curl -s "localhost:\${PORT[$new]}" >/dev/null; do
        i=$((i + 1)); [ "$i" -lt 1200 ] || die "slot $new never answered"
        sleep 0.1
    done
    phase gate "$t"
    t=$(now_us); sv stop "\${PROG[$old]}" >/dev/null || die "supervisorctl stop failed"; phase stop "$t"
    echo "$new" >"$STATE/live-slot"
    mark end
}

reload_deploy() {
    local method=$1 rev=$2 old new t
    old=$(live_slot)
    new=$(other "$old")
    mark start
    point_slot "$new" "$rev"
    t=$(now_us); sv start "\${PROG[$new]}" >/dev/null || die "supervisorctl start failed"; phase boot "$t"
    t=$(now_us); wait_health "\${PORT[$new]}"; phase gate "$t"
    t=$(now_us); site_for "$method" "$new"; reload_nginx; phase switch "$t"
    t=$(now_us); drain_old_workers; drain_port "\${PORT[$old]}"; phase drain "$t"
    t=$(now_us); sv stop "\${PROG[$old]}" >/dev/null || die "supervisorctl stop failed"; phase stop "$t"
    echo "$new" >"$STATE/live-slot"
    mark end
}

# supervisorctl restart is stop + start; done as the two commands to time them apart.
restart_deploy() {
    local rev=$1 t
    mark start
    point_slot 1 "$rev"
    t=$(now_us); sv stop "\${PROG[1]}" >/dev/null || die "supervisorctl stop failed"; phase stop "$t"
    t=$(now_us); sv start "\${PROG[1]}" >/dev/null || die "supervisorctl start failed"; phase boot "$t"
    t=$(now_us); wait_health "\${PORT[1]}"; phase gate "$t"
    mark end
}

prepare() {
    local method=$1 rev=$2
    reset
    case "$method" in
        rotation | rotation-no-ramp | rotation-normal-boot | rotation-cold)
            as_deploy "$DEPLOY" --revision "$rev" >/dev/null || die "the rotation could not deploy $rev"
            return 0
            ;;
    esac
    point_slot 1 "$rev"
    sv start "\${PROG[1]}" >/dev/null || die "could not start slot 1"
    wait_health "\${PORT[1]}"
    echo 1 >"$STATE/live-slot"
    site_for "$method" 1
    reload_nginx
    sleep 0.5
}

deploy() {
    local method=$1 rev=$2
    case "$method" in
        rotation) rotation --revision "$rev" ;;
        rotation-normal-boot) rotation --revision "$rev" --boot-priority normal ;;
        rotation-no-ramp) rotation --revision "$rev" --ramp-seconds 0 ;;
        rotation-cold) rotation --revision "$rev" --warmup-requests 0 --ramp-seconds 0 ;;
        seed | seed-max-fails-0) seed_deploy "$rev" ;;
        nginx-reload) reload_deploy "$method" "$rev" ;;
        restart) restart_deploy "$rev" ;;
        *) die "unknown method $method" ;;
    esac
}

rollback() {
    local method=$1 rev=$2
    case "$method" in
        rotation) rotation --rollback ;;
        rotation-normal-boot) rotation --rollback --boot-priority normal ;;
        rotation-no-ramp) rotation --rollback --ramp-seconds 0 ;;
        rotation-cold) rotation --rollback --warmup-requests 0 --ramp-seconds 0 ;;
        *) deploy "$method" "$rev" ;;
    esac
}

case "\${1:-}" in
    reset) reset ;;
    prepare) prepare "$2" "$3" ;;
    deploy) deploy "$2" "$3" ;;
    rollback) rollback "$2" "$3" ;;
    *) die "usage: czd-bench reset | prepare|deploy|rollback <method> <rev>" ;;
esac
`;
}

export interface ParsedRun {
    startUs?: number;
    endUs?: number;
    phasesUs: Record<string, number>;
    lines: { us: number; text: string }[];
    history?: string[];
}

/** Reads the MARK / PHASE / LINE / HISTORY lines of one czd-bench call. */
export function parseBenchOutput(stdout: string): ParsedRun {
    const out: ParsedRun = { phasesUs: {}, lines: [] };
    for (const raw of stdout.split("\n")) {
        let m: RegExpExecArray | null;
        if ((m = /^MARK (start|end) (\d+)$/.exec(raw))) {
            if (m[1] === "start") out.startUs = Number(m[2]);
            else out.endUs = Number(m[2]);
        } else if ((m = /^PHASE (\w+) (-?\d+)$/.exec(raw))) {
            out.phasesUs[m[1]] = Number(m[2]);
        } else if ((m = /^LINE (\d+) (.*)$/.exec(raw))) {
            out.lines.push({ us: Number(m[1]), text: m[2] });
        } else if ((m = /^HISTORY (.*)$/.exec(raw))) {
            out.history = m[1].split("\t");
        }
    }
    return out;
}

/** How many warm-up requests the rotation sent ("==> warmed up slot N: <ok> of <n> requests ..."). */
export function warmupRequestsOf(run: ParsedRun): number | undefined {
    for (const l of run.lines) {
        const m = /^==> warmed up slot \d: \d+ of (\d+) requests/.exec(l.text);
        if (m) return Number(m[1]);
    }
    return undefined;
}

/**
 * The phases of one deploy. The rotation's build/boot/gate/drain/warmup come from its
 * history line (`time env rev slot outcome build_s boot_s gate_s drain_s warmup_s`); the
 * switch (from "healthy", "warmed up" after a warm-up or "ramped" after a ramp, to "traffic switched") and the
 * stop (from "drained" to "stopped") from its time-stamped output. The other methods
 * print PHASE lines.
 */
export function phasesOf(run: ParsedRun): Phases {
    const p = zeroPhases();
    const h = run.history;
    if (h && h.length >= 9) {
        p.build = Number(h[5]) || 0;
        p.boot = Number(h[6]) || 0;
        p.gate = Number(h[7]) || 0;
        p.drain = Number(h[8]) || 0;
        p.warmup = Number(h[9]) || 0;
        p.ramp = Number(h[10]) || 0;
        const at = (re: RegExp) => run.lines.find(l => re.test(l.text))?.us;
        const healthy = at(/^==> ramped slot \d/) ?? at(/^==> warmed up slot \d/) ?? at(/^==> slot \d healthy after/);
        const switched = at(/^==> traffic switched to slot/);
        const drained = at(/^==> drained slot/);
        const stopped = at(/^==> stopped slot/);
        if (healthy !== undefined && switched !== undefined) p.switch = Math.round((switched - healthy) / 1e4) / 100;
        if (drained !== undefined && stopped !== undefined) p.stop = Math.round((stopped - drained) / 1e4) / 100;
        return p;
    }
    for (const k of Object.keys(p) as (keyof Phases)[]) {
        if (run.phasesUs[k] !== undefined) p[k] = Math.round(run.phasesUs[k] / 1e4) / 100;
    }
    return p;
}
