/**
 * Each benchmark's verdict: every figure is printed beside its goal with `met` or `missed`, and
 * a missed goal makes the benchmark exit non-zero.
 */
import { loadavg } from 'node:os';

/** One figure compared with its goal. */
export interface GoalFigure {
  /** What was measured, e.g. `agent RSS now`. */
  name: string;
  value: number;
  /** Unit printed after the figures, e.g. `MB`, `% of a core`, `lines/s`. */
  unit: string;
  /** `<=`: the figure must be at most `goal`; `<`: below it; `>=`: at least it. */
  op: '<=' | '<' | '>=';
  goal: number;
  /** Digits after the point. Default 1. */
  digits?: number;
}

/** Collects figures, prints each beside its goal, and sets a non-zero exit code on a miss. */
export class Goals {
  readonly #figures: { figure: GoalFigure; met: boolean }[] = [];

  /** Prints `NAME: VALUE UNIT (goal OP GOAL UNIT): met|missed` and records the verdict. */
  check(figure: GoalFigure): boolean {
    const met =
      Number.isFinite(figure.value) &&
      (figure.op === '<=' ? figure.value <= figure.goal : figure.op === '<' ? figure.value < figure.goal : figure.value >= figure.goal);
    const d = figure.digits ?? 1;
    const fmt = (n: number) => n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
    console.log(
      `${figure.name}: ${fmt(figure.value)} ${figure.unit} (goal ${figure.op} ${fmt(figure.goal)} ${figure.unit}): ${met ? 'met' : 'missed'}`,
    );
    this.#figures.push({ figure, met });
    return met;
  }

  /** Prints the summary with the load average (the machine may be shared) and sets process.exitCode. */
  finish(bench: string): void {
    const missed = this.#figures.filter((f) => !f.met).map((f) => f.figure.name);
    const load = loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
    console.log(`${bench}: ${missed.length === 0 ? 'all goals met' : `missed: ${missed.join(', ')}`} (load average ${load})`);
    if (missed.length > 0) process.exitCode = 1;
  }
}
