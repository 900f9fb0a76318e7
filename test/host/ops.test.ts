// Day-2 operations (npm run status | logs | rollback) end to end against a real test host:
// two deploys (v1, then v2) through the program, then scripts/ops.sh with a stub `pulumi`
// that answers `stack output --json` with this server's outputs and `config get
// sshPrivateKey` with its key, the way the real CLI answers for a stack after `npm run up`.
import * as assert from "assert";
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { commitAppVersion, makeAppRepo } from "./app-variants";
import { Slot, slotProgram } from "../../infra/names";
import { httpGet, log, sampleAppLayout, Server, startServer, step } from "./fixture";
import { tempDir } from "../support/tmp";

const ROOT = path.resolve(__dirname, "..", "..");
const OPS = path.join(ROOT, "scripts", "ops.sh");
const DOMAIN = "shop.test";
const ENV = "live";
const LAYOUT = sampleAppLayout(ENV);
const STATE = LAYOUT.stateDir;
/** The slot's Supervisor program and log file, as the layout names them. */
const program = (slot: string) => slotProgram(LAYOUT, Number(slot) as Slot);

/** A `pulumi` stand-in: outputs from a JSON file, the key from a file, every call logged. */
const STUB = `#!/usr/bin/env bash
set -euo pipefail
dir=$(dirname "$0")
printf '%s\\n' "$*" >>"$dir/calls.log"
case "$1 $2" in
  "stack output") cat "$dir/outputs.json" ;;
  "config get") [ "$3" = sshPrivateKey ] && cat "$dir/key" ;;
  *) echo "stub pulumi: unexpected $*" >&2; exit 1 ;;
esac
`;

const get = (address: string) => httpGet(address, DOMAIN);

/** `promise`'s value, or `otherwise` once `ms` passed first. */
async function within<T, U>(promise: Promise<T>, ms: number, otherwise: U): Promise<T | U> {
    let timer: NodeJS.Timeout | undefined;
    try {
        return await Promise.race([promise, new Promise<U>(r => (timer = setTimeout(() => r(otherwise), ms)))]);
    } finally {
        clearTimeout(timer);
    }
}

