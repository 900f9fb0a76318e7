// Day-2 operations (scripts/ops.ts via scripts/ops.sh): argument parsing, the status
// report from sample raw data, the commands sent to the server, and, with stubs for both
// `pulumi` and `ssh`, the "no server yet" message, the key handling and exit codes.
import * as assert from "assert";
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import {
    formatStatus, logsCommand, OLD_LOG_FOLLOW_SECONDS, parseArgs, parseSupervisorLine, rollbackCommand, sshArgv, sshFailureMessage, statusScript, targetFromOutputs, UsageError,
} from "../../scripts/ops";
import { EnvironmentLayout, parseSshCommand, sshCommand } from "../../infra/names";
import { tempDir } from "../support/tmp";

const ROOT = path.join(__dirname, "..", "..");
const OPS = path.join(ROOT, "scripts", "ops.sh");
const A = "a".repeat(40);
const B = "b".repeat(40);

const OUTPUTS = {
    serverAddress: "203.0.113.7",
    ssh: "ssh deploy@203.0.113.7",
    appUrl: "http://shop.example.com/",
    gitRemote: "ssh://deploy@203.0.113.7/srv/shop/live/repo.git",
    environment: "live",
    supervisorGroup: "shop-live",
    appDirectory: "/srv/shop/live",
    liveRevision: B,
    liveSlot: "2",
};

describe("ops: arguments", () => {
    it("has defaults: stack live, the live slot, 50 lines, following", () => {
        assert.deepStrictEqual(parseArgs("logs", []), { command: "logs", stack: "live", lines: 50, follow: true });
        assert.deepStrictEqual(parseArgs("status", []), { command: "status", stack: "live", lines: 50, follow: true });
    });

    it("reads every option, as `--x v` and `--x=v`", () => {
        const o = parseArgs("logs", ["--stack", "beta", "--slot", "2", "--lines=5", "--no-follow"]);
        assert.deepStrictEqual([o.stack, o.slot, o.lines, o.follow], ["beta", 2, 5, false]);
        assert.strictEqual(parseArgs("rollback", ["--revision", A]).revision, A);
        assert.strictEqual(parseArgs("rollback", ["--stack=beta"]).stack, "beta");
    });

    const bad: [string, string[], RegExp][] = [
        ["status", ["--slot", "1"], /status: unknown argument '--slot'/],
        ["logs", ["--bogus"], /unknown argument '--bogus'/],
        ["logs", ["--slot", "3"], /--slot must be 1 or 2, not '3'/],
        ["logs", ["--lines", "ten"], /--lines must be a whole number/],
        ["logs", ["--lines"], /--lines needs a value/],
        ["logs", ["--no-follow=yes"], /--no-follow takes no value/],
        ["rollback", ["--revision", "x; rm -rf /"], /--revision 'x; rm -rf \/' must be letters, digits/],
        ["rollback", ["--stack", "a b"], /is not a stack name/],
        ["deploy", [], /unknown command 'deploy'/],
    ];
    for (const [command, argv, message] of bad) {
        it(`refuses ${command} ${argv.join(" ")}`, () => {
            assert.throws(() => parseArgs(command, argv), (e: Error) => e instanceof UsageError && message.test(e.message));
        });
    }
});

