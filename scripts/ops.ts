// Day-2 operations on a stack's server: `npm run status`, `npm run logs`, `npm run rollback`.
//
// Run through scripts/ops.sh, which sources scripts/env.sh first: the local state backend,
// the passphrase and the project's Pulumi CLI are then set up exactly as for `npm run up`,
// and this file never repeats those defaults.
//
// Each command reads the stack's outputs (`pulumi stack output --json`) for the server's
// address and names, fetches the deploy key (`pulumi config get sshPrivateKey`) into a
// 0600 file in a private temp directory that is removed afterwards, and runs `ssh -i <file>`
// as the deploy user. The key itself is never printed and never on a command line.
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { APPS_ROOT, EnvironmentLayout, SUPERVISOR_SOCKET, environmentOfBaseDir, layout, parseSshCommand } from "../infra/names";

const ROOT = path.resolve(__dirname, "..");

export type Command = "status" | "logs" | "rollback";
export const COMMANDS: readonly Command[] = ["status", "logs", "rollback"];

export interface Options {
    command: Command;
    stack: string;
    /** logs: the slot to show; default the live one. */
    slot?: 1 | 2;
    /** logs: lines shown before following. */
    lines: number;
    /** logs: false prints the last lines and exits (for scripts and tests). */
    follow: boolean;
    /** rollback: go to this kept release instead of the previous revision. */
    revision?: string;
}

export const DEFAULT_LINES = 50;

export const USAGE = `usage: npm run status   [-- --stack <stack>]
       npm run logs     [-- --stack <stack>] [--slot 1|2] [--lines N] [--no-follow]
       npm run rollback [-- --stack <stack>] [--revision <commit>]

  --stack      the stack (environment) to act on; default: live
  --slot       logs: the slot whose log to show; default: the live slot, followed across deploys
  --lines      logs: how many lines to show first; default: ${DEFAULT_LINES}
  --no-follow  logs: print the lines and exit instead of following (Ctrl-C ends following)
  --revision   rollback: go to this kept release instead of the previous revision`;

export class UsageError extends Error {}
/** A failure with a message meant for the user: printed without a stack trace. */
export class OpsError extends Error {
    constructor(message: string, readonly exitCode = 1) {
        super(message);
    }
}

/** Same rule as the rotation script's, so a bad value fails here with the same wording. */
const REVISION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/;
const STACK_PATTERN = /^[A-Za-z0-9_.\/-]+$/;

export function parseArgs(command: string, argv: string[]): Options {
    if (!(COMMANDS as readonly string[]).includes(command)) throw new UsageError(`unknown command '${command}'`);
    const opts: Options = { command: command as Command, stack: "live", lines: DEFAULT_LINES, follow: true };
    const allowed: Record<Command, string[]> = {
        status: ["--stack"],
        logs: ["--stack", "--slot", "--lines", "--no-follow", "--follow"],
        rollback: ["--stack", "--revision"],
    };
    for (let i = 0; i < argv.length; i++) {
        let arg = argv[i];
        let value: string | undefined;
        const eq = arg.indexOf("=");
        if (arg.startsWith("--") && eq > 0) {
            value = arg.slice(eq + 1);
            arg = arg.slice(0, eq);
        }
        if (arg === "-h" || arg === "--help") throw new UsageError("");
        if (!allowed[opts.command].includes(arg)) throw new UsageError(`${command}: unknown argument '${argv[i]}'`);
        const takesValue = !["--no-follow", "--follow"].includes(arg);
        if (takesValue && value === undefined) {
            value = argv[++i];
            if (value === undefined || value === "") throw new UsageError(`${arg} needs a value`);
        } else if (!takesValue && value !== undefined) {
            throw new UsageError(`${arg} takes no value`);
        }
        switch (arg) {
            case "--stack":
                if (!STACK_PATTERN.test(value!)) throw new UsageError(`--stack '${value}' is not a stack name`);
                opts.stack = value!;
                break;
            case "--slot":
                if (value !== "1" && value !== "2") throw new UsageError(`--slot must be 1 or 2, not '${value}'`);
                opts.slot = Number(value) as 1 | 2;
                break;
            case "--lines":
                if (!/^\d{1,7}$/.test(value!)) throw new UsageError(`--lines must be a whole number, not '${value}'`);
                opts.lines = Number(value);
                break;
            case "--revision":
                if (!REVISION_PATTERN.test(value!)) {
                    throw new UsageError(`--revision '${value}' must be letters, digits, '.', '_' or '-' (at most 80)`);
                }
                opts.revision = value;
                break;
            case "--no-follow": opts.follow = false; break;
            case "--follow": opts.follow = true; break;
        }
    }
    return opts;
}

