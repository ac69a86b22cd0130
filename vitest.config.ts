import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Starts (or reuses) the local PostgreSQL and Kafka the integration tests run against.
    globalSetup: ["test/support/global-setup.ts"],
    // The integration files share one broker and one 2-core machine; running them one at a
    // time keeps timings honest and failures readable.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    reporters: ["default"],
  },
})
