// The gated rotation on a real server, under load: 32 keep-alive clients
// through nginx for every deploy, with strict accounting (any non-200, any
// transport error, any wrong echo is a failure; no retries).
import * as assert from "assert";
import { execFileSync, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { AppFault, commitAppVersion, makeAppRepo } from "./app-variants";
import { httpGet, log, sampleAppLayout, Server, startServer, step, underLoad as underLoadOn } from "./fixture";
import { HEALTH_REQUEST_TIMEOUT_SECONDS } from "../../infra/config";
import { CONNTRACK_CLOSE_TIMEOUT, JIT_NICE } from "../../infra/rotation";
import { LoadReport, startLoad } from "../load/client";
import { gitSshEnv, SSH_OPTIONS } from "./testhost";
import { tempDir } from "../support/tmp";

const DOMAIN = "shop.test";
const ENV = "live";
const LAYOUT = sampleAppLayout(ENV);
const ID = LAYOUT.id;
const DEPLOY = LAYOUT.deployScript;
const HISTORY = LAYOUT.historyFile;
const START_TIMEOUT = 20;

describe("gated rotation on a test host, under load", function () {
    let server: Server;
    let work: string;
    let app: string;
    const commits: Record<string, string> = {};

    const underLoad = <T>(what: string, fn: () => Promise<T>) => underLoadOn(server, DOMAIN, what, fn);
    /** fn under the same load, 1 s after it started and until `afterMs` after fn: the report, failures and all, to assert on. */
    async function underLoadWithFailures<T>(fn: () => Promise<T>, afterMs: number): Promise<{ result: T; report: LoadReport }> {
        const load = startLoad({ url: `http://${server.host.address}`, hostHeader: DOMAIN, concurrency: 32 });
        let result: T;
        try {
            await new Promise(r => setTimeout(r, 1000));
            result = await fn();
            await new Promise(r => setTimeout(r, afterMs));
        } catch (e) {
            await load.stop();
            throw e;
        }
        return { result, report: await load.stop() };
    }
    const get = (address: string, urlPath: string) => httpGet(address, DOMAIN, urlPath);

    async function liveVersion(): Promise<string> {
        const res = await get(server.host.address, "/");
        assert.strictEqual(res.status, 200, res.body);
        return res.version;
    }

    async function deployScript(args: string, opts: { allowFail?: boolean } = {}) {
        const r = await server.host.ssh(`${DEPLOY} ${args}`, { user: "deploy", allowFail: true, timeoutMs: 300_000 });
        if (!opts.allowFail && r.code !== 0) throw new Error(`deploy ${args} failed (${r.code}):\n${r.stdout}${r.stderr}`);
        return { ...r, output: r.stdout + r.stderr };
    }

    before(async function () {
        work = tempDir("rotation");
        app = path.join(work, "app");
        commits.v1 = makeAppRepo(app, { version: "1" });
        commits.v2 = commitAppVersion(app, { version: "2" });
        server = await startServer({
            name: "rotation", index: 22, appPath: app,
            config: { domain: DOMAIN, environment: ENV, startTimeout: String(START_TIMEOUT), drainTimeout: "15" },
        });
        await step("setup and first deploy (v1)", () => server.up({ appRevision: commits.v1 }));
        // Both releases built once, so each test's timing is about rotation, not builds.
        await step("build v2, then back to v1", async () => {
            await server.up({ appRevision: commits.v2 });
            await server.up({ appRevision: commits.v1 });
        });
        assert.strictEqual(await liveVersion(), "1");
    });

    after(async function () {
        if (server) await server.stop();
        if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("10 consecutive deploys alternating two versions: 0 failed requests, the new version serves right after each", async () => {
        const windows: { from: number; to: number; version: string }[] = [];
        const { report } = await underLoad("10 deploys", async () => {
            for (let i = 0; i < 10; i++) {
                const version = i % 2 === 0 ? "2" : "1";
                if (windows.length) windows[windows.length - 1].to = Date.now();
                const t0 = Date.now();
                const r = await server.up({ appRevision: commits[`v${version}`] });
                const rotate = r.resources.find(x => x.name.endsWith("-deploy-rotate"))!;
                assert.strictEqual(rotate.status, "ok");
                assert.match(rotate.stdout, new RegExp(`==> deployed ${commits[`v${version}`]} to ${ENV} \\(slot [12]\\)`));
                log(`deploy ${i + 1}/10 of v${version}: ${((Date.now() - t0) / 1000).toFixed(1)}s`);
                windows.push({ from: Date.now(), to: Infinity, version });
                await new Promise(res => setTimeout(res, 700));
            }
        });
        windows[windows.length - 1].to = report.endedAt;
        const records = report.records();
        for (const w of windows) {
            const seen = new Set(records.filter(r => r.start >= w.from && r.start < w.to).map(r => r.version));
            assert.deepStrictEqual([...seen], [w.version], `after the deploy of v${w.version}, only v${w.version} answers`);
        }
        assert.ok(report.totals.requests > 1000, `${report.totals.requests} requests`);
        assert.strictEqual((await server.sh(`cat ${CONNTRACK_CLOSE_TIMEOUT}`, "root")).trim(), "0",
            "the switch has set conntrack's timeout for reset connections to 0");
    });

    // 15 s: it must outlast the deploy's boot, gate, warm-up and 3 s ramp, and still be in flight at the switch.
    it("a request that lasts 15 s, in flight when traffic switches, completes on the old version", async () => {
        const before = await liveVersion();
        const next = before === "1" ? "2" : "1";
        let slowEnded = 0;
        const slow = get(server.host.address, "/slow?ms=15000").then(res => ((slowEnded = Date.now()), res));
        await new Promise(r => setTimeout(r, 1000));
        const r = await server.up({ appRevision: commits[`v${next}`] });
        const deployEnded = Date.now();
        const rotate = r.resources.find(x => x.name.endsWith("-deploy-rotate"))!;
        const res = await slow;
        assert.strictEqual(res.status, 200, res.body);
        assert.strictEqual(res.version, before, "the slow request finished on the slot it started on");
        assert.ok(slowEnded > 0 && slowEnded <= deployEnded, "the old slot was stopped only after the request had ended");
        const drained = /drained slot \d in ([0-9.]+)s/.exec(rotate.stdout);
        assert.ok(drained && Number(drained[1]) >= 3, `the drain waited for the request: ${rotate.stdout}`);
        log(`15 s request completed; the drain took ${drained![1]}s`);
        assert.strictEqual(await liveVersion(), next);
    });

    const faults: { fault: AppFault; reason: RegExp }[] = [
        { fault: "health-500", reason: /did not answer 2xx on \/health .*last answer: 500/ },
        // Whether a poll finds the pid gone or Supervisor's state first decides the message.
        { fault: "exit-at-boot", reason: /slot \d (exited before it became healthy|is (FATAL|BACKOFF|EXITED) before it became healthy)/ },
        { fault: "no-port", reason: new RegExp(`did not answer 2xx on /health .* within ${START_TIMEOUT}s`) },
        { fault: "compile-error", reason: /lein uberjar failed/ },
        { fault: "exit-when-warmed", reason: /slot \d passed its health check, then stopped answering it during the warm-up/ },
    ];
    for (const { fault, reason } of faults) {
        it(`refuses a version that fails (${fault}) with 0 failed requests; the old version keeps serving`, async () => {
            const live = await liveVersion();
            const sha = commitAppVersion(app, { version: `broken-${fault}`, fault });
            const { result } = await underLoad(`failed deploy (${fault})`, () => server.up({ appRevision: sha }, { throwOnError: false }));
            assert.strictEqual(result.ok, false, "the deploy must fail");
            const rotate = result.resources.find(x => x.name.endsWith("-deploy-rotate"))!;
            const output = rotate.stdout + rotate.stderr;
            assert.match(output, new RegExp(`deploy of ${sha} to ${ENV} failed: `));
            assert.match(output, reason);
            if (fault !== "compile-error") {
                assert.match(output, /traffic untouched: slot \d still serves/);
                assert.match(output, /run-slot: starting/, "the new slot's log is shown");
            }
            assert.strictEqual(await liveVersion(), live);
            const status = await server.sh(`supervisorctl status ${ID}:*`, "deploy").catch(e => String(e));
            assert.strictEqual((status.match(/RUNNING/g) ?? []).length, 1, `only the old slot runs:\n${status}`);
            const history = (await server.sh(`tail -n 1 ${HISTORY}`)).split("\t");
            assert.strictEqual(history[2], sha);
            assert.match(history[4], /^failed:/);
        });
    }

    it("a pulumi up whose deploy failed for a passing reason (the deploy lock held) keeps its upload; the next pulumi up retries the deploy from it and then removes it", async () => {
        const live = await liveVersion();
        // The other version: its release is kept on the server, so this adds none (the later tests
        // deploy both versions by revision, and a new release would push one of them out).
        const other = live === "1" ? "2" : "1";
        const sha = commits[`v${other}`];
        const upload = `${LAYOUT.uploadsDir}/${sha}.tar`;
        // Another deploy's lock, held by processes of this test: flock and its sleep, a process
        // group of their own (setsid), ended by that group's id below.
        const holder = (await server.sh(`setsid flock -x ${LAYOUT.lockFile} sleep 120 </dev/null >/dev/null 2>&1 & echo $!`)).trim();
        assert.match(holder, /^\d+$/);
        try {
            await server.sh(`for _ in $(seq 50); do flock -n ${LAYOUT.lockFile} true || exit 0; sleep 0.1; done; exit 1`);
            const failed = await server.up({ appRevision: sha, lockTimeout: "2" }, { throwOnError: false });
            assert.strictEqual(failed.ok, false, "the deploy must fail while the lock is held");
            const rotate = failed.resources.find(x => x.name.endsWith("-deploy-rotate"))!;
            assert.match(rotate.stdout + rotate.stderr, /still held .* after 2s/);
            assert.strictEqual(await liveVersion(), live, "the old version still serves");
            assert.strictEqual((await server.sh(`test -s ${upload} && echo kept`)).trim(), "kept", "the upload is kept for the retry");
        } finally {
            await server.sh(`kill -- -${holder} 2>/dev/null; for _ in $(seq 50); do flock -n ${LAYOUT.lockFile} true && ! kill -0 -- -${holder} 2>/dev/null && exit 0; sleep 0.1; done; exit 1`);
        }
        const retried = await server.up({ appRevision: sha, lockTimeout: "2" });
        const copies = retried.resources.filter(x => x.name.endsWith("-deploy-upload") && x.ran);
        assert.deepStrictEqual(copies, [], "the retry copied nothing: it deployed from the kept upload");
        assert.strictEqual(await liveVersion(), other);
        assert.strictEqual(await server.sh(`ls -A ${LAYOUT.uploadsDir}`), "", "the upload is gone after the successful retry");
        // Back to the version the later tests start from.
        await server.up({ appRevision: commits[`v${live}`] });
        assert.strictEqual(await liveVersion(), live);
    });

    it("two deploys started together: one waits for the other, both succeed, never interleaved", async () => {
        const live = await liveVersion();
        const [first, second] = live === "1" ? [commits.v2, commits.v1] : [commits.v1, commits.v2];
        const { result } = await underLoad("two concurrent deploys", async () => {
            const a = deployScript(`--revision ${first}`);
            await new Promise(r => setTimeout(r, 300));
            const b = deployScript(`--revision ${second}`);
            return Promise.all([a, b]);
        });
        const [a, b] = result;
        assert.match(b.output, /another deploy of live is running; waiting up to \d+s for it/);
        const slotA = /deployed \S+ to live \(slot (\d)\)/.exec(a.output)![1];
        const slotB = /deployed \S+ to live \(slot (\d)\)/.exec(b.output)![1];
        assert.notStrictEqual(slotA, slotB, "the second rotation started from the first one's result");
        assert.strictEqual(await liveVersion(), live, "back on the version we started from, after two rotations");
        const outcomes = (await server.sh(`tail -n 2 ${HISTORY} | cut -f3,5`)).trim().split("\n");
        assert.deepStrictEqual(outcomes, [`${first}\tok`, `${second}\tok`]);
    });

    it("a deploy killed with SIGKILL while its new slot boots leaves no stale lock or half switch; the next deploy succeeds", async () => {
        const live = await liveVersion();
        const target = live === "1" ? commits.v2 : commits.v1;
        const targetVersion = live === "1" ? "2" : "1";
        await underLoad("SIGKILL mid-deploy and the next deploy", async () => {
            const killed = deployScript(`--revision ${target}`, { allowFail: true });
            // Wait until the new slot is starting, then kill the script outright.
            await server.sh(`for _ in $(seq 200); do supervisorctl status ${ID}:* | grep -q STARTING && break; sleep 0.05; done; pkill -KILL -f '[${DEPLOY[0]}]${DEPLOY.slice(1)} --revision' && echo killed`, "root");
            const k = await killed;
            assert.notStrictEqual(k.code, 0);
            assert.strictEqual(await liveVersion(), live, "traffic stayed on the old slot");
            const next = await deployScript(`--revision ${target}`);
            assert.match(next.output, /deployed/);
        });
        assert.strictEqual(await liveVersion(), targetVersion);
    });

    it("rolls back to the previous release without a build, in about one app boot", async () => {
        const live = await liveVersion();
        const { result } = await underLoad("rollback", async () => {
            const t0 = Date.now();
            const r = await deployScript("--rollback");
            return { ...r, seconds: (Date.now() - t0) / 1000 };
        });
        assert.doesNotMatch(result.output, /building/);
        assert.match(result.output, /rolling back live from \S+ to \S+/);
        assert.notStrictEqual(await liveVersion(), live);
        const line = (await server.sh(`tail -n 1 ${HISTORY}`)).trim().split("\t");
        assert.strictEqual(line[4], "rollback");
        assert.strictEqual(Number(line[5]), 0, "no build time");
        log(`rollback took ${result.seconds.toFixed(1)}s (boot ${line[6]}s, gate ${line[7]}s, drain ${line[8]}s)`);
    });

    it("deploy --status shows where traffic goes, each slot's state, revision, port and uptime, and the releases' disk use and free space", async () => {
        const { output } = await deployScript("--status");
        log(`deploy --status:\n${output.replace(/^/gm, "        | ")}`);
        const live = (await server.sh(`tail -n 1 ${HISTORY}`)).split("\t")[3];
        const idle = live === "1" ? "2" : "1";
        const liveRevision = (await server.sh(`basename "$(readlink ${LAYOUT.slotsDir}/${live})"`)).trim();
        assert.match(output, new RegExp(`^traffic goes to: +slot ${live}$`, "m"));
        assert.match(output, new RegExp(`^slot ${live}: +RUNNING on ${liveRevision} \\(port \\d+, up (\\d+ days?, )?\\d+:\\d\\d:\\d\\d\\)$`, "m"), "the live slot with its uptime");
        assert.match(output, new RegExp(`^slot ${idle}: +STOPPED on [0-9a-f]{40} \\(port \\d+\\)$`, "m"), "the stopped slot, without an uptime");
        const used = (await server.sh(`du -sh ${LAYOUT.releasesDir} | cut -f 1`)).trim();
        assert.match(output, new RegExp(`^releases on disk: +${used.replace(".", "\\.")} in ${LAYOUT.releasesDir}, \\d+(\\.\\d+)?[KMGTP] free$`, "m"));
    });

    // The scheduling of every thread of each JVM on the server, one line per JVM: "<pid> <idle
    // threads> <threads> <nice values of its JIT compiler threads> <nice values of the others>"
    // (stat field 19 is the nice value, 41 the policy; 5 is SCHED_IDLE).
    const JVM_POLICIES = `for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = java ] || continue
        { cat "$p"/task/*/stat 2>/dev/null || true; } | awk -v pid="\${p#/proc/}" '{
            jit = $0 ~ /^[0-9]+ \\((C1|C2) CompilerThre\\) /; sub(/.*\\) /, ""); n++; if ($39 == 5) idle++
            if (jit) jn[$17] = 1; else on[$17] = 1 }
            END { j = ""; for (v in jn) j = j (j == "" ? "" : ",") v; o = ""; for (v in on) o = o (o == "" ? "" : ",") v
                print pid, idle + 0, n, (j == "" ? "-" : j), o }'
    done`;

    /** Deploys with `args` and samples the new JVM's threads as soon as it exists. */
    async function deployWatchingBoot(args: string) {
        const before = (await server.sh(JVM_POLICIES)).trim().split("\n").map(l => l.split(" ")[0]);
        const watch = server.sh(`for _ in $(seq 600); do
            out=$(${JVM_POLICIES} | grep -v -E '^(${before.join("|")}) ' || true)
            [ -z "$out" ] || { echo "$out"; exit 0; }
            sleep 0.02
        done; echo "no new JVM"`);
        const deploy = await deployScript(args);
        const [pid, idle, threads] = (await watch).trim().split(" ");
        const after = (await server.sh(JVM_POLICIES)).trim().split("\n").map(l => l.split(" "));
        return { deploy, boot: { pid, idle: Number(idle), threads: Number(threads) }, after };
    }

    it(`boots the new slot at idle CPU priority, warms it up, then switches and raises its threads to normal, its JIT compiler threads to nice ${JIT_NICE}; the options turn both off`, async () => {
        const first = await underLoad("deploy with the default boot priority (idle)", async () => {
            const live = await liveVersion();
            return deployWatchingBoot(`--revision ${live === "1" ? commits.v2 : commits.v1}`);
        });
        const { deploy, boot, after } = first.result;
        assert.match(deploy.output, /starting slot \d \(\S+\) on \S+ at idle CPU priority/);
        assert.ok(boot.threads > 0 && boot.idle === boot.threads, `every thread of the booting JVM is SCHED_IDLE: ${JSON.stringify(boot)}`);
        const warmed = deploy.output.indexOf("==> warmed up slot");
        assert.match(deploy.output, /==> warmed up slot \d: 500 of 500 requests to \/health answered 2xx in [0-9.]+s/);
        assert.ok(warmed > 0 && warmed < deploy.output.indexOf("==> traffic switched"), "the warm-up comes before the switch");
        assert.match(deploy.output, new RegExp(`raised slot \\d's JVM \\(pid ${boot.pid}\\) to normal CPU priority`));
        assert.deepStrictEqual(after.map(([pid, idle]) => [pid, idle]), [[boot.pid, "0"]], "only the new JVM runs, with no idle thread left");
        assert.match(deploy.output, new RegExp(`its JIT compiler threads \\(\\d+\\) to nice ${JIT_NICE}`));
        assert.deepStrictEqual(after[0].slice(3), [String(JIT_NICE), "0"], `its JIT compiler threads at nice ${JIT_NICE}, the others at 0: ${after[0].join(" ")}`);
        const flags = await server.sh(`ls ${LAYOUT.slotsDir}/`);
        assert.doesNotMatch(flags, /booting/, "no boot flag is left behind");

        const second = await underLoad("deploy with --boot-priority normal", async () => {
            const live = await liveVersion();
            return deployWatchingBoot(`--revision ${live === "1" ? commits.v2 : commits.v1} --boot-priority normal --warmup-requests 0`);
        });
        assert.doesNotMatch(second.result.deploy.output, /idle CPU priority|warmed up/);
        assert.strictEqual(second.result.boot.idle, 0, `no thread of the booting JVM is SCHED_IDLE: ${JSON.stringify(second.result.boot)}`);
        assert.deepStrictEqual(second.result.after.map(l => l.slice(3)), [["0", "0"]], "a JVM booted at normal priority keeps its JIT at nice 0");
    });

    /** Runs the deploy script with each output line time-stamped by the server's clock (epoch ms; the load client shares it). */
    async function timedDeploy(args: string, opts: { allowFail?: boolean } = {}) {
        const r = await server.host.ssh(`${DEPLOY} ${args} 2>&1 | while IFS= read -r l; do echo "$EPOCHREALTIME $l"; done; exit "\${PIPESTATUS[0]}"`,
            { user: "deploy", allowFail: true, timeoutMs: 300_000 });
        if (!opts.allowFail && r.code !== 0) throw new Error(`deploy ${args} failed (${r.code}):\n${r.stdout}${r.stderr}`);
        const lines = r.stdout.split("\n").filter(Boolean).map(l => ({ ms: Number(l.slice(0, l.indexOf(" "))) * 1000, text: l.slice(l.indexOf(" ") + 1) }));
        const at = (re: RegExp) => lines.find(l => re.test(l.text))?.ms;
        // For assertions on timing: each line with its seconds since the first.
        const timeline = lines.map(l => `+${((l.ms - lines[0].ms) / 1000).toFixed(2)}s ${l.text}`).join("\n");
        return { code: r.code, output: lines.map(l => l.text).join("\n"), at, timeline };
    }

    const SWITCH = LAYOUT.switchHelper;
    const REPO = LAYOUT.repoDir;
    /** Shell: the helper's CHAIN, PROXY_PORT, SLOT1_PORT and SLOT2_PORT for this environment, as the helper has them. */
    const SWITCH_VARS = `eval "$(grep -E '^ +(CHAIN="[^"]+"|(PROXY|SLOT[12])_PORT=[0-9]+)$' ${SWITCH})"`;
    /** Onto the server's repository, on a branch that does not deploy; a deploy with --git REPO builds it from there. */
    function pushBroken(sha: string) {
        execFileSync("git", ["push", "-q", "-f", `ssh://deploy@${server.host.address}${REPO}`, `${sha}:refs/heads/broken`], {
            cwd: app,
            env: gitSshEnv(server.host),
        });
    }
    /**
     * Commits a version with `fault`, deploys it from the server's repository with `options` under
     * load (until `afterMs` after the deploy) and checks that the deploy failed.
     */
    async function deployBrokenUnderLoad(version: string, fault: AppFault, options: string, afterMs: number) {
        const sha = commitAppVersion(app, { version, fault });
        pushBroken(sha);
        const { result: deploy, report } = await underLoadWithFailures(() => timedDeploy(`--git ${REPO} --revision ${sha} ${options}`, { allowFail: true }), afterMs);
        assert.notStrictEqual(deploy.code, 0, deploy.output);
        return { sha, deploy, report };
    }
    /**
     * deployBrokenUnderLoad, then `check` on what it gave; the failed build is removed afterwards,
     * whatever `check` found. A failed deploy keeps its build (a retry needs none); left, it would
     * push releases that the tests below deploy by name out of the newest keepReleases.
     */
    async function checkBrokenDeployAndRemoveBuild(version: string, fault: AppFault, options: string, afterMs: number,
        check: (r: Awaited<ReturnType<typeof deployBrokenUnderLoad>>) => Promise<void>) {
        const r = await deployBrokenUnderLoad(version, fault, options, afterMs);
        try {
            await check(r);
        } finally {
            await server.sh(`rm -rf ${LAYOUT.releasesDir}/${r.sha}`, "root");
        }
    }
    /**
     * After a failed deploy of the version whose main route answers 500: all traffic went back to
     * the `live` version, and the only failed requests were its GETs of / (500s), none started
     * after the deploy moved the traffic back. Returns them.
     */
    async function assertOnlyItsMainRoute500sBeforeTrafficWentBack(deploy: { output: string; at: (re: RegExp) => number | undefined },
        report: Awaited<ReturnType<typeof deployBrokenUnderLoad>>["report"], live: string) {
        assert.match(deploy.output, /all traffic back on slot \d, which still serves/);
        const back = deploy.at(/^==> moving all traffic back to slot \d$/);
        assert.ok(back, deploy.output);
        const failed = report.records().filter(r => !r.ok);
        assert.ok(failed.every(r => r.status === 500 && r.kind === "get"), JSON.stringify(report.failureSamples.slice(0, 3)));
        assert.ok(failed.every(r => r.start < back + 500), "none after the traffic went back");
        assert.strictEqual(await liveVersion(), live);
        return failed;
    }
    /**
     * Waits (as root) until the switch shows a ramp of at least `percent` %, i.e. a deploy is in
     * its ramp; when none shows up, fails with that deploy's output if it has already ended.
     */
    const waitForRamp = (percent: number, deploy?: Promise<{ output: string }>) => server.sh(`for _ in $(seq 600); do
        ${SWITCH} show ${ID} | awk '$1 == "ramp" && $3 >= ${percent} { found = 1 } END { exit !found }' && exit 0; sleep 0.05
    done; echo "no ramp of ${percent} % seen" >&2; exit 1`, "root").catch(async e => {
        const ended = deploy && await Promise.race([deploy, new Promise<undefined>(r => setTimeout(() => r(undefined), 5000))]);
        throw new Error(`${e.message}\ndeploy output: ${ended?.output ?? "(still running)"}`);
    });

    /**
     * Conntrack entries of reset connections (state CLOSE) that send the proxy port to the slot
     * that is not live. The switch sets their timeout to 0, so none is ever left; with the
     * kernel's default (10 s) each would steer a new connection from nginx that reuses its source
     * port to that slot.
     */
    async function resetEntriesToIdleSlot(): Promise<string> {
        return server.sh(`${SWITCH_VARS}
            live=$(${SWITCH} show ${ID} | head -n 1)
            if [ "$live" = "$SLOT1_PORT" ]; then idle=$SLOT2_PORT; else idle=$SLOT1_PORT; fi
            grep -E " CLOSE .* dport=$PROXY_PORT .* sport=$idle " /proc/net/nf_conntrack || true`, "root");
    }

    /** After an aborted deploy: no ramp rule left, only one slot running, and it serves `live`. */
    async function assertBackOn(live: string) {
        assert.strictEqual((await server.sh(`${SWITCH} show ${ID}`, "root")).trim().split("\n").length, 1, "no ramp rule is left");
        const states = await server.sh(`supervisorctl status '${ID}:*' || true`, "root");
        assert.strictEqual((states.match(/RUNNING/g) ?? []).length, 1, states);
        assert.strictEqual(await liveVersion(), live);
    }

    it("ramps 10, 30, 60 % of new requests to the new slot before the switch: both versions answer during it, 0 failed requests; --ramp-seconds 0 moves all at once", async () => {
        const before = await liveVersion();
        const next = before === "1" ? "2" : "1";
        const { result: deploy, report } = await underLoad("deploy with a 6 s ramp", () => timedDeploy(`--revision ${commits[`v${next}`]} --ramp-seconds 6`));
        const rampFrom = deploy.at(/^==> ramping traffic to slot \d: 10 30 60 % of new requests, 2000 ms each, then all$/);
        const rampTo = deploy.at(/^==> ramped slot \d up through 10 30 60 % of new requests in [0-9.]+s$/);
        const switched = deploy.at(/^==> traffic switched to slot \d$/);
        assert.ok(rampFrom && rampTo && switched && rampFrom < rampTo && rampTo <= switched, deploy.output);
        assert.match(deploy.output, /30 % of new connections go to slot \d \(port \d+\), the rest to port \d+/);
        // The share of the new version in each step, from the helper's line for the step to the next
        // one (a request's start decides its slot; 0.1 s margins for the steps' edges).
        const stepAt = [10, 30, 60].map(p => deploy.at(new RegExp(`: ${p} % of new connections go to slot`))!);
        const gets = report.records().filter(r => r.kind === "get" && r.ok);
        const share = (from: number, to: number) => {
            const inStep = gets.filter(r => r.start >= from && r.start < to);
            return { n: inStep.length, share: inStep.filter(r => r.version === next).length / inStep.length };
        };
        const steps = [0, 1, 2].map(i => share(stepAt[i] + 100, (stepAt[i + 1] ?? rampTo!) - 100));
        log(`ramp shares of v${next}: ${steps.map(s => `${(s.share * 100).toFixed(1)} % of ${s.n}`).join(", ")}`);
        const expected = [[0.03, 0.17], [0.18, 0.4], [0.42, 0.72]];
        steps.forEach((s, i) => assert.ok(s.n > 100 && s.share >= expected[i][0] && s.share <= expected[i][1],
            `step ${i + 1}: ${(s.share * 100).toFixed(1)} % of ${s.n} fast GETs went to v${next}, expected ${expected[i].map(x => x * 100).join("..")} %`));
        assert.deepStrictEqual(share(switched! + 100, Infinity).share, 1, "after the switch only the new version answers");
        // The helper counted each version's answers to the load (all through nginx) in the ramp, none of them 5xx.
        const counted = /^ {4}answers in the ramp: slot \d answered (\d+) requests, 0 with a 5xx status \(0\.0 %\); slot \d (\d+), 0 with a 5xx status \(0\.0 %\)$/m.exec(deploy.output);
        assert.ok(counted, deploy.output);
        const inRamp = report.records().filter(r => r.ok && r.start >= rampFrom! && r.start < rampTo!);
        const seen = [next, before].map(v => inRamp.filter(r => r.version === v).length);
        log(`answers counted in the ramp: v${next} ${counted[1]}, v${before} ${counted[2]}; the client's: ${seen.join(", ")}`);
        [Number(counted[1]), Number(counted[2])].forEach((n, i) =>
            assert.ok(n >= seen[i] * 0.9 && n <= seen[i] * 1.1, `the helper counted ${n} answers of v${[next, before][i]}, the client saw ${seen[i]}`));
        const history = (await server.sh(`tail -n 1 ${HISTORY}`)).trim().split("\t");
        assert.strictEqual(history.length, 11, history.join(" | "));
        // The steps end on the ramp's own clock, so only its last poll (up to the health check's
        // timeout on a busy machine) and its last comparison of the answers add to the 6 s asked for.
        const rampSeconds = Number(history[10]);
        assert.ok(rampSeconds >= 6 && rampSeconds < 6 + HEALTH_REQUEST_TIMEOUT_SECONDS + 1, `ramp_s ${history[10]}\n${deploy.timeline}`);
        assert.strictEqual(await liveVersion(), next);

        const { result: atOnce } = await underLoad("deploy with --ramp-seconds 0", () => timedDeploy(`--revision ${commits[`v${before}`]} --ramp-seconds 0`));
        assert.doesNotMatch(atOnce.output, /ramp/);
        assert.strictEqual((await server.sh(`tail -n 1 ${HISTORY}`)).trim().split("\t")[10], "0.0");
        assert.strictEqual(await liveVersion(), before);
    });

    it("during the ramp one slow health check is a miss, not a failure; a health check that stays slow ends the ramp with 0 failed requests", async () => {
        const live = await liveVersion();
        const next = live === "1" ? "2" : "1";
        const pause = commitAppVersion(app, { version: next, fault: "health-pause-under-traffic" });
        pushBroken(pause);
        const { result: paused } = await underLoad("one slow health check during the ramp", () => timedDeploy(`--git ${REPO} --revision ${pause} --ramp-seconds 6`));
        assert.strictEqual(paused.code, 0, paused.output);
        assert.match(paused.output, /slot \d missed a health check while it had \d+ % of new requests; polling again/);
        assert.strictEqual(await liveVersion(), next);
        const hang = commitAppVersion(app, { version: live, fault: "health-hang-under-traffic" });
        pushBroken(hang);
        const { result: hung } = await underLoad("health check hung during the ramp", () => timedDeploy(`--git ${REPO} --revision ${hang} --ramp-seconds 6`, { allowFail: true }));
        assert.notStrictEqual(hung.code, 0, hung.output);
        assert.match(hung.output, /failed: slot \d stopped answering its health check while it had \d+ % of new requests: 2 polls in a row failed/);
        assert.match(hung.output, /all traffic back on slot \d, which still serves/);
        assert.strictEqual(await liveVersion(), next);
        assert.strictEqual((await server.sh(`${SWITCH} show ${ID}`, "root")).trim().split("\n").length, 1, "no ramp rule is left");
    });

    it("nginx retries a request once when its connection is refused: with each request's first connection sent where nothing listens, 20 GETs and 20 POSTs in a row all answer", async () => {
        // An extra rule in front of the switch's sends nginx's first new connection of the proxy
        // port to the proxy port itself, where nothing listens (a slot that has just stopped); every
        // connection after it passes. It counts with an xt_recent list that is emptied before each
        // request. A packet counter (the rule put in fresh per request, every 2nd new connection)
        // refused both of one request's connections in a repeated run after the load tests (1201
        // refusals for 1200 requests): the kernel can see one connection as new twice, e.g. when its
        // SYN is resent after its conntrack entry was closed. It matches only nginx's worker
        // (www-data): no other connection on the server can take the one refusal.
        const log = `/var/log/nginx/${ID}.error.log`;
        const refusedBefore = Number(await server.sh(`grep -c 'Connection refused' ${log} || true`, "root"));
        const linesBefore = Number(await server.sh(`wc -l <${log}`, "root"));
        const refuseFirst = `refuse_first=(-p tcp -d 127.0.0.1 --dport "$PROXY_PORT" -m owner --uid-owner www-data
            -m recent ! --rcheck --name refused_once -m recent --set --name refused_once -j REDIRECT --to-ports "$PROXY_PORT")`;
        let answers: string;
        try {
            answers = await server.sh(`${SWITCH_VARS}; ${refuseFirst}
                iptables -w 5 -t nat -I "$CHAIN" 1 "\${refuse_first[@]}"
                refused_once() {
                    echo / >/proc/net/xt_recent/refused_once
                    "$@"
                }
                body=$(mktemp)
                for i in $(seq 20); do
                    get=$(refused_once curl -s -o /dev/null -w '%{http_code}' -H 'Host: ${DOMAIN}' http://127.0.0.1/)
                    post=$(refused_once curl -s -o "$body" -w '%{http_code}' -H 'Host: ${DOMAIN}' -H 'Content-Type: application/octet-stream' --data-binary "retry-$i" http://127.0.0.1/echo)
                    # one line per request pair, whatever the body (an error page has several)
                    echo "$get $(head -c 200 "$body" | tr -s '\n' ' ') $post"
                done
                rm -f "$body"`, "root");
        } finally {
            await server.sh(`${SWITCH_VARS}; ${refuseFirst}
                while iptables -w 5 -t nat -C "$CHAIN" "\${refuse_first[@]}" 2>/dev/null; do
                    iptables -w 5 -t nat -D "$CHAIN" "\${refuse_first[@]}"
                done`, "root");
        }
        // What nginx logged: the refusals (one per request if each retry passed) and anything else,
        // to tell a failed retry's cause.
        const refused = Number(await server.sh(`grep -c 'Connection refused' ${log} || true`, "root")) - refusedBefore;
        const otherErrors = await server.sh(`tail -n +${linesBefore + 1} ${log} | grep -v 'Connection refused' | tail -n 20 || true`, "root");
        const why = `nginx logged ${refused} refused connections for 40 requests; its other errors:\n${otherErrors}`;
        const lines = answers.trim().split("\n");
        assert.strictEqual(lines.length, 20, `${answers}\n${why}`);
        lines.forEach((l, i) => assert.strictEqual(l, `200 retry-${i + 1} 200`, `request ${i + 1}: ${l}\n${why}`));
        assert.strictEqual(refused, 40, "nginx was refused once per request, and retried");
        assert.strictEqual((await server.sh(`${SWITCH} show ${ID}`, "root")).trim().split("\n").length, 1, "the extra rule is gone");
    });

    it("a version that crashes under its first real requests, during the ramp: all traffic goes back to the old slot; only the crashed slot's share fails", async () => {
        const live = await liveVersion();
        const { deploy, report } = await deployBrokenUnderLoad("broken-exit-under-traffic", "exit-under-traffic", "--ramp-seconds 6", 1000);
        assert.match(deploy.output, /failed: slot \d stopped answering its health check while it had 10 % of new requests/);
        assert.match(deploy.output, /moving all traffic back to slot \d/);
        assert.match(deploy.output, /all traffic back on slot \d, which still serves/);
        const requests = report.totals.requests;
        const failed = report.records().filter(r => !r.ok);
        log(`crash during the ramp: ${failed.length} of ${requests} requests failed (${JSON.stringify(report.statusCodes)})`);
        // Only what the crashed slot had taken or was given before the health poll saw it gone.
        assert.ok(failed.length < requests * 0.02, `${failed.length} of ${requests} failed`);
        assert.ok(failed.every(r => r.failure === "status" || r.failure === "transport"), JSON.stringify(report.failureSamples.slice(0, 3)));
        assert.strictEqual(await liveVersion(), live);
        assert.strictEqual((await server.sh(`${SWITCH} show ${ID}`, "root")).trim().split("\n").length, 1, "no ramp rule is left");
        // The crash reset the slot's connections; with the kernel's default their entries would
        // steer nginx's next connections from the same source ports to the stopped slot (502) for 10 s.
        assert.strictEqual(await resetEntriesToIdleSlot(), "", "no entry of a reset connection to the crashed slot is left");
    });

    it("a version that stops listening under its first real requests, its process alive (a JVM on its way out): the first poll that finds its port closed ends the ramp", async () => {
        const live = await liveVersion();
        await checkBrokenDeployAndRemoveBuild("broken-stop-listening", "stop-listening-under-traffic", "--ramp-seconds 6", 1000, async ({ deploy, report }) => {
            // Not two missed polls: a port that refuses connections has no listener to answer the next one.
            assert.match(deploy.output, /failed: slot \d stopped answering its health check while it had 10 % of new requests: nothing listens on its port \d+ any more/);
            assert.doesNotMatch(deploy.output, /missed a health check/);
            assert.match(deploy.output, /all traffic back on slot \d, which still serves/);
            const failed = report.records().filter(r => !r.ok);
            log(`listener closed during the ramp: ${failed.length} of ${report.totals.requests} requests failed (${JSON.stringify(report.statusCodes)})`);
            assert.ok(failed.length < report.totals.requests * 0.02, `${failed.length} of ${report.totals.requests} failed`);
            assert.strictEqual(await liveVersion(), live);
            assert.strictEqual((await server.sh(`${SWITCH} show ${ID}`, "root")).trim().split("\n").length, 1, "no ramp rule is left");
        });
    });

    it("a version whose health check passes but whose main route answers 500: the ramp's comparison of the two versions' answers ends it at its first share, all traffic back", async () => {
        const live = await liveVersion();
        await checkBrokenDeployAndRemoveBuild("broken-main-route-500", "main-route-500", "--ramp-seconds 6", 1000, async ({ deploy, report }) => {
            // Its GETs of / answer 500, its slow GETs and POSTs 200.
            const verdict = /failed: slot \d answered (\d+) of (\d+) requests with a 5xx status \(([0-9.]+) %\) in the ramp, up to its 10 % share of new requests; slot \d answered 0 of \d+ so \(0\.0 %\) in the same time, and rampMaxErrorPercent allows 5 points more/.exec(deploy.output);
            assert.ok(verdict && Number(verdict[1]) >= 20 && Number(verdict[3]) > 30 && Number(verdict[3]) < 90, deploy.output);
            assert.doesNotMatch(deploy.output, /30 % of new connections/, "it got no second share");
            const failed = await assertOnlyItsMainRoute500sBeforeTrafficWentBack(deploy, report, live);
            log(`main route 500 during the ramp: ${failed.length} of ${report.totals.requests} requests failed (${JSON.stringify(report.statusCodes)}); the helper counted ${verdict![1]} 5xx of ${verdict![2]} answers`);
            // The client saw the 500s that the helper counted (and those answered between its last count and the move back),
            // a small part of all requests: only what its 10 % share took.
            assert.ok(failed.length >= Number(verdict![1]) * 0.9, `the client saw ${failed.length} failures, the helper counted ${verdict![1]} 5xx answers`);
            assert.ok(failed.length < report.totals.requests * 0.05, `${failed.length} of ${report.totals.requests} failed`);
            assert.strictEqual((await server.sh(`${SWITCH} show ${ID}`, "root")).trim().split("\n").length, 1, "no ramp rule is left");
        });
    });

    it("the same version deployed without a ramp and with a bake: the bake's comparison of its answers (each second) ends it within seconds of the switch, all traffic back", async () => {
        const live = await liveVersion();
        await checkBrokenDeployAndRemoveBuild("broken-main-route-500-bake", "main-route-500", "--ramp-seconds 0 --bake-seconds 10", 1000, async ({ deploy, report }) => {
            // Without a ramp the old slot answered only what it had in flight at the switch, none of it 5xx.
            // (The first comparison with enough answers: 1.x s after the switch, or up to a slow health poll later.)
            assert.match(deploy.output, /failed: slot \d answered \d+ of \d+ requests with a 5xx status \([0-9.]+ %\) since it got traffic, [0-3]\.\ds after it got all of it; slot \d answered (?:none|0 of \d+ so \(0\.0 %\)) in the same time, and rampMaxErrorPercent allows 5 points more/);
            const failed = await assertOnlyItsMainRoute500sBeforeTrafficWentBack(deploy, report, live);
            log(`main route 500 in a bake: ${failed.length} of ${report.totals.requests} requests failed (${JSON.stringify(report.statusCodes)})`);
            assert.ok(failed.length > 0, "the broken version did answer some requests");
        });
    });

    it("a version that starts failing a quarter of its main route's requests 30 s into a bake: the comparison over the last 10 s ends it within seconds, while its share since the switch is still under the limit; all traffic back", async () => {
        const live = await liveVersion();
        await checkBrokenDeployAndRemoveBuild("broken-main-route-500-late", "main-route-500-late", "--ramp-seconds 0 --bake-seconds 90", 1000, async ({ deploy, report }) => {
            const verdict = /failed: slot \d answered (\d+) of (\d+) requests with a 5xx status \(([0-9.]+) %\) in the last 10s, ([0-9.]+)s after it got all of it; slot \d answered none in the same time, and rampMaxErrorPercent allows 5 points more/.exec(deploy.output);
            assert.ok(verdict, deploy.timeline);
            const failed = await assertOnlyItsMainRoute500sBeforeTrafficWentBack(deploy, report, live);
            const switched = deploy.at(/^==> traffic switched to slot \d$/)!;
            const back = deploy.at(/^==> moving all traffic back to slot \d$/)!;
            const firstFailure = Math.min(...failed.map(r => r.start));
            // All the new version's answers from the switch to the move back: 5xx share since the switch.
            const sinceSwitch = report.records().filter(r => r.start >= switched && r.start < back);
            const share = failed.length / sinceSwitch.length;
            log(`main route 500 late in a bake: ${failed.length} of ${report.totals.requests} requests failed, the first ${((firstFailure - switched) / 1000).toFixed(1)}s after the switch; ` +
                `caught ${((back - firstFailure) / 1000).toFixed(1)}s later at ${verdict![3]} % of the last 10 s (${(share * 100).toFixed(1)} % since the switch)`);
            assert.ok(firstFailure - switched > 29_000, "it failed nothing in its first 30 s");
            // 15 % of all answers fail from then on: over the last 10 s that passes 5 % after about 3.3 s, since the
            // switch only after about 15 s.
            assert.ok(back - firstFailure < 10_000, `caught ${back - firstFailure} ms after its first failure`);
            assert.ok(share < 0.05, `${(share * 100).toFixed(1)} % since the switch: within the limit, which alone would not have caught it yet`);
        });
    });

    it("a deploy stopped (SIGTERM) during its ramp moves all traffic back, lets the new slot finish its requests and stops it: 0 failed requests", async () => {
        const live = await liveVersion();
        const target = live === "1" ? commits.v2 : commits.v1;
        const { result } = await underLoad("SIGTERM during the ramp", async () => {
            const stopped = timedDeploy(`--revision ${target} --ramp-seconds 30`, { allowFail: true });
            await waitForRamp(30, stopped);
            // -o: the deploy script itself (its subshells have the same command line).
            await server.sh(`pkill -o -TERM -f '^/bin/bash ${DEPLOY} --revision' && echo stopped`, "root");
            return stopped;
        });
        assert.notStrictEqual(result.code, 0, result.output);
        assert.match(result.output, /moving all traffic back to slot \d/);
        assert.match(result.output, /stopping slot \d \(it got part of the traffic during the ramp; its requests have finished\)/);
        assert.match(result.output, /all traffic back on slot \d, which still serves [0-9a-f]{40}/);
        assert.match(result.output, /failed: interrupted \(SIGTERM\)/);
        await assertBackOn(live);
    });

    it("the SSH session that runs a deploy ends during its ramp: the deploy stops at its next line of output, moves all traffic back and stops the new slot: 0 failed requests", async () => {
        const live = await liveVersion();
        const target = live === "1" ? commits.v2 : commits.v1;
        await underLoad("SSH session lost during the ramp", async () => {
            // No pty, like Pulumi's remote command: when the client goes, sshd closes the deploy's pipes.
            const client = spawn("ssh", ["-i", server.host.privateKeyPath, ...SSH_OPTIONS, `deploy@${server.host.address}`, "--",
                `${DEPLOY} --revision ${target} --ramp-seconds 30`], { stdio: "ignore" });
            try {
                await waitForRamp(10);
            } finally {
                client.kill("SIGKILL");
            }
            // The next step's line (10 s after the first) cannot be written: the deploy ends the safe way.
            await server.sh(`for _ in $(seq 400); do pgrep -f '^/bin/bash ${DEPLOY} --revision' >/dev/null || exit 0; sleep 0.1; done; echo "the deploy still runs" >&2; exit 1`, "root");
        });
        const history = (await server.sh(`tail -n 1 ${HISTORY}`)).trim().split("\t");
        assert.strictEqual(history[4], "failed:its output was closed (the SSH session or pipe that ran it ended)");
        await assertBackOn(live);
    });

    it("a deploy killed (SIGKILL) during its ramp leaves a ramp that status shows; the next deploy moves the traffic back first, then deploys: 0 failed requests", async () => {
        const live = await liveVersion();
        const target = live === "1" ? commits.v2 : commits.v1;
        const targetVersion = live === "1" ? "2" : "1";
        const { result } = await underLoad("SIGKILL during the ramp, status and the next deploy", async () => {
            const killed = timedDeploy(`--revision ${target} --ramp-seconds 30`, { allowFail: true });
            await waitForRamp(10, killed);
            await server.sh(`pkill -o -KILL -f '^/bin/bash ${DEPLOY} --revision' && echo killed`, "root");
            assert.notStrictEqual((await killed).code, 0);
            const status = await deployScript("--status");
            const next = await timedDeploy(`--revision ${target}`);
            return { status, next };
        });
        assert.match(result.status.output, /^traffic ramp: +10 % of new requests go to port \d+ \(a deploy is ramping, or stopped during its ramp: the next deploy moves them back\)$/m);
        assert.match(result.next.output, /warning: an earlier deploy stopped during its traffic ramp \(ramp \d+ 10\); moving all traffic back to slot \d/);
        assert.match(result.next.output, /==> deployed/);
        assert.strictEqual(await liveVersion(), targetVersion);
    });

    /** The state a failed deploy must leave as it found it. */
    const stateFiles = () => server.sh(`cd ${LAYOUT.stateDir} && for f in live-slot live-revision previous-revision; do printf '%s=%s ' "$f" "$(cat "$f" 2>/dev/null || echo -)"; done`, "root");

    it("with --bake-seconds the old slot stays up, drained, until then after the switch while the new one serves all traffic, then stops: 0 failed requests", async () => {
        const before = await liveVersion();
        const next = before === "1" ? "2" : "1";
        const { result: deploy } = await underLoad("deploy with a 4-s bake", () => timedDeploy(`--revision ${commits[`v${next}`]} --bake-seconds 4`));
        const switched = deploy.at(/^==> traffic switched to slot \d$/);
        const baking = deploy.at(/^==> slot \d stays up until 4s after the switch: if slot \d fails before then, all traffic goes back to slot \d$/);
        const baked = deploy.at(/^==> slot \d served all traffic for 4\.\ds of the bake and passed every health check; stopping slot \d$/);
        const stopped = deploy.at(/^==> stopped slot \d$/);
        assert.ok(switched && baking && baked && stopped, deploy.output);
        // (The switch's line is printed a little after the moment the bake counts from.)
        // (At most one slow health poll, up to its timeout, past the bake's time.)
        assert.ok(baked - switched >= 3900 && baked - switched < 5500 + HEALTH_REQUEST_TIMEOUT_SECONDS * 1000,
            `the bake ended ${baked - switched} ms after the switch\n${deploy.timeline}`);
        assert.ok(stopped >= baked, deploy.output);
        assert.strictEqual(await liveVersion(), next);
    });

    it("a deploy stopped (SIGTERM) during its bake moves all traffic back to the old slot, puts the records back, lets the new slot finish its requests and stops it: 0 failed requests", async () => {
        const live = await liveVersion();
        const target = live === "1" ? commits.v2 : commits.v1;
        const records = await stateFiles();
        const { result } = await underLoad("SIGTERM during the bake", async () => {
            const port = (await server.sh(`${SWITCH} show ${ID}`, "root")).trim();
            const stopped = timedDeploy(`--revision ${target} --ramp-seconds 0 --bake-seconds 60`, { allowFail: true });
            // The switch has happened once the rule names the other port; the bake follows the drain.
            await server.sh(`for _ in $(seq 600); do [ "$(${SWITCH} show ${ID} | head -n 1)" != ${port} ] && exit 0; sleep 0.05; done; exit 1`, "root");
            await new Promise(r => setTimeout(r, 1500));
            await server.sh(`pkill -o -TERM -f '^/bin/bash ${DEPLOY} --revision' && echo stopped`, "root");
            return stopped;
        });
        assert.notStrictEqual(result.code, 0, result.output);
        assert.match(result.output, /==> slot \d stays up until 60s after the switch/);
        assert.match(result.output, /moving all traffic back to slot \d/);
        assert.match(result.output, /stopping slot \d \(it had all the traffic for [0-9.]+s of the bake; its requests have finished\)/);
        assert.match(result.output, /all traffic back on slot \d, which still serves [0-9a-f]{40}/);
        assert.match(result.output, /failed: interrupted \(SIGTERM\)/);
        await assertBackOn(live);
        assert.strictEqual(await stateFiles(), records, "the records are as before the deploy");
    });

    it("a version killed (SIGKILL) 2 s after it got all traffic, during the bake: all traffic goes back to the old slot at once; the failures end there", async () => {
        const live = await liveVersion();
        const records = await stateFiles();
        const { deploy, report } = await deployBrokenUnderLoad("broken-crash-after-switch", "crash-4s-into-traffic", "--ramp-seconds 2 --bake-seconds 30", 2000);
        // Found by its process gone, or by a poll whose connect was refused (the port closed before the poll saw the process gone).
        assert.match(deploy.output, /failed: slot \d stopped answering its health check [0-9.]+s after it got all traffic: (?:its process has exited|nothing listens on its port \d+ any more)/);
        const back = deploy.at(/^==> moving all traffic back to slot \d$/);
        // Printed once the traffic has moved back and the crashed slot has no connections left.
        const stopping = deploy.at(/^==> stopping slot \d \(it had all the traffic for [0-9.]+s of the bake; its requests have finished\)$/);
        assert.ok(back && stopping, deploy.output);
        assert.match(deploy.output, /all traffic back on slot \d, which still serves/);
        const requests = report.totals.requests;
        const failed = report.records().filter(r => !r.ok);
        const starts = failed.map(r => r.start);
        const ends = failed.map(r => r.end);
        // By their ends: a slow request in flight at the crash started up to 300 ms before it.
        const span = failed.length ? Math.round(Math.max(...ends) - Math.min(...ends)) : 0;
        log(`crash during the bake: ${failed.length} of ${requests} requests failed (${JSON.stringify(report.statusCodes)}), ending within ${span} ms; ` +
            `the last one started ${failed.length ? Math.round(Math.max(...starts) - back) : "-"} ms after the deploy said it moves the traffic back`);
        // Fast 502s make the count depend on the client's speed; the time they span is the outage. Without the
        // take-back it would last until Supervisor had restarted the crashed version (about 1.3 s) and again at its next crash.
        assert.ok(failed.length > 0, "the crash had requests in flight");
        assert.ok(span < 1000, `the failures spanned ${span} ms (${failed.length} of ${requests})`);
        assert.ok(failed.every(r => r.failure === "status" || r.failure === "transport"), JSON.stringify(report.failureSamples.slice(0, 3)));
        assert.ok(failed.every(r => r.start < stopping), `failures after the traffic moved back: ${failed.filter(r => r.start >= stopping).length}`);
        await assertBackOn(live);
        assert.strictEqual(await stateFiles(), records, "the records are as before the deploy");
        assert.strictEqual(await resetEntriesToIdleSlot(), "", "no entry of a reset connection to the crashed slot is left");
    });

    it("after a reboot (services stopped, NAT rules gone), the boot path serves the live revision again", async () => {
        const live = await liveVersion();
        const liveRevision = (await server.sh(`cat ${LAYOUT.stateDir}/live-revision`)).trim();
        await step("simulate a reboot: stop every service, clear the NAT table", async () => {
            await server.sh("service nginx stop; supervisorctl stop all >/dev/null; service supervisor stop; sleep 1; iptables -t nat -F; iptables -t nat -X; iptables -F; iptables -X");
            await assert.rejects(get(server.host.address, "/"));
        });
        await step("boot: the units' commands in boot order", async () => {
            await server.sh("/usr/local/lib/clj-zero-downtime/firewall.sh && service supervisor start && service nginx start");
            const unit = await server.sh(`cat /etc/systemd/system/czd-restore-${ID}.service`);
            const execStart = /^ExecStart=(.*)$/m.exec(unit)![1];
            assert.match(unit, /^User=deploy$/m);
            const out = await server.sh(execStart, "deploy");
            assert.match(out, new RegExp(`restored ${ENV}: slot \\d serves ${liveRevision}`));
        });
        assert.strictEqual(await liveVersion(), live);
        const status = await server.sh(`supervisorctl status ${ID}:*`, "deploy").catch(e => String(e));
        assert.strictEqual((status.match(/RUNNING/g) ?? []).length, 1, status);
        await underLoad("after the reboot", async () => undefined);
    });

    it("deploys a git push to the server's repository through the same rotation, streaming its output", async () => {
        const sha = commitAppVersion(app, { version: "3" });
        const remote = `ssh://deploy@${server.host.address}${REPO}`;
        const { result } = await underLoad("git push deploy", () => new Promise<{ code: number; output: string }>((resolve) => {
            const push = spawn("git", ["push", remote, "HEAD:main"], {
                cwd: app,
                env: gitSshEnv(server.host),
            });
            let output = "";
            push.stdout.on("data", d => (output += d));
            push.stderr.on("data", d => (output += d));
            push.on("close", code => resolve({ code: code ?? 1, output }));
        }));
        assert.strictEqual(result.code, 0, result.output);
        assert.match(result.output, /remote: ==> building/);
        assert.match(result.output, new RegExp(`remote: ==> deployed ${sha} to ${ENV} \\(slot \\d\\)`));
        assert.strictEqual(await liveVersion(), "3");
    });
});
