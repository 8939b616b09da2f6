"""Progress bars for long calls, including a single compiled sweep: the sweep runs as a few
dispatches of one compiled program and the bar moves as each finishes (see
:mod:`models.progress`, where the machinery lives so that ``models.sample`` can use it too).
"""

from genppl.models.progress import CHUNKS, DELAY, bar, chunk_stops, distinct, interactive, open_bars, run_in_chunks

__all__ = ["CHUNKS", "DELAY", "bar", "chunk_stops", "distinct", "interactive", "open_bars", "run_in_chunks"]
