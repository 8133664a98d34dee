/**
 * The learning-rate schedule (linear warm-up, then cosine decay) and the EMA decay warm-up, as
 * pure functions of the 1-based step so that a resumed run gets exactly the values an
 * uninterrupted one would.
 */

export interface LrSchedule {
  /** Peak learning rate, reached at the end of the warm-up. */
  lr: number;
  /** Learning rate at the last step. */
  minLr: number;
  /** Steps of linear warm-up (0: start at the peak). */
  warmupSteps: number;
  /** Steps of the whole run. */
  totalSteps: number;
}

/**
 * The learning rate of step t (1-based):
 *   t ≤ W:  lr · t / W                                            (linear warm-up from ~0)
 *   t > W:  minLr + (lr − minLr) · ½ (1 + cos(π · (t − W) / (T − W)))   (cosine down to minLr at t = T)
 */
export function lrAt(step: number, s: LrSchedule): number {
  const { lr, minLr, warmupSteps: W, totalSteps: T } = s;
  if (step <= W) return (lr * step) / W;
  if (T <= W) return lr;
  const progress = Math.min(1, (step - W) / (T - W));
  return minLr + (lr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/**
 * The EMA decay at step t (1-based), warmed up as min(decay, (1 + t) / (10 + t)): early on the
 * average follows the weights closely (a decay of 0.9999 would otherwise keep the random
 * initialisation for thousands of steps), later it settles at `decay`.
 */
export function emaDecayAt(step: number, decay: number): number {
  return Math.min(decay, (1 + step) / (10 + step));
}
