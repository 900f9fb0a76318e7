import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { Settings } from "../config";
import { Host, inboundRules, serverName, TYPE_PREFIX } from "./host";
import { AccountKey, accountKeyFor, ownKeyName, sshKeyFingerprint } from "./ssh-key";

/** The account's copy of the stack's public key, if it has one (see accountKeyFor). */
export async function digitalOceanAccountKey(settings: Settings): Promise<AccountKey | undefined> {
    const found = await digitalocean.getSshKeys({
        filters: [{ key: "fingerprint", values: [sshKeyFingerprint(settings.sshPublicKey)] }],
    });
    return accountKeyFor(found.sshKeys, settings.sshPublicKey);
}

/** The record name within its zone: "@" for the zone apex, else the labels before the zone. */
export function recordName(domain: string, zone: string): string {
    return domain === zone ? "@" : domain.slice(0, -(zone.length + 1));
}

/**
 * A Droplet with the stack's SSH key and a cloud firewall (inbound SSH/HTTP/HTTPS only, outbound open).
 * The key is uploaded unless the account has it already (`accountKey`).
 */
export class DigitalOceanHost extends pulumi.ComponentResource implements Host {
    readonly address: pulumi.Output<string>;
    readonly ipv6Address: pulumi.Output<string>;
    readonly sshUser = "root";
    readonly sshPort: number;
    readonly readyAfter: pulumi.Resource[];
    readonly origin = "digitalocean";
    readonly droplet: digitalocean.Droplet;

    constructor(name: string, settings: Settings, accountKey: AccountKey | undefined, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:host:DigitalOceanHost`, name, {}, opts);
        const keyFingerprint = accountKey ? pulumi.output(accountKey.fingerprint) : new digitalocean.SshKey(`${name}-key`, {
            name: ownKeyName(serverName(settings)),
            publicKey: settings.sshPublicKey,
            // Kept in the account when the program stops declaring it (the next run finds and uses
            // it) and on destroy: other stacks may use it by then.
        }, { parent: this, retainOnDelete: true }).fingerprint;
        this.droplet = new digitalocean.Droplet(`${name}-server`, {
            name: serverName(settings),
            image: settings.image,
            region: settings.region,
            size: settings.size,
            sshKeys: [keyFingerprint],
            ipv6: true,
            monitoring: true,
            tags: ["clj-zero-downtime"],
            // The cloud puts these keys on a server only when it creates it, so a change of key
            // would replace the server and lose everything on it; the setup manages the keys after.
        }, { parent: this, ignoreChanges: ["sshKeys"] });
        const firewall = new digitalocean.Firewall(`${name}-firewall`, {
            name: `${serverName(settings)}-firewall`,
            dropletIds: [this.droplet.id.apply(id => Number(id))],
            inboundRules: inboundRules(settings).map(r => ({
                protocol: "tcp",
                portRange: String(r.port),
                sourceAddresses: r.sources,
            })),
            outboundRules: ["tcp", "udp"].map(protocol => ({
                protocol,
                portRange: "1-65535",
                destinationAddresses: ["0.0.0.0/0", "::/0"],
            })).concat([{ protocol: "icmp", portRange: "", destinationAddresses: ["0.0.0.0/0", "::/0"] }]),
        }, { parent: this });
        this.address = this.droplet.ipv4Address;
        this.ipv6Address = this.droplet.ipv6Address.apply(a => a ?? "");
        this.sshPort = settings.sshPort;
        this.readyAfter = [this.droplet, firewall];
        if (settings.dnsZone) {
            // The domain's records in a zone DigitalOcean serves, so `pulumi up` ends with a working URL.
            const record = recordName(settings.domain, settings.dnsZone);
            new digitalocean.DnsRecord(`${name}-dns-a`, {
                domain: settings.dnsZone, type: "A", name: record, value: this.address, ttl: 300,
            }, { parent: this });
            new digitalocean.DnsRecord(`${name}-dns-aaaa`, {
                domain: settings.dnsZone, type: "AAAA", name: record, value: this.droplet.ipv6Address, ttl: 300,
            }, { parent: this });
        }
        this.registerOutputs({ address: this.address, ipv6Address: this.ipv6Address });
    }
}
