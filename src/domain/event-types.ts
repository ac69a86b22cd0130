/** The event types the relay knows out of the box, and the topic each goes to. */
export const DEFAULT_TOPIC_MAP: Readonly<Record<string, string>> = {
  search_impression: "search.impression",
  search_click: "search.click",
  search_dwell: "search.dwell",
  ac_impression: "autocomplete.impression",
  ac_select: "autocomplete.select",
  admin_domain_event: "admin.domain-event",
  reindex_event: "search.reindex",
  job_run_event: "jobs.run",
}

export const DEFAULT_EVENT_TYPES: ReadonlyArray<string> = Object.keys(DEFAULT_TOPIC_MAP)

export type TopicMap = Readonly<Record<string, string>>

/** Configuration entries win over the defaults; an empty override is rejected by config parsing. */
export const mergeTopicMap = (overrides: TopicMap): TopicMap => ({ ...DEFAULT_TOPIC_MAP, ...overrides })

/** `undefined` means the event type has no topic: a permanent error, routed to the dead-letter topic. */
export const topicFor = (map: TopicMap, eventType: string): string | undefined =>
  Object.hasOwn(map, eventType) ? map[eventType] : undefined

// Kafka's own rule: up to 249 characters of [a-zA-Z0-9._-], and not "." or "..".
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/
export const isValidTopicName = (name: string): boolean => TOPIC_NAME.test(name) && name !== "." && name !== ".."
