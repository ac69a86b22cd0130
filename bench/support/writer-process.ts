/** Runs bench/writer.ts in its own process, like a service writing events at a fixed rate. */
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"

const WRITER = fileURLToPath(new URL("../writer.ts", import.meta.url))

export interface WriterReport {
  /** dedup_key and the epoch ms its COMMIT returned (empty with `keepTimes: false`). */
  readonly committed: Array<[string, number]>
  readonly maxBehindMs: number
  readonly elapsedMs: number
}

export const runWriter = (
  databaseUrl: string,
  o: { readonly rate: number; readonly perTx: number; readonly seconds: number; readonly keepTimes: boolean },
) =>
  Effect.callback<WriterReport, Error>((resume) => {
    execFile(
      process.execPath,
      [WRITER],
      {
        env: {
          PATH: process.env.PATH ?? "",
          DATABASE_URL: databaseUrl,
          RATE: String(o.rate),
          PER_TX: String(o.perTx),
          SECONDS: String(o.seconds),
          ...(o.keepTimes ? {} : { NO_TIMES: "1" }),
        },
        maxBuffer: 1 << 30,
      },
      (error, stdout, stderr) =>
        error ? resume(Effect.fail(new Error(`writer failed: ${stderr}`))) : resume(Effect.succeed(JSON.parse(stdout) as WriterReport)),
    )
  })
