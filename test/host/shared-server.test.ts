// Live and beta on one server: the beta stack adds its environment to the
// server the live stack owns (serverStack), deploys without touching live, and
// `pulumi destroy` of beta removes beta alone, all while live serves under load.
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { commitAppVersion, makeAppRepo } from "./app-variants";
import { httpGet, Server, startServer, step, underLoad } from "./fixture";
import { apply, ApplyResult, collect, destroy, RemoteResource } from "./harness";
import { layout } from "../../infra/names";
import { tempDir } from "../support/tmp";

const LIVE_DOMAIN = "live.test";
const BETA_DOMAIN = "beta.test";
const BETA_PORTS = { proxyPort: "3100", slot1Port: "3101", slot2Port: "3102", nrepl1Port: "7101", nrepl2Port: "7102" };
const LIVE_PORTS = { proxy: 3000, slot1: 3001, slot2: 3002, nrepl1: 7001, nrepl2: 7002 };
const BETA_LAYOUT_PORTS = { proxy: 3100, slot1: 3101, slot2: 3102, nrepl1: 7101, nrepl2: 7102 };
const LIVE = layout("sample-app", "live", LIVE_PORTS);
const BETA = layout("sample-app", "beta", BETA_LAYOUT_PORTS);

/**
 * What of live must not change while beta is deployed or destroyed: processes, files, switch rule.
 * A reload keeps nginx's master but replaces its workers, so their pids show one.
 */
const LIVE_FINGERPRINT = [
    "echo nginx $(cat /run/nginx.pid) supervisord $(cat /var/run/supervisord.pid)",
    "echo nginx workers $(pgrep -P $(cat /run/nginx.pid) | sort -n)",
    "supervisorctl pid sample-app-live:sample-app-live-1 sample-app-live:sample-app-live-2",
    `find ${LIVE.baseDir} ${LIVE.supervisorConf} ${LIVE.nginxSiteAvailable} ${LIVE.switchHelper} -type f -print0 | sort -z | xargs -0 sha256sum`,
    "iptables -t nat -S CZD-sample-app-live",
    // Its answer counters' rules (no counts: -S without -v), or that it has none yet.
    "iptables -t mangle -S CZD-sample-app-live 2>&1 || true",
].join("; ");

