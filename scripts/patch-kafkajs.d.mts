/** The exact-text edits scripts/patch-kafkajs.mjs makes to kafkajs, read by the unit test. */
export declare const patches: ReadonlyArray<{
  readonly file: string
  readonly edits: ReadonlyArray<readonly [from: string, to: string]>
}>
