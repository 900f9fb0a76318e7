import * as pulumi from "@pulumi/pulumi";
import { Settings } from "../config";
import { digitalOceanAccountKey, DigitalOceanHost } from "./digitalocean";
import { ExistingHost } from "./existing";
import { hetznerAccountKey, HetznerHost } from "./hetzner";
import { Host } from "./host";
import { SharedHost } from "./shared";

export { Host, TYPE_PREFIX } from "./host";

/**
 * Makes (or takes) the server named by `provider`; the caller only sees the Host interface.
 * For the clouds it first asks the account for the stack's public key, so that a key the
 * user uploaded before is used, not uploaded again (which both clouds refuse).
 */
export async function provisionHost(name: string, settings: Settings, opts?: pulumi.ComponentResourceOptions): Promise<Host & pulumi.ComponentResource> {
    switch (settings.provider) {
        case "digitalocean":
            return new DigitalOceanHost(name, settings, await digitalOceanAccountKey(settings), opts);
        case "hetzner":
            return new HetznerHost(name, settings, await hetznerAccountKey(settings), opts);
        case "existing":
            return settings.serverStack ? new SharedHost(name, settings, opts) : new ExistingHost(name, settings, opts);
    }
}