describe("live and beta on one server", function () {
    this.bail(true);
    let server: Server;
    let work: string;
    let app: string;
    let betaState: string;
    /** Beta's own key pair (another machine's): root accepts it by hand, as a user would set up; the deploy user only through beta's setup. */
    const betaKey = { sshPublicKey: "", sshPrivateKey: "" };
    let betaResources: RemoteResource[] = [];
    const commits: Record<string, string> = {};

    /** What of beta is on the server: group, JVM, directory, site, switch rule, sudoers rule, its log count and its answer counters. */
    async function betaPresence(): Promise<string[]> {
        const out = await server.sh([
            "supervisorctl avail | grep -q '^sample-app-beta:sample-app-beta-1 ' && echo group || echo no-group",
            `pgrep -u ${BETA.appUser} -f '${BETA.baseDir}/' >/dev/null && echo beta-jvm || echo no-beta-jvm`,
            `test -e ${BETA.baseDir} && echo dir || echo no-dir`,
            "test -e /etc/nginx/sites-enabled/sample-app-beta && echo site || echo no-site",
            "iptables -t nat -S CZD-sample-app-beta >/dev/null 2>&1 && echo rule || echo no-rule",
            `test -e ${BETA.sudoersFile} && echo sudoers || echo no-sudoers`,
            "ls /var/log/sample-app/ | grep -c '^beta-' || true",
            "iptables -t mangle -S CZD-sample-app-beta >/dev/null 2>&1 && echo counters || echo no-counters",
        ].join("; "));
        return out.trim().split("\n");
    }

    /** The beta stack's program on the live stack's server (its StackReference answered with live's outputs). */
    async function beta(overrides: Record<string, string> = {}, opts: { throwOnError?: boolean } = {}): Promise<ApplyResult> {
        betaResources = await collect({
            config: {
                provider: "existing", serverStack: "live", environment: "beta", domain: BETA_DOMAIN, ...BETA_PORTS,
                ...betaKey, appPath: app, ...overrides,
            },
            secretKeys: ["sshPrivateKey", "appEnv", "tlsKey"],
            stack: "beta",
            resourceOutputs: args => args.type === "pulumi:pulumi:StackReference"
                ? { name: "live", outputs: { serverAddress: server.host.address, environment: "live", ports: LIVE_PORTS } }
                : undefined,
        });
        return apply(betaResources, { statePath: betaState, log: () => undefined, throwOnError: opts.throwOnError ?? true });
    }

    before(async function () {
        work = tempDir("shared");
        app = path.join(work, "app");
        commits.v1 = makeAppRepo(app, { version: "1" });
        commits.v2 = commitAppVersion(app, { version: "2" });
        betaState = path.join(work, "beta-state.json");
        server = await startServer({ name: "shared", index: 24, appPath: app, config: { domain: LIVE_DOMAIN, environment: "live" } });
        await step("live stack: setup and deploy v1", () => server.up({ appRevision: commits.v1 }));
        execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "beta-stack", "-f", path.join(work, "beta-key")]);
        betaKey.sshPublicKey = fs.readFileSync(path.join(work, "beta-key.pub"), "utf8").trim();
        betaKey.sshPrivateKey = fs.readFileSync(path.join(work, "beta-key"), "utf8");
        await server.sh("cat >>/root/.ssh/authorized_keys", "root", `${betaKey.sshPublicKey}\n`);
        await step("beta stack: its environment on live's server, deploy v2", () => beta({ appRevision: commits.v2 }));
    });

    after(async function () {
        if (server) await server.stop();
        if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("serves both environments from their own slots, sites and switch rules", async () => {
        assert.strictEqual((await httpGet(server.host.address, LIVE_DOMAIN)).version, "1");
        assert.strictEqual((await httpGet(server.host.address, BETA_DOMAIN)).version, "2");
        assert.ok(betaResources.every(r => !r.name.startsWith("setup-") && r.name !== "destroy-guard"), "beta does not set up the host");
        // Beta deploys as the deploy user with its own key, which only its environment step authorized.
        const deployKeys = await server.sh("cat ~deploy/.ssh/authorized_keys");
        assert.ok(deployKeys.includes(betaKey.sshPublicKey) && deployKeys.includes(server.config.sshPublicKey), deployKeys);
        assert.match(await server.sh("iptables -t nat -S CZD-sample-app-beta"), /--dport 3100 .*--to-ports 310[12]/);
        assert.deepStrictEqual((await betaPresence()).slice(0, 6), ["group", "beta-jvm", "dir", "site", "rule", "sudoers"]);
    });

    it("deploys beta 5 times (one failing) while live serves 0 failed requests and nothing of live changes", async () => {
        const before = await server.sh(LIVE_FINGERPRINT);
        assert.match(before, /^nginx workers \d+/m, "nginx's workers are in the fingerprint");
        const broken = commitAppVersion(app, { version: "broken", fault: "health-500" });
        await underLoad(server, LIVE_DOMAIN, "live during 5 beta deploys", async () => {
            for (const [i, sha] of [commits.v1, commits.v2, broken, commits.v1, commits.v2].entries()) {
                const r = await beta({ appRevision: sha, startTimeout: "15" }, { throwOnError: false });
                assert.strictEqual(r.ok, sha !== broken, `beta deploy ${i + 1}`);
            }
        });
        assert.strictEqual(await server.sh(LIVE_FINGERPRINT), before, "live's processes, files and switch rule are untouched");
        assert.strictEqual((await httpGet(server.host.address, BETA_DOMAIN)).version, "2");
        assert.strictEqual((await betaPresence())[7], "counters", "beta's ramps counted its slots' answers in a chain of its own");
    });

    it("stops a third stack whose ports and domain beta holds (its preview sees only live's) at its environment step, before it changes anything", async () => {
        const betaBefore = await server.sh(`find ${BETA.baseDir}/state ${BETA.supervisorConf} ${BETA.nginxSiteAvailable} -type f -print0 | sort -z | xargs -0 sha256sum`);
        const staging = await collect({
            config: {
                provider: "existing", serverStack: "live", environment: "staging", domain: BETA_DOMAIN,
                proxyPort: "3200", slot1Port: "3201", slot2Port: "3101", nrepl1Port: "7201", nrepl2Port: "7202",
                sshPublicKey: server.config.sshPublicKey, sshPrivateKey: server.config.sshPrivateKey, appPath: app, appRevision: commits.v1,
            },
            secretKeys: ["sshPrivateKey", "appEnv", "tlsKey"],
            stack: "staging",
            resourceOutputs: args => args.type === "pulumi:pulumi:StackReference"
                ? { name: "live", outputs: { serverAddress: server.host.address, environment: "live", ports: LIVE_PORTS } }
                : undefined,
        });
        const r = await apply(staging, { statePath: path.join(work, "staging-state.json"), log: () => undefined, throwOnError: false });
        assert.strictEqual(r.ok, false);
        const envStep = r.resources.find(x => x.name === "sample-app-staging-env-staging")!;
        assert.match(envStep.stderr, new RegExp("sample-app-staging would take what other environments on this server hold; nothing was changed\\. " +
            "Give it ports \\(and a domain\\) of its own:\n  slot2Port = 3101 is slot1Port of sample-app-beta \\(stack beta\\) already\n" +
            "  domain = beta\\.test is the domain of sample-app-beta \\(stack beta\\) already"));
        assert.ok(!r.executed.some(x => x.name.includes("-deploy-")), "no deploy ran");
        assert.strictEqual(await server.sh("test -e /srv/sample-app/staging && echo dir; test -e /etc/supervisor/conf.d/sample-app-staging.conf && echo group; " +
            "test -e /etc/nginx/sites-available/sample-app-staging && echo site; id -u deploy >/dev/null && echo ok"), "ok\n", "nothing of staging was made");
        assert.strictEqual(await server.sh(`find ${BETA.baseDir}/state ${BETA.supervisorConf} ${BETA.nginxSiteAvailable} -type f -print0 | sort -z | xargs -0 sha256sum`),
            betaBefore, "beta's files are untouched");
        assert.strictEqual((await httpGet(server.host.address, BETA_DOMAIN)).version, "2");
    });

    it("refuses to destroy the owner's server while beta lives on it, saying which environment", async () => {
        const guard = (await server.resources()).find(r => r.name === "destroy-guard")!;
        const check = await server.host.ssh((guard.inputs as { delete: string }).delete, { allowFail: true });
        assert.notStrictEqual(check.code, 0);
        assert.match(check.stderr, /pulumi destroy of sample-app-live stopped: this server also runs sample-app-beta \(stack beta\)\.\nDestroy their stacks first \(scripts\/pulumi destroy --stack <that stack>\), then run this destroy again; nothing was removed\./);
    });

    it("pulumi destroy of beta removes beta alone, with 0 failed requests on live and no reload of nginx", async () => {
        const before = await server.sh(LIVE_FINGERPRINT);
        assert.match(before, /^nginx workers \d+/m, "nginx's workers are in the fingerprint");
        await underLoad(server, LIVE_DOMAIN, "live during beta's destroy", () =>
            destroy(betaResources, { statePath: betaState, log: () => undefined }));
        assert.strictEqual(await server.sh(LIVE_FINGERPRINT), before, "live untouched; nginx not reloaded (same master, same workers)");
        const gone = await betaPresence();
        assert.deepStrictEqual(gone.slice(0, 6), ["no-group", "no-beta-jvm", "no-dir", "no-site", "no-rule", "no-sudoers"]);
        assert.ok(Number(gone[6]) > 0, "beta's logs are kept, as documented");
        assert.strictEqual(gone[7], "no-counters", "its answer counters went with its switch rule");
        assert.strictEqual((await httpGet(server.host.address, LIVE_DOMAIN)).version, "1");
        // With beta gone, the owner's destroy guard lets a destroy through.
        const guard = (await server.resources()).find(r => r.name === "destroy-guard")!;
        assert.match(await server.sh((guard.inputs as { delete: string }).delete), /no other environment on this server/);
    });
});
