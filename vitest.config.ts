import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // lavapipe (WebGPU on the CPU) is exact but slow; shapes in tests are small, but give room.
    testTimeout: 300_000,
    hookTimeout: 900_000,
    // CIFAR-10 is fetched and verified once, before any test file runs.
    globalSetup: ['test/global-setup.ts'],
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
