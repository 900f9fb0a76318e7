import * as pulumi from "@pulumi/pulumi";
import { Settings } from "../config";
import { DigitalOceanHost } from "./digitalocean";
import { ExistingHost } from "./existing";
import { HetznerHost } from "./hetzner";
import { Host } from "./host";
import { SharedHost } from "./shared";

export { Host, TYPE_PREFIX } from "./host";

/** Makes (or takes) the server named by `provider`; the caller only sees the Host interface. */
export function provisionHost(name: string, settings: Settings, opts?: pulumi.ComponentResourceOptions): Host {
    switch (settings.provider) {
        case "digitalocean":
            return new DigitalOceanHost(name, settings, opts);
        case "hetzner":
            return new HetznerHost(name, settings, opts);
        case "existing":
            return settings.serverStack ? new SharedHost(name, settings, opts) : new ExistingHost(name, settings, opts);
    }
}
