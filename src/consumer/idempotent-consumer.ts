/**
 * The idempotent consumer: a kafkajs consumer group whose handler runs inside a
 * PostgreSQL transaction together with an inbox insert, so each event's effects commit
 * once however often Kafka delivers it. Offsets are committed by hand, after the
 * transaction; a failing handler is retried, then dead-lettered; a database outage is
 * waited out; each partition's batch runs on its own fiber, so a slow message holds up
 * only its partition; old inbox keys whose offsets are committed are cleaned in the
 * background; SIGTERM (scope close) finishes the message in flight.
 */
import { Context, Deferred, Duration, Effect, FiberSet, Layer, type Schema, type Scope, Semaphore } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import type { ConsumerConfig, KafkaConfig, LogEntry } from "kafkajs"
import type { BackoffPolicy } from "../domain/backoff.ts"
import { Kafka, KafkaLogLevel, Partitioners } from "../kafka/kafkajs.ts"
import { type ConsumedEvent, type ConsumedMessage, dedupKeyHeader } from "./consumed-message.ts"
import { type ConsumerStats, makeStatsRecorder } from "./consumer-stats.ts"
import { type DeadLetterRecord, routeToDeadLetter } from "./dead-letter-route.ts"
import { ConsumerKafkaError, InboxTableMissing, InvalidConsumerOptions } from "./errors.ts"
import { type MembershipTerm, makeGroupMembership } from "./group-membership.ts"
import type { PartitionBatch } from "./group-port.ts"
import { deleteExpiredInboxKeys, inboxCleanupLoop } from "./inbox-cleanup.ts"
import { type CommittedOffset, inboxTableExists } from "./inbox-table.ts"
import { kafkajsHeaderDecoderPatched } from "./kafkajs-header-decoder.ts"
import { handOffBatch, processPartitionBatch } from "./partition-batch.ts"
import { type MessageOutcome, processMessage } from "./process-message.ts"

export interface IdempotentConsumerOptions<A, E, R> {
  /** The Kafka consumer group; also the inbox's namespace (two groups each apply an event once). */
  readonly groupId: string
  readonly topics: ReadonlyArray<string>
  /** kafkajs client settings: brokers, clientId, ssl, sasl, … */
  readonly kafka: KafkaConfig
  /** Decodes the message value (JSON); `Schema.Json` takes any JSON. A value it rejects is dead-lettered at once. */
  readonly payload: Schema.Decoder<A>
  /**
   * Applies one event. It runs inside the inbox transaction: use the ambient `SqlClient`
   * for every write that must happen once. It may run more than once when it fails (the
   * failed attempt is rolled back), so side effects outside the database must be idempotent.
   */
  readonly handler: (event: ConsumedEvent<A>) => Effect.Effect<void, E, R>
  /** Where failed messages go (default `<groupId>.dlq`). */
  readonly deadLetterTopic?: string | undefined
  /** Where a group without committed offsets starts (default: latest). */
  readonly fromBeginning?: boolean | undefined
  /** The key deduplicated on (default: the relay's `dedup_key` header). */
  readonly dedupKey?: ((message: ConsumedMessage) => string | undefined) | undefined
  /** Handler retries before dead-lettering (default 5). */
  readonly maxRetries?: number | undefined
  /** Backoff between handler retries (default 200 ms doubling to 10 s). */
  readonly retryBackoff?: BackoffPolicy | undefined
  /** Backoff while the database or the dead-letter topic is unreachable (default 500 ms doubling to 30 s). */
  readonly outageBackoff?: BackoffPolicy | undefined
  /** How long inbox keys are kept (default 7 days); see docs/consumer-idempotency.md. */
  readonly inboxRetention?: Duration.Input | undefined
  readonly cleanupInterval?: Duration.Input | undefined
  readonly cleanupBatchSize?: number | undefined
  /**
   * At most this many partitions are processed at once (default: no limit, every assigned
   * partition on its own, so a slow or failing message holds up only its own partition).
   * Each partition is always processed in order.
   */
  readonly partitionsConsumedConcurrently?: number | undefined
  /** While a batch runs, its settled offsets are committed this often (default 1 s), also while a message is stuck. */
  readonly commitInterval?: Duration.Input | undefined
  /** On stop, how long the message in flight may take before it is abandoned uncommitted (default 10 s). */
  readonly shutdownGrace?: Duration.Input | undefined
  /**
   * An attempt of the handler that runs longer is cut off (its queries cancelled, its
   * transaction rolled back) and counts as a failure: retried, then dead-lettered (default:
   * no limit). Set it below the role's `idle_in_transaction_session_timeout`.
   */
  readonly handlerTimeout?: Duration.Input | undefined
  /** A message in flight longer than this is logged once at WARN (default 30 s). */
  readonly slowMessageWarning?: Duration.Input | undefined
  /** A message with more headers than this is dead-lettered as oversized_headers (default 100). */
  readonly maxHeaders?: number | undefined
  /** A message whose header names and values add up to more bytes than this is dead-lettered as oversized_headers (default 64 KiB). */
  readonly maxHeaderBytes?: number | undefined
  /** Further kafkajs consumer settings (sessionTimeout, heartbeatInterval, …). */
  readonly consumerConfig?: Omit<ConsumerConfig, "groupId"> | undefined
  /** Observes each settled message after its transaction, before its offset is committed. */
  readonly afterMessage?: ((outcome: MessageOutcome) => Effect.Effect<void>) | undefined
}

