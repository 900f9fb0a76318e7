// The Deploy resource: its trigger is the commit of the app, it ships exactly
// the committed tree, and bad app sources fail before anything changes.
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { AppSourceError, archiveAppRevision, CACHE_KEEP, privateCacheDir, pruneCache, resolveAppRevision } from "../../infra/app-source";
import { buildJarLocally } from "../../infra/local-build";
import { parseDeployed, rotationCommand } from "../../infra/deploy";
import { layout } from "../../infra/names";
import { program } from "../../infra/program";
import { runUnderMocks } from "../support/pulumi-mocks";
import { tempDir } from "../support/tmp";

const keys = tempDir("deploy-keys");
execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(keys, "id")]);
const PUB = fs.readFileSync(path.join(keys, "id.pub"), "utf8").trim();
const PRIV = fs.readFileSync(path.join(keys, "id"), "utf8");

const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.com" };
function git(cwd: string, ...args: string[]): string {
    return execFileSync("git", args, { cwd, env: GIT_ENV, encoding: "utf8" }).trim();
}

/** A repository with the app in `app/` and something else beside it. */
function makeRepo(): { repo: string; app: string } {
    const repo = tempDir("deploy-repo");
    const app = path.join(repo, "app");
    fs.mkdirSync(app);
    git(repo, "init", "-q", "-b", "main");
    fs.writeFileSync(path.join(app, "project.clj"), "(defproject demo \"0.1.0\")\n");
    fs.writeFileSync(path.join(repo, "README"), "other\n");
    git(repo, "add", ".");
    git(repo, "commit", "-q", "-m", "one");
    return { repo, app };
}

function commitFile(repo: string, file: string, text: string, message: string): string {
    fs.writeFileSync(path.join(repo, file), text);
    git(repo, "add", ".");
    git(repo, "commit", "-q", "-m", message);
    return git(repo, "rev-parse", "HEAD");
}

async function deployInputs(appPath: string, appRevision = "HEAD", extra: Record<string, any> = {}) {
    const r = await runUnderMocks(program, {
        config: { provider: "existing", host: "198.51.100.4", sshPublicKey: PUB, sshPrivateKey: PRIV, appPath, appRevision, ...extra },
        secretKeys: ["sshPrivateKey", "appEnv"],
    });
    return { rotate: r.byName("sample-app-live-deploy-rotate"), upload: r.byName("sample-app-live-deploy-upload") };
}