describe("ops: the stack's outputs", () => {
    it("says the stack has no server yet when outputs are empty or lack the address", () => {
        assert.throws(() => targetFromOutputs("live", {}), /^Error: stack live has no server yet: run npm run up first$/);
        assert.throws(() => targetFromOutputs("beta", { ...OUTPUTS, serverAddress: "" }), /stack beta has no server yet/);
    });

    it("takes the address, user, port and the server's paths from the outputs", () => {
        const t = targetFromOutputs("live", { ...OUTPUTS, ssh: "ssh -p 2222 deploy@203.0.113.7" });
        assert.deepStrictEqual([t.address, t.user, t.port, t.appUrl], ["203.0.113.7", "deploy", 2222, "http://shop.example.com/"]);
        assert.strictEqual(t.layout.deployScript, "/srv/shop/live/bin/deploy");
        assert.strictEqual(t.layout.historyFile, "/srv/shop/live/state/history");
        assert.deepStrictEqual(t.layout.programs.map(p => [p.name, p.log]),
            [["shop-live-1", "/var/log/shop/live-1.log"], ["shop-live-2", "/var/log/shop/live-2.log"]]);
        assert.strictEqual(targetFromOutputs("live", OUTPUTS).port, 22);
    });

    it("refuses an appDirectory that is not an environment's directory of this stack's environment", () => {
        for (const appDirectory of ["/srv/shop/beta", "/opt/shop/live", "/srv/shop", "/srv/shop/live/bin", "srv/shop/live", "/srv//live", "/srv/a b/live", "/srv/x;reboot/live"]) {
            assert.throws(() => targetFromOutputs("live", { ...OUTPUTS, appDirectory }),
                new RegExp(`^Error: stack live: unexpected appDirectory output '${appDirectory}' \\(expected /srv/<app>/live\\)$`), appDirectory);
        }
        assert.strictEqual(targetFromOutputs("live", { ...OUTPUTS, appDirectory: "/srv/my-shop-2/live" }).layout.deployScript, "/srv/my-shop-2/live/bin/deploy");
    });

    it("reads user and port back from the ssh command the outputs write, IPv6 addresses included", () => {
        for (const [user, address, port] of [["deploy", "203.0.113.7", 22], ["deploy", "203.0.113.7", 2222], ["admin_1", "2001:db8::7", 22022]] as const) {
            const command = sshCommand(user, address, port);
            assert.strictEqual(command.includes(" -p "), port !== 22, command);
            assert.deepStrictEqual(parseSshCommand(command), { user, port }, command);
            const t = targetFromOutputs("live", { ...OUTPUTS, ssh: command });
            assert.deepStrictEqual([t.user, t.port], [user, port]);
        }
    });
});

describe("ops: commands for the server", () => {
    const target = targetFromOutputs("live", OUTPUTS);

    it("ssh gets the key as a file path (-i), the deploy user and known hosts beside the state", () => {
        const argv = sshArgv(target, "/tmp/k/id", "true", "/home/u/.clj-zero-downtime/known_hosts");
        assert.deepStrictEqual(argv.slice(0, 5), ["ssh", "-i", "/tmp/k/id", "-p", "22"]);
        assert.ok(argv.includes("BatchMode=yes") && argv.includes("UserKnownHostsFile=/home/u/.clj-zero-downtime/known_hosts"));
        assert.deepStrictEqual(argv.slice(-3), ["deploy@203.0.113.7", "--", "true"]);
    });

    it("rollback runs the rotation's --rollback, with --revision for a kept release", () => {
        assert.strictEqual(rollbackCommand(target.layout), "'/srv/shop/live/bin/deploy' --rollback");
        assert.strictEqual(rollbackCommand(target.layout, A), `'/srv/shop/live/bin/deploy' --rollback --revision '${A}'`);
    });

    it("logs tails the live slot's log, or the chosen one; following stops tail when ssh goes away", () => {
        const follow = logsCommand(target.layout, { lines: 20, follow: true });
        assert.match(follow, /slot=\$\(head -n 1 '\/srv\/shop\/live\/state\/live-slot'/);
        assert.match(follow, /case "\$slot" in 1\) log='\/var\/log\/shop\/live-1\.log' ;; 2\) log='\/var\/log\/shop\/live-2\.log' ;;/);
        assert.match(follow, /^lock_file='\/srv\/shop\/live\/state\/deploy\.lock'$/m);
        assert.match(follow, /^follow "\$slot" -n 20$/m);
        assert.match(follow, new RegExp(`-ge ${OLD_LOG_FOLLOW_SECONDS} \\]`));
        const slot = logsCommand(target.layout, { slot: 2, lines: 20, follow: true });
        assert.match(slot, /^slot=2; .*; tail -n 20 -F "\$log" & t=\$!; cat >\/dev\/null; kill "\$t" 2>\/dev\/null; wait "\$t" 2>\/dev\/null; exit 0$/);
        const once = logsCommand(target.layout, { slot: 1, lines: 5, follow: false });
        assert.match(once, /^slot=1; /);
        assert.match(once, /tail -n 5 "\$log"$/);
    });

    it("the status and logs scripts pass shellcheck and bash -n", () => {
        for (const [name, script] of [
            ["status", statusScript(target.layout)],
            ["logs", logsCommand(target.layout, { lines: 5, follow: true })],
            ["logs --slot 1", logsCommand(target.layout, { slot: 1, lines: 5, follow: true })],
            ["logs --no-follow", logsCommand(target.layout, { slot: 2, lines: 5, follow: false })],
        ]) {
            const r = spawnSync("shellcheck", ["-s", "bash", "-"], { input: script, encoding: "utf8" });
            assert.strictEqual(r.status, 0, `${name}: ${r.stdout}`);
            assert.strictEqual(spawnSync("bash", ["-n"], { input: script }).status, 0, name);
        }
    });
});

