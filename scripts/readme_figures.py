"""Redraw the figures of the README (docs/figures/*.png) on the bundled model.

    python scripts/readme_figures.py

SMC with 32 particles for p(x | "S:") * 1[no letter "e"] with the locally optimal proposal,
16 new tokens: the weights spread (the constraint removes different amounts of probability
from different particles) and the run resamples several times.
"""

from pathlib import Path

from genppl import models, ppl
from genppl.inference import smc

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures"


def main():
    lm = models.load()
    prompt = [lm.eos_id] + lm.tokenizer.encode("S:")
    program = ppl.Program(lm, prompt, 16, potential=ppl.BannedStrings(["e", "E"], lm))
    result = smc.run(program, 32, key=0)
    OUT.mkdir(parents=True, exist_ok=True)
    result.figure("genealogy", OUT / "genealogy.png")
    result.figure("weights", OUT / "weight_traces.png")
    print(result.summary())


if __name__ == "__main__":
    main()
