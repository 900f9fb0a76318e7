import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import { Settings } from "../config";
import { Host, inboundRules, serverName, TYPE_PREFIX } from "./host";
import { AccountKey, accountKeyFor, ownKeyName } from "./ssh-key";

/** The project's copy of the stack's public key, if it has one (see accountKeyFor). */
export async function hetznerAccountKey(settings: Settings): Promise<AccountKey | undefined> {
    const found = await hcloud.getSshKeys({});
    return accountKeyFor(found.sshKeys, settings.sshPublicKey);
}

/**
 * A Hetzner Cloud server with the stack's SSH key and an attached firewall (inbound SSH/HTTP/HTTPS only).
 * The key is uploaded unless the project has it already (`accountKey`).
 */
export class HetznerHost extends pulumi.ComponentResource implements Host {
    readonly address: pulumi.Output<string>;
    readonly ipv6Address: pulumi.Output<string>;
    readonly sshUser = "root";
    readonly sshPort: number;
    readonly readyAfter: pulumi.Resource[];
    readonly origin = "hetzner";
    readonly server: hcloud.Server;

    constructor(name: string, settings: Settings, accountKey: AccountKey | undefined, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:host:HetznerHost`, name, {}, opts);
        const keyId = accountKey ? pulumi.output(String(accountKey.id)) : new hcloud.SshKey(`${name}-key`, {
            name: ownKeyName(serverName(settings)),
            publicKey: settings.sshPublicKey,
            // Kept in the project when the program stops declaring it (the next run finds and uses
            // it) and on destroy: other stacks may use it by then.
        }, { parent: this, retainOnDelete: true }).id;
        // Hetzner firewalls allow all outbound traffic when no outbound rule is given.
        const firewall = new hcloud.Firewall(`${name}-firewall`, {
            name: `${serverName(settings)}-firewall`,
            rules: inboundRules(settings).map(r => ({
                direction: "in",
                protocol: "tcp",
                port: String(r.port),
                sourceIps: r.sources,
            })),
        }, { parent: this });
        this.server = new hcloud.Server(`${name}-server`, {
            name: serverName(settings),
            serverType: settings.size,
            image: settings.image,
            location: settings.region,
            sshKeys: [keyId],
            firewallIds: [firewall.id.apply(id => Number(id))],
            publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
            labels: { "managed-by": "clj-zero-downtime" },
            // The cloud puts these keys on a server only when it creates it, so a change of key
            // would replace the server and lose everything on it; the setup manages the keys after.
            // A server name is unique in a Hetzner project: a replacement (a change of image or
            // location, which the preview shows and `npm run up` asks about) can only be created
            // once the old server is gone, not before as Pulumi otherwise does.
        }, { parent: this, ignoreChanges: ["sshKeys"], deleteBeforeReplace: true });
        this.address = this.server.ipv4Address;
        this.ipv6Address = this.server.ipv6Address.apply(a => a ?? "");
        this.sshPort = settings.sshPort;
        this.readyAfter = [this.server, firewall];
        this.registerOutputs({ address: this.address, ipv6Address: this.ipv6Address });
    }
}
