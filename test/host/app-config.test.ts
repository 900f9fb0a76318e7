// App secrets, JVM options and where the jar is built, on a real server under
// load: a secret reaches the app and nothing else; changing it rotates with no
// failed request; `build: local` never runs Leiningen on the server; a server
// without memory for a second JVM refuses the deploy before touching anything.
// The app sits in a subdirectory of its repository, as the sample app does in
// this project's: a `git push` of the repository deploys that directory.
import * as assert from "assert";
import { spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { DEPLOY_USER } from "../../infra/names";
import { makeAppRepo } from "./app-variants";
import { httpGet, sampleAppLayout, Server, startServer, step, underLoad as underLoadOn } from "./fixture";
import { gitSshEnv } from "./testhost";
import { tempDir } from "../support/tmp";

const LAYOUT = sampleAppLayout("live");

const DOMAIN = "config.test";
const ID = "sample-app-live";
const SECRET = "s3cret-Value-7f2c$(id)'\"";
const SECRET2 = "rotated-Secret-91ab";
const LEIN_PROFILE = path.join(__dirname, "lein-offline-profile.clj");

async function liveVersion(address: string): Promise<{ status: number; revision: string }> {
    const res = await httpGet(address, DOMAIN);
    return { status: res.status, revision: res.revision };
}

describe("app secrets, JVM options and local builds on a test host", function () {
    this.bail(true);
    let server: Server;
    let work: string;
    let logLines: string[] = [];

    const underLoad = async <T>(what: string, fn: () => Promise<T>): Promise<T> => (await underLoadOn(server, DOMAIN, what, fn)).result;

    /** The live slot's JVM environment, read as root from /proc. */
    async function liveEnvironment(): Promise<string> {
        const slot = (await server.sh(`cat ${LAYOUT.stateDir}/live-slot`)).trim();
        const pid = (await server.sh(`supervisorctl pid ${ID}:${ID}-${slot}`)).trim();
        return server.sh(`tr '\\0' '\\n' </proc/${pid}/environ`);
    }

    before(async function () {
        work = tempDir("appconfig");
        const app = path.join(work, "repo", "app");
        makeAppRepo(app, { version: "1" }, path.join(work, "repo"));
        server = await startServer({ name: "appconfig", index: 23, appPath: app, config: { domain: DOMAIN, startTimeout: "30" } });
        const up = server.up.bind(server);
        // Keep everything the harness logs, to prove no secret is in it.
        server.up = async (overrides = {}, opts = {}) => {
            const r = await up(overrides, opts);
            for (const res of r.resources) logLines.push(res.stdout, res.stderr, res.error ?? "");
            return r;
        };
        await step("setup and first deploy with a secret app variable", () =>
            server.up({ appEnv: JSON.stringify({ API_TOKEN: SECRET, MODE: "production" }) }));
    });

    after(async function () {
        if (server) await server.stop();
        if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("a secret reaches the app's environment, and only a 0600 file owned by the app user holds it", async () => {
        const env = await liveEnvironment();
        assert.ok(env.split("\n").includes(`API_TOKEN=${SECRET}`), "the app sees the secret verbatim");
        assert.ok(env.split("\n").includes("MODE=production"));
        assert.strictEqual((await server.sh(`stat -c '%a %U:%G' ${LAYOUT.envFile}`)).trim(), "600 sample-app:sample-app");
        // Nowhere else: not under /etc, not in any command line, not in the deploy history, not in Pulumi's (the harness's) logs.
        const needle = "s3cret-Value-7f2c";
        assert.strictEqual(await server.sh(`grep -rl -- '${needle}' /etc ${LAYOUT.stateDir} /var/log 2>/dev/null || true`), "");
        assert.ok(!(await server.sh("ps -eo args")).includes(needle), "no process has the secret on its command line");
        assert.ok(!logLines.join("\n").includes(needle), "no secret in the deploy output");
        assert.ok(!fs.readFileSync(server.statePath, "utf8").includes(needle), "no secret in plain text in the state");
    });

    it("changing the secret rotates to a fresh slot with 0 failed requests (no restart of both slots)", async () => {
        const slotBefore = (await server.sh(`cat ${LAYOUT.stateDir}/live-slot`)).trim();
        const result = await underLoad("secret change", () => server.up({ appEnv: JSON.stringify({ API_TOKEN: SECRET2, MODE: "production" }) }));
        const rotate = result.resources.find(r => r.name.endsWith("-deploy-rotate"))!;
        assert.strictEqual(rotate.action, "replace");
        assert.match(rotate.stdout, /as at the last pulumi up, so this run is for new settings \(appEnv, javaOpts\) or a jar built again: restarting the live release [0-9a-f]{40} with them/);
        assert.doesNotMatch(rotate.stdout, /building/);
        const slotAfter = (await server.sh(`cat ${LAYOUT.stateDir}/live-slot`)).trim();
        assert.notStrictEqual(slotAfter, slotBefore, "the new value came with a rotation");
        assert.ok((await liveEnvironment()).split("\n").includes(`API_TOKEN=${SECRET2}`));
    });

    it("changing drainTimeout (Supervisor's stopwaitsecs) leaves the live slot serving, not restarted, with 0 failed requests; the group change waits for supervisord's next start", async () => {
        const slot = (await server.sh(`cat ${LAYOUT.stateDir}/live-slot`)).trim();
        const program = `${ID}:${ID}-${slot}`;
        const pidBefore = (await server.sh(`supervisorctl pid ${program}`)).trim();
        // The same appEnv as the test before: only drainTimeout changes, so no rotation runs.
        const result = await underLoad("drainTimeout change", () =>
            server.up({ appEnv: JSON.stringify({ API_TOKEN: SECRET2, MODE: "production" }), drainTimeout: "25" }));
        const environmentStep = result.resources.find(r => r.name === `${ID}-env-live`)!;
        assert.ok(environmentStep, result.resources.map(r => r.name).join(", "));
        assert.match(environmentStep.stdout + environmentStep.stderr,
            new RegExp(`warning: the Supervisor group ${ID} changed, but applying it now would stop ${program}, which serves`));
        assert.strictEqual((await server.sh(`supervisorctl pid ${program}`)).trim(), pidBefore, "the live JVM was not restarted");
        assert.match(await server.sh(`supervisorctl reread`), new RegExp(`${ID}: changed`), "the change is pending");
    });

    it("refuses a deploy when the server lacks memory for a second JVM, before touching anything, with the numbers", async () => {
        const before = await liveVersion(server.host.address);
        const result = await underLoad("deploy refused for memory", () => server.up({ javaOpts: "-Xmx64g" }, { throwOnError: false }));
        assert.strictEqual(result.ok, false);
        const rotate = result.resources.find(r => r.name.endsWith("-deploy-rotate"))!;
        assert.match(rotate.stdout + rotate.stderr, /failed: not enough memory for a second JVM: it needs about 81984 MB \(heap 65536 MB from -Xmx64g \+ 25% \+ 64 MB\) and \d+ MB are available/);
        assert.doesNotMatch(rotate.stdout + rotate.stderr, /starting slot/, "nothing was started");
        assert.deepStrictEqual(await liveVersion(server.host.address), before);
    });

    it("build: local builds where Pulumi runs and uploads only the jar; the server's Leiningen is never run", async () => {
        // A tripwire in place of the server's lein.
        await server.sh("mv /usr/bin/lein /usr/bin/lein.real && printf '#!/bin/sh\\ntouch /tmp/lein-was-run\\nexit 1\\n' >/usr/bin/lein && chmod 755 /usr/bin/lein");
        const leinHome = tempDir("lein-home");
        fs.copyFileSync(LEIN_PROFILE, path.join(leinHome, "profiles.clj"));
        const saved = process.env.LEIN_HOME;
        process.env.LEIN_HOME = leinHome;
        try {
            // A new commit, so there is something to build.
            const app = path.join(work, "repo", "app");
            const { commitAppVersion } = await import("./app-variants");
            const sha = commitAppVersion(app, { version: "2" });
            // The upload of an earlier pulumi up whose deploy failed (kept for its retry): a successful one removes it.
            const staleUpload = `${LAYOUT.uploadsDir}/0000000000000000000000000000000000000000.tar`;
            await server.sh(`runuser -u ${DEPLOY_USER} -- sh -c 'echo stale >${staleUpload}'`);
            const result = await underLoad("build: local deploy", () => server.up({ build: "local", javaOpts: "", appEnv: JSON.stringify({ API_TOKEN: SECRET2, MODE: "production" }) }));
            const rotate = result.resources.find(r => r.name.endsWith("-deploy-rotate"))!;
            assert.match(rotate.stdout, /installed the prebuilt jar of [0-9a-f]{40}-[0-9a-f]{12} \(no build on this server\)/);
            assert.doesNotMatch(rotate.stdout, /building/);
            const live = await liveVersion(server.host.address);
            assert.strictEqual(live.status, 200);
            assert.ok(live.revision.startsWith(`${sha}-`), `the live release is the local build of ${sha}: ${live.revision}`);
            assert.strictEqual(await server.sh("test -e /tmp/lein-was-run && echo ran || echo 'not run'"), "not run\n");
            assert.strictEqual(await server.sh(`ls -A ${LAYOUT.uploadsDir}`), "", "this run's upload and the stale one are gone");
        } finally {
            if (saved === undefined) delete process.env.LEIN_HOME;
            else process.env.LEIN_HOME = saved;
            await server.sh("mv -f /usr/bin/lein.real /usr/bin/lein");
        }
    });

    it("after a rollback on the server, a changed secret restarts the rolled-back release, not appRevision's again, with 0 failed requests", async () => {
        const pushed = (await liveVersion(server.host.address)).revision;
        const rollback = await server.host.ssh(`${LAYOUT.deployScript} --rollback`, { user: "deploy", allowFail: true, timeoutMs: 300_000 });
        assert.strictEqual(rollback.code, 0, rollback.stdout + rollback.stderr);
        const rolledBack = (await liveVersion(server.host.address)).revision;
        assert.notStrictEqual(rolledBack, pushed);
        // appRevision still names the commit of the last up (built on the server this time: another
        // release name, same commit), and only the secret changes.
        const SECRET3 = "third-Secret-c0ffee";
        const result = await underLoad("secret change after a rollback", () =>
            server.up({ appEnv: JSON.stringify({ API_TOKEN: SECRET3, MODE: "production" }) }));
        const rotate = result.resources.find(r => r.name.endsWith("-deploy-rotate"))!;
        assert.match(rotate.stdout, new RegExp(`so this run is for new settings \\(appEnv, javaOpts\\) or a jar built again: restarting the live release ${rolledBack} with them`));
        assert.doesNotMatch(rotate.stdout, /building|installed the prebuilt jar/, "nothing built or installed");
        assert.match(rotate.stdout, new RegExp(`==> deployed ${rolledBack} to live \\(slot [12]\\)$`, "m"));
        assert.strictEqual((await liveVersion(server.host.address)).revision, rolledBack, "the rollback stays");
        assert.ok((await liveEnvironment()).split("\n").includes(`API_TOKEN=${SECRET3}`), "with the new secret");
        assert.strictEqual((await server.sh(`cat ${LAYOUT.stateDir}/previous-revision`)).trim(), pushed, "a rollback still goes back to the same release");
        assert.match(await server.sh(`tail -n 1 ${LAYOUT.historyFile}`), new RegExp(`\\t${rolledBack}\\t[12]\\trestart\\t`));
    });

    it("a settings change whose deploy failed never reaches the live slot: restarted (a crash, a reboot), it keeps the settings it ran with", async () => {
        const before = (await liveVersion(server.host.address)).revision;
        const slot = (await server.sh(`cat ${LAYOUT.stateDir}/live-slot`)).trim();
        const secret = (await liveEnvironment()).split("\n").find(l => l.startsWith("API_TOKEN="));
        assert.ok(secret, "the live slot has a secret");
        const bad = await step("pulumi up with a JVM option the JVM refuses, and another secret", () =>
            server.up({ javaOpts: "-XX:+NoSuchOptionForThisTest", appEnv: JSON.stringify({ API_TOKEN: "never-live", MODE: "production" }) }, { throwOnError: false }));
        assert.strictEqual(bad.ok, false, "the deploy fails");
        assert.strictEqual((await liveVersion(server.host.address)).revision, before, "the live slot keeps serving");
        // As Supervisor restarts a JVM that crashed (and a reboot's restore starts it).
        await server.sh(`supervisorctl restart ${ID}:${ID}-${slot} >/dev/null`);
        let live = { status: 0, revision: "" };
        for (let i = 0; i < 100 && live.status !== 200; i++) {
            await new Promise(r => setTimeout(r, 200));
            live = await liveVersion(server.host.address).catch(() => ({ status: 0, revision: "" }));
        }
        assert.strictEqual(live.status, 200, "the restarted slot serves");
        assert.strictEqual(live.revision, before);
        const env = (await liveEnvironment()).split("\n");
        assert.ok(env.includes(secret!), "with the secret it had, not the failed deploy's");
        const pid = (await server.sh(`supervisorctl pid ${ID}:${ID}-${slot}`)).trim();
        assert.doesNotMatch(await server.sh(`tr '\\0' ' ' </proc/${pid}/cmdline`), /NoSuchOption/, "nor its JVM option");
        assert.strictEqual((await server.sh(`stat -c '%a %U:%G' ${LAYOUT.slotSettingsDir} ${LAYOUT.slotSettingsDir}/${slot}.env`)).trim(),
            "700 sample-app:sample-app\n600 sample-app:sample-app", "the slot's copy of the secrets is the app user's alone");
        await step("pulumi up with the settings fixed", () => server.up({ appEnv: JSON.stringify({ API_TOKEN: secret!.slice("API_TOKEN=".length), MODE: "production" }) }));
    });

    it("a git push of the repository deploys the app's directory in it (appPath below the repository's top), with 0 failed requests", async () => {
        const hook = await server.sh(`cat ${LAYOUT.repoDir}/hooks/post-receive`);
        assert.match(hook, /--revision "\$newrev" --git-path 'app'\)/);
        const { commitAppVersion } = await import("./app-variants");
        const sha = commitAppVersion(path.join(work, "repo", "app"), { version: "pushed" });
        // Asynchronously: the load client runs in this process.
        const push = await underLoad("git push of a subdirectory app", () => new Promise<{ code: number; output: string }>(resolve => {
            const git = spawn("git", ["push", `ssh://deploy@${server.host.address}${LAYOUT.repoDir}`, "HEAD:main"],
                { cwd: path.join(work, "repo"), env: gitSshEnv(server.host) });
            let output = "";
            git.stdout.on("data", d => (output += d));
            git.stderr.on("data", d => (output += d));
            git.on("close", code => resolve({ code: code ?? 1, output }));
        }));
        assert.strictEqual(push.code, 0, push.output);
        assert.match(push.output, new RegExp(`remote: ==> deployed ${sha} to live \\(slot [12]\\)`));
        const live = await liveVersion(server.host.address);
        assert.strictEqual(live.revision, sha);
        assert.strictEqual((await httpGet(server.host.address, DOMAIN)).version, "pushed");
    });
});
