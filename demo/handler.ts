// The demo worker as a handler worker: the same replies as demo/worker.ts, but denorun runs
// the loop (read, reply and XACK in one transaction, retries, dead letters, recovery). Run it
// with the demo's set-up: WORKER_URL=demo/handler.ts demo/run.sh
import type { Handler } from "./handler-types.ts";

interface Secret {
  type: string;
}

export default {
  request(req, ctx) {
    if (ctx.secret?.type !== "demo-worker") {
      throw new Error(`Expecting encryptedJson to have type demo-worker: ${ctx.secret?.type}`);
    }
    if (req.type !== "demo-worker") {
      return { code: 400, error: `Request type '${req.type}' does not match worker type 'demo-worker'` };
    }
    const { ref, type, data, ...payload } = req.fields;
    ctx.log.info(`Processing ref: ${ref}`);
    return {
      ref,
      source: "demo-worker",
      type: "demo-worker-res",
      worker: { workerType: "demo-worker", workerKey: ctx.key },
      request: { payload: { ...payload, ...(data === undefined ? {} : { data }) } },
      code: 200,
    };
  },
} satisfies Handler<unknown, Secret>;
