// `denorun test demo/`: the demo handler worker, run by denorun against a throwaway Redis.
import { assertEquals } from "jsr:@std/assert";
import { withWorker } from "denorun:testing";

const demo = { module: "./handler.ts", type: "demo-worker", secret: { type: "demo-worker" } };

Deno.test("answers a request of its type", () =>
  withWorker(demo, async (worker) => {
    const reply = await worker.request({ name: "Ada" });
    assertEquals([reply.code, reply.worker.workerKey], [200, worker.key]);
    assertEquals(reply.request.payload.data, '{"name":"Ada"}');
    await worker.waitForLog(`Processing ref: ${reply.ref}`);
  }));

Deno.test("refuses a request of another type", () =>
  withWorker(demo, async (worker) => {
    const reply = await worker.request({}, { type: "other" });
    assertEquals(reply.code, 400);
  }));
