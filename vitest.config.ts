import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Kernel tests share namespaces and iptables state, so files run one after another.
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
