import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";

import {
    ApplyError,
    COMMAND_TYPE,
    COPY_TYPE,
    CommandInputs,
    CopyInputs,
    CopyRequest,
    Executor,
    RemoteResource,
    RunRequest,
    RunResult,
    apply,
    collect,
    collectAll,
    loadState,
} from "../host/harness";
import { tempDir } from "../support/tmp";

// ------------------------------------------------------------ fakes

class FakeExecutor implements Executor {
    runs: RunRequest[] = [];
    copies: CopyRequest[] = [];
    fail = new Set<string>(); // commands that exit 1
    run(req: RunRequest): Promise<RunResult> {
        this.runs.push(req);
        if (this.fail.has(req.command)) return Promise.resolve({ code: 1, stdout: "", stderr: "boom\n" });
        return Promise.resolve({ code: 0, stdout: `out:${req.command}\n`, stderr: "" });
    }
    copy(req: CopyRequest): Promise<void> {
        this.copies.push(req);
        return Promise.resolve();
    }
    commands(): string[] {
        return this.runs.map((r) => r.command);
    }
    reset(): void {
        this.runs = [];
        this.copies = [];
    }
}

const conn = { host: "192.0.2.1", port: 22, user: "root", privateKey: "KEY-MATERIAL-123" };

function cmd(name: string, inputs: Partial<CommandInputs>, extra: Partial<RemoteResource> = {}): RemoteResource {
    return {
        type: COMMAND_TYPE,
        name,
        urn: `urn:pulumi:test::p::command:remote:Command::${name}`,
        parent: "",
        parents: [],
        inputs: { connection: conn, ...inputs } as CommandInputs,
        secrets: ["connection"],
        secretPaths: ["connection"],
        unknowns: [],
        dependsOn: [],
        allDependencies: [],
        propertyDependencies: {},
        explicitDependsOn: [],
        order: 0,
        options: { deleteBeforeReplace: false, replaceOnChanges: [], ignoreChanges: [], retainOnDelete: false, protect: false },
        ...extra,
    };
}

function urnOf(name: string): string {
    return `urn:pulumi:test::p::command:remote:Command::${name}`;
}

