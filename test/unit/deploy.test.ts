// The Deploy resource: its trigger is the commit of the app, it ships exactly
// the committed tree, and bad app sources fail before anything changes.
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { AppSourceError, archiveAppRevision, resolveAppRevision } from "../../infra/app-source";
import { parseLiveSlot, rotationCommand } from "../../infra/deploy";
import { layout } from "../../infra/names";
import { program } from "../../infra/program";
import { runUnderMocks } from "../support/pulumi-mocks";

const keys = fs.mkdtempSync(path.join(os.tmpdir(), "czd-deploy-keys-"));
execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(keys, "id")]);
const PUB = fs.readFileSync(path.join(keys, "id.pub"), "utf8").trim();
const PRIV = fs.readFileSync(path.join(keys, "id"), "utf8");

const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.com" };
function git(cwd: string, ...args: string[]): string {
    return execFileSync("git", args, { cwd, env: GIT_ENV, encoding: "utf8" }).trim();
}

/** A repository with the app in `app/` and something else beside it. */
function makeRepo(): { repo: string; app: string } {
    const repo = fs.mkdtempSync(path.join(os.tmpdir(), "czd-deploy-repo-"));
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

async function deployInputs(appPath: string, appRevision = "HEAD") {
    const r = await runUnderMocks(program, {
        config: { provider: "existing", host: "198.51.100.4", sshPublicKey: PUB, sshPrivateKey: PRIV, appPath, appRevision },
        secretKeys: ["sshPrivateKey"],
    });
    return { rotate: r.byName("sample-app-live-deploy-rotate"), upload: r.byName("sample-app-live-deploy-upload") };
}

describe("Deploy", () => {
    it("triggers exactly when the app's commit changes", async () => {
        const { repo, app } = makeRepo();
        const first = await deployInputs(app);
        const c1 = git(repo, "rev-parse", "HEAD");
        assert.deepStrictEqual(first.rotate.inputs.triggers, [c1]);
        assert.deepStrictEqual((await deployInputs(app)).rotate.inputs.triggers, [c1], "no new commit: same trigger");
        commitFile(repo, "README", "changed outside the app\n", "docs");
        assert.deepStrictEqual((await deployInputs(app)).rotate.inputs.triggers, [c1], "a commit that does not touch the app does not deploy");
        const c3 = commitFile(repo, "app/project.clj", "(defproject demo \"0.2.0\")\n", "app change");
        const third = await deployInputs(app);
        assert.deepStrictEqual(third.rotate.inputs.triggers, [c3]);
        assert.deepStrictEqual(third.upload.inputs.triggers, [c3]);
        assert.deepStrictEqual((await deployInputs(app, c1)).rotate.inputs.triggers, [c1], "appRevision set to an older commit rolls back");
    });

    it("runs the rotation as the deploy user with the uploaded archive, and carries no secret", async () => {
        const { repo, app } = makeRepo();
        const { rotate, upload } = await deployInputs(app);
        const c = git(repo, "rev-parse", "HEAD");
        assert.strictEqual(rotate.inputs.connection.user, "deploy");
        assert.strictEqual(upload.inputs.remotePath, `/srv/sample-app/live/uploads/${c}.tar`);
        assert.strictEqual(rotate.inputs.create,
            `/srv/sample-app/live/bin/deploy --archive /srv/sample-app/live/uploads/${c}.tar --revision ${c} && rm -f /srv/sample-app/live/uploads/${c}.tar`);
        assert.ok(!rotate.inputs.create.includes("PRIVATE KEY"));
        assert.ok(rotate.secretInputs.includes("connection"));
        assert.ok(!rotate.secretInputs.includes("create"), "the command itself is not secret");
        assert.deepStrictEqual(rotate.dependsOn, [upload.urn]);
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
        const tar = archiveAppRevision(rev, fs.mkdtempSync(path.join(os.tmpdir(), "czd-archive-")));
        const listing = execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).split("\n").filter(Boolean).sort();
        assert.deepStrictEqual(listing, ["project.clj", "src.clj"]);
        const content = execFileSync("tar", ["-xOf", tar, "project.clj"], { encoding: "utf8" });
        assert.strictEqual(content, "(defproject demo \"0.1.0\")\n", "the committed content, not the working copy");
        // Same commit, same bytes: Pulumi sees no change to upload.
        const again = archiveAppRevision(rev, fs.mkdtempSync(path.join(os.tmpdir(), "czd-archive-")));
        assert.ok(fs.readFileSync(tar).equals(fs.readFileSync(again)));
    });

    it("fails the preview clearly for an appPath that is not a git repository or a revision that does not exist", async () => {
        const plain = fs.mkdtempSync(path.join(os.tmpdir(), "czd-not-git-"));
        assert.throws(() => resolveAppRevision(plain, "HEAD"), (e: Error) =>
            e instanceof AppSourceError && /appPath = ".*" is not inside a git repository/.test(e.message) && /git init/.test(e.message));
        assert.throws(() => resolveAppRevision(path.join(plain, "missing"), "HEAD"), /is not a directory/);
        const { app } = makeRepo();
        assert.throws(() => resolveAppRevision(app, "v9.9.9"), /appRevision = "v9.9.9" does not exist/);
        await assert.rejects(deployInputs(plain), /is not inside a git repository/);
    });

    it("reads the live slot from the rotation's last line", () => {
        assert.strictEqual(parseLiveSlot("==> building\n==> deployed abc123 to live (slot 2)\n"), 2);
        assert.strictEqual(parseLiveSlot("deploy of abc to live failed: boom\n"), undefined);
        const l = layout("shop", "beta", { proxy: 4000, slot1: 4001, slot2: 4002, nrepl1: 4101, nrepl2: 4102 });
        assert.strictEqual(rotationCommand(l, "abc").archive, "/srv/shop/beta/uploads/abc.tar");
    });
});