// ---- the stack ---------------------------------------------------------------

/** Where and as whom to connect, and the names on the server, from the stack's outputs. */
export interface Target {
    stack: string;
    address: string;
    user: string;
    port: number;
    appUrl: string;
    layout: EnvironmentLayout;
    /** What the last `pulumi up` put live (the server is the truth: git push and rollbacks change it). */
    pulumiLiveRevision?: string;
}

export function noServerMessage(stack: string): string {
    return `stack ${stack} has no server yet: run npm run up first`;
}

/** Reads the outputs index.ts exports; anything missing means the stack never got a server. */
export function targetFromOutputs(stack: string, outputs: Record<string, unknown>): Target {
    const str = (k: string) => (typeof outputs[k] === "string" && outputs[k] !== "" ? (outputs[k] as string) : undefined);
    const address = str("serverAddress");
    const appDirectory = str("appDirectory");
    const environment = str("environment");
    if (!address || !appDirectory || !environment) throw new OpsError(noServerMessage(stack));
    // appDirectory is the environment's layout().baseDir; the rest of the layout follows from it.
    const dir = environmentOfBaseDir(appDirectory);
    if (!dir || dir.environment !== environment) {
        throw new OpsError(`stack ${stack}: unexpected appDirectory output '${appDirectory}' (expected ${APPS_ROOT}/<app>/${environment})`);
    }
    // The `ssh` output names the port and user the stack set up.
    const { port, user } = parseSshCommand(str("ssh") ?? "");
    // Ports are not needed for paths; layout() only copies them.
    const env = layout(dir.appName, environment, { proxy: 0, slot1: 0, slot2: 0, nrepl1: 0, nrepl2: 0 });
    return { stack, address, user, port, appUrl: str("appUrl") ?? `http://${address}/`, layout: env, pulumiLiveRevision: str("liveRevision") };
}

/** The Pulumi CLI: CZD_PULUMI (tests) or the project's own launcher, as in scripts/up.sh. */
export function pulumiPath(env: NodeJS.ProcessEnv = process.env): string {
    return env.CZD_PULUMI || path.join(ROOT, "node_modules", ".bin", "pulumi");
}

interface Captured { code: number; stdout: string; stderr: string }

function capture(argv: string[], input?: string): Promise<Captured> {
    return new Promise((resolve, reject) => {
        const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", d => (stdout += d));
        child.stderr.setEncoding("utf8").on("data", d => (stderr += d));
        child.on("error", reject);
        child.on("close", code => resolve({ code: code ?? 1, stdout, stderr }));
        child.stdin.on("error", () => undefined);
        child.stdin.end(input ?? "");
    });
}

async function pulumi(args: string[]): Promise<Captured> {
    const cli = pulumiPath();
    try {
        return await capture([cli, ...args]);
    } catch (e) {
        throw new OpsError(`cannot run the Pulumi CLI ${cli}: ${(e as Error).message} (run npm ci, or npm run up once)`);
    }
}

