//! `denorun new <type> [--dir D] [--npm]`: a new handler worker to start from: its module, a
//! test that `denorun test` passes at once, and a README with the lines that run it. With
//! `--npm`, the handler validates its requests with zod from npm, and a `package.json` lists
//! it (`npm install`, then the same lines).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::keys::check_type;

const WORKER: &str = r#"// The __TYPE__ handler worker: denorun reads __TYPE__:req:x for it, and sends what `request`
// returns to the client (BRPOP res:{ref}). Run it with the lines in README.md.

/** What a request carries (`req.data` is the JSON the client sent). */
export interface Request {
  id: string;
  ref?: string;
  type?: string;
  fields: Record<string, string>;
  data: { name?: string } | null;
  attempt: number;
}

export default {
  async request(req: Request, _ctx: unknown) {
    const name = req.data?.name ?? "world";
    return { code: 200, greeting: `hello ${name}` };
  },
};
"#;

const WORKER_NPM: &str = r#"// The __TYPE__ handler worker: denorun reads __TYPE__:req:x for it, and sends what `request`
// returns to the client (BRPOP res:{ref}). Its requests are checked with zod, from the
// node_modules that `npm install` makes beside this file. Run it with the lines in README.md.
import { z } from "zod";

/** What a request's data must be (`req.data` is the JSON the client sent). */
export const Data = z.object({ name: z.string().min(1).default("world") });

/** What a request carries. */
export interface Request {
  id: string;
  ref?: string;
  type?: string;
  fields: Record<string, string>;
  data: unknown;
  attempt: number;
}

export default {
  async request(req: Request, _ctx: unknown) {
    const data = Data.safeParse(req.data ?? {});
    if (!data.success) {
      return { code: 400, errors: data.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`) };
    }
    return { code: 200, greeting: `hello ${data.data.name}` };
  },
};
"#;

const PACKAGE_JSON: &str = r#"{
  "name": "__TYPE__",
  "private": true,
  "type": "module",
  "dependencies": {
    "zod": "^4.0.0"
  }
}
"#;

const TEST: &str = r#"// `denorun test` runs this file.
import { assertEquals } from "jsr:@std/assert";
import { withWorker } from "denorun:testing";
import worker, { type Request } from "./__TYPE__.ts";

// The handler alone, called as the loop would call it.
Deno.test("greets by name", async () => {
  const req: Request = { id: "1-0", ref: "r1", type: "__TYPE__", fields: {}, data: { name: "Ada" }, attempt: 1 };
  assertEquals(await worker.request(req, {}), { code: 200, greeting: "hello Ada" });
});

// The worker run by denorun against a throwaway redis-server, sent a request as a client would.
Deno.test("answers a request through Redis", () =>
  withWorker({ module: "./__TYPE__.ts", type: "__TYPE__" }, async (w) => {
    assertEquals(await w.request({}), { code: 200, greeting: "hello world" });
  }));
"#;

const README: &str = r#"# __TYPE__

A denorun handler worker, made by `denorun new __TYPE__`.

```sh
__INSTALL__
denorun test                                   # its tests
redis-cli hset __TYPE__:h workerUrl ./__TYPE__.ts workerVersion local
denorun setup-worker __TYPE__ 1 --start        # worker hash __TYPE__:1:h, queued
echo "worker-v0 $(openssl rand -hex 16)" | denorun supervise __TYPE__ &
denorun xadd-req __TYPE__ --data '{"name":"Ada"}'   # prints {"code":200,"greeting":"hello Ada"}
```

Settings go in `__TYPE__:h` (every worker) or `__TYPE__:<id>:h`: `concurrency`,
`maxAttempts`, `denoOptions` (e.g. `--allow-net=api.example.com`), `encryptedJson` for
secrets (`denorun encrypt`). See denorun's README, "Handler workers".
"#;

/// Writes the files into `dir` (default `./<type>`), which must not hold them yet.
pub fn new(worker_type: &str, dir: Option<&Path>, npm: bool) -> anyhow::Result<i32> {
    check_type(worker_type)?;
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(worker_type));
    let mut files = vec![
        (format!("{worker_type}.ts"), if npm { WORKER_NPM } else { WORKER }),
        (format!("{worker_type}_test.ts"), TEST),
        ("README.md".to_string(), README),
    ];
    if npm {
        files.push(("package.json".to_string(), PACKAGE_JSON));
    }
    for (name, _) in &files {
        let path = dir.join(name);
        if path.exists() {
            anyhow::bail!("{} exists already; pick another --dir, or remove it", path.display());
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, template) in &files {
        let path = dir.join(name);
        let install = if npm {
            "npm install                                    # its packages, into ./node_modules
"
        } else {
            ""
        };
        std::fs::write(
            &path,
            template.replace("__TYPE__", worker_type).replace(
                "__INSTALL__
",
                install,
            ),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if npm {
        println!("next: cd {} && npm install && denorun test", dir.display());
    } else {
        println!("next: cd {} && denorun test", dir.display());
    }
    Ok(0)
}
