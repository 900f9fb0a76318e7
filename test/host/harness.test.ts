// Real SSH round trip for the harness: a throwaway sshd on 127.0.0.1, a fake
// program whose Commands write files under a temp dir on "the remote" (this
// machine), and checks that create/stdin/env/update/replace/delete/copy really
// execute and that a second apply executes nothing. Needs root (sshd, root login).
import * as assert from "assert";
import { ChildProcess, execFileSync, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";

import { ApplyError, ApplyResult, apply, collect, destroy } from "./harness";
import { tempDir } from "../support/tmp";

function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.listen(0, "127.0.0.1", () => {
            const port = (s.address() as net.AddressInfo).port;
            s.close(() => resolve(port));
        });
        s.on("error", reject);
    });
}

async function waitForPort(port: number, ms = 10000): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
        const ok = await new Promise<boolean>((resolve) => {
            const c = net.connect(port, "127.0.0.1", () => {
                c.destroy();
                resolve(true);
            });
            c.on("error", () => resolve(false));
        });
        if (ok) return;
        await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`sshd did not listen on ${port}`);
}

const ENV_VALUE = `it's "quoted" $HOME \\ back  two-spaces`;

/** The fake program: everything under `dir` on the remote. */
function program() {
    const cfg = new pulumi.Config();
    const dir = cfg.require("dir");
    const connection = { host: "127.0.0.1", port: cfg.requireNumber("port"), user: "root", privateKey: cfg.requireSecret("key") };
    const base = new command.remote.Command("base", {
        connection,
        create: `mkdir -p ${dir}/work && echo base >> ${dir}/base.log`,
        delete: `rm -rf ${dir}/work`,
    });
    const secretFile = new command.remote.Command(
        "secret-file",
        { connection, create: `umask 077; cat > ${dir}/work/secret.txt`, stdin: cfg.requireSecret("secret") },
        { dependsOn: [base] },
    );
    new command.remote.Command(
        "env",
        { connection, create: `printf '%s' "$CZD_GREETING" > ${dir}/work/env.txt`, environment: { CZD_GREETING: ENV_VALUE } },
        { dependsOn: [base] },
    );
    new command.remote.Command(
        "versioned",
        {
            connection,
            create: `echo create-${cfg.require("msg")} >> ${dir}/versioned.log`,
            update: `echo "update-${cfg.require("msg")} prev=$PULUMI_COMMAND_STDOUT" >> ${dir}/versioned.log; echo updated`,
        },
        { dependsOn: [base] },
    );
    new command.remote.Command(
        "replaced",
        {
            connection,
            create: `echo create-${cfg.require("rev")} >> ${dir}/replaced.log`,
            delete: `echo delete >> ${dir}/replaced.log`,
            triggers: [cfg.require("rev")],
        },
        { dependsOn: [secretFile] },
    );
    new command.remote.CopyToRemote(
        "copy-file",
        { connection, source: new pulumi.asset.FileAsset(cfg.require("localFile")), remotePath: `${dir}/work/copied.txt` },
        { dependsOn: [base] },
    );
    new command.remote.CopyToRemote(
        "copy-dir",
        { connection, source: new pulumi.asset.FileArchive(cfg.require("localDir")), remotePath: `${dir}/work/tree` },
        { dependsOn: [base] },
    );
    if (cfg.getBoolean("withExtra") !== false) {
        new command.remote.Command(
            "extra",
            { connection, create: `touch ${dir}/extra`, delete: `rm -f ${dir}/extra` },
            { dependsOn: [base] },
        );
    }
    if (cfg.getBoolean("withRefusedEnv")) {
        new command.remote.Command("refused-env", { connection, create: "true", environment: { NOT_ACCEPTED: "x" } });
    }
    if (cfg.getBoolean("withFailing")) {
        new command.remote.Command("failing", { connection, create: "echo to-stdout; echo to-stderr >&2; exit 3" });
    }
    return {};
}

