import * as m0001 from "./0001_outbox_event.ts"
import * as m0002 from "./0002_replay_audit.ts"
import * as m0003 from "./0003_notify_trigger.ts"
import * as m0004 from "./0004_storage_tuning.ts"
import * as m0005 from "./0005_time_ordered_event_id.ts"
import * as m0006 from "./0006_no_event_id_index.ts"
import * as m0007 from "./0007_row_limits.ts"

export interface Migration {
  readonly version: number
  readonly name: string
  readonly statements: ReadonlyArray<string>
}

/** Append only: a released migration is never edited, a change is a new file. */
export const migrations: ReadonlyArray<Migration> = [
  { version: 1, name: "outbox_event", statements: m0001.statements },
  { version: 2, name: "replay_audit", statements: m0002.statements },
  { version: 3, name: "notify_trigger", statements: m0003.statements },
  { version: 4, name: "storage_tuning", statements: m0004.statements },
  { version: 5, name: "time_ordered_event_id", statements: m0005.statements },
  { version: 6, name: "no_event_id_index", statements: m0006.statements },
  { version: 7, name: "row_limits", statements: m0007.statements },
]

export const LATEST_SCHEMA_VERSION = migrations[migrations.length - 1]!.version
