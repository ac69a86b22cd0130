/**
 * kafkajs is CommonJS: under ESM only a few of its names are real named exports
 * (a named import of KafkaJSError type-checks but is undefined at run time), so
 * everything is taken from the default export here, once.
 */
import kafkajs from "kafkajs"

export const { Kafka, Partitioners, logLevel: KafkaLogLevel } = kafkajs
export type {
  Admin,
  IHeaders,
  KafkaConfig,
  LogEntry,
  Message,
  PartitionerArgs,
  PartitionMetadata,
  Producer,
  RecordMetadata,
  SASLOptions,
} from "kafkajs"