/**
 * The generated `logs` command run for real with bash, against logs, live-slot and a
 * deploy lock in a temp directory: a deploy is played by rewriting live-slot while a
 * child process holds the lock (an fd opened read-only, as the rotation script does).
 */
describe("ops: logs following, run with bash", function () {
    this.timeout(20000);
    const base = targetFromOutputs("live", OUTPUTS).layout;
    let dir: string;
    let env: EnvironmentLayout;
    const started: ChildProcess[] = [];

    const logPath = (slot: 1 | 2) => env.programs.find(p => p.slot === slot)!.log;
    const append = (slot: 1 | 2, line: string) => fs.appendFileSync(logPath(slot), `${line}\n`);
    /** As the rotation script's write_state: a temp file renamed over live-slot. */
    const setLive = (value: string) => {
        fs.writeFileSync(path.join(env.stateDir, ".live-slot.tmp"), value);
        fs.renameSync(path.join(env.stateDir, ".live-slot.tmp"), path.join(env.stateDir, "live-slot"));
    };
    const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));
    async function until(what: string, check: () => boolean, ms = 5000) {
        const deadline = Date.now() + ms;
        while (!check()) {
            if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
            await sleep(50);
        }
    }
    const alive = (pid: number) => {
        try {
            process.kill(pid, 0);
            return true;
        } catch {
            return false;
        }
    };
    /** The tail processes a shell started (its children named tail). */
    const tailsOf = (pid: number) => (spawnSync("pgrep", ["-P", String(pid), "-x", "tail"], { encoding: "utf8" }).stdout ?? "")
        .split("\n").filter(Boolean).map(Number);

    function run(opts: { slot?: 1 | 2 }, oldLogSeconds?: number) {
        const child = spawn("bash", ["-c", logsCommand(env, { ...opts, lines: 5, follow: true }, oldLogSeconds)], { stdio: ["pipe", "pipe", "pipe"] });
        started.push(child);
        const out = { stdout: "", stderr: "", code: undefined as number | null | undefined, tails: new Set<number>() };
        child.stdout!.setEncoding("utf8").on("data", d => (out.stdout += d));
        child.stderr!.setEncoding("utf8").on("data", d => (out.stderr += d));
        child.on("exit", code => (out.code = code));
        const tails = () => {
            const pids = tailsOf(child.pid!);
            pids.forEach(p => out.tails.add(p));
            return pids;
        };
        /** Ends stdin as ssh does when it goes: the command exits 0 and leaves no tail. */
        const end = async () => {
            tails();
            assert.ok(out.tails.size > 0, "it ran tail");
            child.stdin!.end();
            await until("the command to exit", () => out.code !== undefined);
            assert.strictEqual(out.code, 0, out.stderr);
            for (const pid of out.tails) assert.ok(!alive(pid), `tail ${pid} is gone`);
        };
        return { child, out, tails, end };
    }

    /** Holds the deploy lock like the rotation script (flock on an fd opened read-only) until killed. */
    async function holdLock() {
        const holder = spawn("bash", ["-c", `exec 9<"$1"; flock 9; echo locked; exec sleep 60`, "lock", env.lockFile],
            { stdio: ["ignore", "pipe", "inherit"] });
        started.push(holder);
        let said = "";
        holder.stdout!.setEncoding("utf8").on("data", d => (said += d));
        await until("the lock", () => said.includes("locked"));
        return async () => {
            holder.kill("SIGTERM");
            await until("the lock holder to exit", () => holder.exitCode !== null || holder.signalCode !== null);
        };
    }

    beforeEach(() => {
        dir = tempDir("ops-logs");
        fs.mkdirSync(path.join(dir, "state"));
        fs.mkdirSync(path.join(dir, "log"));
        env = {
            ...base,
            stateDir: path.join(dir, "state"),
            lockFile: path.join(dir, "state", "deploy.lock"),
            programs: base.programs.map(p => ({ ...p, log: path.join(dir, "log", `live-${p.slot}.log`) })),
        };
        fs.writeFileSync(env.lockFile, "");
        setLive("1\n");
        append(1, "old line 1");
        append(2, "slot 2 before the follow started");
    });
    afterEach(() => {
        for (const c of started.splice(0)) {
            if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
        }
    });

    it("follows the new live slot after a deploy's switch (from where its log was), and the old one until the deploy lock is free", async () => {
        const { child, out, tails, end } = run({});
        try {
            await until("the first lines", () => out.stdout.includes("old line 1"));
            assert.match(out.stderr, /^==> .*live-1\.log \(slot 1, live\)$/m);
            append(1, "slot 1 serves");
            await until("slot 1's new line", () => out.stdout.includes("slot 1 serves"));
            // The deploy boots slot 2 after the follow started: these lines are shown once it is live.
            append(2, "slot 2 boots");
            append(2, "slot 2 warmed up");
            const release = await holdLock();
            setLive("2\n");
            await until("the switch message", () => out.stderr.includes(`==> live slot is now 2: ${logPath(2)}\n`));
            append(1, "slot 1 drains");
            append(2, "slot 2 serves");
            await until("slot 2's lines and slot 1's drain", () =>
                ["slot 2 boots", "slot 2 warmed up", "slot 2 serves", "slot 1 drains"].every(l => out.stdout.includes(l)), 3000);
            assert.ok(!out.stdout.includes("slot 2 before the follow started"), out.stdout);
            assert.strictEqual(tails().length, 2, "both logs followed while the deploy runs");
            await sleep(1500);
            assert.strictEqual(tails().length, 2, "still both while the lock is held");
            append(1, "slot 1 stopped");
            await until("slot 1's last line", () => out.stdout.includes("slot 1 stopped"));
            await release();
            // The next poll (about a second) sees the lock free and lets slot 1's log go.
            await until("one tail left", () => tails().length === 1, 4000);
            append(1, "slot 1 after the deploy");
            append(2, "slot 2 after the deploy");
            await until("slot 2's line after the deploy", () => out.stdout.includes("slot 2 after the deploy"));
            await sleep(300);
            assert.ok(!out.stdout.includes("slot 1 after the deploy"), out.stdout);
            assert.strictEqual(out.stdout.split("\n").filter(l => l === "slot 2 boots").length, 1, "shown once");
            await end();
        } finally {
            tails().forEach(p => process.kill(p, "SIGKILL"));
            child.kill("SIGKILL");
        }
    });

    it("ignores an empty or invalid live-slot, keeps one tail per log on a switch back, and lets the old log go without a lock file", async () => {
        const { child, out, tails, end } = run({});
        try {
            await until("the first lines", () => out.stdout.includes("old line 1"));
            const release = await holdLock();
            setLive("2\n");
            await until("the switch to 2", () => out.stderr.includes("==> live slot is now 2"));
            for (const bad of ["", "3\n", "x\n"]) setLive(bad);
            await sleep(1300);
            assert.doesNotMatch(out.stderr, /live slot is now (?!2)/);
            // A deploy right after switches back while slot 1's log is still followed: its tail is kept.
            const before = tails();
            assert.strictEqual(before.length, 2);
            setLive("1\n");
            await until("the switch back to 1", () => out.stderr.includes("==> live slot is now 1"));
            await sleep(300);
            assert.deepStrictEqual(tails().sort(), before.sort(), "the same two tails");
            append(1, "slot 1 again");
            await until("slot 1's line", () => out.stdout.includes("slot 1 again"));
            await sleep(300);
            assert.strictEqual(out.stdout.split("\n").filter(l => l === "slot 1 again").length, 1, out.stdout);
            await release();
            // No lock file: no deploy runs, so slot 2's log is let go at the next poll.
            fs.rmSync(env.lockFile);
            await until("one tail left", () => tails().length === 1, 4000);
            await end();
        } finally {
            tails().forEach(p => process.kill(p, "SIGKILL"));
            child.kill("SIGKILL");
        }
    });

    it("lets the old log go after the bound even while the lock stays held", async () => {
        const { child, out, tails, end } = run({}, 1);
        try {
            await until("the first lines", () => out.stdout.includes("old line 1"));
            await holdLock();
            setLive("2\n");
            await until("the switch to 2", () => out.stderr.includes("==> live slot is now 2"));
            assert.strictEqual(tails().length, 2);
            await until("one tail left", () => tails().length === 1, 4000);
            await end();
        } finally {
            tails().forEach(p => process.kill(p, "SIGKILL"));
            child.kill("SIGKILL");
        }
    });

    it("--slot 1 keeps following slot 1 after a switch", async () => {
        const { child, out, tails, end } = run({ slot: 1 });
        try {
            await until("the first lines", () => out.stdout.includes("old line 1"));
            assert.match(out.stderr, /^==> .*live-1\.log \(slot 1\)$/m);
            setLive("2\n");
            await sleep(1500);
            append(2, "slot 2 serves");
            append(1, "slot 1 drains");
            await until("slot 1's line", () => out.stdout.includes("slot 1 drains"));
            await sleep(300);
            assert.ok(!out.stdout.includes("slot 2"), out.stdout);
            assert.doesNotMatch(out.stderr, /live slot is now/);
            assert.strictEqual(tails().length, 1);
            await end();
        } finally {
            tails().forEach(p => process.kill(p, "SIGKILL"));
            child.kill("SIGKILL");
        }
    });
});