describe("Deploy", () => {
    it("triggers exactly when the app's commit changes", async () => {
        const { repo, app } = makeRepo();
        const first = await deployInputs(app);
        const c1 = git(repo, "rev-parse", "HEAD");
        const restartKey = first.rotate.inputs.triggers[1];
        assert.deepStrictEqual(first.rotate.inputs.triggers, [c1, restartKey]);
        assert.deepStrictEqual((await deployInputs(app)).rotate.inputs.triggers, [c1, restartKey], "no new commit: same trigger");
        commitFile(repo, "README", "changed outside the app\n", "docs");
        assert.deepStrictEqual((await deployInputs(app)).rotate.inputs.triggers, [c1, restartKey], "a commit that does not touch the app does not deploy");
        const c3 = commitFile(repo, "app/project.clj", "(defproject demo \"0.2.0\")\n", "app change");
        const third = await deployInputs(app);
        assert.deepStrictEqual(third.rotate.inputs.triggers, [c3, restartKey]);
        assert.deepStrictEqual(third.upload.inputs.triggers, [c3, "198.51.100.4"]);
        assert.deepStrictEqual((await deployInputs(app, c1)).rotate.inputs.triggers, [c1, restartKey], "appRevision set to an older commit rolls back");
    });

    it("uploads again to a new server with the same commit: the server's address is a trigger of the upload", async () => {
        // CopyToRemote copies only when its source or remotePath changed; without the address a
        // replaced server never got the archive, and the rotation (re-run for the new connection) failed.
        const { repo, app } = makeRepo();
        const c = git(repo, "rev-parse", "HEAD");
        const before = await deployInputs(app);
        const moved = await deployInputs(app, "HEAD", { host: "198.51.100.5" });
        assert.strictEqual(await moved.upload.inputs.source.path, await before.upload.inputs.source.path, "same commit, same file");
        assert.strictEqual(moved.upload.inputs.remotePath, before.upload.inputs.remotePath);
        assert.deepStrictEqual(before.upload.inputs.triggers, [c, "198.51.100.4"]);
        assert.deepStrictEqual(moved.upload.inputs.triggers, [c, "198.51.100.5"]);
        assert.strictEqual(moved.upload.inputs.connection.host, "198.51.100.5", "the trigger is the address the upload connects to");
    });

    it("runs the rotation as the deploy user with the uploaded archive, and carries no secret", async () => {
        const { repo, app } = makeRepo();
        const { rotate, upload } = await deployInputs(app);
        const c = git(repo, "rev-parse", "HEAD");
        assert.strictEqual(rotate.inputs.connection.user, "deploy");
        assert.strictEqual(upload.inputs.remotePath, `/srv/sample-app/live/uploads/${c}.tar`);
        assert.strictEqual(rotate.inputs.create,
            `/srv/sample-app/live/bin/deploy --archive /srv/sample-app/live/uploads/${c}.tar --revision ${c} --config-commit ${c} && find /srv/sample-app/live/uploads -mindepth 1 -maxdepth 1 -type f -delete`);
        assert.ok(!rotate.inputs.create.includes("PRIVATE KEY"));
        assert.ok(rotate.secretInputs.includes("connection"));
        assert.ok(!rotate.secretInputs.includes("create"), "the command itself is not secret");
        assert.deepStrictEqual(rotate.dependsOn, [upload.urn]);
    });

    it("build: local runs lein without Pulumi's environment (the decrypted config, the passphrase, the token) or the cloud tokens", () => {
        const { app } = makeRepo();
        const rev = resolveAppRevision(app, "HEAD");
        const dir = tempDir("lein");
        // A stand-in lein: its "jar" is the environment it was given.
        const lein = path.join(dir, "lein");
        fs.writeFileSync(lein, "#!/bin/sh\nmkdir -p target && env > target/demo-standalone.jar\n", { mode: 0o755 });
        const saved = { ...process.env };
        // The README has users export a cloud token for the providers: the build must not get it.
        Object.assign(process.env, { PULUMI_CONFIG: '{"clj-zero-downtime:tlsKey":"secret-key-body"}', PULUMI_CONFIG_PASSPHRASE: "pass-phrase",
            PULUMI_CONFIG_PASSPHRASE_FILE: "/pass-phrase-file", PULUMI_CONFIG_SECRET_KEYS: "[]", PULUMI_ACCESS_TOKEN: "pul-token",
            DIGITALOCEAN_TOKEN: "do-token", DIGITALOCEAN_ACCESS_TOKEN: "do-access-token", HCLOUD_TOKEN: "hc-token",
            LEIN_SNAPSHOTS_IN_RELEASE: "kept", AWS_ACCESS_KEY_ID: "maven-s3-id" });
        try {
            const jar = buildJarLocally(rev, { cacheDir: dir, lein });
            const seen = fs.readFileSync(jar.path, "utf8");
            for (const secret of ["secret-key-body", "pass-phrase", "pul-token", "PULUMI_CONFIG", "do-token", "do-access-token", "hc-token",
                "DIGITALOCEAN_", "HCLOUD_"]) {
                assert.ok(!seen.includes(secret), `lein saw ${secret}`);
            }
            assert.match(seen, /^LEIN_SNAPSHOTS_IN_RELEASE=kept$/m, "the rest of the environment is passed on");
            assert.match(seen, /^AWS_ACCESS_KEY_ID=maven-s3-id$/m, "a build may need AWS_* (an S3 Maven repository)");
            assert.match(seen, /^PATH=/m);
        } finally {
            for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
            Object.assign(process.env, saved);
        }
    });

    it("ships exactly the committed tree of the app: no target/, .git or uncommitted files", () => {
        const { repo, app } = makeRepo();
        fs.mkdirSync(path.join(app, "target"));
        fs.writeFileSync(path.join(app, "target", "old.jar"), "x");
        fs.writeFileSync(path.join(repo, ".gitignore"), "target/\n");
        commitFile(repo, "app/src.clj", "(ns demo)\n", "src");
        fs.writeFileSync(path.join(app, "project.clj"), "(defproject demo \"dirty\")\n");
        fs.writeFileSync(path.join(app, "untracked.clj"), "x\n");
        const rev = resolveAppRevision(app, "HEAD");
        assert.deepStrictEqual(rev.uncommitted.sort(), ["app/project.clj", "app/untracked.clj"], "the dirty and the untracked file are reported");
        const tar = archiveAppRevision(rev, tempDir("archive"));
        const listing = execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).split("\n").filter(Boolean).sort();
        assert.deepStrictEqual(listing, ["project.clj", "src.clj"]);
        const content = execFileSync("tar", ["-xOf", tar, "project.clj"], { encoding: "utf8" });
        assert.strictEqual(content, "(defproject demo \"0.1.0\")\n", "the committed content, not the working copy");
        // Same commit, same bytes, also a second later: Pulumi sees no change to upload.
        execFileSync("sleep", ["1.1"]);
        const again = archiveAppRevision(rev, tempDir("archive"));
        assert.ok(fs.readFileSync(tar).equals(fs.readFileSync(again)), "the archive depends on the commit only");
        const listing2 = execFileSync("tar", ["-tvf", again], { encoding: "utf8" });
        const commitDate = git(repo, "show", "-s", "--format=%cd", "--date=format:%Y-%m-%d %H:%M", "HEAD");
        assert.ok(listing2.split("\n").filter(Boolean).every(l => l.includes(commitDate)), `entries carry the commit time ${commitDate}:\n${listing2}`);
    });

    it("caches archives and jars only in a directory of this user alone: one another user could write to is refused, not used", () => {
        const tmp = tempDir("cache-home");
        const saved = process.env.XDG_CACHE_HOME;
        process.env.XDG_CACHE_HOME = tmp;
        try {
            const dir = privateCacheDir("jars");
            const base = path.dirname(dir);
            assert.strictEqual(base, path.join(tmp, "clj-zero-downtime"));
            assert.strictEqual(fs.statSync(base).mode & 0o777, 0o700);
            fs.chmodSync(base, 0o777);
            assert.throws(() => privateCacheDir(), (e: Error) => e instanceof AppSourceError &&
                /the cache .* is not a directory of this user alone \(owner uid \d+, mode 777\): a file in it would be deployed as it is; remove it \(it is made again\), or run chmod 700/.test(e.message));
            fs.chmodSync(base, 0o700);
            // Giving the directory to another user takes root; the unit tests run as root (README, Tests).
            assert.strictEqual(process.getuid!(), 0, "this test needs root (it chowns the cache to another user): run the unit tests as root");
            fs.chownSync(base, 65534, 65534); // nobody's, as another user could have made it first
            assert.throws(() => privateCacheDir(), /owner uid 65534/);
        } finally {
            if (saved === undefined) delete process.env.XDG_CACHE_HOME;
            else process.env.XDG_CACHE_HOME = saved;
        }
    });

    it("keeps the newest CACHE_KEEP files of a cache directory (it lives in the home directory), and its subdirectories", () => {
        const dir = tempDir("prune");
        fs.mkdirSync(path.join(dir, "jars"));
        const now = Date.now() / 1000;
        for (let i = 0; i < CACHE_KEEP + 3; i++) {
            const f = path.join(dir, `c${i}.tar`);
            fs.writeFileSync(f, "x");
            fs.utimesSync(f, now - i * 60, now - i * 60); // c0 is the newest
        }
        pruneCache(dir);
        const left = fs.readdirSync(dir).sort();
        assert.deepStrictEqual(left, ["jars", ...Array.from({ length: CACHE_KEEP }, (_, i) => `c${i}.tar`)].sort());
    });

    it("fails the preview clearly for an appPath that is not a git repository or a revision that does not exist", async () => {
        const plain = tempDir("not-git");
        assert.throws(() => resolveAppRevision(plain, "HEAD"), (e: Error) =>
            e instanceof AppSourceError && /appPath = ".*" is not inside a git repository/.test(e.message) && /git init/.test(e.message));
        assert.throws(() => resolveAppRevision(path.join(plain, "missing"), "HEAD"), /is not a directory/);
        const { app } = makeRepo();
        assert.throws(() => resolveAppRevision(app, "v9.9.9"), /appRevision = "v9.9.9" does not exist/);
        await assert.rejects(deployInputs(plain), /is not inside a git repository/);
    });

    it("reads the live release and slot from the rotation's last line", () => {
        assert.deepStrictEqual(parseDeployed("==> building\n==> deployed abc123 to live (slot 2)\n"), { release: "abc123", slot: 2 });
        assert.strictEqual(parseDeployed("deploy of abc to live failed: boom\n"), null);
        const l = layout("shop", "beta", { proxy: 4000, slot1: 4001, slot2: 4002, nrepl1: 4101, nrepl2: 4102 });
        assert.strictEqual(rotationCommand(l, { release: "abc", kind: "archive" }, "abc").upload, "/srv/shop/beta/uploads/abc.tar");
        assert.strictEqual(rotationCommand(l, { release: "abc-0123", kind: "jar" }, "abc").create,
            "/srv/shop/beta/bin/deploy --jar /srv/shop/beta/uploads/abc-0123.jar --revision abc-0123 --config-commit abc" +
            " && find /srv/shop/beta/uploads -mindepth 1 -maxdepth 1 -type f -delete");
    });

    it("re-runs the rotation (same release, no new upload) when the app's environment or JVM options change; the key is secret", async () => {
        const { app } = makeRepo();
        const base = await deployInputs(app, "HEAD", { appEnv: { TOKEN: "one" } });
        const changedSecret = await deployInputs(app, "HEAD", { appEnv: { TOKEN: "two" } });
        const changedJvm = await deployInputs(app, "HEAD", { appEnv: { TOKEN: "one" }, javaOpts: "-Xmx256m" });
        assert.notDeepStrictEqual(changedSecret.rotate.inputs.triggers[1], base.rotate.inputs.triggers[1]);
        assert.notDeepStrictEqual(changedJvm.rotate.inputs.triggers[1], base.rotate.inputs.triggers[1]);
        assert.deepStrictEqual(changedSecret.upload.inputs.triggers, base.upload.inputs.triggers, "nothing new to upload");
        assert.ok(base.rotate.secretInputs.includes("triggers"), "the key derives from secrets, so it is one");
        assert.ok(!JSON.stringify(base.rotate.inputs).includes("one\""), "the value itself is not in the inputs");
    });

    it("build: local builds the jar on this machine and ships only the jar, named by commit and jar hash", async () => {
        const { repo, app } = makeRepo();
        // A stand-in for lein on this machine: writes a standalone jar like `lein uberjar` does.
        const bin = tempDir("fake-lein");
        fs.writeFileSync(path.join(bin, "lein"), "#!/bin/sh\nmkdir -p target/uberjar && printf 'PK\\003\\004jar-of-%s' \"$(cat project.clj)\" > target/uberjar/demo-0.1.0-standalone.jar\n", { mode: 0o755 });
        const oldPath = process.env.PATH;
        process.env.PATH = `${bin}:${oldPath}`;
        try {
            const { rotate, upload } = await deployInputs(app, "HEAD", { build: "local" });
            const c = git(repo, "rev-parse", "HEAD");
            const release = rotate.inputs.triggers[0] as string;
            assert.match(release, new RegExp(`^${c}-[0-9a-f]{12}$`));
            assert.match(rotate.inputs.create, new RegExp(`--jar /srv/sample-app/live/uploads/${release}\\.jar --revision ${release} --config-commit ${c} `));
            const shipped = fs.readFileSync(await (upload.inputs.source as any).path, "utf8");
            assert.strictEqual(shipped, 'PK\u0003\u0004jar-of-(defproject demo "0.1.0")');
        } finally {
            process.env.PATH = oldPath;
        }
    });
});
