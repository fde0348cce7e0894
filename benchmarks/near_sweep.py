"""Sweep fingerprint settings one at a time around the defaults, on the near_eval labelled set.

    .venv/bin/python benchmarks/near_sweep.py [--outputs 600 --distractors 4000]

Prints, per setting: recall on the hardest edit types, false-positive pairs on distractors at the
default threshold and at 0.4, candidates per needle, storage per 1000 characters and band keys per
record. This is how the defaults in ledger/spec/fingerprint.py were chosen.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import near_data
import near_eval

from ledger.spec import fingerprint as fpm

GRID: dict[str, tuple[int, ...]] = {
    "shingle_bytes": (5, 6, 7, 8, 10, 12),
    "sample_rate": (4, 8, 12, 16, 24),
    "value_bits": (16, 32),
    "band_rows": (1, 2, 3, 4),
    "min_samples": (4, 8, 12, 16),
}
SHOWN = ("mask20", "truncate-half", "embedded-mask10", "split-part")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--outputs", type=int, default=600)
    ap.add_argument("--distractors", type=int, default=4000)
    ap.add_argument("--man-files", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    paragraphs = near_data.load_paragraphs(max_man_files=args.man_files, seed=args.seed)
    ev = near_data.make_eval_set(paragraphs, args.outputs, args.distractors, seed=args.seed)
    th = fpm.DEFAULT_THRESHOLD
    head = " ".join(f"{e[:10]:>10}" for e in SHOWN)
    print(
        f"{'setting':<18}{head} {'fp@' + str(th):>9} {'fp@0.4':>8} {'cand':>6} {'B/kchar':>8} {'keys/rec':>8}"
    )
    for name, options in GRID.items():
        for value in options:
            if name == "min_samples":
                params, floor = fpm.DEFAULT_PARAMS, value
            else:
                params, floor = (
                    replace(fpm.DEFAULT_PARAMS, **{name: value}),
                    fpm.DEFAULT_MIN_SAMPLES,
                )
            res = near_eval.run(ev, params, floor)
            r, r4 = near_eval.rates(ev, res, th), near_eval.rates(ev, res, 0.4)
            cells = " ".join(f"{r.recall[e][0] / max(1, r.recall[e][1]):>10.3f}" for e in SHOWN)
            default = (
                fpm.DEFAULT_MIN_SAMPLES
                if name == "min_samples"
                else getattr(fpm.DEFAULT_PARAMS, name)
            )
            mark = "*" if default == value else " "
            print(
                f"{name}={value}{mark:<{18 - len(name) - len(str(value)) - 1}}{cells} "
                f"{r.fp_distractor_pairs:>9} {r4.fp_distractor_pairs:>8} "
                f"{len(res.scores) / res.n_outputs:>6.0f} {res.text_bytes_per_kchar:>8.0f} "
                f"{res.keys_per_record:>8.0f}",
                flush=True,
            )
    print(
        f"(fp = false-positive pairs out of {args.outputs * sum(1 for x in ev.records if x.output is None)}"
        " distractor pairs; * = default)"
    )


if __name__ == "__main__":
    main()