describe("ops: state records", () => {
    it("reads the state records by the names infra/names.ts gives them, never by names of its own", () => {
        const target = targetFromOutputs("live", OUTPUTS);
        const stateFiles = { liveSlot: "x-slot", liveRevision: "x-revision", previousRevision: "x-previous", configCommit: "x-commit" } as const;
        const renamed = { ...target, layout: { ...target.layout, stateFiles } as unknown as EnvironmentLayout };
        const texts = [statusScript(renamed.layout), logsCommand(renamed.layout, { lines: 5, follow: true }), logsCommand(renamed.layout, { lines: 5, follow: false })];
        for (const text of texts) {
            assert.doesNotMatch(text.split("\n").filter(l => !l.trimStart().startsWith("#")).join("\n"), /live-slot|live-revision|previous-revision/, text);
        }
        assert.match(texts[0], /for f in 'x-slot' 'x-revision' 'x-previous'; do sec "\$f"; head -n 1 '\/srv\/shop\/live\/state'\/"\$f"/);
        assert.match(texts[1], /^live_file='\/srv\/shop\/live\/state\/x-slot'$/m);
        assert.match(texts[2], /slot=\$\(head -n 1 '\/srv\/shop\/live\/state\/x-slot'/);
        const report = formatStatus(renamed, "@@x-slot\n2\n@@x-revision\nrev-b\n@@x-previous\nrev-a\n@@history\n@@disk-total\n0\n");
        assert.match(report, /^live slot: +2$/m);
        assert.match(report, /^live revision: +rev-b$/m);
        assert.match(report, /^previous revision: +rev-a$/m);
    });
});

describe("ops: status report", () => {
    const target = targetFromOutputs("live", { ...OUTPUTS, liveRevision: A });
    const raw = [
        "@@live-slot", "2",
        "@@live-revision", B,
        "@@previous-revision", A,
        "@@traffic", "2",
        "@@supervisor",
        "shop-live:shop-live-1             STOPPED   Nov 26 08:01 AM",
        "shop-live:shop-live-2             RUNNING   pid 4242, uptime 1:02:03",
        "@@slot-1", `/srv/shop/live/releases/${A}`,
        "@@slot-2", `/srv/shop/live/releases/${B}`,
        "@@history",
        // A line from before the warm-up column, then one with it.
        `2026-11-26T08:00:00+00:00\tlive\t${A}\t1\tok\t9.1\t1.2\t1.6\t0.0`,
        `2026-11-26T08:01:00+00:00\tlive\t${B}\t2\tok\t8.7\t1.1\t1.5\t0.4\t0.3\t3.1`,
        "@@disk-total", "61M",
        "@@disk", `30M\t/srv/shop/live/releases/${A}`, `31M\t/srv/shop/live/releases/${B}`,
        "",
    ].join("\n");

    it("parses supervisorctl lines, with and without uptime", () => {
        assert.deepStrictEqual(parseSupervisorLine("g:shop-live-2   RUNNING   pid 1, uptime 0:00:05"), { program: "shop-live-2", state: "RUNNING", uptime: "0:00:05" });
        assert.deepStrictEqual(parseSupervisorLine("g:shop-live-1   STOPPED   Not started"), { program: "shop-live-1", state: "STOPPED", uptime: "" });
    });

    it("shows the live slot, revisions, slots with uptime, history with column names, disk and URL", () => {
        const text = formatStatus(target, raw);
        const lines = text.split("\n");
        assert.strictEqual(lines[0], "stack live: shop-live on deploy@203.0.113.7");
        assert.ok(lines.includes("url:               http://shop.example.com/"));
        assert.ok(lines.includes("live slot:         2"));
        assert.ok(lines.includes(`live revision:     ${B}`));
        assert.ok(lines.includes(`previous revision: ${A}`));
        assert.match(text, /the last pulumi up deployed aaaaaaaaaaaa; since then a rollback or git push changed it/);
        assert.ok(lines.includes("SLOT      PROGRAM      STATE    UPTIME   REVISION"), text);
        assert.ok(lines.includes("1         shop-live-1  STOPPED  -        aaaaaaaaaaaa"), text);
        assert.ok(lines.includes("2 (live)  shop-live-2  RUNNING  1:02:03  bbbbbbbbbbbb"), text);
        assert.ok(lines.includes("last 2 deploy attempts (/srv/shop/live/state/history):"));
        assert.ok(lines.includes("  TIME                       ENV   REVISION      SLOT  OUTCOME  BUILD_S  BOOT_S  GATE_S  DRAIN_S  WARMUP_S  RAMP_S"), text);
        assert.ok(lines.includes("  2026-11-26T08:00:00+00:00  live  aaaaaaaaaaaa  1     ok       9.1      1.2     1.6     0.0"), text);
        assert.ok(lines.includes("  2026-11-26T08:01:00+00:00  live  bbbbbbbbbbbb  2     ok       8.7      1.1     1.5     0.4      0.3       3.1"), text);
        assert.ok(lines.includes("releases: 61M in /srv/shop/live/releases"));
        assert.ok(lines.includes(`  30M  ${A}  previous`), text);
        assert.ok(lines.includes(`  31M  ${B}  live`), text);
        assert.ok(lines.every(l => l === l.trimEnd()), "no trailing blanks");
    });

    it("says so when nothing is deployed yet, and when traffic disagrees with the recorded slot", () => {
        const empty = formatStatus(target, "@@live-slot\n@@live-revision\n@@previous-revision\n@@history\n@@disk-total\n0\n");
        assert.match(empty, /^live slot: +none \(nothing deployed yet\)$/m);
        assert.match(empty, /^previous revision: +- \(nothing to roll back to\)$/m);
        assert.match(empty, /^  none yet$/m);
        const noRule = formatStatus(target, raw.replace("@@traffic\n2", "@@traffic\nnone (no switch rule)"));
        assert.match(noRule, /^live slot: +2  \(but the switch rule says: none \(no switch rule\); requests get no answer from the app until it is fixed: \/srv\/.*\/bin\/deploy --boot on the server restores it, or deploy\)$/m);
        assert.match(formatStatus(target, raw.replace("@@traffic\n2", "@@traffic\nunknown:3005")), /^live slot: +2  \(but the switch rule says: unknown:3005;/m);
        assert.match(formatStatus(target, raw), /^live slot: +2$/m, "the rule agrees: nothing to say");
        assert.doesNotMatch(formatStatus(target, raw), /traffic ramp/);
        const ramp = formatStatus(target, raw.replace("@@traffic\n2", "@@traffic\n2\n@@ramp\n10 % of new requests go to port 3001 (a deploy is ramping, or stopped during its ramp: the next deploy moves them back)"));
        assert.match(ramp, /^traffic ramp: +10 % of new requests go to port 3001 \(a deploy is ramping/m);
        const odd = formatStatus(target, raw.replace("@@traffic\n2", "@@traffic\n1"));
        assert.match(odd, /^live slot: +2  \(but traffic goes to slot 1\)$/m);
    });
});

/** Stubs for `pulumi` (outputs, key) and `ssh` (logs its argv and what its -i file held). */
const PULUMI_STUB = `#!/usr/bin/env bash
set -euo pipefail
dir=$(dirname "$0")
case "$1 $2" in
  "stack output") cat "$dir/outputs.json" ;;
  "config get") cat "$dir/key" ;;
  *) exit 1 ;;
esac
`;
const SSH_STUB = `#!/usr/bin/env bash
set -euo pipefail
dir=$(dirname "$0")
printf '%s\\n' "$@" >"$dir/ssh-argv"
key=""
while [ $# -gt 0 ]; do if [ "$1" = -i ]; then key=$2; fi; shift; done
stat -c %a "$key" >"$dir/ssh-key-mode"
cat "$key" >"$dir/ssh-key-seen"
echo "$key" >"$dir/ssh-key-path"
cat >/dev/null
echo "stub ssh output"
exit "$(cat "$dir/ssh-exit")"
`;

describe("ops.sh with stub pulumi and ssh", () => {
    let dir: string;
    const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END OPENSSH PRIVATE KEY-----\n";

    function run(args: string[], outputs: object = OUTPUTS, sshExit = 0) {
        fs.writeFileSync(path.join(dir, "outputs.json"), JSON.stringify(outputs));
        fs.writeFileSync(path.join(dir, "ssh-exit"), String(sshExit));
        return spawnSync("bash", [OPS, ...args], {
            cwd: ROOT, encoding: "utf8",
            env: { PATH: `${dir}:${process.env.PATH}`, HOME: dir, CZD_STATE_DIR: path.join(dir, "state"), CZD_PULUMI: path.join(dir, "pulumi"), TMPDIR: path.join(dir, "tmp") },
        });
    }

    beforeEach(() => {
        dir = tempDir("ops-unit");
        fs.mkdirSync(path.join(dir, "tmp"));
        fs.writeFileSync(path.join(dir, "pulumi"), PULUMI_STUB, { mode: 0o755 });
        fs.writeFileSync(path.join(dir, "ssh"), SSH_STUB, { mode: 0o755 });
        fs.writeFileSync(path.join(dir, "key"), KEY);
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    for (const command of ["status", "logs", "rollback"]) {
        it(`${command}: "stack live has no server yet" when the stack has no outputs; ssh never runs`, () => {
            const r = run([command], {});
            assert.strictEqual(r.status, 1, r.stderr);
            assert.strictEqual(r.stderr, "error: stack live has no server yet: run npm run up first\n");
            assert.ok(!fs.existsSync(path.join(dir, "ssh-argv")));
        });
    }

    it("unknown flags print the usage and exit 2", () => {
        const r = run(["status", "--follow"]);
        assert.strictEqual(r.status, 2);
        assert.match(r.stderr, /error: status: unknown argument '--follow'\nusage: npm run status/);
    });

    it("the key reaches ssh only as a 0600 file, never in argv or output, and is removed afterwards", () => {
        const r = run(["rollback", "--stack", "live"]);
        assert.strictEqual(r.status, 0, r.stderr);
        assert.match(r.stdout, /stub ssh output/);
        assert.match(r.stderr, /==> rolling back on shop-live \(deploy@203\.0\.113\.7\)/);
        const argv = fs.readFileSync(path.join(dir, "ssh-argv"), "utf8");
        assert.ok(!argv.includes("PRIVATE KEY") && !argv.includes("c2VjcmV0"), argv);
        assert.match(argv, /\n'\/srv\/shop\/live\/bin\/deploy' --rollback\n$/);
        assert.strictEqual(fs.readFileSync(path.join(dir, "ssh-key-mode"), "utf8").trim(), "600");
        assert.strictEqual(fs.readFileSync(path.join(dir, "ssh-key-seen"), "utf8"), KEY);
        assert.ok(!fs.existsSync(fs.readFileSync(path.join(dir, "ssh-key-path"), "utf8").trim()), "key file removed");
        assert.deepStrictEqual(fs.readdirSync(path.join(dir, "tmp")).filter(n => n.startsWith("czd-ops-")), [], "its directory too");
        assert.ok(!(r.stdout + r.stderr).includes("c2VjcmV0"));
    });

    it("rollback passes the rotation's exit code through", () => {
        const r = run(["rollback", "--revision", A], OUTPUTS, 1);
        assert.strictEqual(r.status, 1);
        assert.match(fs.readFileSync(path.join(dir, "ssh-argv"), "utf8"), new RegExp(`--rollback --revision '${A}'\\n$`));
    });

    it("an SSH failure names the address, user and port and points at sshAllowedCidrs", () => {
        const r = run(["status"], { ...OUTPUTS, ssh: "ssh -p 2222 deploy@203.0.113.7" }, 255);
        assert.strictEqual(r.status, 255);
        assert.match(r.stderr, /cannot reach deploy@203\.0\.113\.7 over SSH \(port 2222\)/);
        assert.match(r.stderr, /sshAllowedCidrs \(scripts\/pulumi config get sshAllowedCidrs --stack live\)/);
    });

    it("an SSH failure's advice follows ssh's error: a changed host key (with the port as known_hosts names it), a refused key, or no way through", () => {
        const t = { ...targetFromOutputs("beta", { ...OUTPUTS, ssh: "ssh -p 2222 deploy@203.0.113.7" }) };
        const changed = sshFailureMessage(t, "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!\nHost key verification failed.");
        assert.match(changed, /the server's host key changed; if the server was recreated: ssh-keygen -R '\[203\.0\.113\.7\]:2222' -f /);
        assert.doesNotMatch(changed, /sshAllowedCidrs/);
        assert.match(sshFailureMessage({ ...t, port: 22 }, "Host key verification failed."), /ssh-keygen -R '203\.0\.113\.7' -f /);
        const refused = sshFailureMessage(t, "deploy@203.0.113.7: Permission denied (publickey).");
        assert.match(refused, /the server refused the stack's key: if sshPrivateKey changed, run npm run up -- beta/);
        assert.match(sshFailureMessage(t, "ssh: connect to host 203.0.113.7 port 2222: Connection timed out"), /sshAllowedCidrs .*--stack beta/);
    });

    it("ssh gives up on a connection that went dead instead of waiting for ever", () => {
        const argv = sshArgv(targetFromOutputs("live", OUTPUTS), "/k", "true", "/kh");
        assert.ok(argv.includes("ServerAliveInterval=15") && argv.includes("ServerAliveCountMax=4"), argv.join(" "));
    });

    it("a stack the CLI does not know: its message and a hint", () => {
        fs.writeFileSync(path.join(dir, "pulumi"), "#!/usr/bin/env bash\necho \"error: no stack named 'nope' found\" >&2\nexit 255\n", { mode: 0o755 });
        const r = run(["status", "--stack", "nope"]);
        assert.strictEqual(r.status, 1);
        assert.match(r.stderr, /cannot read the outputs of stack nope: error: no stack named 'nope' found\n\(is the stack name right\? npm run up -- nope creates it\)/);
    });
});