describe("harness over real ssh", function () {
    let tmp: string;
    let remote: string;
    let port: number;
    let sshd: ChildProcess | undefined;
    let key: string;
    let statePath: string;
    let localFile: string;
    let localDir: string;
    const logs: string[] = [];
    const log = (l: string) => {
        logs.push(l);
        if (process.env.HARNESS_VERBOSE) console.log(l);
    };

    before(async function () {
        tmp = tempDir("harness-host");
        remote = path.join(tmp, "remote");
        fs.mkdirSync(remote);
        execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(tmp, "host_key")]);
        execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "harness-test", "-f", path.join(tmp, "client_key")]);
        fs.copyFileSync(path.join(tmp, "client_key.pub"), path.join(tmp, "authorized_keys"));
        key = fs.readFileSync(path.join(tmp, "client_key"), "utf8");
        port = await freePort();
        fs.writeFileSync(
            path.join(tmp, "sshd_config"),
            [
                `Port ${port}`,
                "ListenAddress 127.0.0.1",
                `HostKey ${path.join(tmp, "host_key")}`,
                `PidFile ${path.join(tmp, "sshd.pid")}`,
                `AuthorizedKeysFile ${path.join(tmp, "authorized_keys")}`,
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "AcceptEnv LANG LC_* CZD_*",
                "Subsystem sftp internal-sftp",
                "",
            ].join("\n"),
        );
        fs.mkdirSync("/run/sshd", { recursive: true }); // privilege separation dir
        sshd = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", path.join(tmp, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
        let sshdErr = "";
        sshd.stderr!.on("data", (b) => (sshdErr += b));
        sshd.on("exit", (code) => {
            if (code) console.error(`sshd exited ${code}: ${sshdErr}`);
        });
        await waitForPort(port);
        statePath = path.join(tmp, "state.json");
        localFile = path.join(tmp, "local.txt");
        fs.writeFileSync(localFile, "v1\n");
        localDir = path.join(tmp, "tree");
        fs.mkdirSync(path.join(localDir, "sub"), { recursive: true });
        fs.writeFileSync(path.join(localDir, "a.txt"), "A\n");
        fs.writeFileSync(path.join(localDir, "sub", "b.txt"), "B\n");
    });

    after(() => {
        if (sshd?.pid) process.kill(sshd.pid, "SIGTERM");
        if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    });

    const cfg = (over: Record<string, string> = {}) => ({
        dir: remote,
        port: String(port),
        key,
        secret: "s3cret-value",
        msg: "one",
        rev: "1",
        localFile,
        localDir,
        ...over,
    });
    const up = async (over: Record<string, string> = {}): Promise<ApplyResult> => {
        const rs = await collect({ program, config: cfg(over), secretKeys: ["key", "secret"] });
        return apply(rs, { statePath, log });
    };
    const read = (p: string) => fs.readFileSync(path.join(remote, p), "utf8");
    const actions = (r: ApplyResult) => Object.fromEntries(r.resources.filter((x) => x.action !== "same" && !x.replacedDelete).map((x) => [x.name, x.action]));

    it("first apply creates everything over ssh", async () => {
        const r = await up();
        assert.ok(r.ok);
        assert.strictEqual(r.summary.create, 8, JSON.stringify(actions(r)));
        assert.strictEqual(read("base.log"), "base\n");
        assert.strictEqual(read("work/secret.txt"), "s3cret-value");
        assert.strictEqual(fs.statSync(path.join(remote, "work/secret.txt")).mode & 0o777, 0o600);
        assert.strictEqual(read("work/env.txt"), ENV_VALUE);
        assert.strictEqual(read("versioned.log"), "create-one\n");
        assert.strictEqual(read("replaced.log"), "create-1\n");
        assert.strictEqual(read("work/copied.txt"), "v1\n");
        // FileArchive of a dir without trailing slash → remotePath/<basename>/...
        assert.strictEqual(read("work/tree/tree/a.txt"), "A\n");
        assert.strictEqual(read("work/tree/tree/sub/b.txt"), "B\n");
        assert.ok(fs.existsSync(path.join(remote, "extra")));
        assert.ok(logs.some((l) => /^\[harness\] create base \(\d+\.\ds\)$/.test(l)), logs.join("\n"));
        const st = fs.readFileSync(statePath, "utf8");
        assert.ok(!st.includes("s3cret-value"));
        assert.ok(!st.includes("PRIVATE KEY"));
        assert.ok(!logs.join("\n").includes("s3cret-value"));
    });

    it("second apply with the same inputs executes nothing", async () => {
        const r = await up();
        assert.strictEqual(r.executed.length, 0, JSON.stringify(actions(r)));
        assert.strictEqual(read("base.log"), "base\n");
    });

    it("changed input → update command (with previous stdout); changed trigger → create then old delete", async () => {
        fs.writeFileSync(localFile, "v2\n");
        const r = await up({ msg: "two", rev: "2" });
        assert.deepStrictEqual(actions(r), { versioned: "update", replaced: "replace", "copy-file": "update" });
        // PULUMI_COMMAND_STDOUT is sent via SetEnv; this sshd does not AcceptEnv it, so (as with the
        // provider, which only warns) it is empty — the update itself still runs.
        assert.strictEqual(read("versioned.log"), "create-one\nupdate-two prev=\n");
        assert.strictEqual(read("replaced.log"), "create-1\ncreate-2\ndelete\n");
        assert.strictEqual(read("work/copied.txt"), "v2\n");
        const again = await up({ msg: "two", rev: "2" });
        assert.strictEqual(again.executed.length, 0, JSON.stringify(actions(again)));
    });

    it("a resource removed from the program is deleted", async () => {
        const r = await up({ msg: "two", rev: "2", withExtra: "false" });
        assert.deepStrictEqual(actions(r), { extra: "delete" });
        assert.ok(!fs.existsSync(path.join(remote, "extra")));
        const again = await up({ msg: "two", rev: "2", withExtra: "false" });
        assert.strictEqual(again.executed.length, 0);
    });

    it("environment refused by sshd fails like the provider; a failing command shows its output and is not recorded", async () => {
        await assert.rejects(up({ msg: "two", rev: "2", withExtra: "false", withRefusedEnv: "true" }), (e: any) => {
            assert.ok(e instanceof ApplyError);
            assert.match(e.message, /NOT_ACCEPTED/);
            return true;
        });
        logs.length = 0;
        await assert.rejects(up({ msg: "two", rev: "2", withExtra: "false", withFailing: "true" }), (e: any) => {
            assert.match(e.message, /status 3/);
            assert.match(e.message, /to-stdout/);
            assert.match(e.message, /to-stderr/);
            return true;
        });
        assert.ok(logs.some((l) => /FAILED create failing/.test(l)), logs.join("\n"));
        assert.ok(!JSON.parse(fs.readFileSync(statePath, "utf8")).resources["urn:pulumi:test::clj-zero-downtime::command:remote:Command::failing"]);
    });

    it("removing everything runs every delete", async () => {
        const rs = await collect({ program, config: cfg(), secretKeys: ["key", "secret"] });
        const r = await destroy(rs, { statePath, log });
        assert.ok(r.ok);
        assert.ok(!fs.existsSync(path.join(remote, "work")));
        assert.strictEqual(read("replaced.log"), "create-1\ncreate-2\ndelete\ndelete\n");
        assert.deepStrictEqual(JSON.parse(fs.readFileSync(statePath, "utf8")).resources, {});
    });
});