export async function readTarget(stack: string): Promise<Target> {
    const r = await pulumi(["stack", "output", "--json", "--stack", stack]);
    if (r.code !== 0) {
        throw new OpsError(`cannot read the outputs of stack ${stack}: ${r.stderr.trim() || `exit ${r.code}`}\n` +
            `(is the stack name right? npm run up -- ${stack} creates it)`);
    }
    let outputs: unknown;
    try {
        outputs = JSON.parse(r.stdout || "{}");
    } catch {
        throw new OpsError(`pulumi stack output --json --stack ${stack} did not print JSON: ${r.stdout.slice(0, 200)}`);
    }
    if (!outputs || typeof outputs !== "object") throw new OpsError(noServerMessage(stack));
    return targetFromOutputs(stack, outputs as Record<string, unknown>);
}

/**
 * Runs `fn` with the stack's private key in a 0600 file inside a 0700 temp directory,
 * removed afterwards (also on Ctrl-C: see removeOnExit).
 */
export async function withPrivateKey<T>(stack: string, fn: (keyPath: string) => Promise<T>): Promise<T> {
    const r = await pulumi(["config", "get", "sshPrivateKey", "--stack", stack]);
    // Pulumi's stderr names the key, not its value; stdout (the key) is never echoed.
    if (r.code !== 0 || !r.stdout.trim()) {
        throw new OpsError(`cannot read sshPrivateKey of stack ${stack}: ${r.stderr.trim() || "not set"}\n` +
            "(run npm run up first; run Pulumi by hand as scripts/pulumi, for the same backend and passphrase)");
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "czd-ops-"));
    const keyPath = path.join(dir, "id");
    const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
    const unregister = removeOnExit(cleanup);
    try {
        // ssh refuses a key without its final newline; the CLI may trim it.
        fs.writeFileSync(keyPath, r.stdout.trimEnd() + "\n", { mode: 0o600 });
        return await fn(keyPath);
    } finally {
        cleanup();
        unregister();
    }
}

const exitHooks = new Set<() => void>();
/** Runs `hook` at exit, and at once on Ctrl-C/SIGTERM (Node's default would exit without "exit" hooks). */
function removeOnExit(hook: () => void): () => void {
    if (exitHooks.size === 0) process.once("exit", () => exitHooks.forEach(h => h()));
    exitHooks.add(hook);
    return () => exitHooks.delete(hook);
}

/**
 * What Ctrl-C (or SIGTERM) does while a command runs. With a handler installed Node no
 * longer exits by itself, so each command decides how its ssh ends; the key file goes first.
 */
let interruptHandler: (() => void) | undefined;
function onInterrupt() {
    exitHooks.forEach(h => h());
    if (interruptHandler) interruptHandler();
    else process.exit(130);
}


// ---- ssh ---------------------------------------------------------------------

/** Known host keys are kept beside the stack's state (trust on first use), not in ~/.ssh. */
export function knownHostsFile(env: NodeJS.ProcessEnv = process.env): string {
    const stateDir = env.CZD_STATE_DIR || path.join(os.homedir(), ".clj-zero-downtime");
    return path.join(stateDir, "known_hosts");
}

/** The ssh argv: the key only as a file path; `remote` is one shell command for the server. */
export function sshArgv(target: Target, keyPath: string, remote: string, knownHosts = knownHostsFile()): string[] {
    return [
        "ssh",
        "-i", keyPath,
        "-p", String(target.port),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        // A connection that went dead (a laptop asleep, a changed network) ends within a minute.
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", `UserKnownHostsFile=${knownHosts}`,
        "-o", "LogLevel=ERROR",
        `${target.user}@${target.address}`,
        "--",
        remote,
    ];
}

