// Pulumi.yaml is what the Pulumi CLI reads first: validate it against the
// project-file schema and keep its declared keys equal to the program's.
import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import Ajv2020 from "ajv/dist/2020";
import YAML from "yaml";
import { DECLARED_SECRET_KEYS, DEFAULTS, parseSettings, PROJECT, SCALAR_KEYS } from "../../infra/config";

const root = path.join(__dirname, "..", "..");
const schemaPath = path.join(root, "..", "shared", "external", "pulumi-project.schema.json");
const project: Record<string, any> = YAML.parse(fs.readFileSync(path.join(root, "Pulumi.yaml"), "utf8"));

describe("Pulumi.yaml", () => {
    it("validates against Pulumi's project-file schema", () => {
        const schema = JSON.parse(fs.readFileSync(schemaPath, "utf8"));
        const ajv = new Ajv2020({ strict: false, allErrors: true });
        const validate = ajv.compile(schema);
        assert.ok(validate(project), JSON.stringify(validate.errors, null, 2));
        // The schema really rejects a broken file, so the check means something.
        assert.ok(!validate({ ...project, runtime: 42 }));
        assert.ok(!validate({ ...project, config: { provider: { type: "string", default: 1, bogus: true } } }));
    });

    it("names the project the program reads config for, on the nodejs runtime", () => {
        assert.strictEqual(project.name, PROJECT);
        assert.strictEqual(project.runtime.name, "nodejs");
    });

    it("declares every scalar key with type, description and the program's default", () => {
        const declared = Object.keys(project.config).sort();
        assert.deepStrictEqual(declared, [...SCALAR_KEYS, ...DECLARED_SECRET_KEYS].sort());
        for (const key of SCALAR_KEYS) {
            const decl = project.config[key];
            assert.ok(decl.description && decl.description.length > 10, `${key} has a description`);
            const value = DEFAULTS[key];
            const expectedType = typeof value === "number" ? "integer" : typeof value === "boolean" ? "boolean" : Array.isArray(value) ? "array" : "string";
            assert.strictEqual(decl.type, expectedType, `${key} type`);
            assert.deepStrictEqual(decl.default, DEFAULTS[key], `${key} default`);
        }
        assert.strictEqual(project.config.sshPrivateKey.secret, true);
    });

    for (const stack of ["live", "beta"]) {
        it(`Pulumi.${stack}.yaml holds valid non-secret settings for ${stack}`, () => {
            const file = YAML.parse(fs.readFileSync(path.join(root, `Pulumi.${stack}.yaml`), "utf8"));
            const raw: Record<string, string> = {};
            for (const [k, v] of Object.entries(file.config as Record<string, unknown>)) {
                assert.ok(k.startsWith(`${PROJECT}:`), k);
                assert.ok(!/private|secret|token|password/i.test(k), `${k} must not be in a committed stack file`);
                raw[k.slice(PROJECT.length + 1)] = typeof v === "string" ? v : JSON.stringify(v);
            }
            // The file's values are plain text: a tlsKey among them would be refused (only the test's sshPrivateKey counts as a secret).
            const s = parseSettings({ ...raw, sshPublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxh x", sshPrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\n" }, stack,
                ["sshPrivateKey"]);
            assert.strictEqual(s.environment, stack);
        });
    }

    it("live and beta use distinct ports and names, so they can share one server", () => {
        const read = (stack: string) => YAML.parse(fs.readFileSync(path.join(root, `Pulumi.${stack}.yaml`), "utf8")).config;
        const live = read("live");
        const beta = read("beta");
        const ports = (c: any) => ["proxyPort", "slot1Port", "slot2Port", "nrepl1Port", "nrepl2Port"].map(k => Number(c[`${PROJECT}:${k}`]));
        const overlap = ports(live).filter(p => ports(beta).includes(p));
        assert.deepStrictEqual(overlap, []);
        assert.notStrictEqual(live[`${PROJECT}:environment`], beta[`${PROJECT}:environment`]);
    });
});
