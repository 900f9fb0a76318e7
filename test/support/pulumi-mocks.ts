// Runs a Pulumi program in-process under pulumi.runtime.setMocks and records
// every resource it registers, with its inputs and options. The unit tests use
// it; the host harness (test/host/harness.ts) has its own runner, which also
// records the engine's registration options and runs the remote commands.
import * as pulumi from "@pulumi/pulumi";
import { PROJECT } from "../../infra/config";

// Internal to @pulumi/pulumi, but stable for years: resolves when every queued registration is done.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { waitForRPCs } = require("@pulumi/pulumi/runtime/settings") as { waitForRPCs: () => Promise<void> };

export interface RecordedResource {
    type: string;
    name: string;
    urn: string;
    /** Inputs as the provider receives them (secrets unwrapped). */
    inputs: Record<string, any>;
    /** Names of resources this one depends on explicitly (dependsOn), by URN. */
    dependsOn: string[];
    parentUrn?: string;
    /** Input keys whose value is a Pulumi secret. */
    secretInputs: string[];
    /** The ignoreChanges option. */
    ignoreChanges: string[];
    /** The retainOnDelete option. */
    retainOnDelete: boolean;
    /** The deleteBeforeReplace option (custom resources). */
    deleteBeforeReplace: boolean;
}

export interface MockRun {
    resources: RecordedResource[];
    outputs: Record<string, any>;
    byType(type: string): RecordedResource[];
    byName(name: string): RecordedResource;
}

export interface MockRunOptions {
    config: Record<string, string | number | object>;
    /** Config keys (without the project prefix) that are secrets. */
    secretKeys?: string[];
    stack?: string;
    preview?: boolean;
    /** Outputs of the stacks a StackReference reads, by stack name. */
    stackOutputs?: Record<string, Record<string, unknown>>;
    /** Answers invokes (data sources such as getSshKeys); default: echoes the inputs. */
    call?: (args: pulumi.runtime.MockCallArgs) => Record<string, any>;
}

/** Clouds number their servers and firewalls; the program converts those ids to numbers. */
export const NUMERIC_IDS: Record<string, string> = {
    "digitalocean:index/droplet:Droplet": "1001",
    "hcloud:index/server:Server": "2001",
    "hcloud:index/firewall:Firewall": "2002",
};

function cloudOutputs(type: string, name: string, inputs: Record<string, any>, preview: boolean): Record<string, any> {
    // In preview, cloud-assigned values are unknown: leave them out so the program sees undefined/unknown outputs.
    if (preview) return inputs;
    switch (type) {
        case "digitalocean:index/droplet:Droplet":
            return { ...inputs, ipv4Address: "203.0.113.10", ipv6Address: "2001:db8::10" };
        case "hcloud:index/server:Server":
            return { ...inputs, ipv4Address: "203.0.113.20", ipv6Address: "2001:db8::20" };
        case "digitalocean:index/sshKey:SshKey":
            return { ...inputs, fingerprint: `fp-${name}` };
        case "command:remote:Command":
            return { ...inputs, stdout: "", stderr: "" };
        default:
            return inputs;
    }
}

async function unwrap(value: any): Promise<{ value: any; secret: boolean }> {
    if (pulumi.Output.isInstance(value)) {
        const secret = await (value as any).isSecret;
        const inner = await (value as any).promise();
        const u = await unwrap(inner);
        return { value: u.value, secret: secret || u.secret };
    }
    if (Array.isArray(value)) {
        const parts = await Promise.all(value.map(unwrap));
        return { value: parts.map(p => p.value), secret: parts.some(p => p.secret) };
    }
    if (value && typeof value === "object" && !(value instanceof pulumi.asset.Asset) && !(value instanceof pulumi.asset.Archive)) {
        const out: Record<string, any> = {};
        let secret = false;
        for (const [k, v] of Object.entries(value)) {
            const u = await unwrap(v);
            out[k] = u.value;
            secret = secret || u.secret;
        }
        return { value: out, secret };
    }
    if (value && typeof value.then === "function") return unwrap(await value);
    return { value, secret: false };
}