/** What ssh's error means and what to do, by its text: a key the server refuses, a changed host key, or no way through. */
export function sshFailureMessage(target: Target, stderr: string): string {
    const what = `cannot reach ${target.user}@${target.address} over SSH (port ${target.port}): ${stderr.trim() || "ssh exited 255"}\n`;
    // known_hosts names a host on another port than 22 as [address]:port.
    const hostName = target.port === 22 ? target.address : `[${target.address}]:${target.port}`;
    if (/host key/i.test(stderr)) {
        return what + `the server's host key changed; if the server was recreated: ssh-keygen -R '${hostName}' -f ${knownHostsFile()}`;
    }
    if (/permission denied/i.test(stderr)) {
        return what + `the server refused the stack's key: if sshPrivateKey changed, run npm run up -- ${target.stack} to put the new key on the server (README: Changing the SSH key)`;
    }
    return what + `check that your address is in sshAllowedCidrs (scripts/pulumi config get sshAllowedCidrs --stack ${target.stack}) and that the server is up`;
}

/** Single-quotes a word for the remote shell. */
export function shq(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Spawns ssh with stdout passed through and stderr passed through while also kept
 * (ssh's own errors come on stderr). Resolves with ssh's exit code.
 */
function sshStreaming(argv: string[], stdin: "pipe" | "ignore"): { child: ChildProcess; done: Promise<{ code: number; signal: NodeJS.Signals | null; stderr: string }> } {
    const child = spawn(argv[0], argv.slice(1), { stdio: [stdin, "inherit", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
        process.stderr.write(d);
        stderr = (stderr + d.toString("utf8")).slice(-4000);
    });
    const done = new Promise<{ code: number; signal: NodeJS.Signals | null; stderr: string }>((resolve, reject) => {
        child.on("error", e => reject(new OpsError(`cannot run ssh: ${e.message} (an OpenSSH client is needed)`)));
        child.on("close", (code, signal) => resolve({ code: code ?? 1, signal, stderr }));
    });
    return { child, done };
}

// ---- status ------------------------------------------------------------------

/** The state records status shows, each in a section named as its file (names.ts decides the names). */
function statusRecords(env: EnvironmentLayout): string[] {
    return [env.stateFiles.liveSlot, env.stateFiles.liveRevision, env.stateFiles.previousRevision];
}

/** Prints labelled sections (`@@name`) the status formatter reads. Runs as the deploy user. */
export function statusScript(env: EnvironmentLayout): string {
    const q = shq;
    return [
        "set -u",
        "export LC_ALL=C",
        "sec() { printf '@@%s\\n' \"$1\"; }",
        `for f in ${statusRecords(env).map(q).join(" ")}; do sec "$f"; head -n 1 ${q(env.stateDir)}/"$f" 2>/dev/null || true; done`,
        // The rotation script reads the kernel rule: the truth about where traffic goes, and a ramp left in place.
        `rotation_status=$(${q(env.deployScript)} --status 2>&1 || true)`,
        `sec traffic; printf '%s\\n' "$rotation_status" | sed -n 's/^traffic goes to: *slot *//p'`,
        `sec ramp; printf '%s\\n' "$rotation_status" | sed -n 's/^traffic ramp: *//p'`,
        `sec supervisor; supervisorctl -s unix://${SUPERVISOR_SOCKET} status ${q(`${env.id}:*`)} 2>&1 || true`,
        `for n in 1 2; do sec "slot-$n"; readlink ${q(env.slotsDir)}/"$n" 2>/dev/null || true; done`,
        `sec history; tail -n 10 ${q(env.historyFile)} 2>/dev/null || true`,
        `sec disk-total; du -sh ${q(env.releasesDir)} 2>/dev/null | cut -f1 || true`,
        `sec disk; find ${q(env.releasesDir)} -mindepth 1 -maxdepth 1 -type d ! -name '.*' -exec du -sh {} + 2>/dev/null || true`,
        "",
    ].join("\n");
}

export function parseSections(raw: string): Record<string, string[]> {
    const sections: Record<string, string[]> = {};
    let current: string[] | undefined;
    for (const line of raw.split("\n")) {
        const m = /^@@([a-z0-9-]+)$/.exec(line);
        if (m) {
            current = sections[m[1]] = [];
        } else if (current && line !== "") {
            current.push(line);
        }
    }
    return sections;
}

export const HISTORY_COLUMNS = ["TIME", "ENV", "REVISION", "SLOT", "OUTCOME", "BUILD_S", "BOOT_S", "GATE_S", "DRAIN_S", "WARMUP_S", "RAMP_S"];

function table(rows: string[][]): string[] {
    const widths = rows[0].map((_, i) => Math.max(...rows.map(r => (r[i] ?? "").length)));
    // The last column is left unpadded so lines carry no trailing blanks.
    return rows.map(r => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd());
}

/** A supervisorctl status line: `group:program   STATE   pid 1, uptime 0:01:02` (or a date, or "Not started"). */
export function parseSupervisorLine(line: string): { program: string; state: string; uptime: string } | undefined {
    const m = /^(\S+)\s+([A-Z]+)\s*(.*)$/.exec(line.trim());
    if (!m) return undefined;
    const program = m[1].includes(":") ? m[1].split(":")[1] : m[1];
    const up = /uptime (\S+)/.exec(m[3]);
    return { program, state: m[2], uptime: up ? up[1] : "" };
}

const short = (rev: string) => (/^[0-9a-f]{40}$/.test(rev) ? rev.slice(0, 12) : rev);

/** What the kernel rule says, when it is not the recorded live slot: a rule that sends requests nowhere fails them all. */
function trafficWarning(liveSlot: string, traffic: string, env: EnvironmentLayout): string {
    if (!liveSlot || !traffic || traffic === liveSlot) return "";
    if (/^[12]$/.test(traffic)) return `  (but traffic goes to slot ${traffic})`;
    return `  (but the switch rule says: ${traffic}; requests get no answer from the app until it is fixed: ` +
        `${env.deployScript} --boot on the server restores it, or deploy)`;
}

export function formatStatus(target: Target, raw: string): string {
    const s = parseSections(raw);
    const one = (k: string) => (s[k] ?? [])[0] ?? "";
    const env = target.layout;
    const liveSlot = one(env.stateFiles.liveSlot);
    const liveRevision = one(env.stateFiles.liveRevision);
    const previous = one(env.stateFiles.previousRevision);
    const traffic = one("traffic");
    const out: string[] = [];
    out.push(`stack ${target.stack}: ${env.id} on ${target.user}@${target.address}`);
    out.push(`url:               ${target.appUrl}`);
    out.push(`live slot:         ${liveSlot || "none (nothing deployed yet)"}` + trafficWarning(liveSlot, traffic, env));
    const ramp = one("ramp");
    if (ramp) out.push(`traffic ramp:      ${ramp}`);
    out.push(`live revision:     ${liveRevision || "-"}`);
    out.push(`previous revision: ${previous || "- (nothing to roll back to)"}`);
    if (target.pulumiLiveRevision && liveRevision && target.pulumiLiveRevision !== liveRevision) {
        out.push(`                   (the last pulumi up deployed ${short(target.pulumiLiveRevision)}; since then a rollback or git push changed it)`);
    }
    out.push("");
    const programs = new Map((s.supervisor ?? []).map(parseSupervisorLine).filter(p => p).map(p => [p!.program, p!]));
    const slotRows = [["SLOT", "PROGRAM", "STATE", "UPTIME", "REVISION"]];
    for (const p of env.programs) {
        const sv = programs.get(p.name);
        const rev = path.basename(one(`slot-${p.slot}`));
        slotRows.push([`${p.slot}${String(p.slot) === liveSlot ? " (live)" : ""}`, p.name, sv?.state ?? "UNKNOWN", sv?.uptime || "-", rev ? short(rev) : "-"]);
    }
    out.push(...table(slotRows));
    if (programs.size === 0 && (s.supervisor ?? []).length > 0) out.push(`supervisor: ${(s.supervisor ?? []).join(" ")}`);
    out.push("");
    const history = s.history ?? [];
    out.push(`last ${history.length} deploy attempts (${env.historyFile}):`);
    if (history.length === 0) {
        out.push("  none yet");
    } else {
        const rows = history.map(l => {
            const f = l.split("\t");
            if (f[2]) f[2] = short(f[2]);
            return f;
        });
        out.push(...table([HISTORY_COLUMNS, ...rows]).map(l => `  ${l}`));
    }
    out.push("");
    out.push(`releases: ${one("disk-total") || "-"} in ${env.releasesDir}`);
    const releases = (s.disk ?? []).map(l => {
        const [size, dir] = l.split("\t");
        const rev = path.basename(dir ?? "");
        const mark = rev === liveRevision ? "live" : rev === previous ? "previous" : "";
        return [size ?? "", rev, mark];
    }).sort((a, b) => a[1].localeCompare(b[1]));
    if (releases.length) out.push(...table(releases).map(l => `  ${l}`));
    return out.join("\n") + "\n";
}

// ---- commands ----------------------------------------------------------------

/** Turns ssh's 255 (its own failure, not the remote command's) into the address/user hint. */
function checkSsh(target: Target, result: { code: number; stderr: string }) {
    if (result.code === 255) throw new OpsError(sshFailureMessage(target, result.stderr), 255);
}

async function status(target: Target, keyPath: string): Promise<number> {
    const r = await capture(sshArgv(target, keyPath, "bash -s"), statusScript(target.layout));
    checkSsh(target, r);
    if (r.code !== 0) throw new OpsError(`status on ${target.address} failed (exit ${r.code}): ${r.stderr.trim()}`);
    process.stdout.write(formatStatus(target, r.stdout));
    return 0;
}

/**
 * The longest the old slot's log is still followed after a deploy switched away from it,
 * when the deploy lock does not say earlier that the deploy has finished. The deploy drains
 * the old slot for up to drainTimeout (30 s by default) after the switch, then Supervisor
 * gives it stopwaitsecs (drainTimeout + 10) to stop: about 75 s in all by default, so 300 s
 * covers that four times over (and drainTimeouts up to about two minutes). Normally the lock
 * ends it much sooner; the bound is for a lock that cannot be tested, or a deploy that hangs.
 */
export const OLD_LOG_FOLLOW_SECONDS = 300;

/**
 * The remote side of `logs`. Following: tail -F runs in the background while the remote
 * shell waits for stdin to close; ssh closes it when it ends (Ctrl-C, a dropped connection),
 * and then tail is killed, so no tail is left on the server even without a terminal.
 * Following the live slot (no --slot) keeps following it across deploys: see followLiveScript.
 */
export function logsCommand(env: EnvironmentLayout, opts: Pick<Options, "slot" | "lines" | "follow">,
    oldLogSeconds = OLD_LOG_FOLLOW_SECONDS): string {
    const live = `$(head -n 1 ${shq(`${env.stateDir}/${env.stateFiles.liveSlot}`)} 2>/dev/null || true)`;
    const pick = opts.slot
        ? `slot=${opts.slot}`
        : `slot=${live}; if [ -z "$slot" ]; then echo "nothing deployed to ${env.environment} yet: no live slot (use --slot 1|2)" >&2; exit 3; fi`;
    // Each slot's log path comes from infra/names.ts, the one place that names it.
    const log = `case "$slot" in ${slotLogCases(env, "log=")} ` +
        `*) echo "${env.stateFiles.liveSlot} holds '$slot', not 1 or 2" >&2; exit 3 ;; esac`;
    const header = `echo "==> $log (slot $slot${opts.slot ? "" : ", live"})" >&2`;
    const exists = `[ -r "$log" ] || { echo "no log yet at $log" >&2; exit 4; }`;
    const start = [pick, log, header, exists].join("; ");
    if (opts.follow && !opts.slot) return `${start}\n${followLiveScript(env, opts.lines, oldLogSeconds)}`;
    const tail = opts.follow
        ? `tail -n ${opts.lines} -F "$log" & t=$!; cat >/dev/null; kill "$t" 2>/dev/null; wait "$t" 2>/dev/null; exit 0`
        : `tail -n ${opts.lines} "$log"`;
    return `${start}; ${tail}`;
}

/** `1) <assign>'<slot 1's log>' ;; 2) ...` for a case statement. */
function slotLogCases(env: EnvironmentLayout, assign: string): string {
    return env.programs.map(p => `${p.slot}) ${assign}${shq(p.log)} ;;`).join(" ");
}

/**
 * Follows the live slot (`$slot`, already checked) across deploys. A deploy rewrites
 * live-slot at its switch, then drains and stops the old slot while it still holds the
 * deploy lock. So: once a second, when live-slot names the other slot, its log is followed
 * from where it ended when we started (or last stopped following it), which shows the new
 * slot's boot and warm-up; the old log is followed on until the deploy lock is free (or
 * the lock file is gone), at most oldLogSeconds, so its drain and shutdown lines show too.
 * An empty or invalid live-slot is ignored. Never two tails of one log: a switch back to a
 * slot still followed keeps its tail.
 *
 * Multi-line, with small functions, because it keeps state (a tail and an offset per slot).
 * The wait for stdin to close is `read -t 1` in the foreground, which is also the poll
 * clock: no stdin watcher in the background (whose stdin bash would make /dev/null). Every
 * way out (stdin closed, a signal) goes through the EXIT trap, which stops every tail.
 */
function followLiveScript(env: EnvironmentLayout, lines: number, oldLogSeconds: number): string {
    return `live_file=${shq(`${env.stateDir}/${env.stateFiles.liveSlot}`)}
lock_file=${shq(env.lockFile)}
log_of() { case "$1" in ${slotLogCases(env, "echo ")} esac; }
size_of() { stat -c %s -- "$1" 2>/dev/null || echo 0; }
# The deploy holds an flock on the lock file from start to end; a shared lock is refused while it does.
deploy_done() { [ ! -e "$lock_file" ] || flock -n -s "$lock_file" true 2>/dev/null; }
pid=("" "" ""); off=(0 0 0)
# follow <slot> <tail options>: tails the slot's log, unless it is already followed.
follow() { if [ -z "\${pid[$1]}" ]; then tail "\${@:2}" -F "$(log_of "$1")" & pid[$1]=$!; fi; }
# unfollow <slot>: stops its tail and remembers where its log ended, to go on from there.
unfollow() {
    if [ -n "\${pid[$1]}" ]; then kill "\${pid[$1]}" 2>/dev/null; wait "\${pid[$1]}" 2>/dev/null; pid[$1]=""; fi
    off[$1]=$(size_of "$(log_of "$1")")
}
trap 'unfollow 1; unfollow 2' EXIT
trap 'exit 0' HUP INT TERM PIPE
# Where each log ends now: a slot we switch to is shown from there.
for s in 1 2; do off[s]=$(size_of "$(log_of "$s")"); done
follow "$slot" -n ${lines}
switched=$SECONDS
while :; do
    read -r -t 1 _; rc=$?
    # 0: a line (ignored); over 128: a second passed; else stdin is closed: ssh has gone.
    if [ "$rc" -ne 0 ] && [ "$rc" -le 128 ]; then exit 0; fi
    old=$((3 - slot))
    if [ -n "\${pid[old]}" ] && { deploy_done || [ $((SECONDS - switched)) -ge ${oldLogSeconds} ]; }; then unfollow "$old"; fi
    new=$(head -n 1 "$live_file" 2>/dev/null || true)
    if [ "$new" = "$old" ]; then
        # A log smaller than where we left it was rotated: the new file from its start.
        [ "$(size_of "$(log_of "$new")")" -ge "\${off[new]}" ] || off[new]=0
        echo "==> live slot is now $new: $(log_of "$new")" >&2
        follow "$new" -c "+$((off[new] + 1))"
        slot=$new; switched=$SECONDS
    fi
done`;
}

async function logs(target: Target, keyPath: string, opts: Options): Promise<number> {
    const { child, done } = sshStreaming(sshArgv(target, keyPath, logsCommand(target.layout, opts)), opts.follow ? "pipe" : "ignore");
    let interrupted = false;
    interruptHandler = () => {
        // Ctrl-C: closing ssh's stdin makes the remote side stop tail; then ssh exits.
        interrupted = true;
        child.stdin?.end();
        setTimeout(() => child.kill("SIGTERM"), 2000).unref();
    };
    try {
        const r = await done;
        // Ctrl-C in a terminal reaches ssh too, which may exit before our handler has run.
        await new Promise(resolve => setTimeout(resolve, 100));
        if (interrupted || r.signal === "SIGINT") {
            process.stderr.write("==> stopped following\n");
            return 0;
        }
        checkSsh(target, r);
        return r.code;
    } finally {
        interruptHandler = undefined;
    }
}

export function rollbackCommand(env: EnvironmentLayout, revision?: string): string {
    // deploy --rollback moves all traffic at once after a short warm-up, to the previous or a named release.
    return `${shq(env.deployScript)} --rollback${revision ? ` --revision ${shq(revision)}` : ""}`;
}

async function rollback(target: Target, keyPath: string, opts: Options): Promise<number> {
    process.stderr.write(`==> ${opts.revision ? `rolling back to kept release ${opts.revision}` : "rolling back"} on ${target.layout.id} (${target.user}@${target.address})\n`);
    const { child, done } = sshStreaming(sshArgv(target, keyPath, rollbackCommand(target.layout, opts.revision)), "ignore");
    let interrupted = false;
    interruptHandler = () => {
        interrupted = true;
        child.kill("SIGTERM");
    };
    try {
        const r = await done;
        if (interrupted) {
            throw new OpsError("interrupted: the rotation may have stopped half-way or still be running on the server " +
                `(a half rotation never switches traffic); check with npm run status -- --stack ${target.stack}`, 130);
        }
        checkSsh(target, r);
        // The rotation's own exit code (it printed why on failure).
        return r.code;
    } finally {
        interruptHandler = undefined;
    }
}

export async function main(argv: string[]): Promise<number> {
    let opts: Options;
    try {
        opts = parseArgs(argv[0] ?? "", argv.slice(1));
    } catch (e) {
        if (!(e instanceof UsageError)) throw e;
        if (e.message) process.stderr.write(`error: ${e.message}\n`);
        process.stderr.write(`${USAGE}\n`);
        return e.message ? 2 : 0;
    }
    try {
        const target = await readTarget(opts.stack);
        return await withPrivateKey(opts.stack, async keyPath => {
            fs.mkdirSync(path.dirname(knownHostsFile()), { recursive: true, mode: 0o700 });
            switch (opts.command) {
                case "status": return status(target, keyPath);
                case "logs": return logs(target, keyPath, opts);
                case "rollback": return rollback(target, keyPath, opts);
            }
        });
    } catch (e) {
        if (e instanceof OpsError) {
            process.stderr.write(`error: ${e.message}\n`);
            return e.exitCode;
        }
        throw e;
    }
}

if (require.main === module) {
    // Only as a program: a test that imports this module keeps its own Ctrl-C.
    process.on("SIGINT", onInterrupt);
    process.on("SIGTERM", onInterrupt);
    // A closed terminal: the deploy key's file goes too.
    process.on("SIGHUP", onInterrupt);
    main(process.argv.slice(2)).then(code => process.exit(code), e => {
        process.stderr.write(`error: ${e instanceof Error ? e.stack : String(e)}\n`);
        process.exit(1);
    });
}
