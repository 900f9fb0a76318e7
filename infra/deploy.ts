// A deploy is one remote command, triggered by the app's revision: upload the
// `git archive` of that commit, then run the gated rotation on the server as
// the deploy user. No new commit: nothing runs. An older commit: the rotation
// goes back to that release without rebuilding it. A change of the app's
// settings only (appEnv, javaOpts) runs it too, and then the server restarts
// the release that is live, which a rollback or git push may have changed.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { AppRevision, archiveAppRevision } from "./app-source";
import { Settings } from "./config";
import { appEnvFile } from "./host-files";
import { buildJarLocally } from "./local-build";
import { DEPLOY_USER, EnvironmentLayout } from "./names";
import { contentHash } from "./render";
import { Host, TYPE_PREFIX } from "./providers";
import { connectionFor } from "./setup";

export interface DeployArgs {
    host: Host;
    settings: Settings;
    layout: EnvironmentLayout;
    revision: AppRevision;
    /** The app's environment: a change re-runs the rotation (same release, new slot reads it). */
    appEnv: pulumi.Output<Record<string, string>>;
    sshPrivateKey: pulumi.Output<string>;
    /** The environment's setup: the rotation script and its switch must exist first. */
    after: pulumi.Resource[];
}

/** What `pulumi up` ships: the commit's tree (built on the server) or a jar built locally. */
export interface Shipment {
    /** Release name on the server: the commit, or commit + jar hash for a local build. */
    release: string;
    /** The local file to upload. */
    file: string;
    kind: "archive" | "jar";
}

/**
 * The command that runs on the server. Once the rotation succeeded it empties the uploads
 * directory: this run's upload, and those of earlier runs that failed (kept until then so that
 * a retry of the same release finds its upload; Pulumi's state no longer refers to them once
 * another release has deployed, and a later run of theirs uploads them again).
 * `--config-commit` lets the server tell a new appRevision from a run for changed settings.
 */
export function rotationCommand(layout: EnvironmentLayout, shipment: Pick<Shipment, "release" | "kind">, commit: string): { upload: string; create: string } {
    const upload = `${layout.uploadsDir}/${shipment.release}.${shipment.kind === "jar" ? "jar" : "tar"}`;
    return {
        upload,
        create: `${layout.deployScript} --${shipment.kind} ${upload} --revision ${shipment.release} --config-commit ${commit}` +
            ` && find ${layout.uploadsDir} -mindepth 1 -maxdepth 1 -type f -delete`,
    };
}

export function shipmentFor(settings: Settings, revision: AppRevision): Shipment {
    if (settings.build === "local") {
        const jar = buildJarLocally(revision);
        return { release: `${revision.commit}-${jar.sha256.slice(0, 12)}`, file: jar.path, kind: "jar" };
    }
    return { release: revision.commit, file: archiveAppRevision(revision), kind: "archive" };
}

/** The rotation prints `==> deployed <release> to <env> (slot <n>)` as its last line. */
export function parseDeployed(stdout: string): { release: string; slot: number } | null {
    const m = /^==> deployed (\S+) to \S+ \(slot ([12])\)$/m.exec(stdout);
    return m ? { release: m[1], slot: Number(m[2]) } : null;
}

export class Deploy extends pulumi.ComponentResource {
    readonly liveRevision: pulumi.Output<string>;
    readonly liveSlot: pulumi.Output<number | null>;

    constructor(name: string, args: DeployArgs, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:deploy:Deploy`, name, {}, opts);
        const commit = args.revision.commit;
        const connection = connectionFor(args.host, DEPLOY_USER, args.sshPrivateKey);
        const shipment = shipmentFor(args.settings, args.revision);
        const { upload: remotePath, create } = rotationCommand(args.layout, shipment, commit);
        // CopyToRemote copies again only when its source or remotePath changed, not when the
        // connection did: the server's address is a trigger, so that a new server (a droplet
        // replaced, `host` moved to another box, serverStack's owner replaced) gets the upload
        // that the rotation, re-run for the new connection, reads.
        const upload = new command.remote.CopyToRemote(`${name}-upload`, {
            connection,
            source: new pulumi.asset.FileAsset(shipment.file),
            remotePath,
            triggers: [shipment.release, args.host.address],
        }, { parent: this, dependsOn: args.after });
        // A new app environment or new JVM options take effect through a rotation too: of the
        // live release (no build), in a fresh slot that reads them. Secret, as it derives from secrets.
        const restartKey = pulumi.secret(args.appEnv.apply(env => contentHash(appEnvFile(env), args.settings.javaOpts)));
        const rotate = new command.remote.Command(`${name}-rotate`, {
            connection,
            create,
            triggers: [shipment.release, restartKey],
            addPreviousOutputInEnv: false,
        }, { parent: this, dependsOn: [upload] });
        // The release the rotation put live: appRevision's, or after a settings change the live one.
        this.liveRevision = rotate.stdout.apply(out => parseDeployed(out)?.release ?? shipment.release);
        this.liveSlot = rotate.stdout.apply(out => parseDeployed(out)?.slot ?? null);
        this.registerOutputs({ liveRevision: this.liveRevision, liveSlot: this.liveSlot });
    }
}