describe("day-2 operations on a test host", function () {
    this.timeout(300_000);
    let server: Server;
    let work: string;
    let stubDir: string;
    const commits: Record<string, string> = {};

    function env(): NodeJS.ProcessEnv {
        return { PATH: process.env.PATH!, HOME: work, CZD_STATE_DIR: path.join(work, "czd-state"), CZD_PULUMI: path.join(stubDir, "pulumi"), TMPDIR: path.join(work, "tmp") };
    }

    function ops(args: string[]) {
        const t0 = Date.now();
        const r = spawnSync("bash", [OPS, ...args], { cwd: ROOT, encoding: "utf8", env: env(), timeout: 240_000 });
        log(`ops ${args.join(" ")}: exit ${r.status} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
        return { code: r.status, stdout: r.stdout, stderr: r.stderr, output: r.stdout + r.stderr };
    }

    /** The deploy user's tail processes on the server, once they had up to 3 s to go (nothing when none is left). */
    async function tailsLeft(): Promise<string> {
        let left = "";
        for (let i = 0; i < 30; i++) {
            left = (await server.sh("pgrep -u deploy -a -x tail || true")).trim();
            if (!left) break;
            await new Promise(r => setTimeout(r, 100));
        }
        return left;
    }

    /** ops.ts's private key directories (TMPDIR also gets Node's compile cache). */
    const keyDirs = () => fs.readdirSync(path.join(work, "tmp")).filter(n => n.startsWith("czd-ops-"));

    function writeOutputs(overrides: Record<string, string> = {}) {
        const address = server.host.address;
        fs.writeFileSync(path.join(stubDir, "outputs.json"), JSON.stringify({
            serverAddress: address,
            ssh: `ssh deploy@${address}`,
            appUrl: `http://${DOMAIN}/`,
            gitRemote: `ssh://deploy@${address}${LAYOUT.repoDir}`,
            environment: ENV,
            supervisorGroup: LAYOUT.id,
            appDirectory: LAYOUT.baseDir,
            liveRevision: commits.v2,
            liveSlot: "2",
            ...overrides,
        }));
    }

    before(async function () {
        work = tempDir("ops-host");
        stubDir = path.join(work, "stub");
        fs.mkdirSync(stubDir);
        fs.mkdirSync(path.join(work, "tmp")); // ops.ts puts its key directory here: the test can see it come and go
        fs.writeFileSync(path.join(stubDir, "pulumi"), STUB, { mode: 0o755 });
        const app = path.join(work, "app");
        commits.v1 = makeAppRepo(app, { version: "1" });
        commits.v2 = commitAppVersion(app, { version: "2" });
        server = await startServer({
            name: "ops", index: 80, appPath: app,
            config: { domain: DOMAIN, environment: ENV, startTimeout: "30", drainTimeout: "5" },
        });
        fs.writeFileSync(path.join(stubDir, "key"), server.host.privateKey, { mode: 0o600 });
        await step("setup and deploy v1", () => server.up({ appRevision: commits.v1 }));
        await step("deploy v2", () => server.up({ appRevision: commits.v2 }));
        writeOutputs();
        assert.strictEqual((await get(server.host.address)).version, "2");
    });

    after(async function () {
        if (server) await server.stop();
        if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("status shows the live slot, live and previous revision, slot uptimes, history with column names, disk and URL", async () => {
        const r = ops(["status", "--stack", ENV]);
        assert.strictEqual(r.code, 0, r.output);
        log(`status:\n${r.stdout.replace(/^/gm, "        | ")}`);
        const liveSlot = (await server.sh(`cat ${STATE}/live-slot`)).trim();
        assert.match(r.stdout, new RegExp(`^live slot: +${liveSlot}$`, "m"));
        assert.match(r.stdout, new RegExp(`^live revision: +${commits.v2}$`, "m"));
        assert.match(r.stdout, new RegExp(`^previous revision: +${commits.v1}$`, "m"));
        assert.match(r.stdout, new RegExp(`^url: +http://${DOMAIN}/$`, "m"));
        assert.match(r.stdout, new RegExp(`^${liveSlot} \\(live\\) +${program(liveSlot).name} +RUNNING +\\d+:\\d\\d:\\d\\d +${commits.v2.slice(0, 12)}$`, "m"),
            "the live slot runs, with its uptime and revision");
        assert.match(r.stdout, /^ +TIME +ENV +REVISION +SLOT +OUTCOME +BUILD_S +BOOT_S +GATE_S +DRAIN_S +WARMUP_S +RAMP_S$/m);
        const history = r.stdout.split("\n").filter(l => /^ +\d{4}-\d\d-\d\dT/.test(l));
        assert.strictEqual(history.length, 2, "one line per deploy so far");
        assert.match(history[0], new RegExp(` ${ENV} +${commits.v1.slice(0, 12)} +1 +ok `));
        assert.match(history[1], new RegExp(` ${ENV} +${commits.v2.slice(0, 12)} +2 +ok `));
        assert.match(r.stdout, new RegExp(`^releases: \\S+ in ${LAYOUT.releasesDir}$`, "m"));
        assert.match(r.stdout, new RegExp(`^ +\\S+ +${commits.v2} +live$`, "m"));
        assert.match(r.stdout, new RegExp(`^ +\\S+ +${commits.v1} +previous$`, "m"));
        assert.doesNotMatch(r.output, /PRIVATE KEY/);
    });

    it("logs --no-follow --lines 5 prints the live slot's last 5 lines", async () => {
        const liveSlot = (await server.sh(`cat ${STATE}/live-slot`)).trim();
        const expected = await server.sh(`tail -n 5 ${program(liveSlot).log}`);
        const r = ops(["logs", "--stack", ENV, "--no-follow", "--lines", "5"]);
        assert.strictEqual(r.code, 0, r.output);
        assert.match(r.stderr, new RegExp(`==> ${program(liveSlot).log} \\(slot ${liveSlot}, live\\)`));
        assert.strictEqual(r.stdout, expected);
        assert.strictEqual(r.stdout.trimEnd().split("\n").length, 5);
        log(`logs --no-follow --lines 5:\n${r.stdout.replace(/^/gm, "        | ")}`);
        const other = ops(["logs", "--stack", ENV, "--no-follow", "--lines", "2", "--slot", liveSlot === "1" ? "2" : "1"]);
        assert.strictEqual(other.code, 0, other.output);
        assert.match(other.stderr, new RegExp(`-${liveSlot === "1" ? 2 : 1}\\.log \\(slot ${liveSlot === "1" ? 2 : 1}\\)`));
    });

    it("logs follows until Ctrl-C, ends with exit 0 and leaves no tail on the server", async () => {
        const liveSlot = (await server.sh(`cat ${STATE}/live-slot`)).trim();
        const child = spawn("bash", [OPS, "logs", "--stack", ENV, "--lines", "3"], { cwd: ROOT, env: env(), stdio: ["ignore", "pipe", "pipe"], detached: true });
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", d => (stdout += d));
        child.stderr.setEncoding("utf8").on("data", d => (stderr += d));
        const exited = new Promise<number | null>(r => child.on("close", code => r(code)));
        try {
            const deadline = Date.now() + 30_000;
            while (stdout.split("\n").length < 4 && Date.now() < deadline) await new Promise(r => setTimeout(r, 100));
            assert.ok(stdout.split("\n").length >= 4, `3 lines shown first: ${stdout}${stderr}`);
            // A new line in the log arrives while following.
            await server.sh(`echo ops-follow-marker >>${program(liveSlot).log}`);
            while (!stdout.includes("ops-follow-marker") && Date.now() < deadline) await new Promise(r => setTimeout(r, 100));
            assert.match(stdout, /ops-follow-marker/, "followed a line appended after the start");
            assert.strictEqual(keyDirs().length, 1, "the key directory exists while following");
            assert.ok(await server.sh("pgrep -u deploy -x tail || true"), "tail runs on the server");
            // Ctrl-C in a terminal: SIGINT to the whole foreground process group (node and its ssh).
            process.kill(-child.pid!, "SIGINT");
            assert.strictEqual(await within(exited, 20_000, "still running 20 s after Ctrl-C"), 0, stderr);
        } finally {
            // Failed before its Ctrl-C, or did not end on it: end its whole process group by its pid.
            if (child.exitCode === null && child.signalCode === null) {
                try {
                    process.kill(-child.pid!, "SIGKILL");
                } catch {
                    // already gone
                }
                await within(exited, 5_000, "gone");
            }
        }
        assert.match(stderr, /stopped following/);
        assert.strictEqual(await tailsLeft(), "", "no tail left on the server");
        assert.deepStrictEqual(keyDirs(), [], "the key directory is removed");
    });

    it("rollback goes back to v1 (X-App-Version 1 through nginx), streams the rotation, passes its exit code through; logs follows it to the new slot", async () => {
        const before = (await server.sh(`cat ${STATE}/live-slot`)).trim();
        const next = before === "1" ? "2" : "1";
        const offset = Number((await server.sh(`stat -c %s ${program(next).log} 2>/dev/null || echo 0`)).trim());
        // Someone follows the live slot's log while the rollback runs.
        const follower = spawn("bash", [OPS, "logs", "--stack", ENV, "--lines", "1"], { cwd: ROOT, env: env(), stdio: ["ignore", "pipe", "pipe"], detached: true });
        let followed = "";
        let followErr = "";
        follower.stdout.setEncoding("utf8").on("data", d => (followed += d));
        follower.stderr.setEncoding("utf8").on("data", d => (followErr += d));
        const followerExited = new Promise<number | null>(res => follower.on("close", code => res(code)));
        const waitFor = async (what: string, check: () => boolean) => {
            for (const deadline = Date.now() + 30_000; !check(); await new Promise(res => setTimeout(res, 100))) {
                if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${followed}${followErr}`);
            }
        };
        let r;
        try {
            await waitFor("logs to start following", () => followErr.includes(`(slot ${before}, live)`));
            r = ops(["rollback", "--stack", ENV]);
            await waitFor("logs to follow the new slot", () => followErr.includes(`==> live slot is now ${next}: ${program(next).log}`));
            // What the new slot wrote since logs started (its boot, the warm-up) is shown, from its first line.
            const written = (await server.sh(`tail -c +${offset + 1} ${program(next).log}`)).split("\n").filter(Boolean);
            assert.ok(written.length > 0, "the new slot wrote to its log");
            await waitFor("the new slot's first line since the start", () => followed.includes(written[0]));
        } finally {
            process.kill(-follower.pid!, "SIGINT");
        }
        assert.strictEqual(await followerExited, 0, followErr);
        assert.strictEqual(await tailsLeft(), "", "no tail left on the server");

        assert.strictEqual(r.code, 0, r.output);
        log(`rollback:\n${r.output.replace(/^/gm, "        | ")}`);
        assert.match(r.output, new RegExp(`==> rolling back ${ENV} from ${commits.v2} to ${commits.v1}`));
        assert.match(r.output, new RegExp(`==> deployed ${commits.v1} to ${ENV} \\(slot [12]\\)`));
        const res = await get(server.host.address);
        assert.strictEqual(res.status, 200);
        assert.strictEqual(res.version, "1");
        const status = ops(["status", "--stack", ENV]);
        assert.match(status.stdout, new RegExp(`^live revision: +${commits.v1}$`, "m"));
        assert.match(status.stdout, new RegExp(`^previous revision: +${commits.v2}$`, "m"));
        assert.match(status.stdout, /the last pulumi up deployed/, "status says the server differs from Pulumi's last deploy");
        assert.match(status.stdout, new RegExp(`${commits.v1.slice(0, 12)} +[12] +rollback `));

        const missing = ops(["rollback", "--stack", ENV, "--revision", "0123456789ab"]);
        assert.strictEqual(missing.code, 1, missing.output);
        assert.match(missing.stderr, /release 0123456789ab is not on this server/);
        assert.strictEqual((await get(server.host.address)).version, "1", "a failed rollback leaves the live version serving");
    });

    it("fails with a clear message when the stack has no server yet, or SSH cannot connect", () => {
        fs.writeFileSync(path.join(stubDir, "outputs.json"), "{}");
        try {
            for (const command of ["status", "logs", "rollback"]) {
                const r = ops([command, "--stack", ENV]);
                assert.strictEqual(r.code, 1, r.output);
                assert.match(r.stderr, /stack live has no server yet: run npm run up first/);
            }
            writeOutputs({ ssh: `ssh -p 2222 deploy@${server.host.address}` });
            const r = ops(["status", "--stack", ENV]);
            assert.strictEqual(r.code, 255, r.output);
            assert.match(r.stderr, new RegExp(`cannot reach deploy@${server.host.address.replace(/\./g, "\\.")} over SSH \\(port 2222\\)`));
            assert.match(r.stderr, /sshAllowedCidrs/);
        } finally {
            writeOutputs();
        }
    });
});