export interface IdempotentConsumerHandle {
  /** Counts for this instance (the metrics carry the same, per consumer group). */
  readonly stats: Effect.Effect<ConsumerStats>
  /** Fails when kafkajs gives up for good (a crash it does not restart from); never succeeds. */
  readonly awaitCrash: Effect.Effect<never, ConsumerKafkaError>
  /** Runs the inbox cleanup now; returns how many keys were deleted (only keys whose offsets are committed). */
  readonly deleteExpiredInboxKeys: Effect.Effect<number, SqlError.SqlError | ConsumerKafkaError>
}

const DEFAULTS = {
  maxRetries: 5,
  retryBackoff: { baseMs: 200, maxMs: 10_000 },
  outageBackoff: { baseMs: 500, maxMs: 30_000 },
  inboxRetention: Duration.days(7),
  cleanupInterval: Duration.minutes(1),
  cleanupBatchSize: 1000,
  // kafkajs waits this long on an empty fetch; a partition resumed after its batch is fetched again only after it.
  maxWaitTimeInMs: 500,
  commitInterval: Duration.seconds(1),
  shutdownGrace: Duration.seconds(10),
  slowMessageWarning: Duration.seconds(30),
  maxHeaders: 100,
  maxHeaderBytes: 64 * 1024,
} as const

const checkOptions = <A, E, R>(o: IdempotentConsumerOptions<A, E, R>): ReadonlyArray<string> => {
  const problems: Array<string> = []
  if (o.groupId.trim() === "") problems.push("groupId must not be blank")
  if (o.topics.length === 0) problems.push("topics must name at least one topic")
  const positiveInt = (name: string, n: number | undefined, min: number) => {
    if (n !== undefined && (!Number.isInteger(n) || n < min)) problems.push(`${name} must be an integer ≥ ${min}`)
  }
  positiveInt("maxRetries", o.maxRetries, 0)
  positiveInt("cleanupBatchSize", o.cleanupBatchSize, 1)
  positiveInt("partitionsConsumedConcurrently", o.partitionsConsumedConcurrently, 1)
  positiveInt("maxHeaders", o.maxHeaders, 0)
  positiveInt("maxHeaderBytes", o.maxHeaderBytes, 0)
  for (const [name, value] of [
    ["handlerTimeout", o.handlerTimeout],
    ["slowMessageWarning", o.slowMessageWarning],
  ] as const) {
    if (value !== undefined) {
      const parsed = Duration.fromInput(value)
      if (parsed._tag === "None" || Duration.toMillis(parsed.value) <= 0) problems.push(`${name} must be a positive duration`)
    }
  }
  if (o.inboxRetention !== undefined && Duration.toMillis(Duration.fromInputUnsafe(o.inboxRetention)) <= 0) {
    problems.push("inboxRetention must be positive")
  }
  return problems
}

const kafkaError = (operation: string) => (cause: unknown) =>
  new ConsumerKafkaError({ operation, message: `${operation}: ${cause instanceof Error ? cause.message : String(cause)}`, cause })

/**
 * Starts the consumer for the life of the scope. Needs the inbox database as the ambient
 * `SqlClient`, with the inbox table in it (INBOX_TABLE_DDL / ensureInboxTable).
 */
export const makeIdempotentConsumer = <A, E, R>(
  options: IdempotentConsumerOptions<A, E, R>,
): Effect.Effect<
  IdempotentConsumerHandle,
  ConsumerKafkaError | InboxTableMissing | InvalidConsumerOptions | SqlError.SqlError,
  R | SqlClient.SqlClient | Scope.Scope