describe("harness state semantics (fake executor)", () => {
    let dir: string;
    let statePath: string;
    let ex: FakeExecutor;
    const run = (rs: RemoteResource[], extra: object = {}) => apply(rs, { statePath, executor: ex, ...extra });

    beforeEach(() => {
        dir = tempDir("harness-unit");
        statePath = path.join(dir, "state.json");
        ex = new FakeExecutor();
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it("creates in dependency order, then same inputs → nothing runs", async () => {
        const a = cmd("a", { create: "A" }, { order: 1 });
        const b = cmd("b", { create: "B" }, { order: 0, dependsOn: [urnOf("a")] });
        const r1 = await run([b, a]);
        assert.deepStrictEqual(ex.commands(), ["A", "B"]);
        assert.deepStrictEqual(r1.resources.map((r) => [r.name, r.action]), [["a", "create"], ["b", "create"]]);
        assert.strictEqual(r1.resources[0].stdout, "out:A"); // trailing newline trimmed like the provider
        ex.reset();
        const r2 = await run([a, b]);
        assert.deepStrictEqual(ex.commands(), []);
        assert.strictEqual(r2.executed.length, 0);
        assert.deepStrictEqual(r2.summary, { create: 0, update: 0, replace: 0, delete: 0, same: 2 });
    });

    it("triggers change → replace: create runs, old delete runs after (create-before-delete)", async () => {
        await run([cmd("a", { create: "C1", delete: "D1", triggers: [1] }), cmd("z", { create: "Z" }, { order: 5 })]);
        ex.reset();
        const r = await run([cmd("a", { create: "C2", delete: "D2", triggers: [2] }), cmd("z", { create: "Z" }, { order: 5 })]);
        assert.deepStrictEqual(ex.commands(), ["C2", "D1"]);
        assert.strictEqual(r.resources.find((x) => x.name === "a" && x.action === "replace")!.ran, "create");
        // delete of the replaced resource gets its previous stdout
        assert.strictEqual(ex.runs[1].softEnvironment!.PULUMI_COMMAND_STDOUT, "out:C1");
        const st = loadState(statePath);
        assert.strictEqual(st.pendingDeletes.length, 0);
        assert.strictEqual(st.resources[urnOf("a")].delete, "D2");
    });

    it("deleteBeforeReplace runs the old delete first", async () => {
        const opts = { deleteBeforeReplace: true, replaceOnChanges: [], ignoreChanges: [], retainOnDelete: false, protect: false };
        await run([cmd("a", { create: "C1", delete: "D1", triggers: [1] }, { options: opts })]);
        ex.reset();
        await run([cmd("a", { create: "C2", delete: "D2", triggers: [2] }, { options: opts })]);
        assert.deepStrictEqual(ex.commands(), ["D1", "C2"]);
    });

    it("other input change → update if set, else create; update sees previous stdout", async () => {
        await run([cmd("u", { create: "C", update: "U", stdin: "x" }), cmd("c", { create: "C-only", stdin: "x" })]);
        ex.reset();
        const r = await run([cmd("u", { create: "C", update: "U", stdin: "y" }), cmd("c", { create: "C-only", stdin: "y" })]);
        assert.deepStrictEqual(ex.commands(), ["U", "C-only"]);
        assert.deepStrictEqual(r.resources.map((x) => [x.name, x.action, x.ran]), [["u", "update", "update"], ["c", "update", "create"]]);
        assert.strictEqual(ex.runs[0].softEnvironment!.PULUMI_COMMAND_STDOUT, "out:C");
        assert.strictEqual(ex.runs[0].stdin, "y");
        // the update's output becomes the recorded stdout
        assert.strictEqual(loadState(statePath).resources[urnOf("u")].stdout, "out:U");
        ex.reset();
        await run([cmd("u", { create: "C", update: "U", stdin: "y" }), cmd("c", { create: "C-only", stdin: "y" })]);
        assert.deepStrictEqual(ex.commands(), []);
    });

    it("a failed create is not recorded, dependents are skipped, next run retries", async () => {
        ex.fail.add("A");
        const a = cmd("a", { create: "A" });
        const b = cmd("b", { create: "B" }, { dependsOn: [urnOf("a")], order: 1 });
        const logs: string[] = [];
        await assert.rejects(run([a, b], { log: (l: string) => logs.push(l) }), (e: any) => {
            assert.ok(e instanceof ApplyError);
            assert.strictEqual(e.result.ok, false);
            assert.strictEqual(e.result.resources.find((r: any) => r.name === "b")!.status, "skipped");
            return true;
        });
        assert.deepStrictEqual(ex.commands(), ["A"]);
        assert.ok(logs.some((l) => /FAILED create a/.test(l)), logs.join("\n"));
        assert.ok(logs.some((l) => /boom/.test(l)), logs.join("\n"));
        assert.strictEqual(loadState(statePath).resources[urnOf("a")], undefined);
        ex.fail.clear();
        ex.reset();
        await run([a, b]);
        assert.deepStrictEqual(ex.commands(), ["A", "B"]);
    });

    it("a failed update keeps the old state (retried next run)", async () => {
        await run([cmd("a", { create: "A1" })]);
        ex.fail.add("A2");
        await assert.rejects(run([cmd("a", { create: "A2" })]));
        ex.fail.clear();
        ex.reset();
        await run([cmd("a", { create: "A2" })]);
        assert.deepStrictEqual(ex.commands(), ["A2"]);
    });

    it("removed from the program → its delete runs (dependents first) and it leaves the state", async () => {
        const a = cmd("a", { create: "A", delete: "DA" });
        const b = cmd("b", { create: "B", delete: "DB" }, { dependsOn: [urnOf("a")], order: 1 });
        const c = cmd("c", { create: "C" }, { order: 2 });
        await run([a, b, c]);
        ex.reset();
        const r = await run([c]);
        assert.deepStrictEqual(ex.commands(), ["DB", "DA"]);
        assert.deepStrictEqual(ex.runs[0].connection.privateKey, conn.privateKey); // credentials recovered by hash
        assert.deepStrictEqual(r.summary.delete, 2);
        assert.deepStrictEqual(Object.keys(loadState(statePath).resources), [urnOf("c")]);
    });

    it("dryRun reports actions without running or writing state", async () => {
        const r = await run([cmd("a", { create: "A" })], { dryRun: true });
        assert.deepStrictEqual(r.resources.map((x) => [x.name, x.action, x.status]), [["a", "create", "planned"]]);
        assert.deepStrictEqual(ex.commands(), []);
        assert.ok(!fs.existsSync(statePath));
    });

    it("secret inputs are stored only as hashes; logs are redacted", async () => {
        const a = cmd("a", { create: "A", stdin: "TOPSECRET-STDIN", environment: { TOKEN: "TOPSECRET-ENV", PLAIN: "p" } }, {
            secrets: ["connection", "environment", "stdin"],
            secretPaths: ["connection", "stdin", "environment.TOKEN"],
        });
        ex.fail.add("A");
        const logs: string[] = [];
        await assert.rejects(run([a], { log: (l: string) => logs.push(l) }));
        ex.fail.clear();
        await run([a]);
        const raw = fs.readFileSync(statePath, "utf8");
        assert.ok(!raw.includes("TOPSECRET"), raw);
        assert.ok(!raw.includes(conn.privateKey), raw);
        const e = loadState(statePath).resources[urnOf("a")];
        assert.deepStrictEqual(e.environment, { PLAIN: "p" });
        assert.ok(e.environmentSecretHashes!.TOKEN);
        assert.ok(e.stdinHash);
        assert.ok(!logs.join("\n").includes("KEY-MATERIAL"));
    });

    it("CopyToRemote: copies on create, on source change; connection-only change copies nothing", async () => {
        const f = path.join(dir, "f.txt");
        fs.writeFileSync(f, "one");
        const cp = (c: any = conn): RemoteResource => ({
            ...cmd("cp", {}),
            type: COPY_TYPE,
            urn: "urn:pulumi:test::p::command:remote:CopyToRemote::cp",
            inputs: { connection: c, source: { kind: "file", path: f }, remotePath: "/tmp/x" } as CopyInputs,
        });
        await run([cp()]);
        assert.strictEqual(ex.copies.length, 1);
        ex.reset();
        await run([cp()]);
        assert.strictEqual(ex.copies.length, 0);
        fs.writeFileSync(f, "two"); // content change → update → copy
        const r = await run([cp()]);
        assert.strictEqual(ex.copies.length, 1);
        assert.strictEqual(r.resources[0].action, "update");
        ex.reset();
        const r2 = await run([cp({ ...conn, port: 2222 })]);
        assert.strictEqual(r2.resources[0].action, "update");
        assert.strictEqual(ex.copies.length, 0);
    });
});

// ------------------------------------------------------------ collect

class Box extends pulumi.ComponentResource {
    constructor(name: string, args: { key: pulumi.Input<string> }, opts?: pulumi.ComponentResourceOptions) {
        super("test:index:Box", name, {}, opts);
        const connection = { host: "127.0.0.1", port: 2222, privateKey: args.key };
        const first = new command.remote.Command("first", { connection, create: "echo first" }, { parent: this });
        new command.remote.Command(
            "second",
            { connection, create: "cat > /tmp/x", stdin: new pulumi.Config().requireSecret("password") },
            { parent: this, dependsOn: [first] },
        );
        this.registerOutputs({});
    }
}

function fakeProgram() {
    const cfg = new pulumi.Config();
    const box = new Box("box", { key: cfg.require("key") });
    const after = new command.remote.Command(
        "after",
        { connection: { host: "127.0.0.1" }, create: "echo after", triggers: [cfg.require("rev")] },
        { dependsOn: [box] },
    );
    const copy = new command.remote.CopyToRemote("copy", {
        connection: { host: "127.0.0.1" },
        source: new pulumi.asset.StringAsset("hello"),
        remotePath: "/tmp/hello",
    });
    // implicit dependency through an output
    new command.remote.Command("uses-output", { connection: { host: "127.0.0.1" }, create: pulumi.interpolate`echo ${after.stdout}` });
    return { copyPath: copy.remotePath };
}

describe("harness collect", () => {
    it("returns the remote resources with inputs, secrets and dependencies", async () => {
        const res = await collectAll({
            program: fakeProgram,
            config: { key: "PRIVATE", rev: "7", password: "hunter2" },
            secretKeys: ["password"],
        });
        const rs = res.resources;
        const by = (n: string) => rs.find((r) => r.name === n)!;
        assert.deepStrictEqual(rs.map((r) => r.name), ["first", "second", "after", "copy", "uses-output"]);
        const boxUrn = "urn:pulumi:test::clj-zero-downtime::test:index:Box::box";
        assert.strictEqual(by("first").urn, "urn:pulumi:test::clj-zero-downtime::test:index:Box$command:remote:Command::first");
        assert.strictEqual(by("first").parent, boxUrn);
        assert.deepStrictEqual(by("first").parents, [boxUrn]);
        assert.strictEqual(by("after").urn, "urn:pulumi:test::clj-zero-downtime::command:remote:Command::after");
        assert.strictEqual(by("after").parent, "");

        const second = by("second");
        assert.deepStrictEqual(second.dependsOn, [by("first").urn]);
        assert.deepStrictEqual(second.explicitDependsOn, [by("first").urn]);
        assert.deepStrictEqual(second.secrets, ["connection", "stdin"]);
        const si = second.inputs as CommandInputs;
        assert.strictEqual(si.stdin, "hunter2");
        assert.deepStrictEqual(si.connection, { host: "127.0.0.1", port: 2222, user: "root", privateKey: "PRIVATE", dialErrorLimit: 10, perDialTimeout: 15 });

        // dependsOn a component = all Command/Copy resources under it
        assert.deepStrictEqual([...by("after").dependsOn].sort(), [by("first").urn, by("second").urn].sort());
        assert.deepStrictEqual((by("after").inputs as CommandInputs).triggers, ["7"]);
        assert.deepStrictEqual(by("after").secrets, ["connection"]);
        // implicit dependency via an Output input
        assert.deepStrictEqual(by("uses-output").dependsOn, [by("after").urn]);
        assert.deepStrictEqual(by("uses-output").propertyDependencies.create, [by("after").urn]);
        assert.deepStrictEqual((by("copy").inputs as CopyInputs).source, { kind: "text", text: "hello" });
        assert.strictEqual(res.outputs.copyPath, "/tmp/hello");
    });

    it("can be called repeatedly with different config", async () => {
        const a = await collect({ program: fakeProgram, config: { key: "K1", rev: "1", password: "p" }, secretKeys: ["password"] });
        const b = await collect({ program: fakeProgram, config: { key: "K2", rev: "2", password: "p" }, secretKeys: ["password"] });
        assert.deepStrictEqual((a.find((r) => r.name === "after")!.inputs as CommandInputs).triggers, ["1"]);
        assert.deepStrictEqual((b.find((r) => r.name === "after")!.inputs as CommandInputs).triggers, ["2"]);
        assert.strictEqual((b.find((r) => r.name === "first")!.inputs as CommandInputs).connection.privateKey, "K2");
        assert.strictEqual(b.length, 5);
    });

    it("reports program errors", async () => {
        await assert.rejects(
            collect({ program: () => new pulumi.Config().require("missing"), config: {} }),
            /missing/,
        );
        // and still works afterwards
        const ok = await collect({ program: fakeProgram, config: { key: "K", rev: "1", password: "p" } });
        assert.strictEqual(ok.length, 5);
    });
});