/** Runs `program` under mocks with `config` and returns what it registered. Callable many times per process. */
export async function runUnderMocks(program: () => any, opts: MockRunOptions): Promise<MockRun> {
    const stack = opts.stack ?? "live";
    const preview = opts.preview ?? false;
    const config: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.config)) {
        config[`${PROJECT}:${k}`] = typeof v === "string" ? v : JSON.stringify(v);
    }
    pulumi.runtime.setAllConfig(config, (opts.secretKeys ?? []).map(k => `${PROJECT}:${k}`));

    const recorded = new Map<string, RecordedResource>();
    const pending: Promise<void>[] = [];
    await pulumi.runtime.setMocks({
        newResource(args: pulumi.runtime.MockResourceArgs) {
            if (args.type === "pulumi:pulumi:StackReference") {
                const name = String(args.inputs.name);
                return { id: name, state: { name, outputs: opts.stackOutputs?.[name] ?? {}, secretOutputNames: [] } };
            }
            return { id: preview ? undefined as any : (NUMERIC_IDS[args.type] ?? `${args.name}-id`), state: cloudOutputs(args.type, args.name, args.inputs, preview) };
        },
        call(args: pulumi.runtime.MockCallArgs) {
            return opts.call ? opts.call(args) : args.inputs;
        },
    }, PROJECT, stack, preview);

    // A stack transformation sees every resource's raw props and options (dependsOn, parent).
    const transformation: pulumi.ResourceTransformation = args => {
        if (args.type === "pulumi:pulumi:Stack" || args.type.startsWith("pulumi:providers:")) return undefined;
        const record = (async () => {
            // The resource gets its URN later in its constructor, after the transformations ran.
            await Promise.resolve();
            const urn = await (args.resource.urn as any).promise();
            // dependsOn is an Input of a Resource or of a list of them; never walk into a Resource's fields.
            const rawDeps = await (pulumi.output(args.opts.dependsOn ?? []) as any).promise();
            const depList: pulumi.Resource[] = (Array.isArray(rawDeps) ? rawDeps : [rawDeps]).filter(Boolean);
            const dependsOn = await Promise.all(depList.map((r: pulumi.Resource) => (r.urn as any).promise() as Promise<string>));
            const parentUrn = args.opts.parent ? await (args.opts.parent.urn as any).promise() : undefined;
            const inputs: Record<string, any> = {};
            const secretInputs: string[] = [];
            for (const [k, v] of Object.entries(args.props ?? {})) {
                const u = await unwrap(v);
                inputs[k] = u.value;
                if (u.secret) secretInputs.push(k);
            }
            recorded.set(urn, { type: args.type, name: args.name, urn, inputs, dependsOn, parentUrn, secretInputs, ignoreChanges: args.opts.ignoreChanges ?? [],
                retainOnDelete: args.opts.retainOnDelete ?? false,
                deleteBeforeReplace: (args.opts as pulumi.CustomResourceOptions).deleteBeforeReplace ?? false });
        })();
        pending.push(record);
        return undefined;
    };

    // Like the real runtime: the program runs inside the root stack resource.
    const outputsRaw = await pulumi.runtime.runInPulumiStack(async () => {
        pulumi.runtime.registerStackTransformation(transformation);
        return program();
    });
    const outputs: Record<string, any> = {};
    for (const [k, v] of Object.entries(outputsRaw ?? {})) {
        outputs[k] = (await unwrap(v)).value;
    }
    await waitForRPCs();
    // Settle: a recorded resource can trigger more registrations.
    for (let n = -1; n !== pending.length;) {
        n = pending.length;
        await Promise.all(pending);
        await waitForRPCs();
    }
    const resources = [...recorded.values()];
    return {
        resources,
        outputs,
        byType: (type: string) => resources.filter(r => r.type === type),
        byName: (name: string) => {
            const r = resources.find(x => x.name === name);
            if (!r) throw new Error(`no resource named ${name}; have: ${resources.map(x => x.name).join(", ")}`);
            return r;
        },
    };
}
