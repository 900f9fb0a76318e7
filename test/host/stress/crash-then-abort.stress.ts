// A stress run, not part of `npm run test:host` (about 40 s a round):
//   ROUNDS=20 npm run stress
// Each round, under load: a deploy of a version that crashes during its ramp
// (its slot resets connections), then at once a deploy stopped (SIGTERM)
// during its ramp. The second deploy must lose nothing. With the kernel's
// default conntrack timeout for reset connections (10 s), 6 of 20 rounds lost
// requests: nginx reused a reset connection's source port and followed its
// entry to the stopped slot (see the switch helper).
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { commitAppVersion, makeAppRepo } from "../app-variants";
import { httpGet, log, Server, serverLogs, startServer, step } from "../fixture";
import { startLoad } from "../../load/client";
import { gitSshEnv } from "../testhost";

const DOMAIN = "shop.test";
const ENV = "live";
const ID = `sample-app-${ENV}`;
const DEPLOY = `/srv/sample-app/${ENV}/bin/deploy`;
const SWITCH = `/usr/local/sbin/czd-switch-${ID}`;
const REPO = `/srv/sample-app/${ENV}/repo.git`;
const ROUNDS = Number(process.env.ROUNDS ?? 10);

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

describe("stress: a crash during the ramp, then a deploy stopped during its ramp", function () {
    let server: Server;
    let work: string;
    let app: string;
    const commits: Record<string, string> = {};

    before(async function () {
        work = fs.mkdtempSync(path.join(os.tmpdir(), "czd-stress-"));
        app = path.join(work, "app");
        commits.v1 = makeAppRepo(app, { version: "1" });
        commits.v2 = commitAppVersion(app, { version: "2" });
        server = await startServer({ name: "stress", index: 23, appPath: app, config: { domain: DOMAIN, environment: ENV, startTimeout: "20", drainTimeout: "15" } });
        await step("setup and both versions built", async () => {
            await server.up({ appRevision: commits.v1 });
            await server.up({ appRevision: commits.v2 });
            await server.up({ appRevision: commits.v1 });
        });
    });

    after(async function () {
        if (server) await server.stop();
        if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    const deploy = (args: string) => server.host.ssh(`${DEPLOY} ${args}`, { user: "deploy", allowFail: true, timeoutMs: 300_000 });
    const liveVersion = async () => (await httpGet(server.host.address, DOMAIN, "/")).version;
    const underLoad = async (fn: () => Promise<void>) => {
        const load = startLoad({ url: `http://${server.host.address}`, hostHeader: DOMAIN, concurrency: 32 });
        try {
            await sleep(1000);
            await fn();
            await sleep(1000);
        } catch (e) {
            await load.stop();
            throw e;
        }
        return load.stop();
    };

    it(`${ROUNDS} rounds: the stopped deploy loses no request`, async () => {
        const crashing = commitAppVersion(app, { version: "crashes", fault: "exit-under-traffic" });
        execFileSync("git", ["push", "-q", "-f", `ssh://deploy@${server.host.address}${REPO}`, `${crashing}:refs/heads/broken`], {
            cwd: app,
            env: gitSshEnv(server.host),
        });
        const lost: number[] = [];
        for (let round = 1; round <= ROUNDS; round++) {
            // The crash needs real requests: it exits on its 21st GET of /.
            await underLoad(async () => {
                const crash = await deploy(`--git ${REPO} --revision ${crashing} --ramp-seconds 6`);
                assert.notStrictEqual(crash.code, 0, "the crashing version is taken back");
            });
            const target = (await liveVersion()) === "1" ? commits.v2 : commits.v1;
            const report = await underLoad(async () => {
                const stopped = deploy(`--revision ${target} --ramp-seconds 30`);
                await server.sh(`for _ in $(seq 600); do ${SWITCH} show ${ID} | grep -q '^ramp .* 30$' && exit 0; sleep 0.05; done; exit 1`, "root");
                await server.sh(`pkill -o -TERM -f '^/bin/bash ${DEPLOY} --revision'`, "root");
                assert.notStrictEqual((await stopped).code, 0);
            });
            lost.push(report.totals.failed);
            log(`round ${round}/${ROUNDS}: ${report.totals.failed} of ${report.totals.requests} requests failed`);
            if (report.totals.failed > 0) log(await serverLogs(server));
        }
        log(`rounds that lost requests: ${lost.filter(n => n > 0).length} of ${ROUNDS}`);
        assert.deepStrictEqual(lost.filter(n => n > 0), []);
    });
});
