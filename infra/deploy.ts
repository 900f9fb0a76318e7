// A deploy is one remote command, triggered by the app's revision: upload the
// `git archive` of that commit, then run the gated rotation on the server as
// the deploy user. No new commit: nothing runs. An older commit: the rotation
// goes back to that release without rebuilding it.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { AppRevision, archiveAppRevision } from "./app-source";
import { DEPLOY_USER, EnvironmentLayout } from "./names";
import { Host, TYPE_PREFIX } from "./providers";
import { connectionFor } from "./setup";

export interface DeployArgs {
    host: Host;
    layout: EnvironmentLayout;
    revision: AppRevision;
    sshPrivateKey: pulumi.Output<string>;
    /** The environment's setup: the rotation script and its switch must exist first. */
    after: pulumi.Resource[];
}

/** The command that runs on the server; the uploaded archive is removed once the rotation succeeded. */
export function rotationCommand(layout: EnvironmentLayout, commit: string): { archive: string; create: string } {
    const archive = `${layout.uploadsDir}/${commit}.tar`;
    return { archive, create: `${layout.deployScript} --archive ${archive} --revision ${commit} && rm -f ${archive}` };
}

/** The rotation prints `==> deployed <rev> to <env> (slot <n>)` as its last line. */
export function parseLiveSlot(stdout: string): number | undefined {
    const m = /^==> deployed \S+ to \S+ \(slot ([12])\)$/m.exec(stdout);
    return m ? Number(m[1]) : undefined;
}

export class Deploy extends pulumi.ComponentResource {
    readonly liveRevision: pulumi.Output<string>;
    readonly liveSlot: pulumi.Output<number | undefined>;

    constructor(name: string, args: DeployArgs, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:deploy:Deploy`, name, {}, opts);
        const commit = args.revision.commit;
        const connection = connectionFor(args.host, DEPLOY_USER, args.sshPrivateKey);
        const { archive, create } = rotationCommand(args.layout, commit);
        const upload = new command.remote.CopyToRemote(`${name}-upload`, {
            connection,
            source: new pulumi.asset.FileAsset(archiveAppRevision(args.revision)),
            remotePath: archive,
            triggers: [commit],
        }, { parent: this, dependsOn: args.after });
        const rotate = new command.remote.Command(`${name}-rotate`, {
            connection,
            create,
            triggers: [commit],
            addPreviousOutputInEnv: false,
        }, { parent: this, dependsOn: [upload] });
        this.liveRevision = rotate.stdout.apply(() => commit);
        this.liveSlot = rotate.stdout.apply(parseLiveSlot);
        this.registerOutputs({ liveRevision: this.liveRevision, liveSlot: this.liveSlot });
    }
}