> =>
  Effect.gen(function* () {
    const problems = checkOptions(options)
    if (problems.length > 0) return yield* new InvalidConsumerOptions({ problems })
    if (!(yield* inboxTableExists)) return yield* new InboxTableMissing()

    const groupId = options.groupId
    const deadLetterTopic = options.deadLetterTopic ?? `${groupId}.dlq`
    const stats = yield* makeStatsRecorder(groupId)
    const context = yield* Effect.context<R | SqlClient.SqlClient>()
    const runFork = Effect.runForkWith(context)
    let stopping = false

    // Registered first, so it runs last: after the batches ended and both clients disconnected.
    yield* Effect.addFinalizer(() => Effect.logInfo("idempotent consumer stopped").pipe(Effect.annotateLogs({ consumer_group: groupId })))

    const log = (entry: LogEntry) => {
      const { message, ...extra } = entry.log
      // kafkajs reports retried connection trouble as errors; whether it matters is decided here, so warnings at most.
      const effect = entry.level <= KafkaLogLevel.WARN ? Effect.logWarning(message) : Effect.logDebug(message)
      runFork(
        effect.pipe(
          Effect.annotateLogs({ ...extra, source: entry.namespace ? `kafkajs.${entry.namespace}` : "kafkajs", consumer_group: groupId }),
        ),
      )
    }
    const kafka = new Kafka({ logLevel: KafkaLogLevel.WARN, logCreator: () => log, ...options.kafka })

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner })
    yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => producer.connect(), catch: kafkaError("connect dead-letter producer") }),
      () => Effect.promise(() => producer.disconnect().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore),
    )
    const sendDeadLetter = (record: DeadLetterRecord) =>
      Effect.tryPromise({
        try: () => producer.send({ topic: deadLetterTopic, acks: -1, messages: [record] }),
        catch: kafkaError(`publish to ${deadLetterTopic}`),
      }).pipe(Effect.asVoid)
    const outageBackoff = options.outageBackoff ?? DEFAULTS.outageBackoff

    if (!kafkajsHeaderDecoderPatched()) {
      yield* Effect.logWarning(
        "kafkajs' record header decoder is unpatched: a message with thousands of headers takes minutes to decode, " +
          "during which the group stalls; run OUTBOX_RELAY_PATCH_KAFKAJS=1 node node_modules/outbox-relay/scripts/patch-kafkajs.mjs",
      ).pipe(Effect.annotateLogs({ consumer_group: groupId }))
    }

    const consumer = kafka.consumer({ maxWaitTimeInMs: DEFAULTS.maxWaitTimeInMs, ...options.consumerConfig, groupId })
    const crashed = yield* Deferred.make<never, ConsumerKafkaError>()
    consumer.on(consumer.events.CRASH, (event) => {
      const { error, restart } = event.payload
      runFork(
        restart
          ? Effect.logWarning("Kafka consumer crashed; kafkajs restarts it").pipe(
              Effect.annotateLogs({ error: error.message }),
              Effect.andThen(stats.record("kafkaRestarts")),
            )
          : Effect.logError("Kafka consumer crashed for good").pipe(
              Effect.annotateLogs({ error: error.message }),
              Effect.andThen(Deferred.fail(crashed, kafkaError("consume")(error))),
            ),
      )
    })
    const membership = makeGroupMembership()
    consumer.on(consumer.events.REBALANCING, () => membership.endTerm())
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      membership.endTerm()
      const assigned = Object.entries(event.payload.memberAssignment)
        .map(([topic, partitions]) => `${topic}:${partitions.join(",")}`)
        .join(" ")
      runFork(Effect.logInfo("partitions assigned").pipe(Effect.annotateLogs({ consumer_group: groupId, assigned: assigned || "none" })))
    })
    yield* Effect.acquireRelease(Effect.tryPromise({ try: () => consumer.connect(), catch: kafkaError("connect consumer") }), () =>
      Effect.promise(() => consumer.disconnect().catch(() => undefined)).pipe(Effect.timeout("10 seconds"), Effect.ignore),
    )
    yield* Effect.tryPromise({
      try: () => consumer.subscribe({ topics: [...options.topics], fromBeginning: options.fromBeginning ?? false }),
      catch: kafkaError("subscribe"),
    })

    // Batches run as fibers of this set: a stop can wait for them, then interrupt what is left.
    const batches = yield* FiberSet.make()
    const runBatch = yield* FiberSet.runtimePromise(batches)<R | SqlClient.SqlClient>()
    const shutdownGrace = Duration.fromInputUnsafe(options.shutdownGrace ?? DEFAULTS.shutdownGrace)
    // Registered after the consumer, so it runs before the consumer disconnects (kafkajs waits for open batches).
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        stopping = true
        // No more fetches; the batch in flight notices `stopping` after its current message and commits.
        consumer.pause(options.topics.map((topic) => ({ topic })))
        const finished = yield* FiberSet.awaitEmpty(batches).pipe(Effect.timeoutOption(shutdownGrace))
        if (finished._tag === "None") yield* Effect.logWarning("stop: the message in flight did not finish in time; abandoned uncommitted")
        yield* FiberSet.clear(batches)
      }),
    )

    const processBatch = processPartitionBatch<R | SqlClient.SqlClient>({
      processMessage: processMessage({
        consumerGroup: groupId,
        handler: options.handler,
        payloadSchema: options.payload,
        dedupKeyOf: options.dedupKey ?? dedupKeyHeader,
        maxRetries: options.maxRetries ?? DEFAULTS.maxRetries,
        retryBackoff: options.retryBackoff ?? DEFAULTS.retryBackoff,
        outageBackoff,
        stats,
        deadLetter: routeToDeadLetter({ send: sendDeadLetter, outageBackoff, stats }),
        handlerTimeout: options.handlerTimeout === undefined ? undefined : Duration.fromInputUnsafe(options.handlerTimeout),
        headerBounds: {
          maxHeaders: options.maxHeaders ?? DEFAULTS.maxHeaders,
          maxHeaderBytes: options.maxHeaderBytes ?? DEFAULTS.maxHeaderBytes,
        },
      }),
      afterMessage: options.afterMessage ?? (() => Effect.void),
      isStopping: () => stopping,
      commitInterval: Duration.fromInputUnsafe(options.commitInterval ?? DEFAULTS.commitInterval),
      consumerGroup: groupId,
      slowMessageWarning: Duration.fromInputUnsafe(options.slowMessageWarning ?? DEFAULTS.slowMessageWarning),
    })

    const partitionLimit =
      options.partitionsConsumedConcurrently === undefined ? undefined : yield* Semaphore.make(options.partitionsConsumedConcurrently)
    const eachBatch = handOffBatch({
      run: (payload: PartitionBatch, term: MembershipTerm) =>
        runBatch(
          partitionLimit === undefined
            ? processBatch(payload, term)
            : processBatch(payload, term).pipe(Semaphore.withPermit(partitionLimit)),
        ),
      membership,
      isStopping: () => stopping,
      onBatchDefect: (error, payload) => {
        // Interrupted by a stop: nothing was committed past the settled messages.
        if (stopping) return
        runFork(
          Effect.logError("batch failed unexpectedly; its partition is fetched again from the last settled offset").pipe(
            Effect.annotateLogs({ topic: payload.batch.topic, partition: payload.batch.partition, error: String(error) }),
          ),
        )
      },
    })
    yield* Effect.tryPromise({
      try: () => consumer.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch }),
      catch: kafkaError("run consumer"),
    })

    // The cleanup asks Kafka, the source of truth, which offsets the group has committed.
    const admin = kafka.admin()
    yield* Effect.acquireRelease(Effect.tryPromise({ try: () => admin.connect(), catch: kafkaError("connect admin") }), () =>
      Effect.promise(() => admin.disconnect().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore),
    )
    const committedOffsets = Effect.tryPromise({
      try: () => admin.fetchOffsets({ groupId, topics: [...options.topics] }),
      catch: kafkaError("fetch committed offsets"),
    }).pipe(
      Effect.map(
        (topics): ReadonlyArray<CommittedOffset> =>
          topics.flatMap((t) =>
            t.partitions.filter((p) => Number(p.offset) >= 0).map((p) => ({ topic: t.topic, partition: p.partition, next: p.offset })),
          ),
      ),
    )

    const cleanup = {
      consumerGroup: groupId,
      retention: Duration.fromInputUnsafe(options.inboxRetention ?? DEFAULTS.inboxRetention),
      interval: Duration.fromInputUnsafe(options.cleanupInterval ?? DEFAULTS.cleanupInterval),
      batchSize: options.cleanupBatchSize ?? DEFAULTS.cleanupBatchSize,
      stats,
      committedOffsets,
    }
    yield* Effect.forkScoped(inboxCleanupLoop(cleanup))
    yield* Effect.logInfo("idempotent consumer started").pipe(
      Effect.annotateLogs({ consumer_group: groupId, topics: options.topics.join(","), dead_letter_topic: deadLetterTopic }),
    )

    return {
      stats: stats.snapshot,
      awaitCrash: Deferred.await(crashed),
      deleteExpiredInboxKeys: deleteExpiredInboxKeys(cleanup).pipe(Effect.provideContext(context)),
    } satisfies IdempotentConsumerHandle
  })

/** The consumer as a service, for applications composed of layers. */
export class IdempotentConsumer extends Context.Service<IdempotentConsumer, IdempotentConsumerHandle>()("outbox-relay/IdempotentConsumer") {
  static readonly layer = <A, E, R>(options: IdempotentConsumerOptions<A, E, R>) =>
    Layer.effect(IdempotentConsumer, makeIdempotentConsumer(options))
}
